//! `GET /stats`: recovery analytics scoped to the caller, with a time range.

mod common;

use common::start;
use orchestrator_core::runner::Outcome;
use orchestrator_core::{FailureClass, Timestamp};
use serde_json::{json, Value};

/// A one-node job whose node `n` is retried at once.
fn job(name: &str) -> Value {
    json!({
        "name": name,
        "retry": {"max_attempts": 3, "backoff": {"kind": "fixed", "delay": 0}},
        "dag_definition": {"nodes": [{"id": "n", "type": "scripted"}], "edges": []}
    })
}

#[tokio::test]
async fn stats_are_scoped_to_the_caller_and_filtered_by_time() {
    let s = start().await;
    s.scripted.set_default(Outcome::succeed());
    // Every run of `n`: an infrastructure failure, then a success.
    s.scripted.script(
        "n",
        [
            Outcome::fail(FailureClass::Infrastructure),
            Outcome::succeed(),
        ],
    );
    let t0 = 1_700_000_000_000;
    let mut ids = Vec::new();
    for (i, user) in ["alice", "bob", "alice"].into_iter().enumerate() {
        s.clock.set(Timestamp(t0 + i as u64 * 60_000));
        let id = s.submit(user, &job(&format!("j{i}"))).await;
        s.wait(&id).await;
        ids.push(id);
    }

    let alice = s.token("alice");
    let r = s.get("/stats", &alice).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["jobs"], 2);
    assert_eq!(v["attempts"], 4);
    assert_eq!(v["failures"], 2);
    assert_eq!(v["recovered"], 2);
    assert_eq!(v["recovered_share"], 1.0);
    assert_eq!(v["failed_attempts_by_class"], json!({"infrastructure": 2}));
    assert_eq!(
        v["node_types"]["scripted"],
        json!({"nodes": 2, "attempts": 4, "retries": 2, "retries_per_node": 1.0})
    );
    assert_eq!(v["recoveries"]["infrastructure_retry"]["initiated"], 2);
    assert_eq!(v["recoveries"]["infrastructure_retry"]["succeeded"], 2);
    assert_eq!(v["truncated"], false);

    // Someone else's jobs are no jobs; an admin sees everyone's, or one
    // owner's.
    let r = s.get("/stats?owner=bob", &alice).await;
    assert_eq!(r.json()["jobs"], 0);
    let admin = s.admin_token("root");
    assert_eq!(s.get("/stats", &admin).await.json()["jobs"], 3);
    assert_eq!(s.get("/stats?owner=bob", &admin).await.json()["jobs"], 1);

    // The time range selects by creation time.
    let since = t0 + 60_000;
    let r = s.get(&format!("/stats?since={since}"), &admin).await;
    assert_eq!(r.json()["jobs"], 2);
    let r = s
        .get(
            "/stats?since=2023-11-14T22:13:20Z&until=2023-11-14T22:14:00Z",
            &admin,
        )
        .await;
    assert_eq!(r.json()["jobs"], 1, "only the first job: {}", r.text);
    let r = s.get("/stats?max_jobs=1", &admin).await;
    assert_eq!(
        (r.json()["jobs"].clone(), r.json()["truncated"].clone()),
        (json!(1), json!(true))
    );
}

#[tokio::test]
async fn bad_parameters_and_missing_tokens_are_refused() {
    let s = start().await;
    let t = s.token("alice");
    let r = s.get("/stats?since=yesterday&max_jobs=0&bogus=1", &t).await;
    assert_eq!(r.status, 400);
    let paths: Vec<String> = r.json()["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap().to_owned())
        .collect();
    assert!(paths.contains(&"?since".to_owned()), "{paths:?}");
    assert!(paths.contains(&"?max_jobs".to_owned()), "{paths:?}");
    assert!(paths.contains(&"?bogus".to_owned()), "{paths:?}");
    let r = s.send(s.request(reqwest::Method::GET, "/stats")).await;
    assert_eq!(r.status, 401);
    // No jobs: zero counts, no ratios.
    let v = s.get("/stats", &t).await.json();
    assert_eq!(v["jobs"], 0);
    assert!(v.get("recovered_share").is_none());
    assert!(v.get("mean_time_to_recovery_ms").is_none());
}
