//! The one place driver errors become [`StoreError`]s.
//!
//! The mapping decides what the executor does next, so it is deliberately
//! coarse and portable: it looks at the *kind* of driver error and at the
//! driver's error labels, and matches exactly one server error code,
//! duplicate key (11000), which the store handles itself before anything
//! reaches this module. Codes differ between MongoDB versions and
//! wire-compatible servers; kinds and labels do not.

use mongodb::error::{Error, ErrorKind, WriteFailure};
use orchestrator_core::{JobId, StoreError};

/// MongoDB's duplicate-key error code: a unique index (or `_id`) refused a
/// write. The only code this crate matches.
pub(crate) const DUPLICATE_KEY: i32 = 11000;

/// Driver labels that mark an error as transient: the operation may
/// succeed if tried again later (a failover, a pool cleared after a network
/// error, an overloaded server).
const TRANSIENT_LABELS: [&str; 4] = [
    mongodb::error::RETRYABLE_WRITE_ERROR,
    mongodb::error::TRANSIENT_TRANSACTION_ERROR,
    mongodb::error::SYSTEM_OVERLOADED_ERROR,
    mongodb::error::RETRYABLE_ERROR,
];

/// Whether `e` is a duplicate-key refusal, of a single write or of any
/// document of an `insert_many`.
pub(crate) fn is_duplicate_key(e: &Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(m) => {
            m.write_concern_error.is_none()
                && m.write_errors.as_ref().is_some_and(|errs| {
                    !errs.is_empty() && errs.iter().all(|w| w.code == DUPLICATE_KEY)
                })
        }
        _ => false,
    }
}

/// Converts a driver error met while `doing` something (for job `job`, when
/// there is one).
///
/// | driver error | becomes |
/// | --- | --- |
/// | I/O, server selection, pool cleared, DNS, shutdown, a write-concern failure, anything labelled transient | [`StoreError::Unavailable`]: retry later |
/// | BSON decoding of a reply | [`StoreError::Corrupt`] naming the job |
/// | anything else (a command the server rejects, authentication, invalid arguments) | [`StoreError::Backend`] |
///
/// A write-concern failure means the write may or may not have reached a
/// majority; retrying is safe because every write of this crate is
/// idempotent or compare-and-set.
pub(crate) fn from_driver(e: Error, doing: &str, job: Option<&JobId>) -> StoreError {
    let transient = TRANSIENT_LABELS.iter().any(|l| e.contains_label(l));
    match e.kind.as_ref() {
        ErrorKind::Io(_)
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Shutdown
        | ErrorKind::Write(WriteFailure::WriteConcernError(_)) => unavailable(e, doing),
        ErrorKind::InsertMany(m) if m.write_concern_error.is_some() => unavailable(e, doing),
        _ if transient => unavailable(e, doing),
        ErrorKind::BsonDeserialization(_) => StoreError::Corrupt {
            job: job.cloned(),
            key: doing.to_owned(),
            message: e.to_string(),
        },
        _ => StoreError::Backend {
            message: format!("MongoDB failed while {doing}: {}", short(&e)),
            source: Some(Box::new(e)),
        },
    }
}

fn unavailable(e: Error, doing: &str) -> StoreError {
    StoreError::Unavailable {
        message: format!("MongoDB unreachable while {doing}: {}", short(&e)),
        source: Some(Box::new(e)),
    }
}

/// The kind's message without the driver's label and response dump.
fn short(e: &Error) -> String {
    e.kind.to_string()
}

/// An operation that did not answer within the store's operation timeout.
pub(crate) fn timed_out(doing: &str, after: std::time::Duration) -> StoreError {
    StoreError::Unavailable {
        message: format!("MongoDB did not answer within {after:?} while {doing}"),
        source: None,
    }
}

/// A stored document that fails to decode.
pub(crate) fn corrupt(
    job: Option<&JobId>,
    key: String,
    message: impl std::fmt::Display,
) -> StoreError {
    StoreError::Corrupt {
        job: job.cloned(),
        key,
        message: message.to_string(),
    }
}
