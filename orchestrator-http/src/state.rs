//! [`ApiState`]: what every handler shares — the executor, the auth and
//! node policies, the rate limiter and the metrics — and [`HttpConfig`].

use std::sync::Arc;
use std::time::Duration;

use orchestrator_core::{Clock, Executor, SystemClock};
use tokio_util::sync::CancellationToken;

use crate::auth::AuthConfig;
use crate::error::ApiError;
use crate::limit::{RateLimit, RateLimiter};
use crate::metrics::Metrics;
use crate::policy::NodePolicy;

/// Settings of the HTTP adapter.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HttpConfig {
    /// Per-user rate limit of authenticated requests; `None` disables it.
    pub rate_limit: Option<RateLimit>,
    /// Node types (and commands) jobs submitted over HTTP may use.
    pub nodes: NodePolicy,
    /// Largest request body, in bytes (1 MiB).
    pub max_body_bytes: usize,
    /// How long `/health` waits for the store and the executor (2 s).
    pub health_timeout: Duration,
    /// Interval of keep-alive comments on event streams (15 s).
    pub sse_keep_alive: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            rate_limit: Some(RateLimit::default()),
            nodes: NodePolicy::default(),
            max_body_bytes: 1024 * 1024,
            health_timeout: Duration::from_secs(2),
            sse_keep_alive: Duration::from_secs(15),
        }
    }
}

/// The state behind the router. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ApiState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    executor: Executor,
    auth: AuthConfig,
    config: HttpConfig,
    limiter: Option<RateLimiter>,
    metrics: Arc<Metrics>,
    /// Cancelled when the state is dropped: stops the metrics feed.
    dropped: CancellationToken,
    /// Cancelled by [`ApiState::shutdown`] (or on drop): ends event streams.
    closing: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Stops the metrics feed and any event stream still open.
        self.dropped.cancel();
    }
}

/// Builds an [`ApiState`].
#[must_use]
#[derive(Debug)]
pub struct ApiStateBuilder {
    executor: Executor,
    auth: AuthConfig,
    config: HttpConfig,
    clock: Arc<dyn Clock>,
}

impl ApiStateBuilder {
    /// Sets the configuration.
    pub fn config(mut self, config: HttpConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the clock of the rate limiter (tests move a `ManualClock`).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the state and starts following the executor's events for
    /// `/metrics`. Must be called within a tokio runtime.
    pub fn build(self) -> ApiState {
        let metrics = Arc::new(Metrics::new());
        let dropped = CancellationToken::new();
        let closing = dropped.child_token();
        let mut events = self.executor.subscribe();
        {
            let metrics = Arc::clone(&metrics);
            let dropped = dropped.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = dropped.cancelled() => return,
                        next = events.recv() => match next {
                            Ok(Some(n)) => metrics.observe(&n),
                            Ok(None) => return,
                            Err(lag) => metrics.lagged(lag.0),
                        },
                    }
                }
            });
        }
        let limiter = self
            .config
            .rate_limit
            .map(|limit| RateLimiter::new(limit, self.clock));
        ApiState {
            inner: Arc::new(Inner {
                executor: self.executor,
                auth: self.auth,
                config: self.config,
                limiter,
                metrics,
                dropped,
                closing,
            }),
        }
    }
}

impl ApiState {
    /// A state with the default [`HttpConfig`]. Must be called within a
    /// tokio runtime.
    pub fn new(executor: Executor, auth: AuthConfig) -> Self {
        Self::builder(executor, auth).build()
    }

    /// Starts a builder.
    pub fn builder(executor: Executor, auth: AuthConfig) -> ApiStateBuilder {
        ApiStateBuilder {
            executor,
            auth,
            config: HttpConfig::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// The executor.
    pub fn executor(&self) -> &Executor {
        &self.inner.executor
    }

    /// The token policy.
    pub fn auth(&self) -> &AuthConfig {
        &self.inner.auth
    }

    /// The configuration.
    pub fn config(&self) -> &HttpConfig {
        &self.inner.config
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Completes when [`ApiState::shutdown`] is called.
    pub(crate) fn closing(&self) -> &CancellationToken {
        &self.inner.closing
    }

    /// Ends every open event stream (call it when the server starts its
    /// graceful shutdown, so long-lived streams do not hold it up). Other
    /// requests are unaffected.
    pub fn shutdown(&self) {
        self.inner.closing.cancel();
    }

    /// Takes a request token for `user`, or refuses with 429.
    pub(crate) fn check_rate(&self, user: &str) -> Result<(), ApiError> {
        match &self.inner.limiter {
            Some(limiter) => limiter
                .check(user)
                .map_err(|retry_after_secs| ApiError::RateLimited { retry_after_secs }),
            None => Ok(()),
        }
    }
}
