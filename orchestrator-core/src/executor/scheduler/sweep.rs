//! The scheduler's half of the stuck-job sweeper (see [`crate::sweep`]):
//! after the dispatch of the iteration that read the keeper's ping, judge
//! every active job by what it waits for, and report the stuck ones once
//! per stall episode.

use crate::state::{JobState, NodeState};
use crate::sweep::{Quiet, Waits};

use super::{ActiveJob, Scheduler};

impl Scheduler {
    /// Judges every active job; journals (and, when its journal cannot
    /// take it now, reports at once) the escalation of each newly stuck one.
    pub(super) fn sweep(&mut self) {
        let now = self.now;
        let grace = self.shared.config.lease.stall_grace;
        for slot in 0..self.jobs.len() {
            let Some(job) = self.jobs[slot].as_mut() else {
                continue;
            };
            if let Some(reported) = job.stuck {
                if job.durable <= reported {
                    // Still the episode already reported.
                    continue;
                }
                job.stuck = None;
            }
            if job.store_failures == 0 && !job.pending.is_empty() {
                // This iteration journals records of the job: not quiet.
                continue;
            }
            let quiet = Quiet {
                since: job.durable_at,
                failing_since: (job.store_failures > 0).then_some(job.failing_since),
            };
            // Nothing is stuck within the grace: most sweeps end here,
            // without looking at any node.
            let start = quiet.failing_since.unwrap_or(quiet.since);
            if u128::from(now.saturating_since(start)) <= grace.as_millis() {
                continue;
            }
            let waits = self.waits(slot);
            if crate::sweep::is_stuck(now, quiet, &waits, grace) {
                self.report_stuck(slot, now.saturating_since(quiet.since));
            }
        }
    }

    /// What job `slot` legitimately waits for (see [`crate::sweep`]).
    fn waits(&self, slot: usize) -> Waits {
        let mut waits = Waits::default();
        let Some(job) = self.jobs[slot].as_ref() else {
            return waits;
        };
        if matches!(job.view.state, JobState::Running | JobState::Recovering) && !job.finishing {
            waits.deadline = job.timeout_at;
        }
        let cancel_grace = self.shared.config.cancel_grace;
        // Attempts of a job being cancelled stop within the grace.
        let stopping = job.attempts.cancel.is_cancelled();
        let specs = job.view.spec().nodes();
        for (i, node) in job.view.nodes.iter().enumerate() {
            let running = match node.state() {
                NodeState::Running => true,
                NodeState::Compensating => node.compensation_running,
                NodeState::RetryWaiting => false,
                _ => continue,
            };
            if running {
                waits.attempt(if stopping {
                    Some(cancel_grace)
                } else {
                    specs[i]
                        .timeout
                        .map(|t| t.get().saturating_add(cancel_grace))
                });
            } else if let Some(due) = node.retry_at {
                waits.timer(due);
            }
        }
        if self.held_back(slot, job) {
            waits.unbounded = true;
        }
        waits
    }

    /// Whether ready nodes of `job` wait for a concurrency slot (global,
    /// per job, pool) or an open breaker: waits without a time limit. A
    /// ready node waiting for none of these is not waiting legitimately.
    fn held_back(&self, slot: usize, job: &ActiveJob) -> bool {
        let full = self.running >= self.shared.config.max_concurrent_nodes.max(1)
            || job.running >= job.max_concurrency;
        (full && !job.ready.is_empty())
            || job.pools.iter().any(|p| !p.parked.is_empty())
            || self.breakers.iter().any(|b| {
                b.parked
                    .iter()
                    .any(|&(s, gen, _)| s == slot && gen == job.gen)
            })
    }

    /// Escalates job `slot`, quiet for `quiet_ms`: queues the escalation to
    /// be journaled, and publishes it at once when the job's appends are
    /// failing (its record lands only when the store heals). A job whose
    /// final record is already queued only gets it published.
    fn report_stuck(&mut self, slot: usize, quiet_ms: u64) {
        let now = self.now;
        let Some(job) = self.jobs[slot].as_mut() else {
            return;
        };
        let event = crate::recovery::stuck_job_escalation(quiet_ms);
        let failing = job.store_failures > 0;
        tracing::error!(job = %job.id(), quiet_ms, failing_appends = failing,
            "job stuck: nothing journaled for longer than it may wait; escalating");
        // Nothing may follow a final record (still waiting for the store):
        // the report is all there is.
        let over = job.view.state.is_terminal();
        if failing || over {
            self.shared.report_unjournaled(job.id(), event.clone());
        }
        if !over {
            job.emit(now, event);
        }
        job.stuck = Some(job.view.version);
        self.mark(slot);
    }
}
