//! Run with `cargo run -p example-custom-runner`.
//!
//! Embeds the engine in an application: registers a custom runner for a node
//! type (`test_case`), submits a small test pipeline, follows the live event
//! stream, and prints the final status. One test is flaky on its first
//! attempt, so the retry policy shows.

// An example program talks to its user on stdout.
#![allow(clippy::print_stdout)]

use std::sync::Arc;

use async_trait::async_trait;
use orchestrator_core::{
    Event, Executor, Failure, JobSpec, MemoryStore, NodeSpec, Registry, RunContext, Runner,
    TriggerRule,
};
use serde_json::{json, Value};

/// Runs one test case of the application's own test harness.
struct TestCase;

#[async_trait]
impl Runner for TestCase {
    async fn run(&self, ctx: RunContext) -> Result<Value, Failure> {
        let name = ctx.params()["name"]
            .as_str()
            .unwrap_or("unnamed")
            .to_owned();
        let flaky = ctx.params()["flaky"].as_bool().unwrap_or(false);
        // Long tests beat their heartbeat so the engine knows they are alive.
        ctx.heartbeat().beat();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if flaky && ctx.attempt() == 1 {
            // Classified failures drive the retry policy: transient ones retry.
            return Err(Failure::transient(format!("{name}: connection reset")));
        }
        Ok(json!({ "test": name, "assertions": 12 }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut registry = Registry::with_builtins();
    registry.register("test_case", TestCase);

    let executor = Executor::builder(Arc::new(MemoryStore::new()))
        .registry(registry)
        .start()
        .await?;

    let test = |id: &str, flaky: bool| {
        NodeSpec::new(id, "test_case")
            .params(json!({ "name": id, "flaky": flaky }))
            .depends_on(["build"])
    };
    let spec = JobSpec::builder("checkout service tests")
        .label("team", "payments")
        .node(NodeSpec::new("build", "noop"))
        .node(test("api", false))
        .node(test("db", true))
        .node(test("ui", false))
        .node(
            NodeSpec::new("report", "noop")
                .depends_on(["api", "db", "ui"])
                .trigger(TriggerRule::AllDone),
        )
        .build();

    // Journal records name nodes by index (their position in the spec).
    let node_ids: Vec<String> = spec.nodes().iter().map(|n| n.id.clone()).collect();
    let mut events = executor.subscribe();
    let id = executor.submit(spec, "example").await?;
    println!("submitted job {id}");
    let printer = tokio::spawn(async move {
        while let Ok(Some(n)) = events.recv().await {
            let event = &n.record.event;
            let node = event
                .node()
                .map(|i| node_ids[i as usize].as_str())
                .unwrap_or("");
            println!("  {:>3} {:<22} {node}", n.record.seq, event.name());
            if matches!(event, Event::Finished { .. }) {
                break;
            }
        }
    });

    let status = executor.wait(&id).await?;
    let _ = printer.await;
    println!(
        "\njob {} ended {} ({}%)",
        status.id, status.state, status.progress_percent
    );
    for node in &status.nodes {
        let error = node
            .last_error
            .as_ref()
            .map(|e| format!("  last error: {e}"))
            .unwrap_or_default();
        println!(
            "  {:<8} {:<10} attempts={}{error}",
            node.id,
            node.state.as_str(),
            node.attempts
        );
    }
    Ok(())
}
