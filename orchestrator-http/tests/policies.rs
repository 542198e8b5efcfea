//! Stored policies and circuit breakers over real HTTP: creating versions
//! (admins only, idempotent, immutable), reading them, submitting jobs that
//! name them, the breakers of the executor and their metrics — each
//! response checked against the OpenAPI document.

mod common;

use common::start;
use orchestrator_core::runner::Outcome;
use orchestrator_core::{Event, FailureClass, JobState, StoreExt};
use reqwest::Method;
use serde_json::{json, Value};

/// Policy `name@version` retrying up to `attempts` times at once.
fn policy(name: &str, version: u32, attempts: u32) -> Value {
    json!({
        "name": name,
        "version": version,
        "description": "device farm",
        "retry": {"max_attempts": attempts, "backoff": {"kind": "fixed", "delay": "0ms"}},
        "classify": [{"name": "farm-down", "exit_codes": [3], "class": "infrastructure"}]
    })
}

/// One scripted node `flaky` under the job-level policy reference `r`.
fn job_with_policy(r: &str) -> Value {
    json!({"name": "farm tests", "policy": r, "dag_definition": {"nodes": [
        {"id": "flaky", "type": "scripted"}
    ]}})
}

fn codes(reply: &common::Reply) -> Vec<(String, String)> {
    reply.json()["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap().to_owned(),
                p["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn admins_create_versions_idempotently_and_conflicts_are_refused() {
    let s = start().await;
    let admin = s.admin_token("root");
    let alice = s.token("alice");

    // Only admins store policies; nothing is written otherwise.
    let reply = s
        .post_json("/policies", &alice, &policy("farm", 1, 4))
        .await;
    assert_eq!((reply.status, reply.code().as_str()), (403, "forbidden"));
    let reply = s.get("/policies", &alice).await;
    assert_eq!(reply.json(), json!({"policies": []}));

    let reply = s
        .post_json("/policies", &admin, &policy("farm", 1, 4))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.json(), policy("farm", 1, 4));
    // The identical body again (a retried create) changes nothing.
    let reply = s
        .post_json("/policies", &admin, &policy("farm", 1, 4))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // A different body for the same version is a conflict; the stored one stays.
    let reply = s
        .post_json("/policies", &admin, &policy("farm", 1, 9))
        .await;
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (409, "policy_conflict")
    );
    let reply = s.get("/policies/farm@1", &alice).await;
    assert_eq!(reply.json(), policy("farm", 1, 4));

    // Invalid bodies: every problem with its path, nothing stored.
    let mut bad = policy("bad name", 0, 0);
    bad["classify"][0]["pattern"] = json!("(");
    let reply = s.post_json("/policies", &admin, &bad).await;
    assert_eq!((reply.status, reply.code().as_str()), (422, "invalid_body"));
    let paths: Vec<String> = codes(&reply).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        paths,
        [
            "/name",
            "/version",
            "/retry/max_attempts",
            "/classify/0/pattern"
        ]
    );
    let reply = s
        .post_json(
            "/policies",
            &admin,
            &json!({"name": "x", "version": 1, "colour": "red"}),
        )
        .await;
    assert_eq!((reply.status, reply.code().as_str()), (422, "invalid_body"));
    let reply = s
        .send(
            s.request(Method::POST, "/policies")
                .bearer_auth(&admin)
                .header("content-type", "text/plain")
                .body("name: farm"),
        )
        .await;
    assert_eq!(reply.status, 415);
    let reply = s
        .send(
            s.request(Method::POST, "/policies")
                .bearer_auth(&admin)
                .header("content-type", "application/json")
                .body("{"),
        )
        .await;
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (400, "malformed_json")
    );
    let reply = s.get("/policies?all=true", &alice).await;
    assert_eq!(reply.json(), json!({"policies": [policy("farm", 1, 4)]}));
}

#[tokio::test]
async fn policies_list_latest_or_every_version_and_show_one() {
    let s = start().await;
    let admin = s.admin_token("root");
    let bob = s.token("bob");
    for (name, version) in [("farm", 1), ("farm", 2), ("api", 1)] {
        let reply = s
            .post_json("/policies", &admin, &policy(name, version, version + 1))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
    }
    let reply = s.get("/policies", &bob).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!({"policies": [policy("api", 1, 2), policy("farm", 2, 3)]})
    );
    let reply = s.get("/policies?all=true", &bob).await;
    assert_eq!(
        reply.json(),
        json!({"policies": [policy("api", 1, 2), policy("farm", 1, 2), policy("farm", 2, 3)]})
    );
    assert_eq!(
        s.get("/policies?all=false", &bob).await.json()["policies"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    for query in ["?all=yes", "?every=true", "?all=true&all=false"] {
        let reply = s.get(&format!("/policies{query}"), &bob).await;
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (400, "invalid_parameter"),
            "{query}"
        );
    }

    assert_eq!(
        s.get("/policies/farm", &bob).await.json(),
        policy("farm", 2, 3)
    );
    assert_eq!(
        s.get("/policies/farm@1", &bob).await.json(),
        policy("farm", 1, 2)
    );
    for missing in ["farm@3", "nope", "farm@0", "bad%20name", "farm@x"] {
        let reply = s.get(&format!("/policies/{missing}"), &bob).await;
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (404, "policy_not_found"),
            "{missing}"
        );
    }
    let reply = s.send(s.request(Method::GET, "/policies")).await;
    assert_eq!(reply.status, 401);
}

#[tokio::test]
async fn a_job_naming_a_stored_policy_is_accepted_and_runs_with_it() {
    let s = start().await;
    let admin = s.admin_token("root");
    // farm@1 allows 4 attempts where the default allows 3.
    let reply = s
        .post_json("/policies", &admin, &policy("farm", 1, 4))
        .await;
    assert_eq!(reply.status, 201);
    s.scripted.script(
        "flaky",
        [
            Outcome::fail(FailureClass::Transient),
            Outcome::fail(FailureClass::Transient),
            Outcome::fail(FailureClass::Transient),
            Outcome::succeed(),
        ],
    );
    let id = s.submit("alice", &job_with_policy("farm")).await;
    let status = s.wait(&id).await;
    assert_eq!(status.state, JobState::Succeeded);
    assert_eq!(status.nodes[0].attempts, 4);
    // The journaled spec names the version the job ran with.
    let records = s
        .store
        .inner
        .read_all(&id.parse().unwrap(), 0)
        .await
        .unwrap();
    let Event::Submitted { header } = &records[0].event else {
        panic!("first record: {:?}", records[0].event)
    };
    assert_eq!(header.spec.policy.as_deref(), Some("farm@1"));

    // A spec refused for a node type must not also report the existing
    // policy as unknown.
    let mut body = job_with_policy("farm@1");
    body["dag_definition"]["nodes"][0]["type"] = json!("process");
    body["dag_definition"]["nodes"][0]["params"] = json!({"command": "true"});
    let reply = s.post_json("/job", &s.token("alice"), &body).await;
    assert_eq!(reply.status, 422);
    let problems = codes(&reply);
    assert!(
        problems.iter().all(|(_, code)| code != "unknown_policy"),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|(_, code)| code == "node_type_not_allowed"),
        "{problems:?}"
    );
}

#[tokio::test]
async fn an_unknown_policy_is_a_422_with_its_path() {
    let s = start().await;
    let alice = s.token("alice");
    let reply = s
        .post_json("/job", &alice, &job_with_policy("farm@7"))
        .await;
    assert_eq!((reply.status, reply.code().as_str()), (422, "invalid_spec"));
    assert_eq!(
        codes(&reply),
        [("/policy".to_owned(), "unknown_policy".to_owned())]
    );

    let body = json!({"name": "n", "dag_definition": {"nodes": [
        {"id": "a", "type": "noop", "policy": "ghost"}
    ]}});
    let reply = s.post_json("/job", &alice, &body).await;
    assert_eq!(reply.status, 422);
    assert_eq!(
        codes(&reply),
        [(
            "/dag_definition/nodes/0/policy".to_owned(),
            "unknown_policy".to_owned()
        )]
    );
    // Nothing was stored.
    assert_eq!(s.get("/jobs", &alice).await.json()["jobs"], json!([]));
}

/// n1 and n2 fail and open the farm's breaker for an hour; n3 then waits.
fn farm_job() -> Value {
    json!({
        "name": "farm",
        "breakers": {"farm": {
            "failure_rate": 1.0, "window": {"kind": "count", "calls": 2},
            "min_calls": 2, "open_for": "1h", "half_open_calls": 1
        }},
        "dag_definition": {"nodes": [
            {"id": "n1", "type": "scripted", "dependency": "farm", "retry": {"max_attempts": 1}},
            {"id": "n2", "type": "scripted", "dependency": "farm", "retry": {"max_attempts": 1}},
            {"id": "n3", "type": "scripted", "dependency": "farm", "depends_on": ["n1", "n2"],
             "trigger": "all_done"}
        ]}
    })
}

#[tokio::test]
async fn breakers_and_their_metrics_show_an_open_breaker_and_its_waiting_node() {
    let s = start().await;
    let alice = s.token("alice");
    let reply = s.get("/breakers", &alice).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({"breakers": []}));

    s.scripted
        .script("n1", [Outcome::fail(FailureClass::Transient)])
        .script("n2", [Outcome::fail(FailureClass::Transient)]);
    let id = s.submit("alice", &farm_job()).await;
    // The breaker opens when both failures are in; n3 is then ready and
    // waits. Bounded polling: the job runs on real time, within milliseconds.
    let mut breaker = Value::Null;
    for _ in 0..500 {
        let reply = s.get("/breakers", &alice).await;
        let b = reply.json()["breakers"][0].clone();
        if b["state"] == "open" && b["waiting"] == 1 {
            breaker = b;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(breaker["dependency"], "farm", "breaker never opened");
    // The window starts afresh when the breaker opens.
    assert_eq!(
        (breaker["calls"].clone(), breaker["failures"].clone()),
        (json!(0), json!(0))
    );
    assert!(breaker["open_until"].is_u64(), "{breaker}");
    assert_eq!(breaker["transitions"], 1);
    assert!(s.scripted.executions_of("n3").is_empty());

    let metrics = s.send(s.request(Method::GET, "/metrics")).await.text;
    for line in [
        "orchestrator_breaker_state{dependency=\"farm\",state=\"open\"} 1",
        "orchestrator_breaker_state{dependency=\"farm\",state=\"closed\"} 0",
        "orchestrator_breaker_state{dependency=\"farm\",state=\"half_open\"} 0",
        "orchestrator_breaker_transitions_total{dependency=\"farm\"} 1",
        "orchestrator_breaker_waiting_nodes{dependency=\"farm\"} 1",
        "orchestrator_breaker_window_calls{dependency=\"farm\"} 0",
        "orchestrator_breaker_window_failures{dependency=\"farm\"} 0",
        "# TYPE orchestrator_breaker_transitions_total counter",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }

    // Cancelling the job ends the wait; n3 never ran.
    let reply = s.delete(&format!("/job/{id}"), &alice).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(s.wait(&id).await.state, JobState::Cancelled);
    assert!(s.scripted.executions_of("n3").is_empty());
}
