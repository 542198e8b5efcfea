//! What the conformance suite cannot see: group commit, reopening,
//! corrupt values written under the store's feet, the directory lock, the
//! durability modes.

use std::time::Duration;

use orchestrator_core::store::JobQuery;
use orchestrator_core::testkit::{run_node, TestJob, T0};
use orchestrator_core::{Event, JobView, Store, StoreError, StoreExt, Timestamp};
use orchestrator_sled::{Durability, SledOptions, SledStore};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn job(id: &str, at: u64) -> TestJob {
    TestJob::new(id, Timestamp(T0.0 + at))
}

#[test]
fn sequential_appends_each_wait_for_their_own_flush() {
    runtime().block_on(async {
        let store = SledStore::temporary().expect("store");
        let mut j = job("solo", 0);
        j.create(&store).await;
        let before = store.stats();
        for node in 0..3 {
            j.append(&store, run_node(node)).await;
        }
        let after = store.stats();
        // Nobody to share with: one flush per append, started after it.
        assert_eq!(after.flushes - before.flushes, 3);
        assert_eq!(after.durable_waits - before.durable_waits, 3);
    });
}

#[test]
fn everything_survives_reopening() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut j = job("kept", 0);
    let mut other = job("other", 1);
    runtime().block_on(async {
        let store = SledStore::open(dir.path()).expect("open");
        j.create(&store).await;
        other.create(&store).await;
        j.append(&store, [Event::Queued, Event::Started]).await;
        store
            .put_snapshot(j.id(), &j.snapshot())
            .await
            .expect("snapshot");
        j.append(&store, run_node(0)).await;
        other.append(&store, [Event::Queued]).await;
    });
    runtime().block_on(async {
        let store = SledStore::open(dir.path()).expect("reopen");
        assert_eq!(store.read_all(j.id(), 0).await.expect("read"), j.records());
        assert_eq!(store.summary(j.id()).await.expect("summary"), j.summary());
        let snap = store
            .snapshot(j.id())
            .await
            .expect("snapshot")
            .expect("kept");
        assert_eq!(snap.view.version, 3);
        assert_eq!(store.load_view(j.id()).await.expect("view"), *j.view());
        let listed = store.list_jobs(&JobQuery::default()).await.expect("list");
        assert_eq!(listed.jobs, [other.summary(), j.summary()]);
        assert_eq!(
            store.unfinished_jobs().await.expect("unfinished"),
            [j.id().clone(), other.id().clone()],
            "sorted by id"
        );
        j.append(&store, run_node(1)).await;
    });
}

/// Writes `value` under `key` of `tree` with raw sled, the store closed.
fn poke(dir: &std::path::Path, tree: &str, key: &[u8], value: &[u8]) {
    let db = raw_open(dir);
    db.open_tree(tree)
        .expect("tree")
        .insert(key, value)
        .expect("insert");
    db.flush().expect("flush");
}

/// Opens the directory with raw sled, giving the store just dropped a
/// moment to release its lock (as `SledStore::open` does).
fn raw_open(dir: &std::path::Path) -> sled::Db {
    let mut tries = 0;
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(e) if tries < 100 => {
                tries += 1;
                let _ = e;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("raw sled open: {e}"),
        }
    }
}

fn record_key(id: &str, seq: u64) -> Vec<u8> {
    let mut k = id.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

#[track_caller]
fn assert_corrupt<T: std::fmt::Debug>(res: Result<T, StoreError>, job: &str, key: &str) -> String {
    match res {
        Err(StoreError::Corrupt {
            job: Some(j),
            key: k,
            message,
        }) if j.as_str() == job && k == key => message,
        other => panic!("expected Corrupt for {job} at {key}, got {other:?}"),
    }
}

#[test]
fn a_corrupt_record_fails_its_job_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bad = job("bad", 0);
    let mut good = job("good", 1);
    runtime().block_on(async {
        let store = SledStore::open(dir.path()).expect("open");
        bad.create(&store).await;
        good.create(&store).await;
        bad.append(&store, [Event::Queued, Event::Started]).await;
        good.append(&store, [Event::Queued, Event::Started]).await;
    });
    poke(
        dir.path(),
        "records",
        &record_key("bad", 2),
        b"\x01{not json",
    );
    runtime().block_on(async {
        let store = SledStore::open(dir.path()).expect("reopen");
        let message = assert_corrupt(store.read(bad.id(), 0, 10).await, "bad", "records/bad/2");
        assert!(message.contains("undecodable"), "{message}");
        assert_corrupt(store.load_view(bad.id()).await, "bad", "records/bad/2");
        // Records before the damage still read.
        assert_eq!(
            store.read(bad.id(), 0, 1).await.expect("seq 1"),
            bad.records()[..1]
        );
        // A replay over the damaged record cannot be checked: corrupt, not Ok.
        let replay = &bad.records()[1..2];
        assert_corrupt(
            store.append(bad.id(), 1, replay, &bad.progress(), 0).await,
            "bad",
            "records/bad/2",
        );

        good.append(&store, run_node(0)).await;
        assert_eq!(
            store.read_all(good.id(), 0).await.expect("good"),
            good.records()
        );
        assert_eq!(
            store.load_view(good.id()).await.expect("view"),
            *good.view()
        );
        let listed = store.list_jobs(&JobQuery::default()).await.expect("list");
        assert_eq!(listed.jobs.len(), 2, "summaries are intact, both list");
    });
}

#[test]
fn a_corrupt_or_newer_summary_fails_its_job_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = job("bad", 0);
    let newer = job("newer", 1);
    let mut good = job("good", 2);
    runtime().block_on(async {
        let store = SledStore::open(dir.path()).expect("open");
        for j in [&bad, &newer, &good] {
            j.create(&store).await;
        }
    });
    poke(dir.path(), "summaries", b"bad", &[0xff, 0x00, 0x13]);
    poke(dir.path(), "summaries", b"newer", b"\x02{}");
    runtime().block_on(async {
        let store = SledStore::open(dir.path()).expect("reopen");
        let message = assert_corrupt(store.summary(bad.id()).await, "bad", "summaries/bad");
        assert!(
            message.contains("unsupported value format 255"),
            "{message}"
        );
        let message = assert_corrupt(store.summary(newer.id()).await, "newer", "summaries/newer");
        assert!(
            message.contains("format 2") && message.contains("reads format 1"),
            "{message}"
        );
        let batch = bad.peek_batch([Event::Queued]);
        assert_corrupt(
            store
                .append(bad.id(), 1, &batch.records, &batch.progress, 0)
                .await,
            "bad",
            "summaries/bad",
        );

        good.append(&store, [Event::Queued]).await;
        let listed = store.list_jobs(&JobQuery::default()).await.expect("list");
        assert_eq!(
            listed.jobs,
            [good.summary()],
            "undecodable summaries are left out"
        );
        assert_eq!(store.unfinished_jobs().await.expect("unfinished").len(), 3);
        store.ping().await.expect("the store as a whole is fine");
    });
}

#[test]
fn an_unreadable_snapshot_is_corrupt_and_a_new_one_replaces_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut j = job("snap", 0);
    runtime().block_on(async {
        let store = SledStore::open(dir.path()).expect("open");
        j.create(&store).await;
        j.append(&store, [Event::Queued, Event::Started]).await;
        store
            .put_snapshot(j.id(), &j.snapshot())
            .await
            .expect("snapshot");
    });
    poke(dir.path(), "snapshots", b"snap", b"\x01\x00\x00");
    runtime().block_on(async {
        let store = SledStore::open(dir.path()).expect("reopen");
        let message = assert_corrupt(store.snapshot(j.id()).await, "snap", "snapshots/snap");
        assert!(message.contains("truncated"), "{message}");
        store
            .put_snapshot(j.id(), &j.snapshot())
            .await
            .expect("replace");
        assert_eq!(store.load_view(j.id()).await.expect("view"), *j.view());
    });
}

#[test]
fn a_held_directory_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = SledStore::open(dir.path()).expect("first open");
    match SledStore::open(dir.path()) {
        Err(e @ StoreError::Unavailable { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&dir.path().display().to_string())
                    && text.contains("another process"),
                "{text}"
            );
            assert!(e.is_retryable(), "it may work once the holder exits");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    drop(first);
    SledStore::open(dir.path()).expect("free again once the first store is dropped");
}

#[test]
fn a_directory_of_another_layout_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let db = raw_open(dir.path());
        db.insert(b"orchestrator-sled/layout", &[9])
            .expect("insert");
        db.flush().expect("flush");
    }
    match SledStore::open(dir.path()) {
        Err(StoreError::Corrupt {
            job: None, message, ..
        }) => {
            assert!(message.contains("layout 1"), "{message}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn relaxed_appends_do_not_wait_and_survive_a_clean_close() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SledOptions::new().durability(Durability::Relaxed {
        every: Duration::from_millis(50),
    });
    let mut j = job("relaxed", 0);
    runtime().block_on(async {
        let store = SledStore::open_with(dir.path(), options).expect("open");
        j.create(&store).await;
        j.append(&store, [Event::Queued, Event::Started]).await;
        j.append(&store, run_node(0)).await;
        assert_eq!(store.stats().durable_waits, 0);
        assert_eq!(store.stats().writes, 3);
    });
    runtime().block_on(async {
        let store = SledStore::open(dir.path()).expect("reopen");
        let records = store.read_all(j.id(), 0).await.expect("read");
        assert_eq!(JobView::replay(&records).expect("replays"), *j.view());
    });
}

#[test]
fn synced_appends_flush_and_read_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SledOptions::new().durability(Durability::Synced);
    runtime().block_on(async {
        let store = SledStore::open_with(dir.path(), options).expect("open");
        assert_eq!(store.durability(), Durability::Synced);
        let mut j = job("synced", 0);
        j.create(&store).await;
        j.append(&store, [Event::Queued, Event::Started]).await;
        assert_eq!(store.stats().flushes, 2);
        assert_eq!(store.read_all(j.id(), 0).await.expect("read"), j.records());
        store.ping().await.expect("ping");
    });
}

#[test]
fn dead_letters_survive_reopening_and_a_corrupt_one_stays_local() {
    use orchestrator_core::store::dead_letter::{DeadLetterQuery, DeadLetterStatus, Resolve};
    use orchestrator_core::store::DeadLetterStore;
    use orchestrator_core::testkit::dead_letters::{dead_letter, resolution};
    let dir = tempfile::tempdir().expect("temp dir");
    let a = dead_letter("job-a", 0, 1, 10);
    let b = dead_letter("job-b", 1, 1, 20);
    runtime().block_on(async {
        let store = SledStore::open(dir.path()).expect("open");
        store.put_dead_letter(&a).await.expect("put a");
        store.put_dead_letter(&b).await.expect("put b");
        let r = resolution(DeadLetterStatus::Discarded, "bob");
        assert!(matches!(
            store.resolve_dead_letter(&a.id, &r).await.expect("resolve"),
            Resolve::Done(_)
        ));
    });
    runtime().block_on(async {
        let store = SledStore::open(dir.path()).expect("reopen");
        let stored = store.dead_letter(&a.id).await.expect("read").expect("kept");
        assert_eq!(stored.status, DeadLetterStatus::Discarded);
        let page = store
            .list_dead_letters(&DeadLetterQuery::default())
            .await
            .expect("list");
        assert_eq!(page.dead_letters.len(), 2);
    });
    poke(
        dir.path(),
        "dead_letters",
        a.id.to_string().as_bytes(),
        b"\x01{not json",
    );
    runtime().block_on(async {
        let store = SledStore::open(dir.path()).expect("reopen");
        let err = store.dead_letter(&a.id).await.expect_err("corrupt");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        // Listing leaves the bad entry out; the other one is still there.
        let page = store
            .list_dead_letters(&DeadLetterQuery::default())
            .await
            .expect("list");
        assert_eq!(page.dead_letters, vec![b.clone()]);
        assert_eq!(
            store.dead_letter(&b.id).await.expect("read b"),
            Some(b.clone())
        );
    });
}
