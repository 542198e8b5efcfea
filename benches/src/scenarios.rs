//! The scenarios.

use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator_core::{
    Dag, Executor, ExecutorConfig, JobSpec, JobState, Limits, MemoryStore, PolicyRegistry, StoreExt,
};
use orchestrator_sled::SledStore;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::baseline;
use crate::dagrs_baseline;
use crate::probe::{Input, Probe};
use crate::report::{median, median_of, peak_rss, reset_peak, Line};
use crate::shapes::{self, Shape};

/// The dispatch scenario's shapes, in the order they run.
pub const DISPATCH_SHAPES: [&str; 3] = ["chain", "fan", "layered"];

/// Sizes of a run.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    /// Nodes per dispatch DAG.
    pub dispatch_nodes: usize,
    /// Nodes of the scale DAG.
    pub scale_nodes: usize,
    /// Nodes of the durable (sled) run.
    pub durable_nodes: usize,
    /// Jobs of 10 nodes of the `jobs` scenario.
    pub jobs: usize,
    /// Repetitions (the median is reported).
    pub runs: usize,
    /// Whether this is the `--quick` size (scenarios with their own sizing,
    /// such as `http`, scale down too).
    pub quick: bool,
}

impl Size {
    /// The full benchmark.
    pub const FULL: Size = Size {
        dispatch_nodes: 100_000,
        scale_nodes: 1_000_000,
        durable_nodes: 100_000,
        jobs: 10_000,
        runs: 5,
        quick: false,
    };
    /// The quick run (under a minute in debug builds too).
    pub const QUICK: Size = Size {
        dispatch_nodes: 2_000,
        scale_nodes: 20_000,
        durable_nodes: 2_000,
        jobs: 200,
        runs: 1,
        quick: true,
    };
}

/// The multi-threaded runtime every scenario runs on: one worker per core,
/// or `BENCH_WORKERS` of them (for profiling; see the README).
pub fn runtime() -> tokio::runtime::Runtime {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        b.worker_threads(n);
    }
    b.enable_all().build().expect("a tokio runtime starts")
}

/// Timings of one executor run.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// `submit`: validation, compilation and the durable create.
    pub submit: Duration,
    /// From the submission being durable to the job finishing.
    pub run: Duration,
}

async fn memory_executor(concurrency: usize) -> Executor {
    let config = ExecutorConfig {
        max_concurrent_nodes: concurrency,
        ..ExecutorConfig::default()
    };
    Executor::builder(Arc::new(MemoryStore::new()))
        .config(config)
        .start()
        .await
        .expect("executor starts")
}

/// Runs `spec` through the executor on a `MemoryStore` with journaling on.
pub async fn run_ours(spec: JobSpec, concurrency: usize) -> Timing {
    let executor = memory_executor(concurrency).await;
    let start = Instant::now();
    let id = executor.submit(spec, "bench").await.expect("valid spec");
    let submitted = Instant::now();
    // The summary, not `wait`'s per-node report: building a status of
    // every node is reporting, not dispatch (see the README).
    let summary = executor.wait_summary(&id).await.expect("job finishes");
    let done = Instant::now();
    assert_eq!(
        summary.progress.state,
        JobState::Succeeded,
        "benchmark job must succeed"
    );
    Timing {
        submit: submitted - start,
        run: done - submitted,
    }
}

/// Submits every spec at once to one executor on a `MemoryStore` (one task
/// per job that submits it and waits for it) and returns the time from the
/// first submit to the last job's end.
pub async fn run_jobs(specs: Vec<JobSpec>, concurrency: usize) -> Duration {
    let executor = memory_executor(concurrency).await;
    let start = Instant::now();
    let mut jobs = tokio::task::JoinSet::new();
    for spec in specs {
        let executor = executor.clone();
        jobs.spawn(async move {
            let id = executor.submit(spec, "bench").await.expect("valid spec");
            executor
                .wait_summary(&id)
                .await
                .expect("job finishes")
                .progress
                .state
        });
    }
    while let Some(state) = jobs.join_next().await {
        assert_eq!(
            state.expect("job task does not panic"),
            JobState::Succeeded,
            "benchmark job must succeed"
        );
    }
    start.elapsed()
}

/// Whether `PROFILE_OURS` is set: the scenarios then skip the dispatch
/// baselines, to profile our side alone.
fn profile_ours() -> bool {
    std::env::var_os("PROFILE_OURS").is_some()
}

fn per_node(d: Duration, nodes: usize) -> f64 {
    d.as_nanos() as f64 / nodes.max(1) as f64
}

/// Scenario 1: dispatch overhead per node against the hand-written scheduler
/// and against dagrs, in every shape of [`DISPATCH_SHAPES`].
pub fn dispatch(size: Size) -> Vec<Line> {
    DISPATCH_SHAPES
        .iter()
        .flat_map(|name| dispatch_shape(size, name))
        .collect()
}

/// Scenario 1 for one shape (`chain`, `fan` or `layered`): the
/// `dispatch/<shape>` line against the hand-written scheduler, then the
/// three `dispatch-dagrs/<shape>` lines (run, build, memory) against dagrs.
/// Unknown shapes give no lines.
pub fn dispatch_shape(size: Size, name: &str) -> Vec<Line> {
    let n = size.dispatch_nodes;
    let Some(input) = Input::dispatch(name, n) else {
        return Vec::new();
    };
    let shape = Arc::new(input.shape());
    let nodes = shape.len();
    let rt = runtime();
    reset_peak();
    let profile = profile_ours();
    // Runs alternate (baseline, ours, baseline, ...) so that both sides
    // see the same machine: on a shared machine the load changes within a
    // few seconds, and five runs of one side then five of the other would
    // measure the load as much as the engines.
    let (mut base, mut build, mut submit, mut run) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..size.runs {
        if !profile {
            let start = Instant::now();
            rt.block_on(baseline::run(Arc::clone(&shape), 64));
            base.push(start.elapsed());
        }
        let start = Instant::now();
        let spec = shape.spec();
        let spec_built = start.elapsed();
        let t = rt.block_on(run_ours(spec, 64));
        build.push(spec_built + t.submit);
        submit.push(t.submit);
        run.push(t.run);
    }
    let base = median_of(base);
    let (build, submit, ours) = (median_of(build), median_of(submit), median_of(run));
    let mut lines = vec![Line {
        scenario: format!("dispatch/{name}"),
        ours: per_node(ours, nodes),
        baseline: per_node(base, nodes),
        unit: "ns/node",
        peak_rss: peak_rss(),
        note: format!(
            "{nodes} nodes, {} edges, concurrency 64, MemoryStore journaling every transition; \
             baseline: hand-written scheduler; submit (validate + compile + create) took {:.0} ns/node more",
            shape.edges(),
            per_node(submit, nodes)
        ),
    }];
    if profile {
        return lines;
    }

    reset_peak();
    let (mut dagrs_build, mut dagrs_run) = (Vec::new(), Vec::new());
    for _ in 0..size.runs {
        let start = Instant::now();
        let graph = dagrs_baseline::build(&shape, None);
        let built = Instant::now();
        let graph = rt.block_on(dagrs_baseline::run(graph));
        dagrs_run.push(built.elapsed());
        dagrs_build.push(built - start);
        drop(graph);
    }
    let peak = peak_rss();
    let (dagrs_build, dagrs_run) = (median_of(dagrs_build), median_of(dagrs_run));
    let ours_mem = Probe::Ours(input).run();
    let dagrs_mem = Probe::Dagrs(input).run();
    lines.push(Line {
        scenario: format!("dispatch-dagrs/{name}"),
        ours: per_node(ours, nodes),
        baseline: per_node(dagrs_run, nodes),
        unit: "ns/node",
        peak_rss: peak,
        note: format!(
            "run only, same DAG; baseline: dagrs 0.9, every node receives from each input and \
             sends to each output (plain loops), all {nodes} spawned at once (dagrs has no \
             concurrency limit), its run includes its own cycle check; target ratio <= 0.2"
        ),
    });
    lines.push(Line {
        scenario: format!("dispatch-dagrs/{name}/build"),
        ours: per_node(build, nodes),
        baseline: per_node(dagrs_build, nodes),
        unit: "ns/node",
        peak_rss: peak,
        note: "from the adjacency list: ours builds the JobSpec and submits it (validate + \
               compile + journaled create); baseline: dagrs creates the nodes and add_edge()s"
            .into(),
    });
    lines.push(Line {
        scenario: format!("dispatch-dagrs/{name}/memory"),
        ours: ours_mem.per_node(nodes),
        baseline: dagrs_mem.per_node(nodes),
        unit: "B/node",
        peak_rss: peak,
        note: format!(
            "peak RSS above the adjacency list while building and running the DAG, one fresh \
             process each{}{}",
            ours_mem.caveat(),
            dagrs_mem.caveat()
        ),
    });
    lines
}

/// Scenario 2: validate + compile a large layered DAG against petgraph's own
/// build + toposort of the same graph; run it against the hand-written
/// scheduler; its peak memory per node against the 1 KiB target.
pub fn scale(size: Size) -> Vec<Line> {
    let width = 1000.min(size.scale_nodes / 10).max(1);
    let layers = size.scale_nodes / width;
    let shape = shapes::layered(layers, width);
    let spec = shape.spec();
    let edges: Vec<(u32, u32)> = shape
        .succ
        .iter()
        .enumerate()
        .flat_map(|(f, s)| s.iter().map(move |&t| (f as u32, t)))
        .collect();
    reset_peak();
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
    let nodes = shape.len();
    let n_edges = edges.len();
    let mut lines = vec![Line {
        scenario: "scale/compile".into(),
        ours: ours.as_secs_f64() * 1e3,
        baseline: petgraph.as_secs_f64() * 1e3,
        unit: "ms",
        peak_rss: peak_rss(),
        note: format!(
            "validate + compile {nodes} nodes / {n_edges} edges; baseline: petgraph build + toposort"
        ),
    }];
    drop(edges);

    // Run it, against the hand-written scheduler on the same graph.
    let rt = runtime();
    let shape = Arc::new(shape);
    reset_peak();
    let base = median(size.runs, || {
        let start = Instant::now();
        rt.block_on(baseline::run(Arc::clone(&shape), 64));
        start.elapsed()
    });
    let ours = median(size.runs, || {
        let t = rt.block_on(run_ours(spec.clone(), 64));
        t.submit + t.run
    });
    lines.push(Line {
        scenario: "scale/run".into(),
        ours: per_node(ours, nodes),
        baseline: per_node(base, nodes),
        unit: "ns/node",
        peak_rss: peak_rss(),
        note: format!(
            "{nodes} no-op nodes, concurrency 64, MemoryStore; ours: submit (validate + compile + \
             create) + run; baseline: hand-written scheduler (its indegree pass + run)"
        ),
    });
    drop(spec);

    // Memory: what the engine needs above the submitted spec, on a fresh heap.
    let mem = Probe::OursLoaded(Input::Layered(layers, width)).run();
    lines.push(Line {
        scenario: "scale/memory".into(),
        ours: mem.per_node(nodes),
        baseline: 1024.0,
        unit: "B/node",
        peak_rss: peak_rss(),
        note: format!(
            "peak RSS above the loaded spec while submitting and running {nodes} nodes, fresh \
             process{}; the spec itself took {:.0} B/node; baseline column: the 1 KiB/node \
             target (not a measurement)",
            mem.caveat(),
            mem.input_bytes as f64 / nodes as f64
        ),
    });
    lines
}

/// Scenario 4: many concurrent small jobs in one process, against the
/// hand-written scheduler running the same nodes as one disconnected DAG.
pub fn jobs(size: Size) -> Vec<Line> {
    let parts = shapes::job_mix(size.jobs);
    let union = Arc::new(shapes::union("jobs", &parts));
    let specs: Vec<JobSpec> = parts.iter().map(Shape::spec).collect();
    drop(parts);
    let nodes = union.len();
    let rt = runtime();
    reset_peak();
    let base = median(size.runs, || {
        let start = Instant::now();
        rt.block_on(baseline::run(Arc::clone(&union), 64));
        start.elapsed()
    });
    let ours = median(size.runs, || rt.block_on(run_jobs(specs.clone(), 64)));
    let peak = peak_rss();
    let mem = Probe::Jobs(size.jobs).run();
    let per_sec = |d: Duration| nodes as f64 / d.as_secs_f64();
    vec![Line {
        scenario: "jobs".into(),
        ours: per_sec(ours),
        baseline: per_sec(base),
        unit: "nodes/s",
        peak_rss: peak,
        note: format!(
            "{} jobs of 10 no-op nodes (chains and diamonds) submitted at once to one executor, \
             MemoryStore, concurrency 64, first submit to last end; {:.0} B/node peak above the \
             loaded specs in a fresh process{}; baseline: hand-written scheduler running the same \
             {nodes} nodes as one disconnected DAG (no per-job work)",
            size.jobs,
            mem.per_node(nodes),
            mem.caveat()
        ),
    }]
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
    let summary = executor.wait_summary(&id).await.expect("job finishes");
    let elapsed = start.elapsed();
    assert_eq!(
        summary.progress.state,
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
