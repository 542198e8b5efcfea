//! Conformance cases for [`LeaseStore`]: claims, renewals, releases,
//! fencing of stale writers, claimable listing and cancel requests.

use std::sync::Arc;
use std::time::Duration;

use super::{job_id, ok, run_nodes, spec, TestJob, T0};
use crate::journal::Event;
use crate::state::JobState;
use crate::store::lease::{CancelRequest, LeaseRecord};
use crate::store::{Store, StoreError};
use crate::time::Timestamp;

const TTL: Duration = Duration::from_secs(10);

fn at(ms: u64) -> Timestamp {
    Timestamp(T0.0 + ms)
}

fn assert_held<T: std::fmt::Debug>(r: Result<T, StoreError>, owner: &str, what: &str) {
    match r {
        Err(StoreError::LeaseHeld { owner: o, .. }) => {
            assert_eq!(o, owner, "{what}: LeaseHeld must name the holder");
        }
        other => panic!("{what}: expected LeaseHeld by {owner}, got {other:?}"),
    }
}

fn assert_fenced<T: std::fmt::Debug>(
    r: Result<T, StoreError>,
    token: u64,
    current: u64,
    what: &str,
) {
    match r {
        Err(StoreError::Fenced {
            token: t,
            current: c,
            ..
        }) => assert_eq!((t, c), (token, current), "{what}: Fenced tokens"),
        other => panic!("{what}: expected Fenced ({token} < {current}), got {other:?}"),
    }
}

/// Claims go to whoever finds the lease free or lapsed, with a token one
/// higher each time; renewals extend only a current lease; releases end
/// only a current lease; `force` takes a live lease.
pub async fn lease_claim_renew_release(store: Arc<dyn Store>) {
    let s = &*store;
    let job = TestJob::new("leased", T0);
    job.create(s).await;
    let id = job.id().clone();
    assert_eq!(
        ok(s.lease(&id).await, "lease of a new job"),
        LeaseRecord::default(),
        "a new job is queued: no owner, token 0"
    );

    let a = ok(s.claim(&id, "a", at(0), TTL, false).await, "first claim");
    assert_eq!(a.lease.token, 1);
    assert_eq!(a.lease.owner, "a");
    assert_eq!(a.lease.expires_at, at(10_000));
    assert_eq!(a.cancel_requested, None);
    assert_held(
        s.claim(&id, "b", at(1_000), TTL, false).await,
        "a",
        "claim of a live lease",
    );
    assert_held(
        s.claim(&id, "a", at(1_000), TTL, false).await,
        "a",
        "re-claim by the holder",
    );

    let renewed = ok(s.renew(&a.lease, at(5_000), TTL).await, "renewal");
    assert_eq!(renewed.lease.token, 1, "a renewal keeps the token");
    assert_eq!(renewed.lease.expires_at, at(15_000));
    assert_held(
        s.claim(&id, "b", at(14_999), TTL, false).await,
        "a",
        "claim before expiry",
    );

    let b = ok(
        s.claim(&id, "b", at(15_000), TTL, false).await,
        "claim at expiry",
    );
    assert_eq!(b.lease.token, 2, "a takeover increments the token");
    assert_fenced(
        s.renew(&a.lease, at(15_001), TTL).await,
        1,
        2,
        "renewal of a taken-over lease",
    );
    ok(s.release(&a.lease).await, "release of a stale lease");
    assert_held(
        s.claim(&id, "c", at(16_000), TTL, false).await,
        "b",
        "a stale release changes nothing",
    );

    ok(s.release(&b.lease).await, "release");
    let stored = ok(s.lease(&id).await, "lease after release");
    assert_eq!(
        (stored.owner.as_str(), stored.token, stored.expires_at),
        ("b", 2, 0)
    );
    assert_fenced(
        s.renew(&b.lease, at(16_000), TTL).await,
        2,
        2,
        "renewal of a released lease",
    );
    let c = ok(
        s.claim(&id, "c", at(16_000), TTL, false).await,
        "claim after release",
    );
    assert_eq!(c.lease.token, 3);
    let d = ok(
        s.claim(&id, "d", at(16_001), TTL, true).await,
        "forced claim",
    );
    assert_eq!(
        d.lease.token, 4,
        "a forced claim takes a live lease, with a new token"
    );
    assert_eq!(ok(s.lease(&id).await, "lease").owner, "d");

    let missing = job_id("no-such-job");
    assert!(matches!(
        s.claim(&missing, "a", at(0), TTL, false).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.lease(&missing).await,
        Err(StoreError::NotFound { .. })
    ));
}

/// An append carrying a token older than the job's is `Fenced` and writes
/// nothing — checked before the version, so even an append at the right
/// version from a writer that lost the job cannot land.
pub async fn stale_fencing_token_is_rejected(store: Arc<dyn Store>) {
    let s = &*store;
    let mut job = TestJob::new("fenced", T0);
    job.create(s).await;
    let id = job.id().clone();
    // Never claimed: a writer without a lease may append.
    job.append(s, [Event::Queued]).await;

    let a = ok(s.claim(&id, "a", at(0), TTL, false).await, "claim by a");
    job.set_fence(a.lease.token);
    job.append(s, [Event::Started]).await;
    let before = ok(s.summary(&id).await, "summary");

    let b = ok(
        s.claim(&id, "b", at(20_000), TTL, false).await,
        "takeover by b",
    );
    assert_eq!(b.lease.token, 2);
    // `a` wakes up and appends at what is still the job's version.
    let late = job.peek_batch(run_nodes(0..1));
    assert_fenced(
        s.append(
            &id,
            late.expected,
            &late.records,
            &late.progress,
            a.lease.token,
        )
        .await,
        1,
        2,
        "an append with a stale token",
    );
    assert_fenced(
        s.append(&id, late.expected, &late.records, &late.progress, 0)
            .await,
        0,
        2,
        "an append without a token after a claim",
    );
    assert_eq!(
        ok(s.summary(&id).await, "summary"),
        before,
        "a fenced append must not move the summary"
    );
    assert_eq!(
        ok(s.read(&id, 0, 100).await, "read").len() as u64,
        before.progress.version,
        "a fenced append must not write records"
    );
    job.set_fence(b.lease.token);
    job.append(s, run_nodes(0..1)).await;
    assert_eq!(
        ok(s.summary(&id).await, "summary").progress.version,
        job.version()
    );
}

/// The append that finishes a job ends its lease (keeping the token) and
/// drops a pending cancel; a finished job can be claimed again at once, and
/// takes no cancel requests.
pub async fn finishing_append_ends_the_lease(store: Arc<dyn Store>) {
    let s = &*store;
    let mut job = TestJob::new("finishing", T0);
    job.create(s).await;
    let id = job.id().clone();
    let a = ok(s.claim(&id, "a", at(0), TTL, false).await, "claim");
    job.set_fence(a.lease.token);
    job.append(s, [Event::Queued, Event::Started]).await;
    let request = CancelRequest {
        reason: Some("stop".into()),
    };
    assert!(ok(s.request_cancel(&id, &request).await, "cancel request"));
    job.append(s, run_nodes(0..3)).await;
    job.append(
        s,
        [Event::Finished {
            state: JobState::Succeeded,
        }],
    )
    .await;
    let stored = ok(s.lease(&id).await, "lease after the final append");
    assert_eq!(stored.token, 1, "finishing keeps the token");
    assert_eq!(stored.expires_at, 0, "finishing ends the lease");
    assert_eq!(stored.cancel, None, "finishing drops a pending cancel");
    assert!(
        !ok(
            s.request_cancel(&id, &request).await,
            "cancel of a finished job"
        ),
        "a finished job takes no cancel request"
    );
    assert_eq!(ok(s.lease(&id).await, "lease").cancel, None);
    let b = ok(
        s.claim(&id, "b", at(1), TTL, false).await,
        "claim of a finished job",
    );
    assert_eq!(b.lease.token, 2);
    let listed = ok(s.claimable(at(1), 10).await, "claimable");
    assert!(
        listed.iter().all(|c| c.job != id),
        "finished jobs are never claimable"
    );
}

/// `claimable` lists unfinished jobs without a live lease, highest
/// priority first, then oldest, up to the limit; with their token.
pub async fn claimable_orders_by_priority_then_age(store: Arc<dyn Store>) {
    let s = &*store;
    let make = |id: &str, created: u64, priority: i32| {
        let mut spec = spec(&format!("job {id}"), 2);
        spec.priority = priority;
        TestJob::with_spec(id, "alice", at(created), spec)
    };
    let low_old = make("low-old", 1, 0);
    let high_new = make("high-new", 3, 5);
    let high_old = make("high-old", 2, 5);
    let held = make("held", 0, 9);
    let mut done = make("done", 0, 9);
    for j in [&low_old, &high_new, &high_old, &held, &done] {
        j.create(s).await;
    }
    done.append(s, [Event::Queued, Event::Started]).await;
    done.append(s, run_nodes(0..2)).await;
    done.append(
        s,
        [Event::Finished {
            state: JobState::Succeeded,
        }],
    )
    .await;
    ok(s.claim(held.id(), "a", at(0), TTL, false).await, "claim");

    let ids = |v: Vec<crate::store::lease::Claimable>| {
        v.into_iter()
            .map(|c| (c.job.to_string(), c.token))
            .collect::<Vec<_>>()
    };
    let all = ids(ok(s.claimable(at(1), 10).await, "claimable"));
    assert_eq!(
        all,
        [
            ("high-old".to_owned(), 0),
            ("high-new".to_owned(), 0),
            ("low-old".to_owned(), 0)
        ],
        "by priority, then age; neither held nor finished jobs"
    );
    assert_eq!(ok(s.claimable(at(1), 2).await, "limited").len(), 2);
    let later = ids(ok(
        s.claimable(at(10_000), 10).await,
        "after the lease lapsed",
    ));
    assert_eq!(
        later.first(),
        Some(&("held".to_owned(), 1)),
        "an orphaned job is claimable, with its token"
    );
}

/// A cancel request reaches the holder at its next renewal, and whoever
/// claims the job next.
pub async fn cancel_requests_reach_the_holder(store: Arc<dyn Store>) {
    let s = &*store;
    let mut job = TestJob::new("to-cancel", T0);
    job.create(s).await;
    let id = job.id().clone();
    job.append(s, [Event::Queued]).await;
    let a = ok(s.claim(&id, "a", at(0), TTL, false).await, "claim");
    let request = CancelRequest {
        reason: Some("no longer needed".into()),
    };
    assert!(ok(s.request_cancel(&id, &request).await, "cancel request"));
    let renewed = ok(s.renew(&a.lease, at(1_000), TTL).await, "renewal");
    assert_eq!(renewed.cancel_requested, Some(request.clone()));
    let b = ok(s.claim(&id, "b", at(60_000), TTL, false).await, "takeover");
    assert_eq!(b.cancel_requested, Some(request));
    let without_reason = CancelRequest::default();
    assert!(ok(s.request_cancel(&id, &without_reason).await, "again"));
    assert_eq!(ok(s.lease(&id).await, "lease").cancel, Some(without_reason));
    assert!(matches!(
        s.request_cancel(&job_id("no-such-job"), &CancelRequest::default())
            .await,
        Err(StoreError::NotFound { .. })
    ));
}
