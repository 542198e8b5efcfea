//! Memory per node, measured in a fresh child process.
//!
//! A peak-RSS delta taken inside the long-running bench process is wrong in
//! both directions: the allocator keeps memory freed by earlier runs
//! resident and reuses it (the delta undercounts), and the order of the runs
//! decides who pays for fragmentation. So each memory figure comes from a
//! *probe*: the bench binary re-runs itself with `--probe ...`, does one
//! measured run on a fresh heap and prints its figures on stdout.
//!
//! When the current executable is not the bench binary (the library called
//! from elsewhere), the probe runs in-process instead and says so
//! ([`Measured::isolated`] is false).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::report::{peak_rss, reset_peak, rss};
use crate::scenarios::{run_jobs, run_ours, runtime};
use crate::shapes::{self, Shape};

/// The command-line flag that makes the bench binary run a probe.
pub const FLAG: &str = "--probe";

/// A DAG a probe runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// [`shapes::chain`] of this many nodes.
    Chain(usize),
    /// [`shapes::fan`] of this many nodes.
    Fan(usize),
    /// [`shapes::layered`] with this many layers of this width.
    Layered(usize, usize),
}

impl Input {
    /// The dispatch scenario's shape `name` (`chain`, `fan` or `layered`, in
    /// 100 layers) of `n` nodes; `None` for other names.
    pub fn dispatch(name: &str, n: usize) -> Option<Input> {
        match name {
            "chain" => Some(Input::Chain(n)),
            "fan" => Some(Input::Fan(n)),
            "layered" => {
                let width = (n / 100).max(1);
                Some(Input::Layered(n / width, width))
            }
            _ => None,
        }
    }

    /// The shape.
    pub fn shape(self) -> Shape {
        match self {
            Input::Chain(n) => shapes::chain(n),
            Input::Fan(n) => shapes::fan(n),
            Input::Layered(layers, width) => shapes::layered(layers, width),
        }
    }

    fn to_args(self) -> Vec<String> {
        match self {
            Input::Chain(n) => vec!["chain".into(), n.to_string()],
            Input::Fan(n) => vec!["fan".into(), n.to_string()],
            Input::Layered(l, w) => vec!["layered".into(), l.to_string(), w.to_string()],
        }
    }

    fn parse(args: &[&str]) -> Option<Input> {
        let num = |i: usize| args.get(i).and_then(|a| a.parse::<usize>().ok());
        match *args.first()? {
            "chain" if args.len() == 2 => Some(Input::Chain(num(1)?)),
            "fan" if args.len() == 2 => Some(Input::Fan(num(1)?)),
            "layered" if args.len() == 3 => Some(Input::Layered(num(1)?, num(2)?)),
            _ => None,
        }
    }
}

/// One measured run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Our executor on a `MemoryStore`, concurrency 64, from the plain
    /// adjacency list: building the spec, submitting it, running it.
    Ours(Input),
    /// The same with the spec built before the measurement starts: what
    /// the engine needs above the submitted spec.
    OursLoaded(Input),
    /// dagrs from the plain adjacency list: building the graph, running it.
    Dagrs(Input),
    /// The `jobs` scenario: this many jobs of 10 nodes, specs built before
    /// the measurement starts.
    Jobs(usize),
}

impl Probe {
    /// The probe's arguments after [`FLAG`].
    pub fn to_args(self) -> Vec<String> {
        let (kind, rest) = match self {
            Probe::Ours(i) => ("ours", i.to_args()),
            Probe::OursLoaded(i) => ("ours-loaded", i.to_args()),
            Probe::Dagrs(i) => ("dagrs", i.to_args()),
            Probe::Jobs(n) => ("jobs", vec![n.to_string()]),
        };
        std::iter::once(kind.to_owned()).chain(rest).collect()
    }

    /// Parses the arguments after [`FLAG`].
    pub fn parse(args: &[&str]) -> Option<Probe> {
        let (kind, rest) = args.split_first()?;
        match *kind {
            "ours" => Input::parse(rest).map(Probe::Ours),
            "ours-loaded" => Input::parse(rest).map(Probe::OursLoaded),
            "dagrs" => Input::parse(rest).map(Probe::Dagrs),
            "jobs" if rest.len() == 1 => rest[0].parse().ok().map(Probe::Jobs),
            _ => None,
        }
    }

    /// Runs the probe in this process.
    pub fn run_here(self) -> Measured {
        let rt = runtime();
        match self {
            Probe::Ours(input) => {
                let shape = input.shape();
                let (before, input_bytes) = start_measure(0);
                let start = Instant::now();
                rt.block_on(run_ours(shape.spec(), 64));
                finish_measure(start, before, input_bytes)
            }
            Probe::OursLoaded(input) => {
                let shape = input.shape();
                let base = rss();
                let spec = shape.spec();
                let (before, input_bytes) = start_measure(base);
                let start = Instant::now();
                rt.block_on(run_ours(spec, 64));
                finish_measure(start, before, input_bytes)
            }
            Probe::Dagrs(input) => {
                let shape = input.shape();
                let (before, input_bytes) = start_measure(0);
                let start = Instant::now();
                let graph = crate::dagrs_baseline::build(&shape, None);
                let graph = rt.block_on(crate::dagrs_baseline::run(graph));
                let measured = finish_measure(start, before, input_bytes);
                drop(graph);
                measured
            }
            Probe::Jobs(count) => {
                let base = rss();
                let specs: Vec<_> = shapes::job_mix(count).iter().map(Shape::spec).collect();
                let (before, input_bytes) = start_measure(base);
                let start = Instant::now();
                rt.block_on(run_jobs(specs, 64));
                finish_measure(start, before, input_bytes)
            }
        }
    }

    /// Runs the probe in a fresh child process (the current executable with
    /// [`FLAG`]), or in this process if that fails.
    pub fn run(self) -> Measured {
        self.run_child().unwrap_or_else(|| self.run_here())
    }

    fn run_child(self) -> Option<Measured> {
        let exe = std::env::current_exe().ok()?;
        let out = Command::new(exe)
            .arg(FLAG)
            .args(self.to_args())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8(out.stdout).ok()?;
        let mut measured = Measured::parse(text.trim())?;
        measured.isolated = true;
        Some(measured)
    }
}

/// Settles the input's memory and starts measuring: returns the RSS the
/// measurement starts from and how much the input took above `base` (0
/// without a base).
fn start_measure(base: u64) -> (u64, u64) {
    let before = rss();
    reset_peak();
    let input_bytes = if base == 0 {
        0
    } else {
        before.saturating_sub(base)
    };
    (before, input_bytes)
}

fn finish_measure(start: Instant, before: u64, input_bytes: u64) -> Measured {
    Measured {
        elapsed: start.elapsed(),
        peak_delta: peak_rss().saturating_sub(before),
        input_bytes,
        isolated: false,
    }
}

/// What a probe measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measured {
    /// Wall time of the measured part.
    pub elapsed: Duration,
    /// Peak RSS during the measured part above the RSS it started from, bytes.
    pub peak_delta: u64,
    /// RSS the input built before the measurement took (the loaded spec), bytes;
    /// 0 when the input is built inside the measurement.
    pub input_bytes: u64,
    /// Whether it ran in a fresh child process.
    pub isolated: bool,
}

impl Measured {
    /// The line a probe prints: `elapsed_ns peak_delta input_bytes`.
    pub fn render(&self) -> String {
        format!(
            "{} {} {}",
            self.elapsed.as_nanos(),
            self.peak_delta,
            self.input_bytes
        )
    }

    fn parse(line: &str) -> Option<Measured> {
        let mut it = line.split_whitespace().map(str::parse::<u64>);
        let elapsed = Duration::from_nanos(it.next()?.ok()?);
        let peak_delta = it.next()?.ok()?;
        let input_bytes = it.next()?.ok()?;
        Some(Measured {
            elapsed,
            peak_delta,
            input_bytes,
            isolated: false,
        })
    }

    /// Peak memory per node, bytes.
    pub fn per_node(&self, nodes: usize) -> f64 {
        self.peak_delta as f64 / nodes.max(1) as f64
    }

    /// `""` when isolated, else a warning for the line's note.
    pub fn caveat(&self) -> &'static str {
        if self.isolated {
            ""
        } else {
            " (measured in-process: the allocator's retained memory may hide part of it)"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_round_trip_through_their_arguments() {
        for p in [
            Probe::Ours(Input::Chain(7)),
            Probe::OursLoaded(Input::Layered(3, 4)),
            Probe::Dagrs(Input::Fan(9)),
            Probe::Jobs(200),
        ] {
            let args = p.to_args();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            assert_eq!(Probe::parse(&args), Some(p));
        }
        assert_eq!(Probe::parse(&["ours", "layered", "3"]), None);
        assert_eq!(Probe::parse(&["jobs"]), None);
        assert_eq!(Probe::parse(&[]), None);
    }

    #[test]
    fn measurements_round_trip_through_their_line() {
        let m = Measured {
            elapsed: Duration::from_nanos(12_345),
            peak_delta: 678,
            input_bytes: 9,
            isolated: false,
        };
        assert_eq!(Measured::parse(&m.render()), Some(m));
    }
}
