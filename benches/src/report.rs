//! Measurement helpers: medians, peak memory, the output line.

use std::time::{Duration, Instant};

/// Peak resident set size of this process since the last [`reset_peak`], in
/// bytes (Linux `VmHWM`; 0 elsewhere).
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
        })
        .map_or(0, |kb| kb * 1024)
}

/// Current resident set size in bytes (Linux `VmRSS`; 0 elsewhere).
pub fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
        })
        .map_or(0, |kb| kb * 1024)
}

/// Resets the peak RSS to the current RSS (Linux only; ignored elsewhere),
/// so each scenario reports its own peak.
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The median of `runs` timings of `f` (zero runs: zero).
pub fn median<F: FnMut() -> Duration>(runs: usize, mut f: F) -> Duration {
    median_of((0..runs).map(|_| f()).collect())
}

/// The median of `times` (upper median for an even count; empty: zero).
pub fn median_of(mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

/// Times one call.
pub fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// One result line.
#[derive(Clone, Debug)]
pub struct Line {
    /// Scenario key (with the shape), e.g. `dispatch/chain`.
    pub scenario: String,
    /// Our figure.
    pub ours: f64,
    /// The baseline's figure.
    pub baseline: f64,
    /// Unit of both figures, e.g. `ns/node`.
    pub unit: &'static str,
    /// Peak RSS during the scenario, bytes.
    pub peak_rss: u64,
    /// What the baseline is.
    pub note: String,
}

impl Line {
    /// ours / baseline.
    pub fn ratio(&self) -> f64 {
        if self.baseline == 0.0 {
            f64::NAN
        } else {
            self.ours / self.baseline
        }
    }

    /// The printed form: `scenario, ours, baseline, ratio, unit, peak RSS`.
    pub fn render(&self) -> String {
        format!(
            "{}, {:.1}, {:.1}, {:.3}, {}, {:.1} MiB  # {}",
            self.scenario,
            self.ours,
            self.baseline,
            self.ratio(),
            self.unit,
            self.peak_rss as f64 / (1024.0 * 1024.0),
            self.note
        )
    }
}
