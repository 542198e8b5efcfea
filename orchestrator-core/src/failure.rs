//! Classified failures: what went wrong with an attempt, in terms a retry
//! policy can act on.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::classify::FailureEvidence;

/// The class of a failure. Retry policies, dead-lettering and analytics all
/// key on it, so runners should classify as precisely as they can.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Likely to pass if tried again (a flaky network call, a busy resource).
    Transient,
    /// Will fail the same way every time (an assertion, a bad input).
    Permanent,
    /// The attempt ran past its deadline.
    Timeout,
    /// The worker or process running the attempt was lost (crash, kill,
    /// missed heartbeats), so the attempt's own outcome is unknown.
    Infrastructure,
    /// The attempt was stopped because its job was cancelled.
    Cancelled,
    /// The runner could not tell.
    Unknown,
}

impl FailureClass {
    /// Every class, in declaration order.
    pub const ALL: [FailureClass; 6] = [
        Self::Transient,
        Self::Permanent,
        Self::Timeout,
        Self::Infrastructure,
        Self::Cancelled,
        Self::Unknown,
    ];

    /// The snake_case name used in specs and the journal.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::Timeout => "timeout",
            Self::Infrastructure => "infrastructure",
            Self::Cancelled => "cancelled",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest failure message kept; longer ones are truncated (on a char
/// boundary) so one chatty runner cannot bloat the journal.
pub const MAX_FAILURE_MESSAGE: usize = 4 * 1024;

/// Which classification rule refined a failure's class, and the class the
/// runner had given it (see [`crate::classify`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Classified {
    /// The rule's name, or `{source}/classify/{index}` for an unnamed one.
    pub rule: String,
    /// The class the runner reported.
    pub runner_class: FailureClass,
}

/// A classified failure of one attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Failure {
    /// What kind of failure this is.
    pub class: FailureClass,
    /// A human-readable description, at most [`MAX_FAILURE_MESSAGE`] bytes.
    pub message: String,
    /// Set when a classification rule changed the runner's class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classified_by: Option<Classified>,
    /// What the runner saw (exit code, signal, output), for classification
    /// rules. Never serialized: the executor drops it before journaling.
    #[serde(skip)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub evidence: Option<Arc<FailureEvidence>>,
}

impl Failure {
    /// A failure of `class` with `message` (truncated if too long).
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_FAILURE_MESSAGE {
            let mut cut = MAX_FAILURE_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        Self {
            class,
            message,
            classified_by: None,
            evidence: None,
        }
    }

    /// Attaches what the runner saw, for classification rules.
    #[must_use]
    pub fn with_evidence(mut self, evidence: FailureEvidence) -> Self {
        self.evidence = Some(Arc::new(evidence));
        self
    }

    /// A [`FailureClass::Transient`] failure.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(FailureClass::Transient, message)
    }

    /// A [`FailureClass::Permanent`] failure.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(FailureClass::Permanent, message)
    }

    /// A [`FailureClass::Timeout`] failure.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(FailureClass::Timeout, message)
    }

    /// A [`FailureClass::Infrastructure`] failure.
    pub fn infrastructure(message: impl Into<String>) -> Self {
        Self::new(FailureClass::Infrastructure, message)
    }

    /// A [`FailureClass::Cancelled`] failure.
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::new(FailureClass::Cancelled, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class, self.message)
    }
}

impl std::error::Error for Failure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_truncated_on_a_char_boundary() {
        let f = Failure::transient("é".repeat(MAX_FAILURE_MESSAGE));
        assert!(f.message.len() <= MAX_FAILURE_MESSAGE + '…'.len_utf8());
        assert!(f.message.ends_with('…'));
    }

    #[test]
    fn classes_serialize_as_snake_case() {
        for class in FailureClass::ALL {
            let json = serde_json::to_string(&class).unwrap();
            assert_eq!(json, format!("\"{}\"", class.as_str()));
            assert_eq!(serde_json::from_str::<FailureClass>(&json).unwrap(), class);
        }
    }
}
