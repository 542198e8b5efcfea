//! Conformance cases of [`TestHistoryStore`](crate::store::TestHistoryStore)
//! (see [`crate::store::history`] for the contract).

use std::sync::Arc;

use crate::flaky::{RunOutcome, TestOutcome};
use crate::store::{HistoryQuery, Store, StoreError};
use crate::time::Timestamp;

use super::{job_id, T0};

/// An outcome of job `job` (named `name`) at `T0 + t` seconds.
pub fn outcome(key: &str, job: &str, name: &str, t: u64, passed: bool) -> TestOutcome {
    TestOutcome {
        key: key.into(),
        outcome: RunOutcome {
            job: job_id(job),
            job_name: name.into(),
            owner: "alice".into(),
            at: Timestamp(T0.0 + t * 1000),
            passed,
            flaky: !passed && t % 2 == 0,
            attempts: 1 + (t % 3) as u32,
            quarantined: t % 5 == 0,
        },
    }
}

fn jobs_of(history: &[RunOutcome]) -> Vec<String> {
    history.iter().map(|o| o.job.to_string()).collect()
}

/// Outcomes recorded in one call read back per key, oldest first, every
/// field intact; an unknown key has an empty history.
pub async fn history_records_and_reads_back(store: Arc<dyn Store>) {
    let batch = [
        outcome("ci/unit", "job-2", "ci", 2, true),
        outcome("ci/lint", "job-2", "ci", 2, false),
    ];
    store.record_outcomes(&batch, 10).await.expect("record");
    let older = [outcome("ci/unit", "job-1", "ci", 1, false)];
    store.record_outcomes(&older, 10).await.expect("record");
    let unit = store.test_history("ci/unit").await.expect("read");
    assert_eq!(jobs_of(&unit), ["job-1", "job-2"], "oldest first");
    assert_eq!(unit[0], older[0].outcome);
    assert_eq!(unit[1], batch[0].outcome);
    let lint = store.test_history("ci/lint").await.expect("read");
    assert_eq!(lint, [batch[1].outcome.clone()]);
    assert!(store.test_history("nope").await.expect("read").is_empty());
}

/// Recording a job's outcome again (a resumed job) changes nothing, even
/// with different content: the first recording wins.
pub async fn history_recording_is_idempotent_per_job_and_key(store: Arc<dyn Store>) {
    let first = outcome("k", "job-1", "ci", 1, false);
    store
        .record_outcomes(std::slice::from_ref(&first), 10)
        .await
        .expect("record");
    store
        .record_outcomes(std::slice::from_ref(&first), 10)
        .await
        .expect("again");
    let mut changed = first.clone();
    changed.outcome.passed = true;
    changed.outcome.at = Timestamp(T0.0 + 99_000);
    store
        .record_outcomes(&[changed], 10)
        .await
        .expect("changed");
    let h = store.test_history("k").await.expect("read");
    assert_eq!(h, [first.outcome], "one outcome per job and key");
}

/// A history keeps the newest `keep` outcomes; an evicted job recorded
/// again does not come back.
pub async fn history_is_bounded_to_keep(store: Arc<dyn Store>) {
    for t in 1..=7 {
        let o = outcome("k", &format!("job-{t}"), "ci", t, t % 2 == 0);
        store.record_outcomes(&[o], 5).await.expect("record");
    }
    let h = store.test_history("k").await.expect("read");
    assert_eq!(jobs_of(&h), ["job-3", "job-4", "job-5", "job-6", "job-7"]);
    store
        .record_outcomes(&[outcome("k", "job-1", "ci", 1, true)], 5)
        .await
        .expect("record evicted again");
    assert_eq!(store.test_history("k").await.expect("read"), h);
}

/// Bad keys, `keep` and limits are `Invalid` and write nothing, not even
/// the good outcomes of the same call.
pub async fn history_rejects_bad_input_untouched(store: Arc<dyn Store>) {
    let good = outcome("k", "job-1", "ci", 1, true);
    let long = "x".repeat(crate::flaky::MAX_KEY_LEN + 1);
    let bad = [good.clone(), outcome(&long, "job-1", "ci", 1, true)];
    assert!(matches!(
        store.record_outcomes(&bad, 10).await,
        Err(StoreError::Invalid(_))
    ));
    let empty = [good.clone(), outcome("", "job-1", "ci", 1, true)];
    assert!(matches!(
        store.record_outcomes(&empty, 10).await,
        Err(StoreError::Invalid(_))
    ));
    for keep in [0, crate::store::history::MAX_KEEP + 1] {
        assert!(matches!(
            store
                .record_outcomes(std::slice::from_ref(&good), keep)
                .await,
            Err(StoreError::Invalid(_))
        ));
    }
    assert!(store.test_history("k").await.expect("read").is_empty());
    for limit in [0, HistoryQuery::MAX_LIMIT + 1] {
        let q = HistoryQuery {
            limit,
            ..HistoryQuery::default()
        };
        assert!(matches!(
            store.list_test_histories(&q).await,
            Err(StoreError::Invalid(_))
        ));
    }
    assert!(matches!(
        store.test_history("").await,
        Err(StoreError::Invalid(_))
    ));
}

/// Listing is in key order, filtered by prefix and job name, paginated.
pub async fn history_listing_filters_and_pages(store: Arc<dyn Store>) {
    let mut batch = Vec::new();
    for (i, key) in ["a/3", "a/1", "b/1", "a/2", "a/10"].iter().enumerate() {
        let name = if key.starts_with('a') {
            "alpha"
        } else {
            "beta"
        };
        batch.push(outcome(key, "job-1", name, i as u64, true));
    }
    // "b/1" also ran in a job named alpha.
    batch.push(outcome("b/1", "job-2", "alpha", 9, true));
    store.record_outcomes(&batch, 10).await.expect("record");
    let keys = |page: &crate::store::HistoryPage| -> Vec<String> {
        page.tests.iter().map(|t| t.key.clone()).collect()
    };
    let all = store
        .list_test_histories(&HistoryQuery::default())
        .await
        .expect("list");
    assert_eq!(keys(&all), ["a/1", "a/10", "a/2", "a/3", "b/1"]);
    assert_eq!(all.next_cursor, None);
    assert_eq!(all.tests[4].outcomes.len(), 2);
    let mut q = HistoryQuery {
        prefix: Some("a/".into()),
        limit: 2,
        ..HistoryQuery::default()
    };
    let p1 = store.list_test_histories(&q).await.expect("page 1");
    assert_eq!(keys(&p1), ["a/1", "a/10"]);
    q.cursor = p1.next_cursor.clone();
    assert!(q.cursor.is_some(), "a full page with more has a cursor");
    let p2 = store.list_test_histories(&q).await.expect("page 2");
    assert_eq!(keys(&p2), ["a/2", "a/3"]);
    q.cursor = p2.next_cursor.clone();
    if q.cursor.is_some() {
        let p3 = store.list_test_histories(&q).await.expect("page 3");
        assert!(p3.tests.is_empty() && p3.next_cursor.is_none());
    }
    let beta = HistoryQuery {
        job_name: Some("beta".into()),
        ..HistoryQuery::default()
    };
    assert_eq!(
        keys(&store.list_test_histories(&beta).await.expect("beta")),
        ["b/1"]
    );
    let alpha = HistoryQuery {
        job_name: Some("alpha".into()),
        prefix: Some("b".into()),
        ..HistoryQuery::default()
    };
    assert_eq!(
        keys(&store.list_test_histories(&alpha).await.expect("alpha")),
        ["b/1"]
    );
}

/// Sixteen jobs recording the same key at once: every outcome lands.
pub async fn history_concurrent_records(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..16u64)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let o = outcome("shared", &format!("job-{i:02}"), "ci", i, i % 3 != 0);
                let mine = outcome(
                    &format!("own/{i:02}"),
                    &format!("job-{i:02}"),
                    "ci",
                    i,
                    true,
                );
                store.record_outcomes(&[o, mine], 100).await
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task").expect("record");
    }
    let h = store.test_history("shared").await.expect("read");
    let expected: Vec<String> = (0..16).map(|i| format!("job-{i:02}")).collect();
    assert_eq!(jobs_of(&h), expected, "all 16, in time order");
    let own = store
        .list_test_histories(&HistoryQuery {
            prefix: Some("own/".into()),
            ..HistoryQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(own.tests.len(), 16);
}
