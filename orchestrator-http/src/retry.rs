//! `POST /job/{id}/retry`: a new job that re-runs the part of a finished
//! job that did not succeed.
//!
//! The engine has no in-place re-run yet, so a retry is a new job built
//! from the stored spec: every node that did not end `succeeded` (failed,
//! timed out, cancelled, skipped, upstream-failed, dead-lettered,
//! compensated) is kept; succeeded nodes are left out, and dependencies on
//! them are dropped because they are satisfied. Edges between kept nodes
//! stay. The new job carries the label `retry_of=<id>` and belongs to the
//! original job's owner.
//!
//! Limits, documented in the API: outputs of succeeded upstream nodes are
//! not passed to the re-run nodes (the engine has no data passing between
//! nodes yet), and a kept node's trigger rule sees only its kept upstream
//! nodes.

use std::collections::HashSet;

use orchestrator_core::journal::JobView;
use orchestrator_core::{JobSpec, NodeState};

/// The label naming the job a retry re-runs.
pub const RETRY_OF: &str = "retry_of";

/// The spec re-running every node of `view` that did not succeed, or `None`
/// when every node succeeded.
pub fn retry_spec(view: &JobView) -> Option<JobSpec> {
    let spec = view.spec();
    let keep: HashSet<&str> = spec
        .nodes()
        .iter()
        .zip(&view.nodes)
        .filter(|(_, n)| n.state() != NodeState::Succeeded)
        .map(|(s, _)| s.id.as_str())
        .collect();
    if keep.is_empty() {
        return None;
    }
    let mut out = JobSpec::clone(spec);
    out.dag_definition
        .nodes
        .retain(|n| keep.contains(n.id.as_str()));
    for node in &mut out.dag_definition.nodes {
        node.depends_on.retain(|d| keep.contains(d.as_str()));
    }
    out.dag_definition
        .edges
        .retain(|e| keep.contains(e.from.as_str()) && keep.contains(e.to.as_str()));
    out.labels
        .insert(RETRY_OF.to_owned(), view.id().to_string());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_core::runner::{Outcome, ScriptedRunner};
    use orchestrator_core::{Executor, JobState, MemoryStore, NodeSpec, Registry, StoreExt};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn keeps_what_did_not_succeed_and_drops_satisfied_dependencies() {
        let scripted = ScriptedRunner::new();
        scripted.script(
            "bad",
            [Outcome::fail(orchestrator_core::FailureClass::Permanent)],
        );
        let mut registry = Registry::with_builtins();
        registry.register("scripted", scripted.clone());
        let store = Arc::new(MemoryStore::new());
        let executor = Executor::builder(store.clone())
            .registry(registry)
            .start()
            .await
            .unwrap();
        let spec = JobSpec::builder("suite")
            .node(NodeSpec::new("ok", "noop"))
            .node(NodeSpec::new("bad", "scripted").depends_on(["ok"]))
            .node(NodeSpec::new("after", "noop").depends_on(["bad", "ok"]))
            .node(NodeSpec::new("side", "noop"))
            .edge("bad", "after")
            .build();
        let id = executor.submit(spec, "alice").await.unwrap();
        assert_eq!(executor.wait(&id).await.unwrap().state, JobState::Failed);
        let view = store.load_view(&id).await.unwrap();
        let retry = retry_spec(&view).unwrap();
        let ids: Vec<&str> = retry.nodes().iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["bad", "after"]);
        assert!(retry.nodes()[0].depends_on.is_empty());
        assert_eq!(retry.nodes()[1].depends_on, ["bad"]);
        assert_eq!(retry.dag_definition.edges.len(), 1);
        assert_eq!(retry.labels[RETRY_OF], id.to_string());
        // A job whose every node succeeded has nothing to retry.
        let ok = executor
            .submit(
                JobSpec::builder("fine")
                    .node(NodeSpec::new("a", "noop"))
                    .build(),
                "alice",
            )
            .await
            .unwrap();
        executor.wait(&ok).await.unwrap();
        assert!(retry_spec(&store.load_view(&ok).await.unwrap()).is_none());
    }
}
