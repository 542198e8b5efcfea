//! The executor's side of the dead-letter queue: classifying a final
//! failure, writing entries once their records are durable, and the
//! library operations ([`Executor::dead_letters`], [`Executor::dead_letter`],
//! [`Executor::requeue`], [`Executor::discard`]).
//!
//! Every operation journals first and writes the store's entry second, so
//! a crash between the two never loses a decision: the entry is re-derived
//! from the journal ([`dead_letter::from_journal`]) by recovery, or by
//! repeating the operation, which then completes and answers as the first
//! call would have.
//!
//! ```
//! use std::sync::Arc;
//! use orchestrator_core::runner::{Outcome, ScriptedRunner};
//! use orchestrator_core::store::dead_letter::{DeadLetterQuery, DeadLetterReason};
//! use orchestrator_core::{Executor, FailureClass, JobSpec, JobState, MemoryStore, NodeSpec, Registry};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runner = ScriptedRunner::new();
//! runner.script("deploy", [Outcome::fail(FailureClass::Permanent)]); // then it passes
//! let mut registry = Registry::with_builtins();
//! registry.register("scripted", runner);
//! let executor = Executor::builder(Arc::new(MemoryStore::new())).registry(registry).start().await?;
//! let spec = JobSpec::builder("release")
//!     .node(NodeSpec::new("deploy", "scripted"))
//!     .node(NodeSpec::new("smoke", "noop").depends_on(["deploy"]))
//!     .build();
//! let id = executor.submit(spec, "alice").await?;
//! assert_eq!(executor.wait(&id).await?.state, JobState::Failed);
//!
//! let page = executor.dead_letters(&DeadLetterQuery::default()).await?;
//! let entry = &page.dead_letters[0];
//! assert_eq!((entry.node.as_str(), entry.reason), ("deploy", DeadLetterReason::NonRetryable));
//! executor.requeue(&entry.id, "alice").await?;
//! // `deploy` runs again, then `smoke`, which never ran the first time.
//! assert_eq!(executor.wait(&id).await?.state, JobState::Succeeded);
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Activation, Batch, Command, Executor, ExecutorError, Shared, WeakCommandTx};
use crate::dag::Dag;
use crate::failure::FailureClass;
use crate::journal::{Event, JobView, Record};
use crate::retry::{seed_for, RetryContext, RetryPolicy};
use crate::state::{JobState, NodeState};
use crate::store::dead_letter::{
    self, DeadLetter, DeadLetterId, DeadLetterPage, DeadLetterQuery, DeadLetterReason,
    DeadLetterStatus, Resolution, Resolve, MAX_REASON_LEN,
};
use crate::store::{Store, StoreError, StoreExt};
use crate::time::JobId;

/// Why a dead-letter operation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeadLetterError {
    /// No entry with this id.
    #[error("dead letter {0} not found")]
    NotFound(DeadLetterId),
    /// The entry was already requeued or discarded.
    #[error("dead letter {id} is already {status}")]
    Conflict {
        /// The entry.
        id: DeadLetterId,
        /// Its status.
        status: DeadLetterStatus,
    },
    /// The entry cannot be requeued (see the message).
    #[error("dead letter {id} cannot be requeued: {why}")]
    NotRequeueable {
        /// The entry.
        id: DeadLetterId,
        /// Why not.
        why: String,
    },
    /// A discard needs a reason of 1 to [`MAX_REASON_LEN`] bytes.
    #[error("a discard needs a reason of 1 to {MAX_REASON_LEN} bytes")]
    BadReason,
}

/// Why a node that failed for good is dead-lettered: a class its policy
/// would not retry even on a first failure is `non_retryable`; otherwise its
/// budget is spent.
pub(super) fn reason(
    policy: &dyn RetryPolicy,
    job: &JobId,
    node: u32,
    class: FailureClass,
) -> DeadLetterReason {
    let first = RetryContext {
        attempt: 1,
        class,
        seed: seed_for(job, node),
        elapsed: Duration::ZERO,
    };
    if policy.max_attempts() > 1 && policy.next_delay(&first).is_none() {
        DeadLetterReason::NonRetryable
    } else {
        DeadLetterReason::RetriesExhausted
    }
}

/// Writes every entry the job's journal implies (idempotent), off the
/// scheduler task, retrying storage failures with the executor's backoff,
/// then tells the scheduler.
pub(super) fn spawn_write(
    shared: Arc<Shared>,
    job: JobId,
    done: WeakCommandTx,
    slot: usize,
    gen: u64,
) {
    tokio::spawn(async move {
        let mut failures = 0;
        loop {
            match write_entries(&*shared.store, &job).await {
                Ok(()) => break,
                Err(e) if e.is_retryable() => {
                    failures += 1;
                    let delay = shared.config.store_retry_delay(failures);
                    tracing::warn!(%job, error = %e, retry_in_ms = delay.as_millis() as u64,
                        "writing dead letters failed; retrying");
                    tokio::time::sleep(delay).await;
                    if done.upgrade().is_none() {
                        return;
                    }
                }
                Err(e) => {
                    // Retrying cannot help; the journal keeps the facts and
                    // the next recovery of the job tries again.
                    tracing::error!(%job, error = %e, "writing dead letters failed");
                    break;
                }
            }
        }
        if let Some(tx) = done.upgrade() {
            let _ = tx.send(Command::DeadLettersStored { slot, gen });
        }
    });
}

async fn write_entries(store: &dyn Store, job: &JobId) -> Result<(), StoreError> {
    let records = store.read_all(job, 0).await?;
    for entry in dead_letter::from_journal(&records) {
        store.put_dead_letter(&entry).await?;
    }
    Ok(())
}

/// A dead-letter request, checked against the journal.
struct Checked {
    view: JobView,
    /// The entry as the journal has it.
    entry: DeadLetter,
}

impl Executor {
    /// Dead-letter entries, filtered and paginated, newest first.
    pub async fn dead_letters(
        &self,
        query: &DeadLetterQuery,
    ) -> Result<DeadLetterPage, ExecutorError> {
        Ok(self.shared().store.list_dead_letters(query).await?)
    }

    /// One dead-letter entry.
    pub async fn dead_letter(&self, id: &DeadLetterId) -> Result<DeadLetter, ExecutorError> {
        self.shared()
            .store
            .dead_letter(id)
            .await?
            .ok_or_else(|| DeadLetterError::NotFound(id.clone()).into())
    }

    /// Loads the entry and its job's journal; settles an operation the
    /// journal already holds but the store does not (a crash between the
    /// two): `Ok(Err(answer))` is that operation's answer.
    async fn check_dead_letter(
        &self,
        id: &DeadLetterId,
        same: impl Fn(&Resolution) -> bool,
    ) -> Result<Result<Checked, ()>, ExecutorError> {
        let store = &self.shared().store;
        let stored = self.dead_letter(id).await?;
        if stored.status != DeadLetterStatus::Open {
            return Err(DeadLetterError::Conflict {
                id: id.clone(),
                status: stored.status,
            }
            .into());
        }
        let records = store.read_all(&id.job, 0).await?;
        let Some(entry) = dead_letter::from_journal(&records)
            .into_iter()
            .find(|d| d.id == *id)
        else {
            // The store has an entry its job's journal does not imply.
            return Err(ExecutorError::Store(StoreError::Corrupt {
                job: Some(id.job.clone()),
                key: format!("dead_letters/{id}"),
                message: "the job's journal has no such dead letter".into(),
            }));
        };
        if let Some(resolution) = &entry.resolution {
            store.put_dead_letter(&entry).await?;
            return if same(resolution) {
                Ok(Err(()))
            } else {
                Err(DeadLetterError::Conflict {
                    id: id.clone(),
                    status: entry.status,
                }
                .into())
            };
        }
        let view = store.load_view(&id.job).await?;
        Ok(Ok(Checked { view, entry }))
    }

    /// Marks the store's entry resolved after its record is durable. A
    /// concurrent resolution of the same entry cannot pass the journal's
    /// compare-and-set, so a conflict here is only a repeat.
    async fn resolve_stored(
        &self,
        entry: &DeadLetter,
        resolution: Resolution,
    ) -> Result<(), ExecutorError> {
        let store = &self.shared().store;
        match store.resolve_dead_letter(&entry.id, &resolution).await? {
            Resolve::Done(_) | Resolve::Conflict(_) => Ok(()),
            Resolve::Missing => Ok(store.put_dead_letter(&entry.resolved(resolution)).await?),
        }
    }

    /// Runs a dead-lettered node again in its own job, with a fresh attempt
    /// budget: the failed job is reopened (journaled `execution.reopened`,
    /// back to `running`), the node is journaled `dead_letter.requeued`, and
    /// the nodes downstream of it that were skipped or upstream-failed wait
    /// for their upstream nodes again (`node.reset`), so the job continues
    /// past the node when it succeeds. Returns the job's id; wait on it with
    /// [`Executor::wait`].
    ///
    /// Only the latest dead letter of a node that is still failed, in a job
    /// that ended `failed`, can be requeued; a compensation's dead letter
    /// cannot (roll the job back again instead). An entry already resolved
    /// is [`DeadLetterError::Conflict`]; repeating a requeue that was
    /// interrupted after it was journaled completes it.
    pub async fn requeue(&self, id: &DeadLetterId, by: &str) -> Result<JobId, ExecutorError> {
        let shared = self.shared();
        let checked = self
            .check_dead_letter(id, |r| r.status == DeadLetterStatus::Requeued && r.by == by)
            .await?;
        let Ok(Checked { view, entry }) = checked else {
            return Ok(id.job.clone());
        };
        if !view.state.is_terminal() {
            return Err(ExecutorError::Busy {
                job: id.job.clone(),
                state: view.state,
            });
        }
        // A finished job's lease ended with it; claiming it fences off any
        // other executor asked to requeue or roll it back at the same time.
        let lease = self.claim_finished(&id.job, view.state).await?;
        match self.requeue_leased(id, by, &entry, lease.token).await {
            Ok(activation) => {
                shared.leases.hold(lease);
                self.command(Command::Activate(Box::new(activation)))?;
            }
            Err(e) => {
                let _ = shared.store.release(&lease).await;
                return Err(e);
            }
        }
        // The activated job re-writes its entries from the journal (and
        // does not finish before they are written), so a failure here only
        // delays the entry's new status.
        let resolution = Resolution {
            status: DeadLetterStatus::Requeued,
            by: by.to_owned(),
            at: shared.clock.now(),
            reason: None,
        };
        if let Err(error) = self.resolve_stored(&entry, resolution).await {
            tracing::warn!(dead_letter = %id, %error, "requeued; the entry is updated later");
        }
        Ok(id.job.clone())
    }

    /// The journaling part of [`Executor::requeue`], under the job's lease
    /// (`fence`): checks the job as it is now and journals the requeue.
    async fn requeue_leased(
        &self,
        id: &DeadLetterId,
        by: &str,
        entry: &DeadLetter,
        fence: u64,
    ) -> Result<Activation, ExecutorError> {
        let shared = self.shared();
        let mut view = shared.store.load_view(&id.job).await?;
        let refuse = |why: String| -> ExecutorError {
            DeadLetterError::NotRequeueable {
                id: id.clone(),
                why,
            }
            .into()
        };
        if entry.reason == DeadLetterReason::CompensationFailed {
            return Err(refuse(
                "it is a failed compensation; roll the job back again instead".into(),
            ));
        }
        if view.state != JobState::Failed {
            return Err(refuse(format!(
                "its job is {}; only a failed job is reopened",
                view.state
            )));
        }
        let node = &view.nodes[id.node as usize];
        if node.dead_letters != id.n
            || !matches!(node.state(), NodeState::Failed | NodeState::TimedOut)
        {
            return Err(refuse(format!(
                "the node is {} and this is not its latest dead letter",
                node.state()
            )));
        }
        let policies = shared.resolve_policies(view.spec()).await?;
        let dag = Dag::compile(view.spec(), &shared.config.limits, &policies)?;
        // Nodes below the requeued one that never ran because of it.
        let mut reset = Vec::new();
        let mut seen = vec![false; view.nodes.len()];
        let mut stack = dag.successors(id.node).to_vec();
        while let Some(v) = stack.pop() {
            if std::mem::replace(&mut seen[v as usize], true) {
                continue;
            }
            if matches!(
                view.nodes[v as usize].state(),
                NodeState::Skipped | NodeState::UpstreamFailed
            ) {
                reset.push(v);
                stack.extend_from_slice(dag.successors(v));
            }
        }
        reset.sort_unstable();
        let mut events = vec![
            Event::Reopened {
                reason: Some(format!("dead letter {id} requeued by {by}")),
            },
            Event::DeadLetterRequeued {
                node: id.node,
                entry: id.n,
                by: by.to_owned(),
            },
        ];
        events.extend(reset.into_iter().map(|node| Event::NodeReset { node }));
        let expected = view.version;
        let now = shared.clock.now();
        let records = self
            .journal_direct(&mut view, expected, events, now, fence)
            .await?;
        shared.events.send(Batch {
            job: id.job.clone(),
            records,
            journaled: true,
        });
        Ok(Activation::new(view, dag, false, fence, policies))
    }

    /// Leaves a dead letter as it is: journals `dead_letter.discarded` on its
    /// job with `by` and `reason` (1 to [`MAX_REASON_LEN`] bytes), then marks
    /// the entry discarded. A second discard (or a discard after a requeue)
    /// is [`DeadLetterError::Conflict`]; repeating a discard that was
    /// interrupted after it was journaled completes it.
    pub async fn discard(
        &self,
        id: &DeadLetterId,
        by: &str,
        reason: &str,
    ) -> Result<(), ExecutorError> {
        if reason.trim().is_empty() || reason.len() > MAX_REASON_LEN {
            return Err(DeadLetterError::BadReason.into());
        }
        let shared = self.shared();
        let checked = self
            .check_dead_letter(id, |r| {
                r.status == DeadLetterStatus::Discarded
                    && r.by == by
                    && r.reason.as_deref() == Some(reason)
            })
            .await?;
        let Ok(Checked { view, entry }) = checked else {
            return Ok(());
        };
        let event = Event::DeadLetterDiscarded {
            node: id.node,
            entry: id.n,
            by: by.to_owned(),
            reason: reason.to_owned(),
        };
        // A job running here is journaled by the scheduler, which owns its
        // version; any other job directly, with compare-and-set.
        let mut view = Some(view);
        let mut tries = 0;
        let at = loop {
            let (reply, rx) = oneshot::channel();
            self.command(Command::Journal {
                job: id.job.clone(),
                event: event.clone(),
                reply,
            })?;
            match rx.await.map_err(|_| ExecutorError::ShutDown)? {
                Ok(()) => break shared.clock.now(),
                Err(ExecutorError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            let mut v = match view.take() {
                Some(v) => v,
                None => shared.store.load_view(&id.job).await?,
            };
            if !v.state.is_terminal() {
                // Unfinished and not running here: another executor owns it.
                return Err(ExecutorError::Busy {
                    job: id.job.clone(),
                    state: v.state,
                });
            }
            let lease = self.claim_finished(&id.job, v.state).await?;
            let now = shared.clock.now();
            let expected = v.version;
            let appended = self
                .journal_direct(&mut v, expected, vec![event.clone()], now, lease.token)
                .await;
            let _ = shared.store.release(&lease).await;
            match appended {
                Ok(records) => {
                    shared.events.send(Batch {
                        job: id.job.clone(),
                        records,
                        journaled: true,
                    });
                    break now;
                }
                // The job was activated or written meanwhile: try again.
                Err(ExecutorError::Store(StoreError::Conflict { .. })) if tries < 3 => tries += 1,
                Err(e) => return Err(e),
            }
        };
        self.resolve_stored(
            &entry,
            Resolution {
                status: DeadLetterStatus::Discarded,
                by: by.to_owned(),
                at,
                reason: Some(reason.to_owned()),
            },
        )
        .await
    }

    /// Folds `events` into `view` and appends them at `expected` (for jobs
    /// no scheduler here owns).
    async fn journal_direct(
        &self,
        view: &mut JobView,
        expected: u64,
        events: Vec<Event>,
        now: crate::time::Timestamp,
        fence: u64,
    ) -> Result<Vec<Record>, ExecutorError> {
        let mut records = Vec::with_capacity(events.len());
        for event in events {
            let record = Record {
                seq: view.version + 1,
                at: now,
                event,
            };
            view.apply(&record)
                .map_err(|e| ExecutorError::Store(StoreError::Invalid(e.to_string())))?;
            records.push(record);
        }
        self.shared()
            .store
            .append(&view.header.id, expected, &records, &view.progress(), fence)
            .await?;
        Ok(records)
    }
}
