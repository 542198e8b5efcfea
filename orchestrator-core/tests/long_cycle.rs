//! A cycle tens of thousands of nodes long must come back as a `cycle`
//! problem. In its own test binary because a stack overflow aborts the whole
//! process, which would hide the results of every other test beside it.

use std::thread;

use orchestrator_core::{Dag, JobSpec, Limits, NodeSpec, PolicyRegistry, ProblemCode};

/// The stack of a tokio worker thread and of a test thread.
const STACK: usize = 2 * 1024 * 1024;

/// BUG (dag.rs, `report_cycles`): `petgraph::algo::tarjan_scc` is recursive,
/// one frame per node on the DFS path, so a spec whose cycle is a few
/// thousand nodes long (about 5,000 in a debug build) overflows a 2 MiB stack
/// and aborts the process instead of returning a `cycle` problem. Any client
/// of the HTTP adapter can send such a spec.
#[test]
fn a_long_cycle_is_reported_without_exhausting_the_stack() {
    let n = 100_000;
    let mut nodes: Vec<NodeSpec> = (0..n)
        .map(|i| {
            NodeSpec::new(format!("n{i}"), "noop").depends_on([format!("n{}", (i + n - 1) % n)])
        })
        .collect();
    nodes.push(NodeSpec::new("after", "noop").depends_on(["n0"]));
    let spec = JobSpec::builder("ring").nodes(nodes).build();
    // Run where the executor would: on a thread with a 2 MiB stack.
    let errors = thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || {
            Dag::compile(&spec, &Limits::default(), &PolicyRegistry::default()).unwrap_err()
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(errors.problems().len(), 1);
    let cycle = &errors.problems()[0];
    assert_eq!(cycle.code, ProblemCode::Cycle);
    assert_eq!(cycle.path, "/dag_definition/nodes/0");
    assert!(cycle.message.contains("n0 -> n1 -> n2"), "starts at n0");
}
