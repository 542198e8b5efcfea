//! Work defined in code: the [`Node`] and [`Job`] traits.
//!
//! The data path (a [`JobSpec`] in JSON or YAML plus a runner [`Registry`]
//! keyed by node `type`) suits plans written by people and submitted over
//! HTTP or the CLI. An application that defines its work in Rust can skip
//! both: a type implementing [`Node`] is a unit of work that runs itself, and
//! a [`Job`] assembles nodes and their dependencies. Both paths compile to the
//! same spec and run on the same executor; a code job is journaled, retried
//! and recovered like any other.
//!
//! Each code node runs under the node type `code:<job name>/<node id>`. To
//! resume code jobs after a restart, hand the job to
//! [`ExecutorBuilder::job`](crate::executor::ExecutorBuilder::job) so those
//! types are registered before recovery starts.
//!
//! ```
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use orchestrator_core::code::{Job, Node};
//! use orchestrator_core::{Executor, Failure, JobSpec, JobState, MemoryStore, NodeSpec, RunContext};
//! use serde_json::{json, Value};
//!
//! struct Compile;
//!
//! #[async_trait]
//! impl Node for Compile {
//!     fn id(&self) -> &str { "compile" }
//!     async fn run(&self, _ctx: RunContext) -> Result<Value, Failure> {
//!         Ok(json!({"artifacts": 3}))
//!     }
//! }
//!
//! struct Test(&'static str);
//!
//! #[async_trait]
//! impl Node for Test {
//!     fn id(&self) -> &str { self.0 }
//!     fn spec(&self) -> NodeSpec {
//!         NodeSpec::new(self.0, "").depends_on(["compile"])
//!     }
//!     async fn run(&self, ctx: RunContext) -> Result<Value, Failure> {
//!         Ok(json!({"suite": self.0, "attempt": ctx.attempt()}))
//!     }
//! }
//!
//! struct Pipeline;
//!
//! impl Job for Pipeline {
//!     fn name(&self) -> &str { "pipeline" }
//!     fn nodes(&self) -> Vec<Arc<dyn Node>> {
//!         vec![Arc::new(Compile), Arc::new(Test("unit")), Arc::new(Test("e2e"))]
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let executor = Executor::builder(Arc::new(MemoryStore::new())).start().await?;
//! let id = executor.submit_job(&Pipeline, "alice").await?;
//! let status = executor.wait(&id).await?;
//! assert_eq!(status.state, JobState::Succeeded);
//! assert_eq!(status.node("e2e").unwrap().output["suite"], "e2e");
//! # Ok(()) }
//! ```

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::failure::Failure;
use crate::runner::{Registry, RunContext, Runner};
use crate::spec::{JobSpec, JobSpecBuilder, NodeSpec};

/// A unit of work that runs itself.
#[async_trait]
pub trait Node: Send + Sync + 'static {
    /// The node's id, unique within its job.
    fn id(&self) -> &str;

    /// The node's spec: dependencies, retry policy, timeouts, trigger rule,
    /// priority, pool. Its `id` and `type` are set by the engine, so
    /// `NodeSpec::new(id, "")` is a fine start. By default: no dependencies
    /// and the job's defaults.
    fn spec(&self) -> NodeSpec {
        NodeSpec::new(self.id(), "")
    }

    /// Runs one attempt (see [`Runner::run`] for the contract).
    async fn run(&self, ctx: RunContext) -> Result<Value, Failure>;
}

/// A job assembled from [`Node`]s.
pub trait Job: Send + Sync {
    /// The job's name. Code jobs are told apart by it, so keep it stable
    /// across releases if their runs must be resumable.
    fn name(&self) -> &str;

    /// The job's nodes.
    fn nodes(&self) -> Vec<Arc<dyn Node>>;

    /// Sets job-level options (priority, labels, timeout, limits, default
    /// retry policy, pools) on the spec being built. By default: none.
    fn configure(&self, spec: JobSpecBuilder) -> JobSpecBuilder {
        spec
    }
}

/// The node type a code node runs under.
pub fn node_type(job: &str, node: &str) -> String {
    format!("code:{job}/{node}")
}

/// Compiles a code job into its spec and the runners its node types need.
pub fn compile(job: &dyn Job) -> (JobSpec, Registry) {
    let mut registry = Registry::new();
    let mut builder = job.configure(JobSpec::builder(job.name()));
    for node in job.nodes() {
        let kind = node_type(job.name(), node.id());
        let mut spec = node.spec();
        spec.id = node.id().to_owned();
        spec.kind.clone_from(&kind);
        builder = builder.node(spec);
        registry.register(kind, NodeRunner(node));
    }
    (builder.build(), registry)
}

/// Runs a [`Node`] as a [`Runner`].
struct NodeRunner(Arc<dyn Node>);

#[async_trait]
impl Runner for NodeRunner {
    async fn run(&self, ctx: RunContext) -> Result<Value, Failure> {
        self.0.run(ctx).await
    }
}
