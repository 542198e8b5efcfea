//! Injectable wall-clock time and identifiers.
//!
//! Timers use tokio's clock (which tests pause and advance); timestamps that
//! are *recorded* (journal, summaries) come from a [`Clock`], so tests can make
//! them deterministic too.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (UTC).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub const fn saturating_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// `d` later (to the millisecond, saturating).
    pub fn saturating_add(self, d: std::time::Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }
}

/// A source of wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Timestamp(ms)
    }
}

/// A clock that only moves when told to, for deterministic tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: Timestamp) -> Self {
        Self(AtomicU64::new(start.0))
    }

    /// Moves the clock forward by `ms` milliseconds.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// A job's identifier: 26 characters of Crockford base32 whose first ten
/// encode the creation time, so ids sort by creation (ULID layout).
///
/// Cloning is a reference-count increment: ids are copied into every attempt
/// context and event notification.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct JobId(Arc<str>);

impl<'de> Deserialize<'de> for JobId {
    /// Validates like [`JobId::from_str`]: ids come from URLs and files.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Why a string is not a valid [`JobId`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid job id {0:?}: expected 1 to 64 characters of [A-Za-z0-9_-]")]
pub struct InvalidJobId(String);

impl JobId {
    /// A new id for a job created at `now`, with 80 random bits.
    pub fn generate(now: Timestamp, rng: &mut impl rand::Rng) -> Self {
        let value: u128 = (u128::from(now.0 & 0xFFFF_FFFF_FFFF) << 80)
            | (u128::from(rng.random::<u64>()) << 16)
            | u128::from(rng.random::<u16>());
        let mut out = String::with_capacity(26);
        for i in (0..26).rev() {
            out.push(CROCKFORD[((value >> (i * 5)) & 0x1F) as usize] as char);
        }
        Self(out.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for JobId {
    type Err = InvalidJobId;

    /// Accepts any id made of 1 to 64 ASCII letters, digits, `-` or `_`, so
    /// ids chosen by an embedding application work too; never panics.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(s.into()))
        } else {
            Err(InvalidJobId(s.chars().take(80).collect()))
        }
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for JobId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(feature = "openapi")]
mod openapi {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
    use utoipa::openapi::{RefOr, Schema};

    impl utoipa::PartialSchema for super::Timestamp {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(0))
                .description(Some("Milliseconds since the Unix epoch (UTC)."))
                .into()
        }
    }

    impl utoipa::ToSchema for super::Timestamp {}

    impl utoipa::PartialSchema for super::JobId {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[A-Za-z0-9_-]{1,64}$"))
                .description(Some(
                    "A job id: 26 characters of Crockford base32 (ULID layout) when generated.",
                ))
                .into()
        }
    }

    impl utoipa::ToSchema for super::JobId {}
}

/// A 64-bit mix (SplitMix64's finalizer). Deterministic across platforms and
/// Rust versions, unlike `std`'s hashers, which matters because jitter seeds
/// derived from it must reproduce when a journal is replayed years later.
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stable 64-bit hash of `bytes` (FNV-1a followed by [`mix64`]).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    mix64(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn generated_ids_sort_by_time_and_parse_back() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let a = JobId::generate(Timestamp(1_000), &mut rng);
        let b = JobId::generate(Timestamp(2_000), &mut rng);
        assert_eq!(a.as_str().len(), 26);
        assert!(a < b);
        assert_eq!(a.as_str().parse::<JobId>().unwrap(), a);
    }

    #[test]
    fn rejects_bad_ids() {
        for s in ["", "a/b", "../etc", &"x".repeat(65), "spa ce", "ü"] {
            assert!(s.parse::<JobId>().is_err(), "{s:?}");
        }
    }

    #[test]
    fn stable_hash_is_stable() {
        // Pinned: changing the hash would change every replayed jitter.
        assert_eq!(stable_hash(b""), mix64(0xCBF2_9CE4_8422_2325));
        assert_eq!(stable_hash(b"job/node"), stable_hash(b"job/node"));
        assert_ne!(stable_hash(b"a"), stable_hash(b"b"));
    }
}
