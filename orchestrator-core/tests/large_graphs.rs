//! Large inputs: "a million-node DAG is an ordinary input", so a big DAG
//! must compile on an ordinary thread stack. (A big cycle is in
//! `long_cycle.rs`: a stack overflow aborts the whole test binary.)

use std::thread;

use orchestrator_core::{Dag, JobSpec, Limits, NodeSpec, PolicyRegistry};

/// The stack of a tokio worker thread and of a test thread.
const STACK: usize = 2 * 1024 * 1024;

/// Runs `f` on a thread with a 2 MiB stack, as the executor would.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    thread::Builder::new()
        .stack_size(STACK)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

/// `n0 -> n1 -> ... -> n{n-1}`.
fn chain(n: usize) -> JobSpec {
    let nodes = (0..n).map(|i| {
        let node = NodeSpec::new(format!("n{i}"), "noop");
        if i == 0 {
            node
        } else {
            node.depends_on([format!("n{}", i - 1)])
        }
    });
    JobSpec::builder("chain").nodes(nodes).build()
}

#[test]
fn a_long_chain_compiles() {
    let n = 100_000;
    let dag = on_small_stack(move || {
        Dag::compile(&chain(n), &Limits::default(), &PolicyRegistry::default()).unwrap()
    });
    assert_eq!(dag.len(), n);
    assert_eq!(dag.depth() as usize, n);
    assert_eq!(dag.critical_path().len(), n);
    assert_eq!(dag.critical_path_len(0) as usize, n);
    assert_eq!(dag.level(n as u32 - 1) as usize, n - 1);
}

#[test]
fn a_wide_fan_out_and_fan_in_compiles() {
    let n = 100_000;
    let mut nodes = vec![NodeSpec::new("source", "noop")];
    nodes.extend((0..n).map(|i| NodeSpec::new(format!("w{i}"), "noop").depends_on(["source"])));
    nodes.push(NodeSpec::new("sink", "noop").depends_on((0..n).map(|i| format!("w{i}"))));
    let spec = JobSpec::builder("wide").nodes(nodes).build();
    let dag = on_small_stack(move || {
        Dag::compile(&spec, &Limits::default(), &PolicyRegistry::default()).unwrap()
    });
    assert_eq!(dag.len(), n + 2);
    assert_eq!(dag.depth(), 3);
    assert_eq!(dag.successors(0).len(), n);
    assert_eq!(dag.indegree(n as u32 + 1) as usize, n);
    assert_eq!(dag.levels()[1].len(), n);
}
