//! Conformance cases for [`PolicyStore`](crate::store::PolicyStore): stored
//! policy versions are immutable, listing shows the latest, and racing
//! writers of one version agree on a single body.

use std::sync::Arc;

use crate::classify::ClassifyRule;
use crate::policy::StoredPolicy;
use crate::retry::{Backoff, RetrySpec};
use crate::store::{Store, StoreError};
use crate::FailureClass;

fn policy(name: &str, version: u32, attempts: u32) -> StoredPolicy {
    let mut p = StoredPolicy::new(name, version);
    p.description = Some(format!("{name} v{version}"));
    p.retry = RetrySpec::new()
        .max_attempts(attempts)
        .backoff(Backoff::fixed(std::time::Duration::from_millis(250)));
    p.classify = vec![ClassifyRule::new(FailureClass::Transient)
        .exit_codes([75])
        .pattern("reset by peer")];
    p
}

/// A stored version reads back identical; an identical re-put succeeds; a
/// different body is a conflict and changes nothing.
pub async fn policy_versions_are_immutable(store: Arc<dyn Store>) {
    let v1 = policy("farm", 1, 3);
    store.put_policy(&v1).await.expect("first put");
    store
        .put_policy(&v1)
        .await
        .expect("identical re-put is idempotent");
    assert_eq!(
        store.get_policy("farm", Some(1)).await.unwrap(),
        Some(v1.clone())
    );

    let changed = policy("farm", 1, 4);
    match store.put_policy(&changed).await {
        Err(StoreError::PolicyConflict { name, version }) => {
            assert_eq!((name.as_str(), version), ("farm", 1));
        }
        other => panic!("a different body for farm@1 must conflict, got {other:?}"),
    }
    assert_eq!(
        store.get_policy("farm", Some(1)).await.unwrap(),
        Some(v1),
        "a rejected put must leave the stored version untouched"
    );
    assert_eq!(store.get_policy("farm", Some(2)).await.unwrap(), None);
    assert_eq!(store.get_policy("nothing", None).await.unwrap(), None);
}

/// `get_policy(name, None)` and `list_policies` give the highest version;
/// `policy_versions` gives all of them, oldest first.
pub async fn policy_latest_and_listing(store: Arc<dyn Store>) {
    assert!(store.list_policies().await.unwrap().is_empty());
    // Written out of order, with a version above 9 (numeric, not text, order).
    for (name, v) in [
        ("farm", 2),
        ("farm", 10),
        ("farm", 1),
        ("db", 1),
        ("farm-x", 1),
    ] {
        store.put_policy(&policy(name, v, v + 1)).await.unwrap();
    }
    let latest = store.get_policy("farm", None).await.unwrap().unwrap();
    assert_eq!(latest, policy("farm", 10, 11));
    let list: Vec<(String, u32)> = store
        .list_policies()
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.version))
        .collect();
    assert_eq!(
        list,
        [("db".into(), 1), ("farm".into(), 10), ("farm-x".into(), 1)]
    );
    let versions: Vec<u32> = store
        .policy_versions("farm")
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.version)
        .collect();
    assert_eq!(versions, [1, 2, 10]);
    assert!(store.policy_versions("far").await.unwrap().is_empty());
}

/// Eight writers race on one version with two different bodies: exactly one
/// body is stored, and every writer of the other body got a conflict.
pub async fn concurrent_policy_puts(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for i in 0..8u32 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let p = policy("race", 1, 2 + i % 2);
            (i % 2, store.put_policy(&p).await)
        }));
    }
    let mut ok = [0u32; 2];
    let mut conflicts = [0u32; 2];
    for t in tasks {
        match t.await.expect("task") {
            (b, Ok(())) => ok[b as usize] += 1,
            (b, Err(StoreError::PolicyConflict { .. })) => conflicts[b as usize] += 1,
            (_, Err(e)) => panic!("unexpected error: {e}"),
        }
    }
    let stored = store.get_policy("race", Some(1)).await.unwrap().unwrap();
    let winner = (stored.retry.max_attempts == Some(3)) as usize;
    assert_eq!(ok[winner], 4, "every writer of the stored body succeeds");
    assert_eq!(conflicts[winner], 0);
    assert_eq!(ok[1 - winner], 0, "no writer of the other body succeeds");
    assert_eq!(conflicts[1 - winner], 4);
}
