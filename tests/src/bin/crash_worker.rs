//! The crash test's worker: `crash_worker <sled-dir> <side-file> <job-number>`.
//!
//! Opens a `SledStore` on the directory, starts an executor (which resumes
//! every unfinished job found there), submits crash job `<job-number>` if
//! the store does not have it yet, waits for it to finish and exits 0. The
//! crash test kills it with SIGKILL at random moments and starts it again.
//! Exit codes: 0 finished, 2 bad arguments, 3 a failure (printed).

// A test helper: its only way to report is stderr and the exit code.
#![allow(clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use orchestrator_core::{Executor, ExecutorConfig, Registry, Store, StoreError};
use orchestrator_sled::SledStore;
use orchestrator_tests::crash::{self, SideFileRunner};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, side, n] = &args[..] else {
        eprintln!("usage: crash_worker <sled-dir> <side-file> <job-number>");
        return ExitCode::from(2);
    };
    let Ok(n) = n.parse::<u32>() else {
        eprintln!("job number {n:?} is not a number");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("crash_worker: no runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(run(PathBuf::from(dir), PathBuf::from(side), n)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crash_worker: {e}");
            ExitCode::from(3)
        }
    }
}

async fn run(dir: PathBuf, side: PathBuf, n: u32) -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(SledStore::open(&dir)?);
    let mut registry = Registry::with_builtins();
    registry.register(crash::KIND, SideFileRunner { path: side });
    let config = ExecutorConfig {
        max_concurrent_nodes: crash::CONCURRENCY,
        ..ExecutorConfig::default()
    };
    let executor = Executor::builder(store.clone())
        .registry(registry)
        .config(config)
        .start()
        .await?;
    let id = crash::job_id(n);
    match store.summary(&id).await {
        Ok(_) => {} // resumed by `start` (or already finished)
        Err(StoreError::NotFound { .. }) => {
            executor
                .submit_with_id(id.clone(), crash::spec(n), "crash-test")
                .await?;
        }
        Err(e) => return Err(e.into()),
    }
    let status = executor.wait(&id).await?;
    if !status.state.is_terminal() {
        return Err(format!("job {id} ended the wait in state {}", status.state).into());
    }
    Ok(())
}
