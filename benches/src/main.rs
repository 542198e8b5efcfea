//! Run with `cargo run --release -p orchestrator-benches --bin bench [-- --quick] [SCENARIO...]`.
//!
//! Prints `scenario, ours, baseline, ratio, unit, peak RSS` per line.

// The benchmark's results are its stdout.
#![allow(clippy::print_stdout)]

use orchestrator_benches::scenarios::{self, Size};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let size = if quick { Size::QUICK } else { Size::FULL };
    let wanted: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let run = |name: &str| wanted.is_empty() || wanted.contains(&name);
    let emit = |lines: Vec<orchestrator_benches::report::Line>| {
        for l in lines {
            println!("{}", l.render());
        }
    };
    {
        println!("# scenario, ours, baseline, ratio, unit, peak RSS  # notes");
    }
    if run("dispatch") {
        emit(scenarios::dispatch(size));
    }
    if run("scale") {
        emit(scenarios::scale(size));
    }
    if run("durable") {
        emit(scenarios::durable(size));
    }
    if run("http") {
        emit(orchestrator_benches::http::http(quick));
    }
    if run("mongo") {
        match orchestrator_benches::mongo::mongo(size) {
            Ok(lines) => emit(lines),
            Err(why) => println!("# mongo: skipped: {why}"),
        }
    }
}
