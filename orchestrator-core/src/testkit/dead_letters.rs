//! Conformance cases of the dead-letter queue
//! ([`DeadLetterStore`](crate::store::DeadLetterStore)): run by
//! [`store_conformance_tests!`](crate::store_conformance_tests) with the
//! rest of the suite.
//!
//! | area | cases |
//! | --- | --- |
//! | writes | [`dead_letter_put_get_is_idempotent`], [`dead_letter_upsert_never_reopens`] |
//! | resolving | [`dead_letter_resolve_is_compare_and_set`], [`dead_letter_concurrent_resolves`] |
//! | listing | [`dead_letter_list_filters_and_pages`] |

use std::sync::Arc;

use serde_json::json;

use super::{job_id, T0};
use crate::failure::Failure;
use crate::store::dead_letter::{
    AttemptDecision, AttemptHistory, DeadLetter, DeadLetterCursor, DeadLetterId, DeadLetterQuery,
    DeadLetterReason, DeadLetterStatus, Resolution, Resolve,
};
use crate::store::{Store, StoreError};
use crate::time::Timestamp;

#[doc(hidden)]
#[macro_export]
macro_rules! __dead_letter_conformance_cases {
    ($make:expr; $skip:expr) => {
        $crate::__dead_letter_conformance_cases!(
            $make;
            $skip;
            dead_letter_put_get_is_idempotent,
            dead_letter_upsert_never_reopens,
            dead_letter_resolve_is_compare_and_set,
            dead_letter_concurrent_resolves,
            dead_letter_list_filters_and_pages,
        );
    };
    ($make:expr; $skip:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                if $skip {
                    return;
                }
                $crate::testkit::run(|| $make, $crate::testkit::dead_letters::$case);
            }
        )*
    };
}

/// An open entry for node `node` (its `n`-th) of `job`, created `ms`
/// milliseconds after [`T0`], with a two-attempt history.
pub fn dead_letter(job: &str, node: u32, n: u32, ms: u64) -> DeadLetter {
    let at = Timestamp(T0.0 + ms);
    let failure = Failure::transient(format!("boom {node}"));
    DeadLetter {
        id: DeadLetterId::new(job_id(job), node, n),
        job: job_id(job),
        job_name: format!("name-{job}"),
        owner: "alice".into(),
        node: format!("n{node}"),
        node_index: node,
        node_type: "noop".into(),
        params: json!({"k": node}),
        reason: DeadLetterReason::RetriesExhausted,
        failure: failure.clone(),
        attempts: (1..=2)
            .map(|attempt| AttemptHistory {
                attempt,
                compensation: false,
                started_at: at,
                ended_at: Some(at),
                failure: Some(failure.clone()),
                retry_in_ms: (attempt == 1).then_some(1000),
                decision: if attempt == 1 {
                    AttemptDecision::Retry
                } else {
                    AttemptDecision::GiveUp
                },
            })
            .collect(),
        created_at: at,
        status: DeadLetterStatus::Open,
        resolution: None,
    }
}

/// A resolution by `by` at [`T0`] + 1 h.
pub fn resolution(status: DeadLetterStatus, by: &str) -> Resolution {
    Resolution {
        status,
        by: by.into(),
        at: Timestamp(T0.0 + 3_600_000),
        reason: (status == DeadLetterStatus::Discarded).then(|| format!("{by} says so")),
    }
}

async fn get(store: &Arc<dyn Store>, id: &DeadLetterId) -> Option<DeadLetter> {
    store
        .dead_letter(id)
        .await
        .unwrap_or_else(|e| panic!("reading dead letter {id}: {e}"))
}

/// `put_dead_letter` stores an entry that reads back identical; writing it
/// again changes nothing; an open entry takes newer facts; an unknown id
/// reads as `None`.
pub async fn dead_letter_put_get_is_idempotent(store: Arc<dyn Store>) {
    let d = dead_letter("job-1", 2, 1, 10);
    assert_eq!(
        get(&store, &d.id).await,
        None,
        "a fresh store has no entries"
    );
    store.put_dead_letter(&d).await.expect("first put");
    assert_eq!(get(&store, &d.id).await.as_ref(), Some(&d));
    store.put_dead_letter(&d).await.expect("repeated put");
    assert_eq!(
        get(&store, &d.id).await.as_ref(),
        Some(&d),
        "a repeat changes nothing"
    );
    let page = store
        .list_dead_letters(&DeadLetterQuery::default())
        .await
        .expect("listing");
    assert_eq!(page.dead_letters, vec![d.clone()], "one entry, not two");
    let mut newer = d.clone();
    newer.attempts.truncate(1);
    store
        .put_dead_letter(&newer)
        .await
        .expect("put newer facts");
    assert_eq!(
        get(&store, &d.id).await,
        Some(newer),
        "an open entry takes the new facts"
    );
    let other = DeadLetterId::new(job_id("job-1"), 2, 2);
    assert_eq!(get(&store, &other).await, None);
}

/// A resolved entry never becomes open again, and the first resolution
/// wins over a later incoming one.
pub async fn dead_letter_upsert_never_reopens(store: Arc<dyn Store>) {
    let d = dead_letter("job-1", 0, 1, 0);
    store.put_dead_letter(&d).await.expect("put");
    let first = resolution(DeadLetterStatus::Discarded, "bob");
    let Resolve::Done(resolved) = store
        .resolve_dead_letter(&d.id, &first)
        .await
        .expect("resolve")
    else {
        panic!("resolving an open entry must succeed");
    };
    assert_eq!(resolved, d.resolved(first.clone()));
    store
        .put_dead_letter(&d)
        .await
        .expect("put the open entry again");
    assert_eq!(
        get(&store, &d.id).await.as_ref(),
        Some(&resolved),
        "must stay resolved"
    );
    let other = d.resolved(resolution(DeadLetterStatus::Requeued, "carol"));
    store
        .put_dead_letter(&other)
        .await
        .expect("put another resolution");
    assert_eq!(
        get(&store, &d.id).await.as_ref(),
        Some(&resolved),
        "the first resolution wins"
    );
    // An entry first written resolved (a journal replayed after a crash)
    // is stored resolved.
    let late =
        dead_letter("job-2", 1, 1, 5).resolved(resolution(DeadLetterStatus::Requeued, "dan"));
    store.put_dead_letter(&late).await.expect("put resolved");
    assert_eq!(get(&store, &late.id).await, Some(late));
}

/// `resolve_dead_letter` resolves only an open entry: a missing one is
/// `Missing`, a resolved one `Conflict` (unchanged), and an `open`
/// resolution is invalid and writes nothing.
pub async fn dead_letter_resolve_is_compare_and_set(store: Arc<dyn Store>) {
    let d = dead_letter("job-1", 1, 1, 0);
    let missing = store
        .resolve_dead_letter(&d.id, &resolution(DeadLetterStatus::Requeued, "bob"))
        .await
        .expect("resolving a missing entry");
    assert_eq!(missing, Resolve::Missing);
    assert_eq!(get(&store, &d.id).await, None, "resolving must not create");
    store.put_dead_letter(&d).await.expect("put");
    let bad = store
        .resolve_dead_letter(&d.id, &resolution(DeadLetterStatus::Open, "bob"))
        .await;
    assert!(matches!(bad, Err(StoreError::Invalid(_))), "got {bad:?}");
    assert_eq!(get(&store, &d.id).await.as_ref(), Some(&d), "unchanged");
    let r = resolution(DeadLetterStatus::Requeued, "bob");
    let done = store.resolve_dead_letter(&d.id, &r).await.expect("resolve");
    assert_eq!(done, Resolve::Done(d.resolved(r.clone())));
    let again = store
        .resolve_dead_letter(&d.id, &resolution(DeadLetterStatus::Discarded, "eve"))
        .await
        .expect("second resolve");
    assert_eq!(again, Resolve::Conflict(d.resolved(r.clone())));
    assert_eq!(get(&store, &d.id).await, Some(d.resolved(r)));
}

/// Sixteen concurrent resolutions of one entry: exactly one wins, and the
/// stored resolution is the winner's.
pub async fn dead_letter_concurrent_resolves(store: Arc<dyn Store>) {
    let d = dead_letter("job-1", 0, 1, 0);
    store.put_dead_letter(&d).await.expect("put");
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = Arc::clone(&store);
            let id = d.id.clone();
            tokio::spawn(async move {
                let status = if i % 2 == 0 {
                    DeadLetterStatus::Requeued
                } else {
                    DeadLetterStatus::Discarded
                };
                store
                    .resolve_dead_letter(&id, &resolution(status, &format!("user{i}")))
                    .await
                    .expect("resolve")
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut conflicts = 0;
    for t in tasks {
        match t.await.expect("task") {
            Resolve::Done(d) => winners.push(d),
            Resolve::Conflict(_) => conflicts += 1,
            Resolve::Missing => panic!("the entry exists"),
        }
    }
    assert_eq!(
        (winners.len(), conflicts),
        (1, 15),
        "exactly one resolution wins"
    );
    assert_eq!(get(&store, &d.id).await.as_ref(), winners.first());
}

/// Listing: newest first (time, then id), every filter, pages that add up
/// to the whole list, and bad limits and cursors rejected.
pub async fn dead_letter_list_filters_and_pages(store: Arc<dyn Store>) {
    let mut all = Vec::new();
    for i in 0..12u32 {
        let job = ["job-a", "job-b", "job-c"][(i % 3) as usize];
        // Two entries share each millisecond, so ids break ties.
        let mut d = dead_letter(job, i, 1, u64::from(i / 2) * 1000);
        if i % 4 == 0 {
            d.owner = "bob".into();
        }
        if i % 5 == 0 {
            d.node_type = "process".into();
        }
        if i % 3 == 1 {
            d.reason = DeadLetterReason::NonRetryable;
        }
        store.put_dead_letter(&d).await.expect("put");
        if i % 6 == 0 {
            let r = resolution(DeadLetterStatus::Discarded, "bob");
            store.resolve_dead_letter(&d.id, &r).await.expect("resolve");
            d = d.resolved(r);
        }
        all.push(d);
    }
    all.sort_by(|a, b| DeadLetterCursor::key(b).cmp(&DeadLetterCursor::key(a)));
    let list = |q: DeadLetterQuery| {
        let store = Arc::clone(&store);
        async move { store.list_dead_letters(&q).await.expect("listing") }
    };
    let expect = |f: &dyn Fn(&DeadLetter) -> bool| -> Vec<DeadLetter> {
        all.iter().filter(|d| f(d)).cloned().collect()
    };
    let q = DeadLetterQuery::default;
    assert_eq!(
        list(q()).await.dead_letters,
        all,
        "newest first, ids breaking ties"
    );
    let cases: Vec<(DeadLetterQuery, Vec<DeadLetter>)> = vec![
        (
            DeadLetterQuery {
                job: Some(job_id("job-b")),
                ..q()
            },
            expect(&|d| d.job.as_str() == "job-b"),
        ),
        (
            DeadLetterQuery {
                owner: Some("bob".into()),
                ..q()
            },
            expect(&|d| d.owner == "bob"),
        ),
        (
            DeadLetterQuery {
                node_type: Some("process".into()),
                ..q()
            },
            expect(&|d| d.node_type == "process"),
        ),
        (
            DeadLetterQuery {
                statuses: vec![DeadLetterStatus::Open],
                ..q()
            },
            expect(&|d| d.status == DeadLetterStatus::Open),
        ),
        (
            DeadLetterQuery {
                statuses: vec![DeadLetterStatus::Discarded, DeadLetterStatus::Requeued],
                ..q()
            },
            expect(&|d| d.status != DeadLetterStatus::Open),
        ),
        (
            DeadLetterQuery {
                reasons: vec![DeadLetterReason::NonRetryable],
                ..q()
            },
            expect(&|d| d.reason == DeadLetterReason::NonRetryable),
        ),
        (
            DeadLetterQuery {
                created_after: Some(Timestamp(T0.0 + 2000)),
                created_before: Some(Timestamp(T0.0 + 4000)),
                ..q()
            },
            expect(&|d| d.created_at.0 >= T0.0 + 2000 && d.created_at.0 < T0.0 + 4000),
        ),
        (
            DeadLetterQuery {
                owner: Some("alice".into()),
                statuses: vec![DeadLetterStatus::Open],
                job: Some(job_id("job-a")),
                ..q()
            },
            expect(&|d| {
                d.owner == "alice"
                    && d.status == DeadLetterStatus::Open
                    && d.job.as_str() == "job-a"
            }),
        ),
    ];
    for (query, want) in cases {
        assert!(
            !want.is_empty(),
            "each filter case selects something: {query:?}"
        );
        assert_eq!(
            list(query.clone()).await.dead_letters,
            want,
            "filter {query:?}"
        );
    }
    // Pages of 5 add up to the whole list.
    let mut paged = Vec::new();
    let mut cursor = None;
    for _ in 0..10 {
        let page = list(DeadLetterQuery {
            limit: 5,
            cursor: cursor
                .as_deref()
                .map(|c: &str| c.parse().expect("cursor parses")),
            ..q()
        })
        .await;
        assert!(page.dead_letters.len() <= 5);
        paged.extend(page.dead_letters);
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(paged, all, "pages add up to the list");
    // A full last page still ends the listing (12 = 4 × 3).
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let page = list(DeadLetterQuery {
            limit: 4,
            cursor: cursor.as_deref().map(|c| c.parse().expect("cursor parses")),
            ..q()
        })
        .await;
        pages += 1;
        cursor = page.next_cursor;
        if cursor.is_none() || pages > 5 {
            break;
        }
    }
    assert!(
        pages <= 4,
        "12 entries in pages of 4 take 3 pages (4 with an empty one)"
    );
    for limit in [0, DeadLetterQuery::MAX_LIMIT + 1] {
        let r = store
            .list_dead_letters(&DeadLetterQuery { limit, ..q() })
            .await;
        assert!(
            matches!(r, Err(StoreError::Invalid(_))),
            "limit {limit}: {r:?}"
        );
    }
    for bad in ["", "12", "x~job-a.1.1", "12~nope"] {
        assert!(bad.parse::<DeadLetterCursor>().is_err(), "cursor {bad:?}");
    }
}
