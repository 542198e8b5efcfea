//! Node-level figures for `/metrics`, folded from the executor's event
//! feed like the job figures: node durations by type and final state,
//! retries by failure class, running and ready-but-waiting nodes,
//! recoveries, flaky and quarantined nodes.
//!
//! Durations are journal time: from a node's first `node.started` to its
//! final record, both as journaled. Node types come from the job's
//! `execution.submitted` record; a job this process only saw resumed counts
//! under its types once the gauges are rebuilt (see [`NodeMetrics::resync`]),
//! and as `unknown` until then.
//!
//! **Recoveries** are counted by kind, from what the journal shows:
//! `job_resumed` (a job picked up from its journal after a restart,
//! `recovery.initiated`) and `retry_after_failure` (a failed attempt that
//! will be retried). A new kind is one more arm in [`NodeMetrics::observe`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use orchestrator_core::executor::Notification;
use orchestrator_core::{Event, JobId, JobSpec, NodeState, Timestamp};

/// Upper bounds of the node-duration histogram, in seconds.
pub(crate) const NODE_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; NODE_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, bound) in NODE_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }
}

/// What is tracked per unfinished job.
#[derive(Debug, Default)]
pub(crate) struct JobNodes {
    /// The spec, for node types (absent for a job only seen resumed).
    pub(crate) spec: Option<Arc<JobSpec>>,
    /// First start of each node that started.
    pub(crate) started: HashMap<u32, Timestamp>,
    /// Nodes running now.
    pub(crate) running: HashSet<u32>,
    /// Nodes ready and waiting for a slot.
    pub(crate) ready: HashSet<u32>,
}

impl JobNodes {
    /// The tracking of a job as its view stands.
    pub(crate) fn from_view(view: &orchestrator_core::JobView) -> Self {
        let mut j = Self {
            spec: Some(Arc::clone(view.spec())),
            ..Self::default()
        };
        for (i, n) in view.nodes.iter().enumerate() {
            let i = i as u32;
            match n.state() {
                NodeState::Running => {
                    j.running.insert(i);
                }
                NodeState::Ready => {
                    j.ready.insert(i);
                }
                _ => {}
            }
            if let (false, Some(t)) = (n.state().is_finished(), n.first_started_at) {
                j.started.insert(i, t);
            }
        }
        j
    }

    fn kind(&self, node: u32) -> &str {
        self.spec
            .as_ref()
            .and_then(|s| s.nodes().get(node as usize))
            .map_or("unknown", |n| n.kind.as_str())
    }
}

/// The node figures.
#[derive(Debug, Default)]
pub(crate) struct NodeMetrics {
    jobs: HashMap<JobId, JobNodes>,
    /// (type, final state) → durations.
    durations: BTreeMap<(String, &'static str), Histogram>,
    /// Failure class → attempts that will be retried.
    retries: BTreeMap<&'static str, u64>,
    /// Kind → recoveries.
    recoveries: BTreeMap<&'static str, u64>,
    flaky: u64,
    quarantined: u64,
    /// (budget kind) → adaptive-attempt decisions.
    adaptive: BTreeMap<&'static str, u64>,
}

impl NodeMetrics {
    /// Folds one journaled event in.
    pub(crate) fn observe(&mut self, n: &Notification) {
        let at = n.record.at;
        let job = self.jobs.entry(n.job.clone()).or_default();
        let mut ended: Option<(u32, NodeState)> = None;
        match &n.record.event {
            Event::Submitted { header } => job.spec = Some(Arc::clone(&header.spec)),
            Event::RecoveryStarted => *self.recoveries.entry("job_resumed").or_default() += 1,
            Event::NodeReady { node } | Event::NodeRetryDue { node } => {
                job.ready.insert(*node);
            }
            Event::NodeStarted { node, .. } => {
                job.ready.remove(node);
                job.running.insert(*node);
                job.started.entry(*node).or_insert(at);
            }
            Event::NodeSucceeded { node, attempt, .. } => {
                job.running.remove(node);
                if *attempt > 1 {
                    self.flaky += 1;
                }
                ended = Some((*node, NodeState::Succeeded));
            }
            Event::NodeFailed {
                node,
                failure,
                retry_in_ms,
                ..
            } => {
                job.running.remove(node);
                if retry_in_ms.is_some() {
                    *self.retries.entry(failure.class.as_str()).or_default() += 1;
                    *self.recoveries.entry("retry_after_failure").or_default() += 1;
                } else {
                    let state = if failure.class == orchestrator_core::FailureClass::Timeout {
                        NodeState::TimedOut
                    } else if failure.class == orchestrator_core::FailureClass::Cancelled {
                        NodeState::Cancelled
                    } else {
                        NodeState::Failed
                    };
                    ended = Some((*node, state));
                }
            }
            Event::NodeCancelled { node } => {
                job.ready.remove(node);
            }
            Event::FlakyDecision { decision, .. } => {
                if decision.quarantine.is_some() {
                    self.quarantined += 1;
                }
                match decision.attempts {
                    Some(orchestrator_core::flaky::AttemptBudget::Extra(_)) => {
                        *self.adaptive.entry("extra").or_default() += 1;
                    }
                    Some(orchestrator_core::flaky::AttemptBudget::AtMost(_)) => {
                        *self.adaptive.entry("at_most").or_default() += 1;
                    }
                    None => {}
                }
            }
            Event::Finished { .. } => {
                self.jobs.remove(&n.job);
                return;
            }
            _ => {}
        }
        if let Some((node, state)) = ended {
            if let Some(start) = job.started.remove(&node) {
                let secs = at.saturating_since(start) as f64 / 1000.0;
                let kind = job.kind(node).to_owned();
                self.durations
                    .entry((kind, state.as_str()))
                    .or_default()
                    .observe(secs);
            }
        }
    }

    /// Replaces the per-job tracking with what the executor runs now (after
    /// the feed lagged): jobs not listed are forgotten.
    pub(crate) fn resync(&mut self, jobs: HashMap<JobId, JobNodes>) {
        self.jobs = jobs;
    }

    /// Appends the exposition text.
    pub(crate) fn render(&self, out: &mut String) {
        out.push_str("# HELP orchestrator_node_duration_seconds Node run time from its first attempt's start to its final result, by node type and final state.\n# TYPE orchestrator_node_duration_seconds histogram\n");
        for ((kind, state), h) in &self.durations {
            let kind = super::escape(kind);
            for (bound, n) in NODE_BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(out, "orchestrator_node_duration_seconds_bucket{{type=\"{kind}\",state=\"{state}\",le=\"{bound}\"}} {n}");
            }
            let _ = writeln!(out, "orchestrator_node_duration_seconds_bucket{{type=\"{kind}\",state=\"{state}\",le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(
                out,
                "orchestrator_node_duration_seconds_sum{{type=\"{kind}\",state=\"{state}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "orchestrator_node_duration_seconds_count{{type=\"{kind}\",state=\"{state}\"}} {}",
                h.count
            );
        }
        out.push_str("# HELP orchestrator_node_retries_total Failed attempts that will be retried, by failure class.\n# TYPE orchestrator_node_retries_total counter\n");
        for (class, n) in &self.retries {
            let _ = writeln!(
                out,
                "orchestrator_node_retries_total{{class=\"{class}\"}} {n}"
            );
        }
        let running: usize = self.jobs.values().map(|j| j.running.len()).sum();
        let ready: usize = self.jobs.values().map(|j| j.ready.len()).sum();
        out.push_str("# HELP orchestrator_nodes_running Node attempts running now.\n# TYPE orchestrator_nodes_running gauge\n");
        let _ = writeln!(out, "orchestrator_nodes_running {running}");
        out.push_str("# HELP orchestrator_nodes_queued Nodes ready to run and waiting for a slot (queue depth).\n# TYPE orchestrator_nodes_queued gauge\n");
        let _ = writeln!(out, "orchestrator_nodes_queued {ready}");
        out.push_str("# HELP orchestrator_recoveries_total Recoveries by kind: jobs resumed from their journal, retries after failed attempts.\n# TYPE orchestrator_recoveries_total counter\n");
        for kind in ["job_resumed", "retry_after_failure"] {
            let n = self.recoveries.get(kind).copied().unwrap_or(0);
            let _ = writeln!(out, "orchestrator_recoveries_total{{kind=\"{kind}\"}} {n}");
        }
        out.push_str("# HELP orchestrator_flaky_nodes_total Nodes that failed, then passed on a retry, in their run.\n# TYPE orchestrator_flaky_nodes_total counter\n");
        let _ = writeln!(out, "orchestrator_flaky_nodes_total {}", self.flaky);
        out.push_str("# HELP orchestrator_quarantined_nodes_total Nodes run quarantined (their failure does not count).\n# TYPE orchestrator_quarantined_nodes_total counter\n");
        let _ = writeln!(
            out,
            "orchestrator_quarantined_nodes_total {}",
            self.quarantined
        );
        out.push_str("# HELP orchestrator_adaptive_attempts_total Adaptive-retry decisions, by budget: extra attempts for flaky tests, at most N for failing ones.\n# TYPE orchestrator_adaptive_attempts_total counter\n");
        for budget in ["extra", "at_most"] {
            let n = self.adaptive.get(budget).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "orchestrator_adaptive_attempts_total{{budget=\"{budget}\"}} {n}"
            );
        }
    }
}
