//! The scenarios.

use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator_core::{
    Dag, Executor, ExecutorConfig, JobState, Limits, MemoryStore, PolicyRegistry, StoreExt,
};
use orchestrator_sled::SledStore;
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
    /// Nodes of the durable (sled) run.
    pub durable_nodes: usize,
    /// Repetitions (the median is reported).
    pub runs: usize,
}

impl Size {
    /// The full benchmark.
    pub const FULL: Size = Size {
        dispatch_nodes: 100_000,
        scale_nodes: 1_000_000,
        durable_nodes: 100_000,
        runs: 5,
    };
    /// The quick run (under a minute in debug builds too).
    pub const QUICK: Size = Size {
        dispatch_nodes: 2_000,
        scale_nodes: 20_000,
        durable_nodes: 2_000,
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

/// What one journaled run on a [`SledStore`] did.
#[derive(Clone, Copy, Debug)]
pub struct DurableRun {
    /// From submit to the job's end.
    pub elapsed: Duration,
    /// Records journaled (the create's included).
    pub records: u64,
    /// Appends that wrote them (the create included).
    pub appends: u64,
    /// Flushes the group committer performed.
    pub flushes: u64,
    /// Mean encoded size of a record, bytes (what the store writes per record).
    pub record_bytes: usize,
}

/// Runs `shape` through the executor on a durable [`SledStore`] in a fresh
/// temporary directory.
pub async fn run_durable(shape: &Shape, concurrency: usize) -> DurableRun {
    let store = Arc::new(SledStore::temporary().expect("a temporary sled store opens"));
    let config = ExecutorConfig {
        max_concurrent_nodes: concurrency,
        ..ExecutorConfig::default()
    };
    let executor = Executor::builder(store.clone())
        .config(config)
        .start()
        .await
        .expect("executor starts");
    let start = Instant::now();
    let id = executor
        .submit(shape.spec(), "bench")
        .await
        .expect("valid spec");
    let status = executor.wait(&id).await.expect("job finishes");
    let elapsed = start.elapsed();
    assert_eq!(
        status.state,
        JobState::Succeeded,
        "benchmark job must succeed"
    );
    let stats = store.stats();
    // The journal's mean encoded size: format byte + JSON, as stored.
    let records = store.read_all(&id, 0).await.expect("journal reads");
    let bytes: usize = records
        .iter()
        .map(|r| 1 + serde_json::to_vec(r).map_or(0, |v| v.len()))
        .sum();
    // The Submitted record carries the whole spec; leave it out of the mean.
    let first = records
        .first()
        .map_or(0, |r| 1 + serde_json::to_vec(r).map_or(0, |v| v.len()));
    DurableRun {
        elapsed,
        records: stats.records,
        appends: stats.writes,
        flushes: stats.flushes,
        record_bytes: (bytes - first) / records.len().saturating_sub(1).max(1),
    }
}

/// The baseline of the durable scenario: `total` records of `bytes` bytes
/// inserted into raw sled (same mode as the store) in batches of `batch`
/// with one `flush` per batch; returns the elapsed time.
pub fn raw_sled(total: u64, batch: u64, bytes: usize) -> Duration {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "orchestrator-bench-raw-sled-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let db = sled::Config::new()
        .path(&dir)
        .mode(sled::Mode::HighThroughput)
        .open()
        .expect("raw sled opens");
    let tree = db.open_tree("records").expect("tree");
    let value = vec![b'x'; bytes];
    let start = Instant::now();
    let mut seq = 0u64;
    while seq < total {
        let mut b = sled::Batch::default();
        for _ in 0..batch.min(total - seq) {
            seq += 1;
            let mut key = b"bench-job\0".to_vec();
            key.extend_from_slice(&seq.to_be_bytes());
            b.insert(key, value.as_slice());
        }
        tree.apply_batch(b).expect("batch applies");
        db.flush().expect("flush");
    }
    let elapsed = start.elapsed();
    drop(tree);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
    elapsed
}

/// Scenario 3: journaled execution on the durable sled store (every append
/// flushed before the executor acts) against raw sled batch inserts of the
/// same records with one flush per batch of the executor's mean size.
pub fn durable(size: Size) -> Vec<Line> {
    let n = size.durable_nodes;
    let width = (n / 100).max(1);
    let shape = shapes::layered(n / width, width);
    let rt = runtime();
    reset_peak();
    let mut runs: Vec<DurableRun> = (0..size.runs.max(1))
        .map(|_| rt.block_on(run_durable(&shape, 64)))
        .collect();
    runs.sort_by_key(|r| r.elapsed);
    let ours = runs[runs.len() / 2];
    let batch = (ours.records / ours.appends.max(1)).max(1);
    let base = median(size.runs, || {
        raw_sled(ours.records, batch, ours.record_bytes)
    });
    let per_sec = |records: u64, d: Duration| records as f64 / d.as_secs_f64();
    vec![Line {
        scenario: "durable/layered".into(),
        ours: per_sec(ours.records, ours.elapsed),
        baseline: per_sec(ours.records, base),
        unit: "records/s",
        peak_rss: peak_rss(),
        note: format!(
            "{} no-op nodes, concurrency 64, SledStore durable: {} records in {} appends \
             (mean {batch}/append, {} B/record), {} flushes; baseline: raw sled apply_batch of \
             {batch} records of {} B + flush() per batch",
            shape.len(),
            ours.records,
            ours.appends,
            ours.record_bytes,
            ours.flushes,
            ours.record_bytes
        ),
    }]
}
