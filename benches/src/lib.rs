//! Benchmark scenarios, each measured against a baseline in the same run.
//!
//! Every measurement prints one line: `scenario, ours, baseline, ratio,
//! unit, peak RSS`. Ratios, not absolute figures, are what compare across
//! machines. `--quick` runs a smaller version of everything (the test suite
//! does, so the benchmarks never rot); timings are never asserted. The
//! crate's README explains every line.
//!
//! - [`scenarios`] — `dispatch`, `scale`, `durable`, `jobs` and the sizes
//!   they run at;
//! - [`shapes`] — the DAGs they run, as plain adjacency lists;
//! - [`baseline`] — the minimal hand-written scheduler;
//! - [`dagrs_baseline`] — the same DAGs on `dagrs`;
//! - [`probe`] — memory per node, measured in a fresh child process;
//! - [`report`] — medians, RSS readings and the output line.

pub mod baseline;
pub mod dagrs_baseline;
pub mod http;
pub mod mongo;
pub mod probe;
pub mod report;
pub mod scenarios;
pub mod shapes;
