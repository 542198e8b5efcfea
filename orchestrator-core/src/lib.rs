//! Core of orchestrator (crate docs being written).

pub mod dag;
pub mod duration;
pub mod failure;
pub mod journal;
pub mod retry;
pub mod runner;
pub mod spec;
pub mod state;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod time;
pub mod validate;

pub use dag::Dag;
pub use duration::HumanDuration;
pub use failure::{Failure, FailureClass};
pub use retry::{PolicyRegistry, RetryContext, RetryDefaults, RetryPolicy, RetrySpec};
pub use spec::{CompensateSpec, DagDefinition, Edge, JobSpec, NodeSpec, OnFailure, TriggerRule};
pub use time::{Clock, JobId, ManualClock, SystemClock, Timestamp};
pub use validate::{validate, Limits, Problem, ProblemCode, ValidationErrors};
