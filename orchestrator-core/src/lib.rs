//! The heart of **orchestrator**: an embeddable engine that runs jobs —
//! directed acyclic graphs of nodes, usually test executions — in parallel,
//! journals every state change, and recovers from failure without re-running
//! finished work.
//!
//! # The model in one example
//!
//! A [`JobSpec`] (from JSON, YAML or the builder) is validated and compiled
//! into a [`Dag`]; the [`Executor`] runs it over a [`Store`] (where the journal
//! lives) and a runner [`Registry`] (which maps each node's `type` to the
//! [`Runner`] that executes it).
//!
//! ```
//! use std::sync::Arc;
//! use orchestrator_core::{Executor, JobSpec, JobState, MemoryStore, NodeState};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let spec = JobSpec::from_json(r#"{
//!   "name": "Test Suite Execution",
//!   "dag_definition": {
//!     "nodes": [
//!       {"id": "lint", "type": "noop"},
//!       {"id": "unit", "type": "noop", "depends_on": ["lint"]},
//!       {"id": "report", "type": "noop", "depends_on": ["unit"], "trigger": "all_done"}
//!     ],
//!     "edges": []
//!   }
//! }"#)?;
//! let executor = Executor::builder(Arc::new(MemoryStore::new())).start().await?;
//! let id = executor.submit(spec, "alice").await?;
//! let status = executor.wait(&id).await?;
//! assert_eq!(status.state, JobState::Succeeded);
//! assert!(status.nodes.iter().all(|n| n.state == NodeState::Succeeded));
//! # Ok(()) }
//! ```
//!
//! # Module map
//!
//! | module | what it holds |
//! |---|---|
//! | [`spec`] | [`JobSpec`] / [`NodeSpec`]: the submitted definition (serde + builder), trigger rules |
//! | [`validate`](mod@validate) | every problem of a spec at once, with paths and codes; [`Limits`] |
//! | [`dag`] | [`Dag`]: the compiled plan (CSR adjacency, topological order, levels, critical paths) |
//! | [`state`] | the job and node state machines: pure `(state, event) -> (state, effect)` tables; trigger decisions |
//! | [`retry`] | [`RetryPolicy`] and the built-in policies, by failure class, with deterministic jitter |
//! | [`failure`] | [`Failure`] and [`FailureClass`] |
//! | [`flaky`] | test keys, run outcomes, the flakiness score, adaptive retries and quarantine |
//! | [`journal`] | journal [`Record`]s and [`JobView`], the fold that *is* a job's state |
//! | [`store`] | the [`Store`] trait and its contract, [`StoreError`], queries, [`MemoryStore`] |
//! | [`code`] | the [`Node`](code::Node) and [`Job`](code::Job) traits: work defined in Rust, no registry or JSON |
//! | [`runner`] | the [`Runner`] trait, [`RunContext`], [`Registry`], built-in runners |
//! | [`executor`] | the [`Executor`]: scheduling, limits, retries, timeouts, cancellation, recovery, events |
//! | [`recovery`] | recovery and escalation records: when `recovery.initiated` / `recovery.completed` / `escalation.required` are journaled |
//! | [`sweep`] | the stuck-job sweeper: when a job with a live owner counts as stuck, and what a wedged executor does with its jobs |
//! | [`notify`] | the event envelope, per-sink filters, the [`NotificationSink`](notify::NotificationSink) trait, the dispatcher, the log sink |
//! | [`analytics`] | recovery statistics over journals: mean time to recovery, share recovered automatically, retries per node type |
//! | [`duration`], [`time`] | human durations (`"30s"`), injectable clocks, job ids |
//! | `testkit` | (feature `testkit`) the conformance suite every [`Store`] runs |
//!
//! # Invariants
//!
//! 1. A node that reached `succeeded` is never run again for that job run.
//! 2. No state change is acted on before it is durable in the store.
//! 3. Every input gets a clear, typed error and leaves stored data untouched;
//!    nothing panics on bad input.
//! 4. This crate does no storage or network I/O of its own; time and
//!    randomness are injectable, so tests are deterministic.

pub mod analytics;
pub mod breaker;
pub mod classify;
pub mod code;
pub mod dag;
pub mod duration;
pub mod executor;
pub mod failure;
pub mod flaky;
pub mod journal;
pub mod notify;
pub mod policy;
pub mod recovery;
pub mod retry;
pub mod runner;
pub mod spec;
pub mod state;
pub mod store;
pub mod sweep;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod time;
pub mod validate;

pub use dag::Dag;
pub use duration::HumanDuration;
pub use executor::{
    DeadLetterError, Executor, ExecutorConfig, ExecutorError, JobStatus, LeaseConfig, NodeStatus,
    Recovery, RecoveryFailure,
};
pub use failure::{Failure, FailureClass};
pub use journal::{Event, JobSummary, JobView, Record};
pub use retry::{
    Backoff, ClassRetrySpec, Jitter, Policy, PolicyRegistry, RetryContext, RetryDefaults,
    RetryPolicy, RetrySpec,
};
pub use runner::{Registry, RunContext, Runner};
pub use spec::{CompensateSpec, DagDefinition, Edge, JobSpec, NodeSpec, OnFailure, TriggerRule};
pub use state::{JobState, NodeState};
pub use store::{MemoryStore, Store, StoreError, StoreExt};
pub use time::{Clock, JobId, ManualClock, SystemClock, Timestamp};
pub use validate::{validate, Limits, Problem, ProblemCode, ValidationErrors};

/// Re-exports for this crate's macros; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use async_trait::async_trait;
}
