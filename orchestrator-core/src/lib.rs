//! Core of orchestrator (crate docs being written).

pub mod dag;
pub mod duration;
pub mod executor;
pub mod failure;
pub mod journal;
pub mod retry;
pub mod runner;
pub mod spec;
pub mod state;
pub mod store;
pub mod time;
pub mod validate;

pub use dag::Dag;
pub use duration::HumanDuration;
pub use executor::{Executor, ExecutorConfig, ExecutorError, JobStatus, NodeStatus};
pub use failure::{Failure, FailureClass};
pub use journal::{Event, JobSummary, JobView, Record};
pub use retry::{PolicyRegistry, RetryContext, RetryDefaults, RetryPolicy, RetrySpec};
pub use runner::{Registry, RunContext, Runner};
pub use spec::{CompensateSpec, DagDefinition, Edge, JobSpec, NodeSpec, OnFailure, TriggerRule};
pub use state::{JobState, NodeState};
pub use store::{MemoryStore, Store, StoreError, StoreExt};
pub use time::{Clock, JobId, ManualClock, SystemClock, Timestamp};
pub use validate::{validate, Limits, Problem, ProblemCode, ValidationErrors};
