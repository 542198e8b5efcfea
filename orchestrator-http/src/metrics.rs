//! `GET /metrics`: Prometheus text exposition, written by hand.
//!
//! Job and node figures come from the executor's event feed (every
//! journaled event passes through it), HTTP figures from the request
//! middleware. Gauges of active jobs by state are rebuilt from the executor
//! and the store whenever the feed lagged (and at the first scrape), so
//! they never drift for long.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use orchestrator_core::executor::Notification;
use orchestrator_core::{Event, JobId, JobState};

mod nodes;
pub(crate) use nodes::JobNodes;
use nodes::NodeMetrics;

/// Upper bounds of the request-duration histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }
}

#[derive(Debug, Default)]
struct Http {
    requests: BTreeMap<(String, String, u16), u64>,
    durations: BTreeMap<String, Histogram>,
}

#[derive(Debug)]
struct Jobs {
    /// States of unfinished jobs, as last seen.
    active: HashMap<JobId, JobState>,
    /// Whether `active` must be rebuilt (start, or the feed lagged).
    stale: bool,
    submitted: u64,
    finished: BTreeMap<&'static str, u64>,
    attempts: u64,
    /// (result, failure class) → count.
    results: BTreeMap<(&'static str, &'static str), u64>,
    /// Nodes that ended without running to a result (skipped, …).
    nodes_ended: BTreeMap<&'static str, u64>,
    /// (cause, journaled) → `escalation.required` events seen.
    escalations: BTreeMap<(&'static str, bool), u64>,
    lagged: u64,
}

/// The figures `/metrics` exposes.
#[derive(Debug)]
pub(crate) struct Metrics {
    http: Mutex<Http>,
    jobs: Mutex<Jobs>,
    nodes: Mutex<NodeMetrics>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Self {
            http: Mutex::new(Http::default()),
            jobs: Mutex::new(Jobs {
                active: HashMap::new(),
                stale: true,
                submitted: 0,
                finished: BTreeMap::new(),
                attempts: 0,
                results: BTreeMap::new(),
                nodes_ended: BTreeMap::new(),
                escalations: BTreeMap::new(),
                lagged: 0,
            }),
            nodes: Mutex::new(NodeMetrics::default()),
        }
    }

    /// Counts one answered request.
    pub(crate) fn request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let mut http = lock(&self.http);
        *http
            .requests
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
        http.durations
            .entry(route.to_owned())
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// Folds one event of the feed in: a journaled record, or a report
    /// the executor could not journal (only counted as an escalation).
    pub(crate) fn observe(&self, n: &Notification) {
        let mut jobs = lock(&self.jobs);
        if let Event::EscalationRequired { cause, .. } = &n.record.event {
            let cause = cause.map_or("unspecified", |c| c.as_str());
            *jobs.escalations.entry((cause, n.journaled)).or_default() += 1;
        }
        if !n.journaled {
            return;
        }
        lock(&self.nodes).observe(n);
        let set = |jobs: &mut Jobs, state: JobState| {
            if state.is_terminal() {
                jobs.active.remove(&n.job);
            } else {
                jobs.active.insert(n.job.clone(), state);
            }
        };
        match &n.record.event {
            Event::Submitted { .. } => {
                jobs.submitted += 1;
                set(&mut jobs, JobState::Pending);
            }
            Event::Queued => set(&mut jobs, JobState::Queued),
            // Recovery of a job being cancelled leaves it cancelling.
            Event::Started | Event::RecoveryFinished
                if jobs.active.get(&n.job) != Some(&JobState::Cancelling) =>
            {
                set(&mut jobs, JobState::Running);
            }
            Event::RecoveryStarted if jobs.active.get(&n.job) != Some(&JobState::Cancelling) => {
                set(&mut jobs, JobState::Recovering);
            }
            Event::CancelRequested { .. } | Event::TimeoutReached => {
                set(&mut jobs, JobState::Cancelling);
            }
            Event::Finished { state } => {
                *jobs.finished.entry(state.as_str()).or_default() += 1;
                set(&mut jobs, *state);
            }
            Event::NodeStarted { .. } => jobs.attempts += 1,
            Event::NodeSucceeded { .. } => {
                *jobs.results.entry(("succeeded", "")).or_default() += 1;
            }
            Event::NodeFailed {
                failure,
                retry_in_ms,
                ..
            } => {
                let result = if retry_in_ms.is_some() {
                    "retry_scheduled"
                } else {
                    "failed"
                };
                *jobs
                    .results
                    .entry((result, failure.class.as_str()))
                    .or_default() += 1;
            }
            Event::NodeSkipped { .. } => *jobs.nodes_ended.entry("skipped").or_default() += 1,
            Event::NodeUpstreamFailed { .. } => {
                *jobs.nodes_ended.entry("upstream_failed").or_default() += 1;
            }
            Event::NodeCancelled { .. } => *jobs.nodes_ended.entry("cancelled").or_default() += 1,
            _ => {}
        }
    }

    /// The event feed dropped events: rebuild the gauges at the next scrape.
    pub(crate) fn lagged(&self, batches: u64) {
        let mut jobs = lock(&self.jobs);
        jobs.lagged += batches;
        jobs.stale = true;
    }

    /// Whether the active-job gauges need rebuilding; clears the flag.
    pub(crate) fn take_stale(&self) -> bool {
        std::mem::take(&mut lock(&self.jobs).stale)
    }

    /// Replaces the active-job gauges with what the executor runs now.
    pub(crate) fn resync(&self, active: HashMap<JobId, JobState>) {
        lock(&self.jobs).active = active;
    }

    /// Replaces the running and ready node gauges' tracking with the
    /// executor's active jobs as they are now.
    pub(crate) fn resync_nodes(&self, jobs: HashMap<JobId, JobNodes>) {
        lock(&self.nodes).resync(jobs);
    }

    /// The exposition text.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        {
            let jobs = lock(&self.jobs);
            out.push_str("# HELP orchestrator_jobs Unfinished jobs by state.\n# TYPE orchestrator_jobs gauge\n");
            for state in JobState::ALL.iter().filter(|s| !s.is_terminal()) {
                let n = jobs.active.values().filter(|s| *s == state).count();
                let _ = writeln!(out, "orchestrator_jobs{{state=\"{state}\"}} {n}");
            }
            out.push_str("# HELP orchestrator_jobs_submitted_total Jobs submitted.\n# TYPE orchestrator_jobs_submitted_total counter\n");
            let _ = writeln!(out, "orchestrator_jobs_submitted_total {}", jobs.submitted);
            out.push_str("# HELP orchestrator_jobs_finished_total Jobs finished, by final state.\n# TYPE orchestrator_jobs_finished_total counter\n");
            for state in JobState::ALL.iter().filter(|s| s.is_terminal()) {
                let n = jobs.finished.get(state.as_str()).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "orchestrator_jobs_finished_total{{state=\"{state}\"}} {n}"
                );
            }
            out.push_str("# HELP orchestrator_node_attempts_total Node attempts started.\n# TYPE orchestrator_node_attempts_total counter\n");
            let _ = writeln!(out, "orchestrator_node_attempts_total {}", jobs.attempts);
            out.push_str("# HELP orchestrator_node_results_total Node attempt results, by result and failure class.\n# TYPE orchestrator_node_results_total counter\n");
            for ((result, class), n) in &jobs.results {
                let _ = writeln!(
                    out,
                    "orchestrator_node_results_total{{result=\"{result}\",class=\"{class}\"}} {n}"
                );
            }
            out.push_str("# HELP orchestrator_nodes_ended_total Nodes that ended without a result of their own, by state.\n# TYPE orchestrator_nodes_ended_total counter\n");
            for (state, n) in &jobs.nodes_ended {
                let _ = writeln!(
                    out,
                    "orchestrator_nodes_ended_total{{state=\"{state}\"}} {n}"
                );
            }
            out.push_str("# HELP orchestrator_escalations_total Escalations (escalation.required), by cause; journaled=\"false\" counts reports the executor could not journal (a stuck job whose executor is wedged or whose appends fail).\n# TYPE orchestrator_escalations_total counter\n");
            for ((cause, journaled), n) in &jobs.escalations {
                let _ = writeln!(
                    out,
                    "orchestrator_escalations_total{{cause=\"{cause}\",journaled=\"{journaled}\"}} {n}"
                );
            }
            out.push_str("# HELP orchestrator_event_feed_lagged_total Event batches the metrics feed missed.\n# TYPE orchestrator_event_feed_lagged_total counter\n");
            let _ = writeln!(out, "orchestrator_event_feed_lagged_total {}", jobs.lagged);
        }
        lock(&self.nodes).render(&mut out);
        let http = lock(&self.http);
        out.push_str("# HELP orchestrator_http_requests_total HTTP requests, by method, route and status.\n# TYPE orchestrator_http_requests_total counter\n");
        for ((method, route, status), n) in &http.requests {
            let _ = writeln!(
                out,
                "orchestrator_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        out.push_str("# HELP orchestrator_http_request_duration_seconds HTTP request duration, by route.\n# TYPE orchestrator_http_request_duration_seconds histogram\n");
        for (route, h) in &http.durations {
            let route = escape(route);
            for (bound, n) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(out, "orchestrator_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}");
            }
            let _ = writeln!(out, "orchestrator_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(
                out,
                "orchestrator_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "orchestrator_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        out
    }
}

/// Escapes a label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_core::journal::Record;
    use orchestrator_core::recovery::EscalationCause;
    use orchestrator_core::{Failure, Timestamp};

    fn note(job: &str, seq: u64, event: Event) -> Notification {
        Notification {
            job: job.parse().unwrap(),
            record: Record {
                seq,
                at: Timestamp(0),
                event,
            },
            journaled: true,
        }
    }

    #[test]
    fn folds_events_into_gauges_and_counters() {
        let m = Metrics::new();
        m.observe(&note("a", 2, Event::Queued));
        m.observe(&note("a", 3, Event::Started));
        m.observe(&note(
            "a",
            4,
            Event::NodeStarted {
                node: 0,
                attempt: 1,
            },
        ));
        m.observe(&note(
            "a",
            5,
            Event::NodeFailed {
                node: 0,
                attempt: 1,
                failure: Box::new(Failure::transient("x")),
                retry_in_ms: Some(5),
            },
        ));
        m.observe(&note("b", 2, Event::Queued));
        m.observe(&note(
            "b",
            3,
            Event::Finished {
                state: JobState::Cancelled,
            },
        ));
        let stuck = Event::EscalationRequired {
            node: None,
            cause: Some(EscalationCause::JobStuck),
            reason: "stuck".into(),
        };
        m.observe(&Notification {
            journaled: false,
            ..note("a", 0, stuck.clone())
        });
        m.observe(&note("a", 6, stuck));
        m.request("GET", "/job/{job_id}", 200, Duration::from_millis(3));
        let text = m.render();
        assert!(
            text.contains("orchestrator_jobs{state=\"running\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("orchestrator_jobs{state=\"queued\"} 0\n"));
        assert!(text.contains("orchestrator_jobs_finished_total{state=\"cancelled\"} 1\n"));
        assert!(text.contains("orchestrator_node_attempts_total 1\n"));
        for journaled in [false, true] {
            assert!(text.contains(&format!(
                "orchestrator_escalations_total{{cause=\"job_stuck\",journaled=\"{journaled}\"}} 1\n"
            )));
        }
        assert!(text.contains(
            "orchestrator_node_results_total{result=\"retry_scheduled\",class=\"transient\"} 1\n"
        ));
        assert!(text.contains("orchestrator_http_requests_total{method=\"GET\",route=\"/job/{job_id}\",status=\"200\"} 1\n"));
        assert!(text.contains("orchestrator_http_request_duration_seconds_bucket{route=\"/job/{job_id}\",le=\"0.005\"} 1\n"));
        assert!(text.contains("orchestrator_http_request_duration_seconds_bucket{route=\"/job/{job_id}\",le=\"0.0025\"} 0\n"));
    }
}
