//! `GET /flaky` (scoped by run owner, strict parameters) and the node,
//! retry, recovery, flaky and quarantine figures of `/metrics` after a
//! scripted job, both checked against the OpenAPI document like every
//! response of the test server.

mod common;

use common::start;
use orchestrator_core::flaky::{RunOutcome, TestOutcome};
use orchestrator_core::runner::Outcome;
use orchestrator_core::store::TestHistoryStore;
use orchestrator_core::{FailureClass, JobState, Timestamp};
use reqwest::Method;
use serde_json::json;

async fn seed(s: &common::Server, key: &str, runs: &str, owner: &str) {
    for (i, c) in runs.chars().enumerate() {
        let o = TestOutcome {
            key: key.into(),
            outcome: RunOutcome {
                job: format!("h-{owner}-{i}").parse().unwrap(),
                job_name: "ci".into(),
                owner: owner.into(),
                at: Timestamp(1_000 + 10 * i as u64),
                passed: c != 'F',
                flaky: c == 'f',
                attempts: 1,
                quarantined: false,
            },
        };
        s.store.record_outcomes(&[o], 50).await.unwrap();
    }
}

#[tokio::test]
async fn flaky_report_is_scoped_to_the_callers_runs() {
    let s = start().await;
    seed(&s, "ci/a", "PFPF", "alice").await;
    seed(&s, "ci/b", "PPPP", "bob").await;
    seed(&s, "ci/a", "FFFF", "bob").await;

    let reply = s.get("/flaky", &s.token("alice")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    let tests = body["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 1, "{body}");
    assert_eq!(tests[0]["key"], "ci/a");
    // Only alice's four runs count: P F P F, three flips.
    assert_eq!(tests[0]["score"]["runs"], 4);
    assert_eq!(tests[0]["score"]["flip_rate"], 0.75);
    assert_eq!(tests[0]["score"]["class"], "flaky");
    assert_eq!(tests[0]["last_run"]["owner"], "alice");

    let reply = s.get("/flaky", &s.admin_token("root")).await;
    let body = reply.json();
    let keys: Vec<&str> = body["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["ci/a", "ci/b"]);
    assert_eq!(body["tests"][0]["score"]["runs"], 8);

    let reply = s
        .get("/flaky?min_score=0.5&limit=1", &s.admin_token("root"))
        .await;
    let body = reply.json();
    assert_eq!(body["tests"].as_array().unwrap().len(), 0, "{body}");
    let reply = s.get("/flaky?class=stable", &s.admin_token("root")).await;
    assert_eq!(reply.json()["tests"][0]["key"], "ci/b");

    let reply = s
        .get("/flaky?min_score=7&class=odd&sort=x", &s.token("alice"))
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (400, "invalid_parameter".into())
    );
    let reply = s.send(s.request(Method::GET, "/flaky")).await;
    assert_eq!(reply.status, 401);
}

#[tokio::test]
async fn metrics_show_nodes_retries_recoveries_flaky_and_quarantined() {
    let s = start().await;
    s.scripted.script(
        "wobbly",
        [Outcome::fail(FailureClass::Transient), Outcome::succeed()],
    );
    s.scripted
        .script("known-bad", [Outcome::fail(FailureClass::Permanent)]);
    let body = json!({
        "name": "m",
        "retry": {"max_attempts": 2, "backoff": {"kind": "fixed", "delay": "0s"}},
        "flaky": {"quarantine": {"tests": ["m/known-bad"]}},
        "dag_definition": {"nodes": [
            {"id": "wobbly", "type": "scripted"},
            {"id": "known-bad", "type": "scripted"},
            {"id": "after", "type": "scripted", "depends_on": ["known-bad"]}
        ]}
    });
    let job = s.submit("alice", &body).await;
    let status = s.wait(&job).await;
    assert_eq!(status.state, JobState::Succeeded);
    assert!(status.node("wobbly").unwrap().flaky);
    assert!(status.node("known-bad").unwrap().quarantined);

    let reply = s.get(&format!("/job/{job}"), &s.token("alice")).await;
    let nodes = reply.json()["nodes"].clone();
    assert_eq!(nodes[0]["flaky"], true);
    assert_eq!(nodes[1]["quarantined"], true);

    let text = s.send(s.request(Method::GET, "/metrics")).await.text;
    for line in [
        "orchestrator_node_retries_total{class=\"transient\"} 1",
        "orchestrator_recoveries_total{kind=\"retry_after_failure\"} 1",
        "orchestrator_recoveries_total{kind=\"job_resumed\"} 0",
        "orchestrator_flaky_nodes_total 1",
        "orchestrator_quarantined_nodes_total 1",
        "orchestrator_nodes_running 0",
        "orchestrator_nodes_queued 0",
        "orchestrator_node_attempts_total 4",
        "orchestrator_node_duration_seconds_count{type=\"scripted\",state=\"succeeded\"} 2",
        "orchestrator_node_duration_seconds_count{type=\"scripted\",state=\"failed\"} 1",
        "orchestrator_node_duration_seconds_bucket{type=\"scripted\",state=\"failed\",le=\"+Inf\"} 1",
        "orchestrator_adaptive_attempts_total{budget=\"extra\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }

    // The report shows the run just recorded.
    let reply = s.get("/flaky?job_name=m", &s.token("alice")).await;
    let body = reply.json();
    let keys: Vec<&str> = body["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["m/after", "m/known-bad", "m/wobbly"]);
    assert_eq!(body["tests"][1]["last_run"]["quarantined"], true);
    assert_eq!(body["tests"][2]["last_run"]["flaky"], true);
}
