//! The webhook notification sink: each event is POSTed as its JSON
//! [`Envelope`] to a URL, retried with backoff, signed on request, and
//! written to the sink's own dead-letter file when it cannot be delivered.
//!
//! It lives here rather than in `orchestrator-core` because core does no
//! network or file I/O; this crate already carries an HTTP stack.
//!
//! **Client.** `reqwest` with its default features off: it is already in the
//! dependency tree (hyper, hyper-util, tokio), gives per-request timeouts and
//! connection pooling, and with no TLS feature it adds no crypto stack to
//! build. The price: only `http://` URLs are accepted (a typed error says so
//! for `https://`); put a TLS-terminating proxy in front of an HTTPS
//! receiver, or enable TLS in a later build.
//!
//! **Retries.** Connection errors, timeouts, `408`, `429` and `5xx` are
//! retried up to [`WebhookConfig::max_attempts`] attempts with exponential
//! backoff and jitter ([`WebhookConfig::delay`]); a `Retry-After` header
//! (seconds or an HTTP date) replaces the computed delay, capped at
//! [`WebhookConfig::max_backoff`] so one receiver cannot park the sink for
//! hours. Other `4xx` mean the receiver refuses the event: no retry.
//!
//! **Signature.** With a secret, each request carries
//! `X-Orchestrator-Signature: sha256=<hex HMAC-SHA256 of the body>` (the
//! `hmac` and `sha2` crates, RustCrypto, already in the tree through JWT).
//! Receivers recompute it over the raw body and compare in constant time.
//! `X-Orchestrator-Event` carries the event type and
//! `X-Orchestrator-Delivery` the envelope id (stable across retries).
//!
//! **Dead letters.** An event that could not be delivered is appended, as
//! one JSON line ([`DeadLetter`]), to the sink's dead-letter file. A file
//! rather than a store record: a failed webhook is a deployment concern
//! (the receiver was down), not a job's state, so it must not need a store
//! schema in every backend; a JSON-lines file is append-only, survives
//! restarts, and is inspectable with `jq` or [`read_dead_letters`], and an
//! operator can replay it with `curl`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use orchestrator_core::notify::{DeliveryError, Envelope, NotificationSink};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-orchestrator-signature";
/// The event-type header.
pub const EVENT_HEADER: &str = "x-orchestrator-event";
/// The delivery-id header (the envelope id).
pub const DELIVERY_HEADER: &str = "x-orchestrator-delivery";

/// How a webhook sink delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Where to POST (`http://` only).
    pub url: String,
    /// HMAC-SHA256 key for [`SIGNATURE_HEADER`]; none: unsigned.
    pub secret: Option<String>,
    /// Timeout of one attempt (connect + response).
    pub timeout: Duration,
    /// Attempts per event, from 1.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Cap of the delay between attempts (also of `Retry-After`).
    pub max_backoff: Duration,
    /// Where undeliverable events are appended (JSON lines); none: they are
    /// only logged.
    pub dead_letter: Option<PathBuf>,
}

impl WebhookConfig {
    /// Defaults for `url`: 10 s timeout, 5 attempts, backoff from 500 ms to
    /// 60 s, unsigned, no dead-letter file.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            secret: None,
            timeout: Duration::from_secs(10),
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            dead_letter: None,
        }
    }

    /// The delay after failed attempt `attempt` (from 1): the receiver's
    /// `Retry-After` if it sent one, else `initial_backoff · 2^(attempt-1)`
    /// with "equal jitter" (between half and all of it, `jitter` in `[0,1)`
    /// picking where); capped at `max_backoff` either way.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        if let Some(d) = retry_after {
            return d.min(self.max_backoff);
        }
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.clamp(1, 31).saturating_sub(1).min(20))
            .min(self.max_backoff);
        base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// A webhook configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The URL does not parse or is not `http://`.
    #[error("invalid webhook URL {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// `max_attempts` is 0.
    #[error("a webhook needs at least one attempt")]
    NoAttempts,
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Why one event was not delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookFailure {
    /// The receiver refused it (a 4xx other than 408/429).
    #[error("the receiver refused the event with status {0}")]
    Rejected(u16),
    /// Every attempt failed for a reason worth retrying.
    #[error("{attempts} attempts failed; the last: {last}")]
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's failure.
        last: String,
    },
}

/// One undeliverable event, as a line of the dead-letter file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// When the sink gave up, RFC 3339.
    pub failed_at: String,
    /// The webhook URL.
    pub url: String,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub error: String,
    /// The event.
    pub envelope: Envelope,
}

/// The entries of a dead-letter file, oldest first.
pub fn read_dead_letters(path: &Path) -> std::io::Result<Vec<DeadLetter>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(std::io::Error::other))
        .collect()
}

/// POSTs envelopes to a URL; see the [module docs](self).
#[derive(Debug)]
pub struct WebhookSink {
    config: WebhookConfig,
    client: reqwest::Client,
}

enum Attempt {
    Delivered,
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    Rejected(u16),
}

impl WebhookSink {
    /// A sink for `config`, checked.
    pub fn new(config: WebhookConfig) -> Result<Self, WebhookError> {
        let bad = |reason| WebhookError::Url {
            url: config.url.clone(),
            reason,
        };
        let url = reqwest::Url::parse(&config.url).map_err(|_| bad("not a URL"))?;
        match url.scheme() {
            "http" => {}
            "https" => return Err(bad("https needs TLS, which this build does not include")),
            _ => return Err(bad("only http:// URLs are supported")),
        }
        if url.host_str().is_none() {
            return Err(bad("no host"));
        }
        if config.max_attempts == 0 {
            return Err(WebhookError::NoAttempts);
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            // A redirect of a POST would turn into a GET: never follow one.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(WebhookError::Client)?;
        Ok(Self { config, client })
    }

    /// The configuration.
    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    async fn attempt(&self, envelope: &Envelope, body: &[u8], signature: Option<&str>) -> Attempt {
        let mut req = self
            .client
            .post(&self.config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_HEADER, &envelope.kind)
            .header(DELIVERY_HEADER, &envelope.id)
            .body(body.to_vec());
        if let Some(sig) = signature {
            req = req.header(SIGNATURE_HEADER, sig);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() {
                    Attempt::Delivered
                } else if status.as_u16() == 408
                    || status.as_u16() == 429
                    || status.is_server_error()
                {
                    Attempt::Retry {
                        reason: format!("status {}", status.as_u16()),
                        after: resp
                            .headers()
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| parse_retry_after(v, SystemTime::now())),
                    }
                } else {
                    Attempt::Rejected(status.as_u16())
                }
            }
            Err(e) => Attempt::Retry {
                reason: error_chain(&e),
                after: None,
            },
        }
    }

    async fn dead_letter(&self, envelope: &Envelope, attempts: u32, error: &WebhookFailure) {
        tracing::error!(url = %self.config.url, id = %envelope.id, event = %envelope.kind,
            attempts, %error, "webhook gave up on an event");
        let Some(path) = self.config.dead_letter.clone() else {
            return;
        };
        let entry = DeadLetter {
            failed_at: orchestrator_core::notify::rfc3339(now()),
            url: self.config.url.clone(),
            attempts,
            error: error.to_string(),
            envelope: envelope.clone(),
        };
        let written = tokio::task::spawn_blocking(move || append_line(&path, &entry)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(url = %self.config.url, error = %e,
                "could not write the webhook dead-letter file; the event is lost"),
            Err(e) => tracing::error!(url = %self.config.url, error = %e,
                "could not write the webhook dead-letter file; the event is lost"),
        }
    }
}

fn now() -> orchestrator_core::Timestamp {
    orchestrator_core::Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    )
}

fn append_line(path: &Path, entry: &DeadLetter) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    // One write call per line: concurrent appenders never interleave lines.
    f.write_all(&line)?;
    f.sync_data()
}

/// `reqwest`'s error with its causes ("error sending request: connection
/// refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// `sha256=<hex>` of HMAC-SHA256(`secret`, `body`).
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    let mut s = String::from("sha256=");
    for b in mac.finalize().into_bytes() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A `Retry-After` value: delay seconds, or an HTTP date (relative to
/// `now`); `None` when it is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = u64::try_from(at.timestamp()).ok()?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

#[async_trait]
impl NotificationSink for WebhookSink {
    fn name(&self) -> &str {
        &self.config.url
    }

    async fn deliver(&self, envelope: &Envelope) -> Result<(), DeliveryError> {
        let body = serde_json::to_vec(envelope)?;
        let sig = self
            .config
            .secret
            .as_ref()
            .map(|k| signature(k.as_bytes(), &body));
        let mut attempt = 1;
        let failure = loop {
            match self.attempt(envelope, &body, sig.as_deref()).await {
                Attempt::Delivered => return Ok(()),
                Attempt::Rejected(status) => break WebhookFailure::Rejected(status),
                Attempt::Retry { reason, after } => {
                    if attempt >= self.config.max_attempts {
                        break WebhookFailure::Exhausted {
                            attempts: attempt,
                            last: reason,
                        };
                    }
                    let delay = self
                        .config
                        .delay(attempt, after, rand::rng().random::<f64>());
                    tracing::debug!(url = %self.config.url, id = %envelope.id, attempt, %reason,
                        retry_in_ms = delay.as_millis() as u64, "webhook attempt failed");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        };
        self.dead_letter(envelope, attempt, &failure).await;
        Err(failure.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let mut c = WebhookConfig::new("http://x");
        c.initial_backoff = Duration::from_millis(100);
        c.max_backoff = Duration::from_millis(1000);
        assert_eq!(c.delay(1, None, 0.0), Duration::from_millis(50));
        assert_eq!(c.delay(1, None, 1.0), Duration::from_millis(100));
        assert_eq!(c.delay(2, None, 1.0), Duration::from_millis(200));
        assert_eq!(c.delay(3, None, 0.5), Duration::from_millis(300));
        assert_eq!(c.delay(5, None, 1.0), Duration::from_millis(1000));
        assert_eq!(c.delay(40, None, 1.0), Duration::from_millis(1000));
        // Retry-After wins over the computed delay, within the cap.
        assert_eq!(
            c.delay(1, Some(Duration::from_millis(700)), 0.0),
            Duration::from_millis(700)
        );
        assert_eq!(
            c.delay(1, Some(Duration::from_secs(3600)), 0.0),
            Duration::from_millis(1000)
        );
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_470); // 07:27:50
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(10))
        );
        // A date in the past: retry now.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn only_http_urls_are_accepted() {
        for url in [
            "https://example.com/hook",
            "ftp://x/y",
            "not a url",
            "http://",
        ] {
            assert!(
                matches!(
                    WebhookSink::new(WebhookConfig::new(url)),
                    Err(WebhookError::Url { .. })
                ),
                "{url}"
            );
        }
        let mut c = WebhookConfig::new("http://127.0.0.1:9/hook");
        c.max_attempts = 0;
        assert!(matches!(WebhookSink::new(c), Err(WebhookError::NoAttempts)));
        assert!(WebhookSink::new(WebhookConfig::new("http://127.0.0.1:9/hook")).is_ok());
    }
}
