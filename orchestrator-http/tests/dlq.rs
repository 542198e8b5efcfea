//! The dead-letter queue over real HTTP: listing with filters and scoping,
//! show, requeue continuing the job, discard with its reason, and every
//! refusal — each response checked against the OpenAPI document.

mod common;

use common::start;
use orchestrator_core::runner::Outcome;
use orchestrator_core::{FailureClass, JobState};
use reqwest::Method;
use serde_json::{json, Value};

/// A job whose `broken` node fails for good once, with a node after it.
fn job(name: &str) -> Value {
    json!({"name": name, "dag_definition": {"nodes": [
        {"id": "build", "type": "noop"},
        {"id": "broken", "type": "scripted", "params": {"suite": "smoke"}, "depends_on": ["build"]},
        {"id": "report", "type": "noop", "depends_on": ["broken"]}
    ]}})
}

#[tokio::test]
async fn owners_and_admins_list_show_and_requeue_others_see_nothing() {
    let s = start().await;
    s.scripted
        .script("broken", [Outcome::fail(FailureClass::Permanent)]);
    let alice = s.token("alice");
    let bob = s.token("bob");
    let admin = s.admin_token("root");
    let id = s.submit("alice", &job("suite")).await;
    assert_eq!(s.wait(&id).await.state, JobState::Failed);

    let reply = s.get("/dlq", &alice).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let list = reply.json();
    let entries = list["dead_letters"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    let dl = entry["id"].as_str().unwrap().to_owned();
    assert_eq!(dl, format!("{id}.1.1"));
    assert_eq!(entry["node"], "broken");
    assert_eq!(entry["node_type"], "scripted");
    assert_eq!(entry["params"], json!({"suite": "smoke"}));
    assert_eq!(entry["reason"], "non_retryable");
    assert_eq!(entry["status"], "open");
    assert_eq!(entry["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(list["limit"], 20);

    // Scoping: bob sees nothing, and gets the same 404 as for a missing id.
    let reply = s.get("/dlq", &bob).await;
    assert_eq!(reply.json()["dead_letters"], json!([]));
    assert_eq!(
        s.get("/dlq", &admin).await.json()["dead_letters"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    for (path, token) in [
        (format!("/dlq/{dl}"), &bob),
        (format!("/dlq/{id}.1.9"), &alice),
        ("/dlq/garbage".to_owned(), &alice),
    ] {
        let reply = s.get(&path, token).await;
        assert_eq!(
            (reply.status, reply.code()),
            (404, "dead_letter_not_found".into()),
            "{path}"
        );
    }
    let reply = s
        .send(
            s.request(Method::POST, &format!("/dlq/{dl}/requeue"))
                .bearer_auth(&bob),
        )
        .await;
    assert_eq!(reply.status, 404);
    let reply = s.get(&format!("/dlq/{dl}"), &alice).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["id"], dl.as_str());
    assert_eq!(s.get(&format!("/dlq/{dl}"), &admin).await.status, 200);

    // Filters, and every bad parameter at once.
    let count = |reply: common::Reply| reply.json()["dead_letters"].as_array().unwrap().len();
    assert_eq!(
        count(s.get(&format!("/dlq?job={id}&status=open"), &alice).await),
        1
    );
    assert_eq!(count(s.get("/dlq?status=discarded", &alice).await), 0);
    assert_eq!(
        count(s.get("/dlq?reason=retries_exhausted", &alice).await),
        0
    );
    assert_eq!(
        count(
            s.get("/dlq?node_type=scripted&reason=non_retryable", &alice)
                .await
        ),
        1
    );
    let reply = s
        .get(
            "/dlq?status=closed&reason=bad&limit=0&cursor=x&sort=1",
            &alice,
        )
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (400, "invalid_parameter".into())
    );
    assert_eq!(reply.json()["problems"].as_array().unwrap().len(), 5);

    // Requeue: the node runs again (it passes now) and the job continues.
    let reply = s
        .send(
            s.request(Method::POST, &format!("/dlq/{dl}/requeue"))
                .bearer_auth(&alice),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(reply.json()["id"], id.as_str());
    let status = s.wait(&id).await;
    assert_eq!(status.state, JobState::Succeeded);
    assert_eq!(
        status.node("report").unwrap().state,
        orchestrator_core::NodeState::Succeeded
    );
    assert_eq!(s.scripted.runs_of("broken"), 2);
    let entry = s.get(&format!("/dlq/{dl}"), &alice).await.json();
    assert_eq!(entry["status"], "requeued");
    assert_eq!(entry["resolution"]["by"], "alice");
    let reply = s
        .send(
            s.request(Method::POST, &format!("/dlq/{dl}/requeue"))
                .bearer_auth(&alice),
        )
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (409, "dead_letter_resolved".into())
    );
}

#[tokio::test]
async fn discard_needs_a_reason_and_happens_once() {
    let s = start().await;
    s.scripted
        .script("broken", [Outcome::fail(FailureClass::Permanent)]);
    let alice = s.token("alice");
    let id = s.submit("alice", &job("suite")).await;
    s.wait(&id).await;
    let dl = format!("{id}.1.1");
    let path = format!("/dlq/{dl}/discard");
    let post = |body: &str, ct: Option<&'static str>| {
        let mut r = s
            .request(Method::POST, &path)
            .bearer_auth(&alice)
            .body(body.to_owned());
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r
    };
    let cases = [
        (
            post(r#"{"reason": "x"}"#, None),
            415,
            "unsupported_media_type",
        ),
        (
            post(r#"{"reason": "#, Some("application/json")),
            400,
            "malformed_json",
        ),
        (post(r#"{}"#, Some("application/json")), 422, "invalid_body"),
        (
            post(r#"{"reason": "  "}"#, Some("application/json")),
            422,
            "invalid_body",
        ),
        (
            post(r#"{"reason": "x", "extra": 1}"#, Some("application/json")),
            422,
            "invalid_body",
        ),
    ];
    for (req, status, code) in cases {
        let reply = s.send(req).await;
        assert_eq!(
            (reply.status, reply.code()),
            (status, code.to_owned()),
            "{}",
            reply.text
        );
    }
    let long = json!({"reason": "x".repeat(1001)});
    let reply = s.post_json(&path, &alice, &long).await;
    assert_eq!((reply.status, reply.code()), (422, "invalid_body".into()));
    // Another user cannot, and learns nothing.
    let reply = s
        .post_json(&path, &s.token("bob"), &json!({"reason": "mine"}))
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (404, "dead_letter_not_found".into())
    );
    assert_eq!(
        s.get(&format!("/dlq/{dl}"), &alice).await.json()["status"],
        "open"
    );

    let reply = s
        .post_json(&path, &alice, &json!({"reason": "known bad fixture"}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let entry = reply.json();
    assert_eq!(entry["status"], "discarded");
    assert_eq!(entry["resolution"]["reason"], "known bad fixture");
    assert_eq!(entry["resolution"]["by"], "alice");
    // Journaled on the job.
    let events = s.get(&format!("/job/{id}/events"), &alice).await.json();
    let text = events.to_string();
    assert!(
        text.contains("dead_letter.discarded") && text.contains("known bad fixture"),
        "{text}"
    );
    let reply = s
        .post_json(&path, &alice, &json!({"reason": "again"}))
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (409, "dead_letter_resolved".into())
    );
    let reply = s
        .send(
            s.request(Method::POST, &format!("/dlq/{dl}/requeue"))
                .bearer_auth(&alice),
        )
        .await;
    assert_eq!(reply.status, 409);
}
