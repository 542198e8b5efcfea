//! Runs the bench binary in `--quick` mode once, so the benchmarks never
//! rot: every scenario must run, exit cleanly and print well-formed lines
//! with positive, finite figures. Timings are never asserted.

// A MongoDB run skipped for want of a server says so on stderr.
#![allow(clippy::print_stderr)]

use std::process::Command;

/// Every line of a full `--quick` run, in order.
const EXPECTED: [&str; 21] = [
    "dispatch/chain",
    "dispatch-dagrs/chain",
    "dispatch-dagrs/chain/build",
    "dispatch-dagrs/chain/memory",
    "dispatch/fan",
    "dispatch-dagrs/fan",
    "dispatch-dagrs/fan/build",
    "dispatch-dagrs/fan/memory",
    "dispatch/layered",
    "dispatch-dagrs/layered",
    "dispatch-dagrs/layered/build",
    "dispatch-dagrs/layered/memory",
    "scale/compile",
    "scale/run",
    "scale/memory",
    "durable/layered",
    "jobs",
    "http/submit",
    "http/submit-p99",
    "http/status",
    "http/status-p99",
];

fn positive(field: &str, line: &str) -> f64 {
    let v: f64 = field
        .parse()
        .unwrap_or_else(|e| panic!("{field:?} is not a number ({e}) in: {line}"));
    assert!(
        v.is_finite() && v > 0.0,
        "{field:?} is not positive in: {line}"
    );
    v
}

/// Runs the bench binary with `args`, checks that it exits cleanly and
/// that every line it prints is well formed, and returns the scenario keys
/// in order.
fn run_and_check(args: &[&str]) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(args)
        .env_remove("PROFILE_OURS")
        .output()
        .expect("the bench binary starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    let mut scenarios = Vec::new();
    for line in stdout.lines().filter(|l| !l.starts_with('#')) {
        let (fields, note) = line
            .split_once("  # ")
            .unwrap_or_else(|| panic!("no note in: {line}"));
        assert!(!note.trim().is_empty(), "empty note in: {line}");
        assert!(
            !note.contains("in-process"),
            "memory was not measured in a fresh process: {line}"
        );
        let f: Vec<&str> = fields.split(", ").collect();
        assert_eq!(f.len(), 6, "expected 6 fields in: {line}");
        let (ours, baseline, ratio) = (
            positive(f[1], line),
            positive(f[2], line),
            positive(f[3], line),
        );
        // The ratio is ours / baseline (all three printed rounded).
        let (low, high) = (
            (ours - 0.05) / (baseline + 0.05),
            (ours + 0.05) / (baseline - 0.05),
        );
        assert!(
            (low - 0.0005..=high + 0.0005).contains(&ratio),
            "ratio {ratio} is not ours / baseline in: {line}"
        );
        assert!(!f[4].trim().is_empty(), "no unit in: {line}");
        let rss = f[5]
            .strip_suffix(" MiB")
            .unwrap_or_else(|| panic!("peak RSS not in MiB in: {line}"));
        positive(rss, line);
        scenarios.push(f[0].to_owned());
    }
    scenarios
}

#[test]
fn quick_run_prints_well_formed_lines() {
    assert_eq!(run_and_check(&["--quick"]), EXPECTED);
}

/// The `mongo` scenario runs only when named (it needs a server), so it is
/// run here on its own, against the server `MONGODB_URI` names (the test
/// script starts one), and skipped with a line saying so without it, like
/// the MongoDB store's own tests (under `CI=true` a missing server fails).
#[test]
fn quick_mongo_run_prints_well_formed_lines() {
    if std::env::var("MONGODB_URI").map_or(true, |u| u.is_empty()) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but MONGODB_URI is not set (scripts/test.sh starts the test server)"
        );
        eprintln!("quick mongo: skipping: MONGODB_URI is not set (scripts/test.sh sets it)");
        return;
    }
    assert_eq!(
        run_and_check(&["--quick", "mongo"]),
        ["mongo/append", "mongo/status"]
    );
}

#[test]
fn unknown_scenarios_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--quick", "no-such-scenario"])
        .output()
        .expect("the bench binary starts");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}
