//! The scenarios.

use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator_core::{
    Dag, Executor, ExecutorConfig, JobState, Limits, MemoryStore, PolicyRegistry,
};
use petgraph::graph::{DiGraph, NodeIndex};

use crate::baseline;
use crate::report::{median, peak_rss, reset_peak, Line};
use crate::shapes::{self, Shape};

/// Sizes of a run.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    /// Nodes per dispatch DAG.
    pub dispatch_nodes: usize,
    /// Nodes of the scale DAG.
    pub scale_nodes: usize,
    /// Repetitions (the median is reported).
    pub runs: usize,
}

impl Size {
    /// The full benchmark.
    pub const FULL: Size = Size {
        dispatch_nodes: 100_000,
        scale_nodes: 1_000_000,
        runs: 5,
    };
    /// The quick run (under a minute in debug builds too).
    pub const QUICK: Size = Size {
        dispatch_nodes: 2_000,
        scale_nodes: 20_000,
        runs: 1,
    };
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
}

/// Timings of one executor run.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// `submit`: validation, compilation and the durable create.
    pub submit: Duration,
    /// From the submission being durable to the job finishing.
    pub run: Duration,
}

/// Runs `shape` through the executor on a `MemoryStore` with journaling on.
pub async fn run_ours(shape: &Shape, concurrency: usize) -> Timing {
    let spec = shape.spec();
    let config = ExecutorConfig {
        max_concurrent_nodes: concurrency,
        ..ExecutorConfig::default()
    };
    let executor = Executor::builder(Arc::new(MemoryStore::new()))
        .config(config)
        .start()
        .await
        .expect("executor starts");
    let start = Instant::now();
    let id = executor.submit(spec, "bench").await.expect("valid spec");
    let submitted = Instant::now();
    let status = executor.wait(&id).await.expect("job finishes");
    let done = Instant::now();
    assert_eq!(
        status.state,
        JobState::Succeeded,
        "benchmark job must succeed"
    );
    Timing {
        submit: submitted - start,
        run: done - submitted,
    }
}

/// Scenario 1: dispatch overhead per node against the hand-written scheduler.
pub fn dispatch(size: Size) -> Vec<Line> {
    let n = size.dispatch_nodes;
    let width = (n / 100).max(1);
    let shapes = [
        shapes::chain(n),
        shapes::fan(n),
        shapes::layered(n / width, width),
    ];
    let rt = runtime();
    shapes
        .into_iter()
        .map(|shape| {
            let shape = Arc::new(shape);
            reset_peak();
            // `PROFILE_OURS=1` skips the baseline, for profiling our side alone.
            let profile_ours = std::env::var_os("PROFILE_OURS").is_some();
            let base = median(if profile_ours { 0 } else { size.runs }, || {
                let start = Instant::now();
                rt.block_on(baseline::run(Arc::clone(&shape), 64));
                start.elapsed()
            });
            let mut submit = Vec::new();
            let ours = median(size.runs, || {
                let t = rt.block_on(run_ours(&shape, 64));
                submit.push(t.submit);
                t.run
            });
            submit.sort_unstable();
            let submit = submit.get(submit.len() / 2).copied().unwrap_or_default();
            let per = |d: Duration| d.as_nanos() as f64 / shape.len() as f64;
            Line {
                scenario: format!("dispatch/{}", shape.name),
                ours: per(ours),
                baseline: per(base),
                unit: "ns/node",
                peak_rss: peak_rss(),
                note: format!(
                    "{} nodes, {} edges, concurrency 64, MemoryStore journaling every transition; \
                     baseline: hand-written scheduler; submit (validate + compile + create) took {:.0} ns/node more",
                    shape.len(),
                    shape.edges(),
                    per(submit)
                ),
            }
        })
        .collect()
}

/// Scenario 2: validate + compile a large layered DAG against petgraph's own
/// build + toposort of the same graph, then run it; memory per node.
pub fn scale(size: Size) -> Vec<Line> {
    let width = 1000.min(size.scale_nodes / 10).max(1);
    let shape = shapes::layered(size.scale_nodes / width, width);
    let spec = shape.spec();
    let edges: Vec<(u32, u32)> = shape
        .succ
        .iter()
        .enumerate()
        .flat_map(|(f, s)| s.iter().map(move |&t| (f as u32, t)))
        .collect();
    let petgraph = median(size.runs, || {
        let start = Instant::now();
        let mut g: DiGraph<(), ()> = DiGraph::with_capacity(shape.len(), edges.len());
        for _ in 0..shape.len() {
            g.add_node(());
        }
        for &(f, t) in &edges {
            g.add_edge(NodeIndex::new(f as usize), NodeIndex::new(t as usize), ());
        }
        let order = petgraph::algo::toposort(&g, None).expect("acyclic");
        assert_eq!(order.len(), shape.len());
        start.elapsed()
    });
    let ours = median(size.runs, || {
        let start = Instant::now();
        let dag =
            Dag::compile(&spec, &Limits::default(), &PolicyRegistry::default()).expect("valid");
        assert_eq!(dag.len(), shape.len());
        start.elapsed()
    });
    let n = shape.len() as f64;
    let mut lines = vec![Line {
        scenario: "scale/compile".into(),
        ours: ours.as_secs_f64() * 1e3,
        baseline: petgraph.as_secs_f64() * 1e3,
        unit: "ms",
        peak_rss: peak_rss(),
        note: format!(
            "validate + compile {} nodes / {} edges; baseline: petgraph build + toposort",
            shape.len(),
            edges.len()
        ),
    }];

    // Run it: memory is the peak above what the spec itself occupies.
    let rt = runtime();
    drop(edges);
    let before = crate::report::rss();
    reset_peak();
    let timing = rt.block_on(run_ours(&shape, 64));
    let elapsed = timing.submit + timing.run;
    let peak = peak_rss();
    let per_node = peak.saturating_sub(before) as f64 / n;
    lines.push(Line {
        scenario: "scale/run".into(),
        ours: elapsed.as_nanos() as f64 / n,
        baseline: 1024.0,
        unit: "ns/node (baseline column: memory budget B/node)",
        peak_rss: peak,
        note: format!(
            "ran {} no-op nodes; {per_node:.0} B/node of peak memory above the loaded spec",
            shape.len()
        ),
    });
    lines
}
