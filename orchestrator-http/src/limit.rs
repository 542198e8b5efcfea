//! The per-user rate limit: a token bucket per JWT subject.
//!
//! A bucket holds up to `requests_per_minute` tokens and refills at that
//! rate, so a user may burst a minute's worth of requests at once and then
//! runs at the steady rate. Time comes from an injectable
//! [`Clock`], so tests move it by hand instead of
//! sleeping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use orchestrator_core::Clock;

/// The rate limit of authenticated requests, per user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per minute (and the burst size).
    pub requests_per_minute: u32,
}

impl Default for RateLimit {
    /// 100 requests per minute.
    fn default() -> Self {
        Self {
            requests_per_minute: 100,
        }
    }
}

/// Buckets kept before idle (full) ones are dropped.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

/// Token buckets by user.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    capacity: f64,
    per_ms: f64,
    clock: Arc<dyn Clock>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit, clock: Arc<dyn Clock>) -> Self {
        let capacity = f64::from(limit.requests_per_minute.max(1));
        Self {
            capacity,
            per_ms: capacity / 60_000.0,
            clock,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `user`, or says in how many whole seconds one
    /// will be available.
    pub(crate) fn check(&self, user: &str) -> Result<(), u64> {
        let now = self.clock.now().as_millis();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > PRUNE_ABOVE && !buckets.contains_key(user) {
            let (capacity, per_ms) = (self.capacity, self.per_ms);
            buckets
                .retain(|_, b| b.tokens + now.saturating_sub(b.at_ms) as f64 * per_ms < capacity);
        }
        let bucket = buckets.entry(user.to_owned()).or_insert(Bucket {
            tokens: self.capacity,
            at_ms: now,
        });
        // A clock that went backwards refills nothing (saturating).
        let elapsed = now.saturating_sub(bucket.at_ms) as f64;
        bucket.tokens = (bucket.tokens + elapsed * self.per_ms).min(self.capacity);
        bucket.at_ms = bucket.at_ms.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = (1.0 - bucket.tokens) / self.per_ms;
            Err(((wait_ms / 1000.0).ceil() as u64).max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_core::{ManualClock, Timestamp};

    #[test]
    fn bursts_then_refills_at_the_steady_rate() {
        let clock = Arc::new(ManualClock::new(Timestamp(1_000_000)));
        let limiter = RateLimiter::new(
            RateLimit {
                requests_per_minute: 6,
            },
            clock.clone(),
        );
        for _ in 0..6 {
            limiter.check("alice").unwrap();
        }
        // One token every 10 s.
        assert_eq!(limiter.check("alice"), Err(10));
        // Others have their own bucket.
        limiter.check("bob").unwrap();
        clock.advance(9_000);
        assert_eq!(limiter.check("alice"), Err(1));
        clock.advance(1_000);
        limiter.check("alice").unwrap();
        assert!(limiter.check("alice").is_err());
        // A long pause refills to the burst size, not beyond.
        clock.advance(3_600_000);
        for _ in 0..6 {
            limiter.check("alice").unwrap();
        }
        assert!(limiter.check("alice").is_err());
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing() {
        let clock = Arc::new(ManualClock::new(Timestamp(100_000)));
        let limiter = RateLimiter::new(
            RateLimit {
                requests_per_minute: 1,
            },
            clock.clone(),
        );
        limiter.check("a").unwrap();
        clock.set(Timestamp(0));
        assert_eq!(limiter.check("a"), Err(60));
    }
}
