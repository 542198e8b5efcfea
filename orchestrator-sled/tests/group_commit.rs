//! Group commit: concurrent appends share flushes. Alone in its own test
//! binary, and one test, so that other tests do not compete for the CPU
//! while it measures: how many appends land during one flush depends on the
//! machine, so each pattern is measured over several rounds and the best
//! round must show the grouping (a store that never groups fails).

use std::sync::Arc;

use orchestrator_core::testkit::{TestJob, T0};
use orchestrator_core::{Event, StoreExt, Timestamp};
use orchestrator_sled::SledStore;

const JOBS: usize = 64;
const ROUNDS: usize = 5;

#[test]
fn concurrent_appends_share_flushes() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let store = Arc::new(SledStore::temporary().expect("store"));
        let mut jobs = Vec::new();
        for i in 0..JOBS {
            let j = TestJob::new(&format!("job-{i}"), Timestamp(T0.0 + i as u64));
            j.create(&*store).await;
            jobs.push(j);
        }

        // One append per job, all at once in one spawned task: a round of
        // the executor's scheduler. Typically 1 or 2 flushes.
        let mut best_round = u64::MAX;
        for round in 0..ROUNDS {
            let before = store.stats();
            jobs = tokio::spawn({
                let store = Arc::clone(&store);
                async move {
                    let appends = jobs.iter_mut().map(|j| {
                        j.append(
                            &*store,
                            [Event::EscalationRequired {
                                cause: None,
                                node: None,
                                reason: format!("round {round}"),
                            }],
                        )
                    });
                    futures::future::join_all(appends).await;
                    jobs
                }
            })
            .await
            .expect("the round");
            let after = store.stats();
            assert_eq!(after.durable_waits - before.durable_waits, JOBS as u64);
            assert_eq!(after.writes - before.writes, JOBS as u64);
            best_round = best_round.min(after.flushes - before.flushes);
        }
        assert!(
            best_round <= 4,
            "a round of {JOBS} appends took at best {best_round} flushes: no grouping"
        );

        // Independent tasks on four workers. Typically 7 to 14 flushes.
        let mut best_tasks = u64::MAX;
        for round in 0..ROUNDS {
            let before = store.stats();
            let tasks: Vec<_> = jobs
                .into_iter()
                .map(|mut j| {
                    let store = Arc::clone(&store);
                    tokio::spawn(async move {
                        j.append(
                            &*store,
                            [Event::EscalationRequired {
                                cause: None,
                                node: None,
                                reason: format!("task round {round}"),
                            }],
                        )
                        .await;
                        j
                    })
                })
                .collect();
            jobs = Vec::new();
            for t in tasks {
                jobs.push(t.await.expect("task"));
            }
            let after = store.stats();
            assert_eq!(after.durable_waits - before.durable_waits, JOBS as u64);
            best_tasks = best_tasks.min(after.flushes - before.flushes);
        }
        assert!(
            best_tasks <= (JOBS / 4) as u64,
            "{JOBS} appends from concurrent tasks took at best {best_tasks} flushes: no grouping"
        );

        for j in &jobs {
            let records = store.read_all(j.id(), 0).await.expect("read");
            assert_eq!(records, j.records(), "every append landed");
        }
    });
}
