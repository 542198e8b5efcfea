//! `orchestrator stats`: recovery analytics over the stored jobs.

use std::fmt::Write as _;

use clap::Args;
use orchestrator_core::analytics::{self, RecoveryStats};
use orchestrator_core::store::{JobQuery, Store};
use orchestrator_core::{Clock, SystemClock, Timestamp};

use crate::cli::{parse_duration, StoreArgs};
use crate::error::{CliError, EXIT_OK};
use crate::progress::Sink;
use crate::store::open_store;

/// `orchestrator stats`.
#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Only jobs created at or after this time: RFC 3339, or a duration
    /// ago such as `24h` or `7d`.
    #[arg(long, value_name = "TIME")]
    pub(crate) since: Option<String>,
    /// Only jobs created before this time (same forms as `--since`).
    #[arg(long, value_name = "TIME")]
    pub(crate) until: Option<String>,
    /// Only this owner's jobs (`local` for the command line's).
    #[arg(long, value_name = "OWNER")]
    pub(crate) owner: Option<String>,
    /// Read at most this many jobs, newest first.
    #[arg(long, value_name = "N", default_value_t = analytics::DEFAULT_MAX_JOBS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub(crate) max_jobs: usize,
    /// Print the statistics as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// An RFC 3339 time, or `now` minus a duration.
fn parse_time(flag: &str, s: &str, now: Timestamp) -> Result<Timestamp, CliError> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        if let Ok(ms) = u64::try_from(t.timestamp_millis()) {
            return Ok(Timestamp(ms));
        }
    }
    match parse_duration(s) {
        Ok(d) => Ok(Timestamp(
            now.as_millis()
                .saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )),
        Err(_) => Err(CliError::Usage(format!(
            "{flag}: {s:?} is neither an RFC 3339 time nor a duration such as 24h"
        ))),
    }
}

pub(crate) async fn stats(args: StatsArgs) -> Result<u8, CliError> {
    let now = SystemClock.now();
    let query = JobQuery {
        owner: args.owner.clone(),
        created_after: args
            .since
            .as_deref()
            .map(|s| parse_time("--since", s, now))
            .transpose()?,
        created_before: args
            .until
            .as_deref()
            .map(|s| parse_time("--until", s, now))
            .transpose()?,
        ..JobQuery::default()
    };
    let store_name = args.store.store.to_string();
    let store: std::sync::Arc<dyn Store> = open_store(&args.store.store).await?;
    let stats = analytics::collect(store.as_ref(), &query, args.max_jobs)
        .await
        .map_err(|e| CliError::from_store(e, &store_name))?;
    if args.json {
        Sink::Stdout.line(
            &serde_json::to_string_pretty(&stats)
                .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string())),
        );
    } else {
        Sink::Stdout.text(&render(&stats));
    }
    Ok(EXIT_OK)
}

fn secs(ms: u64) -> String {
    format!("{:.3}s", ms as f64 / 1000.0)
}

/// The human form.
fn render(s: &RecoveryStats) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "{k:<26} {v}");
    };
    line(
        "jobs",
        format!(
            "{}{}{}",
            s.jobs,
            if s.jobs_unreadable > 0 {
                format!(" ({} unreadable)", s.jobs_unreadable)
            } else {
                String::new()
            },
            if s.truncated {
                " (limit reached: more jobs match)"
            } else {
                ""
            }
        ),
    );
    line("nodes run", s.nodes.to_string());
    line("attempts", s.attempts.to_string());
    let classes: Vec<String> = s
        .failed_attempts_by_class
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    line(
        "failed attempts",
        if classes.is_empty() {
            s.failed_attempts.to_string()
        } else {
            format!("{} ({})", s.failed_attempts, classes.join(", "))
        },
    );
    line(
        "failures",
        format!(
            "{}: {} recovered, {} unrecovered, {} still retrying",
            s.failures, s.recovered, s.unrecovered, s.open
        ),
    );
    line(
        "recovered automatically",
        s.recovered_share
            .map_or("-".into(), |r| format!("{:.1}%", r * 100.0)),
    );
    line(
        "mean time to recovery",
        match (s.mean_time_to_recovery_ms, s.max_time_to_recovery_ms) {
            (Some(mean), Some(max)) => format!("{} (max {})", secs(mean), secs(max)),
            _ => "-".into(),
        },
    );
    line("escalations", s.escalations.to_string());
    if !s.node_types.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<24} {:>7} {:>9} {:>8} {:>9}",
            "NODE TYPE", "NODES", "ATTEMPTS", "RETRIES", "PER NODE"
        );
        for (t, n) in &s.node_types {
            let _ = writeln!(
                out,
                "{t:<24} {:>7} {:>9} {:>8} {:>9.2}",
                n.nodes, n.attempts, n.retries, n.retries_per_node
            );
        }
    }
    if !s.recoveries.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<24} {:>9} {:>9} {:>7} {:>9} {:>10}",
            "RECOVERY", "INITIATED", "SUCCEEDED", "FAILED", "CANCELLED", "MEAN"
        );
        for (k, r) in &s.recoveries {
            let _ = writeln!(
                out,
                "{k:<24} {:>9} {:>9} {:>7} {:>9} {:>10}",
                r.initiated,
                r.succeeded,
                r.failed,
                r.cancelled,
                r.mean_duration_ms.map_or("-".into(), secs)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_a_duration_ago() {
        let now = Timestamp(1_700_000_000_000);
        assert_eq!(
            parse_time("--since", "2023-11-14T22:13:20Z", now).unwrap(),
            now
        );
        assert_eq!(
            parse_time("--since", "1h", now).unwrap(),
            Timestamp(1_700_000_000_000 - 3_600_000)
        );
        assert!(matches!(
            parse_time("--since", "yesterday", now),
            Err(CliError::Usage(_))
        ));
    }
}
