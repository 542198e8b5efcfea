//! `orchestrator`: runs plan files — DAGs of test-execution nodes — on the
//! orchestrator engine, with live progress, JUnit reports and graphs, and
//! resumes, inspects and cancels the jobs of a store.
//!
//! ```text
//! orchestrator run examples/plans/quickstart.yaml --junit junit.xml
//! orchestrator resume                      # after a crash or kill
//! orchestrator validate plan.yaml          # problems, or the DAG's shape
//! orchestrator graph plan.yaml --format mermaid
//! orchestrator jobs list | show ID | cancel ID
//! orchestrator serve --dev                 # the REST API, with a token printed
//! orchestrator token --sub alice           # a token for the API
//! ```
//!
//! Exit codes: 0 the job succeeded; 1 it failed, was cancelled or timed
//! out; 2 invalid plan, unknown job or bad usage; 3 store or internal error.
//!
//! # Module map
//!
//! | module | what it holds |
//! |---|---|
//! | `cli` | the command line (clap): commands, flags, environment variables, help examples |
//! | `commands` | what each command does, on top of the engine's `Executor` |
//! | `store` | `StoreSpec` (`--store`, `DATABASE_URL`) and `open_store` |
//! | `plan` | reading plan files (YAML or JSON, or standard input) |
//! | `follow` | following a job: journal from the store, then live events, folded like the engine folds them; Ctrl-C |
//! | `progress` | showing a running job: live bars on a terminal, one line per event otherwise |
//! | `summary` | the final table and totals line, the `jobs list` table, formatting helpers |
//! | `junit` | JUnit XML as cargo-nextest writes it, attempts from the journal |
//! | `graph` | dot and Mermaid renderings, coloured by node state |
//! | `describe` | the DAG description `validate` prints |
//! | `serve` | `serve` (the REST API of `orchestrator-http`, graceful drain) and `token` |
//! | `error` | `CliError` and the exit codes |
//!
//! # Design notes
//!
//! - Everything shown comes from the journal: a command reads the job's
//!   records from the store, then follows the executor's event feed, and
//!   folds both into a `JobView` with the engine's own fold. A gap in the
//!   feed (a slow terminal) is filled from the store, never guessed.
//! - An executor resumes the unfinished jobs it is told to when it starts;
//!   the CLI passes `Recovery::Only`, so `run` runs only its plan
//!   and `resume ID` continues only that job.
//! - The first Ctrl-C journals a cancellation and waits for the running
//!   attempts to stop; the second returns at once, dropping the attempts
//!   (their process groups are killed). Either way the store holds exactly
//!   what was journaled, and a persistent store's job can be resumed.
//!
//! Logging: warnings of the engine (such as a store that stopped answering)
//! go to stderr; `ORCHESTRATOR_LOG=info|debug|trace|off` changes the level.

// A command-line program talks to its user on stdout and stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod cli;
mod commands;
mod describe;
mod dlq;
mod error;
mod flaky;
mod follow;
mod graph;
mod junit;
mod notify;
mod plan;
mod policy;
mod progress;
mod serve;
mod stats;
mod store;
mod summary;

use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::filter::LevelFilter;

fn main() -> ExitCode {
    // Usage errors exit with 2 and `--help` with 0, from clap itself.
    let cli = cli::Cli::parse();
    // A server logs every request (with its request id) by default.
    let default_level = if matches!(cli.command, cli::Command::Serve(_)) {
        LevelFilter::INFO
    } else {
        LevelFilter::WARN
    };
    let level = std::env::var("ORCHESTRATOR_LOG")
        .ok()
        .and_then(|l| l.parse::<LevelFilter>().ok())
        .unwrap_or(default_level);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .init();
    match commands::execute(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{} {e}", console::style("error:").red().bold().for_stderr());
            ExitCode::from(e.exit_code())
        }
    }
}
