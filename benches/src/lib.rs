//! Benchmark scenarios, each measured against a baseline in the same run.
//!
//! Every scenario prints one line: `scenario, ours, baseline, ratio, unit,
//! peak RSS`. Ratios, not absolute figures, are what compare across
//! machines. `--quick` runs a smaller version of everything (the test suite
//! does, so the benchmarks never rot); timings are never asserted.

pub mod baseline;
pub mod http;
pub mod mongo;
pub mod report;
pub mod scenarios;
pub mod shapes;
