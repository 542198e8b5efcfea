//! Crash recovery proven by killing processes: the worker runs crash jobs on
//! a sled directory and is killed with SIGKILL at random moments (seeded),
//! then started again on the same directory, until at least
//! `ORCHESTRATOR_CRASH_KILLS` kills (default 20) have landed on a live
//! worker. When a worker finishes its job before being killed, the next life
//! starts the next job. The last job then runs to the end, and the side file
//! and the sled journal are checked:
//!
//! 1. every job reached a terminal state (succeeded: its nodes never fail);
//! 2. a node whose success was journaled never ran again (no execution with
//!    a later attempt, and no attempt ran twice);
//! 3. a node's re-runs are at most its attempts that were in flight at a
//!    kill (the `infrastructure` failures recovery journaled for it), and
//!    every execution was journaled as started before it ran;
//! 4. each journal replays without error and agrees with its summary (and
//!    with the snapshot-based `load_view`).
//!
//! `ORCHESTRATOR_CRASH_SEED` picks another kill schedule.

// The test reports what it saw (kills, re-runs) on stderr, for
// `cargo test -- --nocapture`.
#![allow(clippy::print_stderr)]

use std::collections::{BTreeMap, HashMap};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use orchestrator_core::journal::INTERRUPTED;
use orchestrator_core::{Event, JobState, JobView, Store, StoreExt};
use orchestrator_sled::SledStore;
use orchestrator_tests::crash::{self, Execution};
use rand::{Rng, SeedableRng};

const WORKER: &str = env!("CARGO_BIN_EXE_crash_worker");

/// How long one worker life may take before the test calls it hung.
const LIFE_LIMIT: Duration = Duration::from_secs(60);

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn start(dir: &Path, side: &Path, job: u32) -> Child {
    Command::new(WORKER)
        .arg(dir)
        .arg(side)
        .arg(job.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("the crash worker starts")
}

/// Waits for `child` to exit by itself, failing the test past `LIFE_LIMIT`.
fn finish(mut child: Child) -> ExitStatus {
    let deadline = Instant::now() + LIFE_LIMIT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a worker did not finish within {LIFE_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn killed_workers_recover_every_job_without_rerunning_successes() {
    let kills_wanted = env_number("ORCHESTRATOR_CRASH_KILLS", 20);
    let seed = env_number("ORCHESTRATOR_CRASH_SEED", 0x5eed);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("sled");
    let side = tmp.path().join("executions.log");

    let mut job = 0u32;
    let mut kills = 0u64;
    let mut lives = 0u64;
    while kills < kills_wanted {
        let mut child = start(&dir, &side, job);
        lives += 1;
        std::thread::sleep(Duration::from_millis(rng.random_range(2..=100)));
        let _ = child.kill(); // SIGKILL; harmless if it already exited
        let status = child.wait().expect("wait");
        match (status.signal(), status.code()) {
            (Some(9), _) => kills += 1,
            (_, Some(0)) => job += 1,
            _ => panic!("worker life {lives} ended with {status}"),
        }
    }
    // Let the last job finish undisturbed.
    let status = finish(start(&dir, &side, job));
    assert!(status.success(), "the last worker ended with {status}");
    let jobs = job + 1;

    let text = std::fs::read_to_string(&side).expect("side file");
    let executions = crash::parse(&text).expect("side file parses");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let report = runtime.block_on(check(&dir, jobs, &executions));
    eprintln!(
        "crash test (seed {seed:#x}): {lives} lives, {kills} kills, {jobs} jobs, {} executions, \
         {} cut short by a kill, {} attempts interrupted, {} re-runs (max {} of one node)",
        executions.iter().filter(|e| !e.end).count(),
        report.cut_short,
        report.interrupted,
        report.reruns,
        report.max_reruns,
    );
    assert!(
        report.interrupted <= kills * crash::CONCURRENCY as u64,
        "a kill interrupts at most {} attempts",
        crash::CONCURRENCY
    );
}

#[derive(Debug, Default)]
struct Report {
    cut_short: usize,
    interrupted: u64,
    reruns: u64,
    max_reruns: u64,
}

/// Checks the four properties for every job; returns what it counted.
async fn check(dir: &Path, jobs: u32, executions: &[Execution]) -> Report {
    let store = SledStore::open(dir).expect("the store opens after the last worker exited");
    let mut report = Report::default();
    for n in 0..jobs {
        let id = crash::job_id(n);
        let spec = crash::spec(n);

        // 4. The journal replays and agrees with the summary and load_view.
        let records = store.read_all(&id, 0).await.expect("journal reads");
        let view = JobView::replay(&records)
            .unwrap_or_else(|e| panic!("journal of {id} does not replay: {e}"));
        let summary = store.summary(&id).await.expect("summary");
        assert_eq!(
            summary,
            view.summary(),
            "summary of {id} agrees with its journal"
        );
        assert_eq!(
            store.load_view(&id).await.expect("load_view"),
            view,
            "snapshot + tail of {id} equals its full replay"
        );

        // 1. Terminal, and here succeeded: no node ever fails for real.
        assert_eq!(
            view.state,
            JobState::Succeeded,
            "job {id} ended {}",
            view.state
        );

        // What the journal says per node: attempts started, the attempt
        // that succeeded, attempts recorded as interrupted.
        let mut started: HashMap<u32, Vec<u32>> = HashMap::new();
        let mut succeeded: HashMap<u32, u32> = HashMap::new();
        let mut interrupted: HashMap<u32, u64> = HashMap::new();
        for r in &records {
            match &r.event {
                Event::NodeStarted { node, attempt } => {
                    started.entry(*node).or_default().push(*attempt);
                }
                Event::NodeSucceeded { node, attempt, .. } => {
                    assert!(
                        succeeded.insert(*node, *attempt).is_none(),
                        "{id}: node {node} succeeded twice in the journal"
                    );
                }
                Event::NodeFailed { node, failure, .. } => {
                    assert_eq!(
                        failure.class, INTERRUPTED,
                        "{id}: node {node} failed for another reason than a kill: {failure:?}"
                    );
                    *interrupted.entry(*node).or_default() += 1;
                }
                _ => {}
            }
        }

        // What actually ran, from the side file.
        let mut runs: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for e in executions.iter().filter(|e| e.job == id.as_str()) {
            let node = spec
                .nodes()
                .iter()
                .position(|s| s.id == e.node)
                .unwrap_or_else(|| panic!("{id}: unknown node {}", e.node))
                as u32;
            if e.end {
                continue;
            }
            runs.entry(node).or_default().push(e.attempt);
            let ended = executions
                .iter()
                .any(|x| x.end && x.job == e.job && x.node == e.node && x.attempt == e.attempt);
            if !ended {
                report.cut_short += 1;
            }
        }

        for (node, node_spec) in spec.nodes().iter().enumerate() {
            let node = node as u32;
            let ran = runs.get(&node).cloned().unwrap_or_default();
            let ok_attempt = succeeded[&node];
            let journaled = started.get(&node).cloned().unwrap_or_default();
            let lost = interrupted.get(&node).copied().unwrap_or(0);
            let what = format!("{id} node {} (index {node})", node_spec.id);

            // 2. Nothing ran after the journaled success, and no attempt ran
            // twice (a re-run is always a new, journaled attempt).
            assert!(
                ran.iter().all(|&a| a <= ok_attempt),
                "{what}: ran attempts {ran:?} although attempt {ok_attempt} succeeded"
            );
            let mut unique = ran.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(
                unique.len(),
                ran.len(),
                "{what}: an attempt ran twice: {ran:?}"
            );
            assert!(
                ran.contains(&ok_attempt),
                "{what}: attempt {ok_attempt} is journaled as succeeded but never ran"
            );

            // 3. Journal before acting: every execution was journaled as
            // started; re-runs are bounded by the interrupted attempts.
            assert!(
                ran.iter().all(|a| journaled.contains(a)),
                "{what}: ran {ran:?}, journaled as started {journaled:?}"
            );
            let reruns = ran.len() as u64 - 1;
            assert!(
                reruns <= lost,
                "{what}: {reruns} re-runs but only {lost} attempts were in flight at a kill"
            );
            assert_eq!(
                journaled.len() as u64,
                lost + 1,
                "{what}: every attempt but the successful one was interrupted"
            );
            report.reruns += reruns;
            report.max_reruns = report.max_reruns.max(reruns);
            report.interrupted += lost;
        }
    }
    assert!(
        store
            .unfinished_jobs()
            .await
            .expect("unfinished")
            .is_empty(),
        "no job is left unfinished"
    );
    report
}
