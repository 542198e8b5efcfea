//! Run with `cargo run --release -p orchestrator-benches --bin bench [-- --quick] [SCENARIO...]`.
//!
//! Prints `scenario, ours, baseline, ratio, unit, peak RSS` per line.
//! SCENARIO is `dispatch`, `scale`, `durable`, `jobs`, `http` or `mongo`
//! (which needs a server, so it runs only when named), or one dispatch
//! shape such as `dispatch/fan`; none means all of them.
//!
//! Each scenario (each shape, for `dispatch`) runs in a fresh child process
//! of this binary (`--unit`), so its peak RSS is not inflated by memory the
//! allocator kept from the previous one; memory-per-node figures come from
//! further children (`--probe`, see `orchestrator_benches::probe`).

// The benchmark's results are its stdout; usage errors go to stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::{Command, ExitCode};

use orchestrator_benches::probe::{self, Probe};
use orchestrator_benches::report::Line;
use orchestrator_benches::scenarios::{self, Size, DISPATCH_SHAPES};

/// Runs one unit in this process: `dispatch/<shape>`, `scale`, `durable`
/// or `jobs`. `None` for an unknown unit.
fn run_unit(unit: &str, size: Size) -> Option<Vec<Line>> {
    match unit.split_once('/') {
        Some(("dispatch", shape)) if DISPATCH_SHAPES.contains(&shape) => {
            Some(scenarios::dispatch_shape(size, shape))
        }
        None => match unit {
            "scale" => Some(scenarios::scale(size)),
            "durable" => Some(scenarios::durable(size)),
            "jobs" => Some(scenarios::jobs(size)),
            "http" => Some(orchestrator_benches::http::http(size.quick)),
            "mongo" => match orchestrator_benches::mongo::mongo(size) {
                Ok(lines) => Some(lines),
                Err(why) => {
                    println!("# mongo: skipped: {why}");
                    Some(Vec::new())
                }
            },
            _ => None,
        },
        _ => None,
    }
}

/// The units a scenario argument names.
fn units(arg: &str) -> Option<Vec<String>> {
    match arg {
        "dispatch" => Some(
            DISPATCH_SHAPES
                .iter()
                .map(|s| format!("dispatch/{s}"))
                .collect(),
        ),
        "scale" | "durable" | "jobs" | "http" | "mongo" => Some(vec![arg.to_owned()]),
        _ => match arg.split_once('/') {
            Some(("dispatch", shape)) if DISPATCH_SHAPES.contains(&shape) => {
                Some(vec![arg.to_owned()])
            }
            _ => None,
        },
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // Child modes.
    if args.first() == Some(&probe::FLAG) {
        let Some(p) = Probe::parse(&args[1..]) else {
            eprintln!("bad probe: {:?}", &args[1..]);
            return ExitCode::from(2);
        };
        println!("{}", p.run_here().render());
        return ExitCode::SUCCESS;
    }
    let quick = args.contains(&"--quick");
    let size = if quick { Size::QUICK } else { Size::FULL };
    if args.first() == Some(&"--unit") {
        let Some(lines) = args.get(1).and_then(|u| run_unit(u, size)) else {
            eprintln!("unknown unit: {:?}", args.get(1));
            return ExitCode::from(2);
        };
        for l in lines {
            println!("{}", l.render());
        }
        return ExitCode::SUCCESS;
    }

    let mut wanted = Vec::new();
    for arg in args.iter().filter(|a| !a.starts_with("--")) {
        match units(arg) {
            Some(u) => wanted.extend(u),
            None => {
                eprintln!(
                    "unknown scenario {arg:?}: expected dispatch, dispatch/<chain|fan|layered>, \
                     scale, durable, jobs, http or mongo"
                );
                return ExitCode::from(2);
            }
        }
    }
    if wanted.is_empty() {
        for s in ["dispatch", "scale", "durable", "jobs", "http"] {
            wanted.extend(units(s).unwrap_or_default());
        }
    }

    let Ok(exe) = std::env::current_exe() else {
        eprintln!("cannot find the bench executable to run the scenarios");
        return ExitCode::FAILURE;
    };
    println!("# scenario, ours, baseline, ratio, unit, peak RSS  # notes");
    let mut failed = false;
    for unit in &wanted {
        let mut cmd = Command::new(&exe);
        cmd.arg("--unit").arg(unit);
        if quick {
            cmd.arg("--quick");
        }
        // Lines go straight to our stdout as the child prints them.
        match cmd.status() {
            Ok(status) if status.success() => {}
            Ok(status) => {
                eprintln!("scenario {unit} failed: {status}");
                failed = true;
            }
            Err(e) => {
                eprintln!("scenario {unit} did not start: {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
