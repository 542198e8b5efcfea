//! Notification sinks of `run` and `serve`: from flags
//! (`--notify-webhook`, `--notify-log`, `--notify-events`, …) and/or a
//! config file (`--notify-config`), started as a dispatcher on the
//! executor's event feed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use orchestrator_core::executor::Subscription;
use orchestrator_core::notify::{Dispatcher, EventFilter, LogSink, Route};
use orchestrator_core::{HumanDuration, Store};
use orchestrator_http::webhook::{WebhookConfig, WebhookSink};
use serde::Deserialize;

use crate::error::CliError;

/// How long `run` waits at its end for sinks to deliver what is left.
const CLOSE_GRACE: Duration = Duration::from_secs(30);

/// Notification flags, shared by `run` and `serve`.
#[derive(Debug, Default, Args)]
pub(crate) struct NotifyArgs {
    /// POST events as JSON to this URL (repeatable; `http://` only).
    #[arg(long, value_name = "URL", env = "ORCHESTRATOR_NOTIFY_WEBHOOK")]
    pub(crate) notify_webhook: Vec<String>,
    /// Log events (structured, target `orchestrator::notify`).
    #[arg(long)]
    pub(crate) notify_log: bool,
    /// Which events the flag-configured sinks receive: comma-separated
    /// types, `*` as a wildcard, e.g. `escalation.*,recovery.*`.
    #[arg(
        long,
        value_name = "PATTERNS",
        env = "ORCHESTRATOR_NOTIFY_EVENTS",
        default_value = "*"
    )]
    pub(crate) notify_events: String,
    /// Sign webhook bodies with HMAC-SHA256 under this secret
    /// (`X-Orchestrator-Signature: sha256=<hex>`).
    #[arg(
        long,
        value_name = "SECRET",
        env = "ORCHESTRATOR_NOTIFY_SECRET",
        hide_env_values = true
    )]
    pub(crate) notify_secret: Option<String>,
    /// Append events a webhook could not deliver to this file (JSON lines).
    #[arg(long, value_name = "FILE", env = "ORCHESTRATOR_NOTIFY_DEAD_LETTER")]
    pub(crate) notify_dead_letter: Option<PathBuf>,
    /// Sinks from a file (YAML or JSON), besides those of the flags.
    #[arg(long, value_name = "FILE", env = "ORCHESTRATOR_NOTIFY_CONFIG")]
    pub(crate) notify_config: Option<PathBuf>,
}

/// The `--notify-config` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyFile {
    sinks: Vec<SinkEntry>,
}

/// One sink of the file.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum SinkEntry {
    Log {
        #[serde(default = "all_events")]
        events: String,
        #[serde(default)]
        queue: Option<usize>,
    },
    Webhook {
        url: String,
        #[serde(default = "all_events")]
        events: String,
        /// The secret itself, or…
        #[serde(default)]
        secret: Option<String>,
        /// …the environment variable holding it.
        #[serde(default)]
        secret_env: Option<String>,
        #[serde(default)]
        dead_letter: Option<PathBuf>,
        #[serde(default)]
        timeout: Option<HumanDuration>,
        #[serde(default)]
        max_attempts: Option<u32>,
        #[serde(default)]
        initial_backoff: Option<HumanDuration>,
        #[serde(default)]
        max_backoff: Option<HumanDuration>,
        #[serde(default)]
        queue: Option<usize>,
    },
}

fn all_events() -> String {
    "*".into()
}

fn filter(events: &str, what: &str) -> Result<EventFilter, CliError> {
    events
        .parse()
        .map_err(|e| CliError::Usage(format!("{what}: {e}")))
}

fn webhook(
    config: WebhookConfig,
    filter: EventFilter,
    queue: Option<usize>,
) -> Result<Route, CliError> {
    let sink = WebhookSink::new(config).map_err(|e| CliError::Usage(e.to_string()))?;
    let route = Route::new(Arc::new(sink), filter);
    Ok(match queue {
        Some(q) => route.queue(q),
        None => route,
    })
}

impl NotifyArgs {
    /// The configured routes; empty when no sink is configured.
    pub(crate) fn routes(&self) -> Result<Vec<Route>, CliError> {
        let mut routes = Vec::new();
        if !self.notify_webhook.is_empty() || self.notify_log {
            let events = filter(&self.notify_events, "--notify-events")?;
            for url in &self.notify_webhook {
                let mut c = WebhookConfig::new(url.clone());
                c.secret = self.notify_secret.clone();
                c.dead_letter = self.notify_dead_letter.clone();
                routes.push(webhook(c, events.clone(), None)?);
            }
            if self.notify_log {
                routes.push(Route::new(Arc::new(LogSink), events));
            }
        }
        if let Some(file) = &self.notify_config {
            routes.extend(file_routes(file)?);
        }
        Ok(routes)
    }

    /// Starts delivering `feed` to the configured sinks; `None` without any.
    pub(crate) fn start(
        &self,
        feed: Subscription,
        store: Arc<dyn Store>,
    ) -> Result<Option<Dispatcher>, CliError> {
        let routes = self.routes()?;
        if routes.is_empty() {
            return Ok(None);
        }
        Ok(Some(Dispatcher::with_feed(feed, store, routes)))
    }
}

fn file_routes(file: &Path) -> Result<Vec<Route>, CliError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::Usage(format!("--notify-config {}: {e}", file.display())))?;
    let bad = |e: String| CliError::Usage(format!("--notify-config {}: {e}", file.display()));
    // JSON is YAML, so one parser reads both.
    let parsed: NotifyFile = serde_norway::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let mut routes = Vec::new();
    for (i, entry) in parsed.sinks.into_iter().enumerate() {
        let what = format!("--notify-config {}: sinks[{i}].events", file.display());
        match entry {
            SinkEntry::Log { events, queue } => {
                let route = Route::new(Arc::new(LogSink), filter(&events, &what)?);
                routes.push(match queue {
                    Some(q) => route.queue(q),
                    None => route,
                });
            }
            SinkEntry::Webhook {
                url,
                events,
                secret,
                secret_env,
                dead_letter,
                timeout,
                max_attempts,
                initial_backoff,
                max_backoff,
                queue,
            } => {
                let mut c = WebhookConfig::new(url);
                c.secret = match (secret, secret_env) {
                    (Some(_), Some(_)) => {
                        return Err(bad(format!(
                            "sinks[{i}]: give secret or secret_env, not both"
                        )))
                    }
                    (Some(s), None) => Some(s),
                    (None, Some(var)) => Some(std::env::var(&var).map_err(|_| {
                        bad(format!("sinks[{i}]: environment variable {var} is not set"))
                    })?),
                    (None, None) => None,
                };
                c.dead_letter = dead_letter;
                if let Some(t) = timeout {
                    c.timeout = t.get();
                }
                if let Some(n) = max_attempts {
                    c.max_attempts = n;
                }
                if let Some(d) = initial_backoff {
                    c.initial_backoff = d.get();
                }
                if let Some(d) = max_backoff {
                    c.max_backoff = d.get();
                }
                routes.push(webhook(c, filter(&events, &what)?, queue)?);
            }
        }
    }
    Ok(routes)
}

/// Delivers what is left, for at most [`CLOSE_GRACE`], then reports drops
/// and failures on the log.
pub(crate) async fn close(dispatcher: Option<Dispatcher>) {
    let Some(d) = dispatcher else {
        return;
    };
    match tokio::time::timeout(CLOSE_GRACE, d.close()).await {
        Ok(stats) => {
            for s in stats.sinks.iter().filter(|s| s.failed + s.dropped > 0) {
                tracing::warn!(sink = %s.name, failed = s.failed, dropped = s.dropped,
                    "some notifications were not delivered");
            }
        }
        Err(_) => tracing::warn!(
            "notification sinks did not finish within {}s; undelivered events are dropped",
            CLOSE_GRACE.as_secs()
        ),
    }
}
