//! Which event types a sink receives.

use std::fmt;
use std::str::FromStr;

/// A set of event-type patterns, e.g. `escalation.*,recovery.*`. A pattern
/// is an event type (`node.failed`) in which `*` stands for any run of
/// characters (`*` alone: every event). An event matches the filter when it
/// matches any of its patterns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventFilter {
    patterns: Vec<String>,
}

/// A filter that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// The filter names no pattern.
    #[error("the event filter is empty; give event types such as `escalation.*`")]
    Empty,
    /// A pattern has a character event types never have.
    #[error("invalid event pattern {0:?}: use lowercase letters, digits, `_`, `.` and `*`")]
    Invalid(String),
}

impl EventFilter {
    /// Every event.
    pub fn all() -> Self {
        Self {
            patterns: vec!["*".into()],
        }
    }

    /// Whether `event` (an event type, e.g. `node.failed`) matches.
    pub fn matches(&self, event: &str) -> bool {
        self.patterns
            .iter()
            .any(|p| glob(p.as_bytes(), event.as_bytes()))
    }

    /// The patterns.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

impl Default for EventFilter {
    fn default() -> Self {
        Self::all()
    }
}

impl fmt::Display for EventFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.patterns.join(","))
    }
}

impl FromStr for EventFilter {
    type Err = FilterError;

    /// Comma-separated patterns; blanks around them are ignored.
    fn from_str(s: &str) -> Result<Self, FilterError> {
        let mut patterns = Vec::new();
        for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let ok = p
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.*".contains(&b));
            if !ok {
                return Err(FilterError::Invalid(p.to_owned()));
            }
            patterns.push(p.to_owned());
        }
        if patterns.is_empty() {
            return Err(FilterError::Empty);
        }
        Ok(Self { patterns })
    }
}

/// Glob match where `*` matches any run of bytes; linear time (greedy with
/// one backtrack point), so no pattern can make it slow.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> EventFilter {
        s.parse().expect("valid filter")
    }

    #[test]
    fn patterns_match_as_globs() {
        let esc = f("escalation.*, recovery.*");
        assert!(esc.matches("escalation.required"));
        assert!(esc.matches("recovery.completed"));
        assert!(!esc.matches("node.failed"));
        assert!(!esc.matches("escalation"));
        assert!(f("*").matches("node.failed"));
        assert!(f("node.failed").matches("node.failed"));
        assert!(!f("node.failed").matches("node.failed_x"));
        assert!(f("*.failed").matches("execution.failed"));
        assert!(f("*.failed").matches("node.failed"));
        assert!(!f("*.failed").matches("node.upstream_failed"));
        assert!(f("node.*failed").matches("node.upstream_failed"));
        assert!(f("n*e.*d").matches("node.succeeded"));
        assert!(!f("n*e.*x").matches("node.succeeded"));
    }

    #[test]
    fn bad_filters_are_typed_errors() {
        assert_eq!("".parse::<EventFilter>(), Err(FilterError::Empty));
        assert_eq!(" , ".parse::<EventFilter>(), Err(FilterError::Empty));
        assert_eq!(
            "node.failed,Node!".parse::<EventFilter>(),
            Err(FilterError::Invalid("Node!".into()))
        );
        assert_eq!(f("a.*, b").to_string(), "a.*,b");
    }

    proptest::proptest! {
        /// `*` alone matches everything; a literal matches only itself; a
        /// prefix glob matches exactly the strings with that prefix.
        #[test]
        fn glob_agrees_with_simple_cases(s in "[a-z_.]{0,12}", t in "[a-z_.]{0,12}") {
            proptest::prop_assert!(glob(b"*", s.as_bytes()));
            proptest::prop_assert_eq!(glob(s.as_bytes(), t.as_bytes()), s == t);
            let prefix = format!("{s}*");
            proptest::prop_assert_eq!(glob(prefix.as_bytes(), t.as_bytes()), t.starts_with(&s));
            let suffix = format!("*{s}");
            proptest::prop_assert_eq!(glob(suffix.as_bytes(), t.as_bytes()), t.ends_with(&s));
        }
    }
}
