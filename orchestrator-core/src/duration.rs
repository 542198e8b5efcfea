//! Human-readable durations for specs: `"250ms"`, `"30s"`, `"5m"`, `"1h"`, or
//! an integer number of milliseconds.
//!
//! Specs are written by people, so a duration is accepted in the forms people
//! write, and always serialized back in one canonical, lossless form (the
//! largest unit that divides it exactly), so a spec round-trips unchanged.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A [`Duration`] with millisecond precision that (de)serializes as `"30s"`
/// or as an integer number of milliseconds.
///
/// ```
/// use orchestrator_core::HumanDuration;
/// use std::time::Duration;
///
/// let d: HumanDuration = "1.5s".parse().unwrap();
/// assert_eq!(d.get(), Duration::from_millis(1500));
/// assert_eq!(d.to_string(), "1500ms");
/// assert_eq!("5m".parse::<HumanDuration>().unwrap().to_string(), "5m");
/// assert!("ten seconds".parse::<HumanDuration>().is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(Duration);

/// Why a duration string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (expected e.g. \"250ms\", \"30s\", \"5m\", \"1h\" or integer milliseconds)")]
pub struct ParseDurationError {
    input: String,
    reason: &'static str,
}

/// The largest duration a spec may carry: about 292 million years is not
/// useful, and capping keeps every arithmetic on durations overflow-free.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl HumanDuration {
    /// Wraps a duration, truncated to whole milliseconds.
    pub fn new(d: Duration) -> Self {
        Self(Duration::from_millis(
            d.as_millis().min(u128::from(u64::MAX)) as u64,
        ))
    }

    /// A duration of `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }

    /// A duration of `s` seconds.
    pub const fn from_secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }

    /// The wrapped duration.
    pub const fn get(self) -> Duration {
        self.0
    }

    /// Whole milliseconds.
    pub fn as_millis(self) -> u64 {
        self.0.as_millis() as u64
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        Self::new(d)
    }
}

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Self {
        d.0
    }
}

impl FromStr for HumanDuration {
    type Err = ParseDurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseDurationError {
            input: input.to_owned(),
            reason,
        };
        let s = input.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        if number.is_empty() {
            return Err(err("missing number"));
        }
        let unit_ms: f64 = match unit.trim() {
            "" | "ms" => 1.0,
            "s" | "sec" | "secs" => 1_000.0,
            "m" | "min" | "mins" => 60_000.0,
            "h" | "hr" | "hrs" => 3_600_000.0,
            "d" => 86_400_000.0,
            _ => return Err(err("unknown unit")),
        };
        let value: f64 = number.parse().map_err(|_| err("malformed number"))?;
        let ms = (value * unit_ms).round();
        if !ms.is_finite() || ms > MAX_DURATION.as_millis() as f64 {
            return Err(err("too large"));
        }
        Ok(Self::from_millis(ms as u64))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.as_millis();
        const UNITS: [(u64, &str); 3] = [(3_600_000, "h"), (60_000, "m"), (1_000, "s")];
        for (size, name) in UNITS {
            if ms != 0 && ms % size == 0 {
                return write!(f, "{}{name}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"250ms\", \"30s\", \"5m\" or integer milliseconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                if u128::from(v) > MAX_DURATION.as_millis() {
                    return Err(E::custom("duration too large"));
                }
                Ok(HumanDuration::from_millis(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("a duration cannot be negative"))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                if !(0.0..=MAX_DURATION.as_millis() as f64).contains(&v) {
                    return Err(E::custom("duration out of range"));
                }
                Ok(HumanDuration::from_millis(v.round() as u64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(feature = "openapi")]
mod openapi {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    use utoipa::openapi::{RefOr, Schema};

    impl utoipa::PartialSchema for super::HumanDuration {
        fn schema() -> RefOr<Schema> {
            OneOfBuilder::new()
                .item(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .examples(["30s"]),
                )
                .item(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                )
                .description(Some(
                    "A duration: \"250ms\", \"30s\", \"5m\", \"1h\", or integer milliseconds.",
                ))
                .into()
        }
    }

    impl utoipa::ToSchema for super::HumanDuration {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_form() {
        let cases = [
            ("250ms", 250),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("1.5s", 1_500),
            ("0", 0),
            ("42", 42),
            (" 2s ", 2_000),
        ];
        for (input, ms) in cases {
            assert_eq!(
                input.parse::<HumanDuration>().unwrap().as_millis(),
                ms,
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_garbage() {
        for input in ["", "s", "-1s", "1w", "1..2s", "1e999s", "abc", "10 parsecs"] {
            assert!(
                input.parse::<HumanDuration>().is_err(),
                "{input:?} should fail"
            );
        }
    }

    #[test]
    fn json_round_trip_is_canonical() {
        let d: HumanDuration = serde_json::from_str("90000").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"90s\"");
        let back: HumanDuration = serde_json::from_str("\"90s\"").unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<HumanDuration>("-5").is_err());
        assert!(serde_json::from_str::<HumanDuration>("true").is_err());
    }
}
