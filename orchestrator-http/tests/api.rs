//! The API over real HTTP: a server bound to port 0, a real client, every
//! endpoint and status code, and every response checked against the
//! OpenAPI document (see `common::conform`).

mod common;

use std::time::Duration;

use common::{chain, start, start_with, Options, Server, BASE};
use orchestrator_core::JobState;
use orchestrator_http::{HttpConfig, NodePolicy, RateLimit};
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn submit_answers_202_with_location_and_the_job() {
    let s = start().await;
    let body = json!({
        "name": "Test Suite Execution",
        "description": "Execute comprehensive test suite",
        "labels": {"team": "qa"},
        "dag_definition": {
            "nodes": [
                {"id": "test1", "type": "noop"},
                {"id": "test2", "type": "sleep", "params": {"duration": "10ms"}, "depends_on": ["test1"]}
            ],
            "edges": []
        }
    });
    let reply = s.post_json("/job", &s.token("alice"), &body).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let job = reply.json();
    let id = job["id"].as_str().unwrap();
    assert_eq!(job["owner"], "alice");
    assert_eq!(job["name"], "Test Suite Execution");
    assert_eq!(job["nodes"].as_array().unwrap().len(), 2);
    let location = reply.header("location").unwrap().to_owned();
    assert_eq!(location, format!("{BASE}/job/{id}"));
    assert!(reply.header("x-request-id").is_some());

    assert_eq!(s.wait(id).await.state, JobState::Succeeded);
    let reply = s.get(&format!("/job/{id}"), &s.token("alice")).await;
    assert_eq!(reply.status, 200);
    let status = reply.json();
    assert_eq!(status["state"], "succeeded");
    assert_eq!(status["progress_percent"], 100.0);
    let node = &status["nodes"][1];
    assert_eq!(
        (
            node["id"].as_str(),
            node["state"].as_str(),
            node["attempts"].as_u64()
        ),
        (Some("test2"), Some("succeeded"), Some(1))
    );
    assert!(node["duration_ms"].is_u64() && node["started_at"].is_u64());
}

#[tokio::test]
async fn bad_bodies_get_400_413_415_and_422_with_every_problem() {
    let mut options = Options::default();
    options.config.max_body_bytes = 4096;
    let s = start_with(options).await;
    let token = s.token("alice");
    let post = |body: String, ct: Option<&'static str>| {
        let mut r = s
            .request(Method::POST, "/job")
            .bearer_auth(&token)
            .body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r
    };

    let reply = s
        .send(post("{\"name\": ".into(), Some("application/json")))
        .await;
    assert_eq!((reply.status, reply.code()), (400, "malformed_json".into()));
    assert!(reply.content_type().starts_with("application/problem+json"));

    let reply = s
        .send(post(chain("x", 1).to_string(), Some("text/plain")))
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (415, "unsupported_media_type".into())
    );
    let reply = s.send(post(chain("x", 1).to_string(), None)).await;
    assert_eq!(reply.status, 415);
    // A JSON media type with parameters is fine.
    let reply = s
        .send(post(
            chain("x", 1).to_string(),
            Some("application/json; charset=utf-8"),
        ))
        .await;
    assert_eq!(reply.status, 202);

    let reply = s
        .send(post(
            chain("big", 200).to_string(),
            Some("application/json"),
        ))
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (413, "payload_too_large".into())
    );
    // Chunked, without a Content-Length: the limit still holds.
    let chunks: Vec<Result<String, std::io::Error>> = vec![Ok(chain("big", 200).to_string())];
    let streamed = s
        .request(Method::POST, "/job")
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)));
    assert_eq!(s.send(streamed).await.status, 413);

    // Wrong shape: 422 with the path of the offending value.
    let reply = s.post_json("/job", &token, &json!({"name": "x", "dag_definition": {"nodes": [{"id": "a", "type": "noop", "depnds_on": []}]}})).await;
    assert_eq!((reply.status, reply.code()), (422, "invalid_spec".into()));
    assert_eq!(
        reply.json()["problems"][0]["path"],
        "/dag_definition/nodes/0/depnds_on"
    );
    assert_eq!(reply.json()["problems"][0]["code"], "unknown_field");

    // Every semantic problem at once, each with its path and code.
    let reply = s
        .post_json(
            "/job",
            &token,
            &json!({"name": "x", "dag_definition": {"nodes": [
                {"id": "a", "type": "noop", "depends_on": ["b"]},
                {"id": "b", "type": "noop", "depends_on": ["a"]},
                {"id": "c", "type": "noop", "depends_on": ["ghost"]},
                {"id": "d", "type": "process", "params": {"command": "rm"}},
                {"id": "e", "type": "mystery"}
            ]}}),
        )
        .await;
    assert_eq!(reply.status, 422);
    let problems: Vec<(String, String)> = reply.json()["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap().to_owned(),
                p["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let has = |path: &str, code: &str| problems.iter().any(|(p, c)| p == path && c == code);
    assert!(problems.iter().any(|(_, c)| c == "cycle"), "{problems:?}");
    assert!(
        has("/dag_definition/nodes/2/depends_on/0", "unknown_dependency"),
        "{problems:?}"
    );
    assert!(
        has("/dag_definition/nodes/3/type", "node_type_not_allowed"),
        "{problems:?}"
    );
    assert!(
        has("/dag_definition/nodes/4/type", "node_type_not_allowed"),
        "{problems:?}"
    );
    // No duplicate "unknown type" report for a type the policy refused.
    assert!(
        !problems.iter().any(|(_, c)| c == "unknown_node_type"),
        "{problems:?}"
    );
    assert!(
        s.state
            .executor()
            .list(&Default::default())
            .await
            .unwrap()
            .jobs
            .len()
            == 1,
        "nothing but the valid job was stored"
    );
}

#[tokio::test]
async fn process_runs_only_allowlisted_commands() {
    let mut options = Options::default();
    options.config.nodes = NodePolicy::default().allow_process(["true"]);
    let s = start_with(options).await;
    let token = s.token("alice");
    let node = |params: Value| json!({"name": "p", "dag_definition": {"nodes": [{"id": "a", "type": "process", "params": params}]}});
    let reply = s
        .post_json("/job", &token, &node(json!({"command": "true"})))
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(
        s.wait(reply.json()["id"].as_str().unwrap()).await.state,
        JobState::Succeeded
    );
    for params in [
        json!({"command": "rm", "args": ["-rf", "/"]}),
        json!({"command": "true", "shell": true}),
        json!({"command": "true", "env": {"LD_PRELOAD": "x.so"}}),
    ] {
        let reply = s.post_json("/job", &token, &node(params.clone())).await;
        assert_eq!(reply.status, 422, "{params}");
        assert_eq!(reply.json()["problems"][0]["code"], "command_not_allowed");
    }
}

#[tokio::test]
async fn every_auth_failure_is_a_401() {
    let s = start().await;
    let path = "/jobs";
    let reply = s.send(s.request(Method::GET, path)).await;
    assert_eq!((reply.status, reply.code()), (401, "missing_token".into()));
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));

    let malformed = [
        format!("Basic {}", "YWxpY2U6cHc="),
        "Bearer".to_owned(),
        "Bearer not-a-jwt".to_owned(),
        "Bearer a.b.c.d".to_owned(),
    ];
    for value in &malformed {
        let reply = s
            .send(s.request(Method::GET, path).header("authorization", value))
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (401, "malformed_token".into()),
            "{value}"
        );
    }

    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |claims: Value, secret: &[u8]| {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    let cases = [
        (
            "expired",
            sign(
                json!({"sub": "alice", "exp": now - 3600}),
                common::SECRET.as_bytes(),
            ),
            "token_expired",
        ),
        (
            "wrong signature",
            sign(
                json!({"sub": "alice", "exp": now + 600}),
                b"another-secret-of-enough-length-0123456789",
            ),
            "invalid_token",
        ),
        (
            "no exp",
            sign(json!({"sub": "alice"}), common::SECRET.as_bytes()),
            "invalid_token",
        ),
        (
            "no sub",
            sign(json!({"exp": now + 600}), common::SECRET.as_bytes()),
            "invalid_token",
        ),
        (
            "not yet valid",
            sign(
                json!({"sub": "alice", "exp": now + 600, "nbf": now + 300}),
                common::SECRET.as_bytes(),
            ),
            "invalid_token",
        ),
        (
            "roles not a list",
            sign(
                json!({"sub": "alice", "exp": now + 600, "roles": "admin"}),
                common::SECRET.as_bytes(),
            ),
            "invalid_token",
        ),
    ];
    for (what, token, code) in &cases {
        let reply = s.get(path, token).await;
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (401, *code),
            "{what}"
        );
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer error=\"invalid_token\""),
            "{what}"
        );
    }

    // `alg: none`, unsigned: refused, whatever the claims say.
    use base64_url as b64;
    let header = b64::encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = b64::encode(
        format!(r#"{{"sub":"alice","exp":{},"roles":["admin"]}}"#, now + 600).as_bytes(),
    );
    for token in [
        format!("{header}.{claims}."),
        format!("{header}.{claims}.c2ln"),
    ] {
        let reply = s.get(path, &token).await;
        assert_eq!(
            (reply.status, reply.code()),
            (401, "invalid_token".into()),
            "{token}"
        );
    }
    // And a valid token works.
    assert_eq!(s.get(path, &s.token("alice")).await.status, 200);
}

/// Base64url without padding, for hand-made tokens.
mod base64_url {
    pub(crate) fn encode(bytes: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}

#[tokio::test]
async fn public_keys_pin_their_algorithm() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    // Keys generated for these tests only.
    let rsa_public = include_bytes!("keys/rsa_public.pem");
    let rsa_private = include_bytes!("keys/rsa_private.pem");
    let ec_public = include_bytes!("keys/ec_public.pem");
    let ec_private = include_bytes!("keys/ec_private.pem");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"sub": "alice", "exp": now + 600, "iss": "ci", "aud": "orchestrator"});
    let rs = encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(rsa_private).unwrap(),
    )
    .unwrap();
    let es = encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(ec_private).unwrap(),
    )
    .unwrap();
    // The classic confusion: an HS256 token whose "secret" is the public key.
    let confused_rsa = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(rsa_public),
    )
    .unwrap();
    let confused_ec = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(ec_public),
    )
    .unwrap();

    let rsa = orchestrator_http::AuthConfig::rs256_pem(rsa_public)
        .unwrap()
        .issuer("ci")
        .audience("orchestrator");
    let s = start_with(Options {
        auth: rsa,
        ..Options::default()
    })
    .await;
    assert_eq!(s.get("/jobs", &rs).await.status, 200);
    for token in [&es, &confused_rsa] {
        assert_eq!(s.get("/jobs", token).await.code(), "invalid_token");
    }
    drop(s);

    let ec = orchestrator_http::AuthConfig::es256_pem(ec_public)
        .unwrap()
        .issuer("ci");
    let s = start_with(Options {
        auth: ec,
        ..Options::default()
    })
    .await;
    assert_eq!(s.get("/jobs", &es).await.status, 200);
    for token in [&rs, &confused_ec] {
        assert_eq!(s.get("/jobs", token).await.code(), "invalid_token");
    }
    // The configured issuer is required.
    let other = encode(
        &Header::new(Algorithm::ES256),
        &json!({"sub": "alice", "exp": now + 600}),
        &EncodingKey::from_ec_pem(ec_private).unwrap(),
    )
    .unwrap();
    assert_eq!(s.get("/jobs", &other).await.code(), "invalid_token");
}

#[tokio::test]
async fn users_see_only_their_own_jobs_and_admins_see_all() {
    let s = start().await;
    let alice = s.token("alice");
    let bob = s.token("bob");
    let admin = s.admin_token("root");
    let job = s.submit("alice", &json!({"name": "slow", "dag_definition": {"nodes": [{"id": "a", "type": "sleep", "params": {"duration": "30s"}}]}})).await;
    let missing = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

    // Bob gets exactly what a job that does not exist gets.
    let theirs = s.get(&format!("/job/{job}"), &bob).await;
    let nobody = s.get(&format!("/job/{missing}"), &bob).await;
    assert_eq!((theirs.status, nobody.status), (404, 404));
    let strip = |mut v: Value| {
        v.as_object_mut().unwrap().remove("request_id");
        v
    };
    assert_eq!(strip(theirs.json()), strip(nobody.json()));
    assert_eq!(s.delete(&format!("/job/{job}"), &bob).await.status, 404);
    assert_eq!(s.get(&format!("/job/{job}/events"), &bob).await.status, 404);
    assert_eq!(
        s.send(
            s.request(Method::POST, &format!("/job/{job}/retry"))
                .bearer_auth(&bob)
        )
        .await
        .status,
        404
    );
    assert!(s.get("/jobs", &bob).await.json()["jobs"]
        .as_array()
        .unwrap()
        .is_empty());
    // An id that cannot exist is not found either.
    assert_eq!(s.get("/job/not%20an%20id", &bob).await.status, 404);

    assert_eq!(s.get(&format!("/job/{job}"), &alice).await.status, 200);
    assert_eq!(
        s.get("/jobs", &alice).await.json()["jobs"][0]["id"],
        job.as_str()
    );
    // The admin sees it, lists it, and cancels it.
    assert_eq!(s.get(&format!("/job/{job}"), &admin).await.status, 200);
    assert_eq!(
        s.get("/jobs", &admin).await.json()["jobs"][0]["owner"],
        "alice"
    );
    let reply = s.delete(&format!("/job/{job}"), &admin).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(matches!(
        reply.json()["state"].as_str(),
        Some("cancelling" | "cancelled")
    ));
}

#[tokio::test]
async fn cancel_answers_200_then_422_once_finished() {
    let s = start().await;
    let token = s.token("alice");
    let job = s.submit("alice", &json!({"name": "slow", "dag_definition": {"nodes": [{"id": "a", "type": "sleep", "params": {"duration": "30s"}}]}})).await;
    let reply = s.delete(&format!("/job/{job}"), &token).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(s.wait(&job).await.state, JobState::Cancelled);
    let reply = s.delete(&format!("/job/{job}"), &token).await;
    assert_eq!((reply.status, reply.code()), (422, "job_finished".into()));
    assert_eq!(
        s.delete("/job/01ARZ3NDEKTSV4RRFFQ69G5FAV", &token)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn listing_filters_paginates_and_rejects_bad_parameters() {
    let s = start().await;
    let token = s.token("alice");
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut body = chain(&format!("suite {i}"), 1);
        body["labels"] = json!({"parity": if i % 2 == 0 { "even" } else { "odd" }});
        ids.push(s.submit("alice", &body).await);
        // Distinct creation times, so newest-first order is by submission.
        s.clock.advance(1);
    }
    for id in &ids {
        s.wait(id).await;
    }
    s.submit("bob", &chain("bob's", 1)).await;

    let all = s.get("/jobs?limit=100", &token).await.json();
    let listed: Vec<&str> = all["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);

    // Cursor pages.
    let first = s.get("/jobs?limit=2", &token).await.json();
    assert_eq!(first["jobs"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = s
        .get(&format!("/jobs?limit=2&cursor={cursor}"), &token)
        .await
        .json();
    assert_eq!(second["jobs"][0]["id"], ids[2].as_str());
    // Page numbers carry the total.
    let page = s.get("/jobs?limit=2&page=3", &token).await.json();
    assert_eq!(
        (page["total"].as_u64(), page["page"].as_u64()),
        (Some(5), Some(3))
    );
    assert_eq!(page["jobs"][0]["id"], ids[0].as_str());
    assert!(page["next_cursor"].is_null());

    // Filters.
    let count = |v: Value| v["jobs"].as_array().unwrap().len();
    assert_eq!(
        count(s.get("/jobs?label=parity=even", &token).await.json()),
        3
    );
    assert_eq!(count(s.get("/jobs?name=SUITE%203", &token).await.json()), 1);
    assert_eq!(
        count(s.get("/jobs?status=succeeded", &token).await.json()),
        5
    );
    assert_eq!(
        count(
            s.get("/jobs?status=running,failed&status=cancelled", &token)
                .await
                .json()
        ),
        0
    );
    assert_eq!(
        count(
            s.get("/jobs?created_after=2100-01-01T00:00:00Z", &token)
                .await
                .json()
        ),
        0
    );
    assert_eq!(
        count(
            s.get("/jobs?created_before=2100-01-01T00:00:00%2B02:00", &token)
                .await
                .json()
        ),
        5
    );

    for bad in [
        "status=done",
        "limit=0",
        "limit=101",
        "created_after=yesterday",
        "cursor=zzz",
        "page=0",
        "sort=name",
        "limit=2&limit=3",
    ] {
        let reply = s.get(&format!("/jobs?{bad}"), &token).await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, "invalid_parameter".into()),
            "{bad}"
        );
        assert!(!reply.json()["problems"].as_array().unwrap().is_empty());
    }
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let mut options = Options::default();
    options.config.rate_limit = Some(RateLimit {
        requests_per_minute: 3,
    });
    let s = start_with(options).await;
    let alice = s.token("alice");
    for _ in 0..3 {
        assert_eq!(s.get("/jobs", &alice).await.status, 200);
    }
    let reply = s.get("/jobs", &alice).await;
    assert_eq!((reply.status, reply.code()), (429, "rate_limited".into()));
    assert_eq!(reply.header("retry-after"), Some("20"));
    // Per user: bob is not limited by alice's requests; health needs no token.
    assert_eq!(s.get("/jobs", &s.token("bob")).await.status, 200);
    assert_eq!(s.send(s.request(Method::GET, "/health")).await.status, 200);
    // The bucket refills with time (an injected clock: no sleeping).
    s.clock.advance(20_000);
    assert_eq!(s.get("/jobs", &alice).await.status, 200);
    assert_eq!(s.get("/jobs", &alice).await.status, 429);
}

#[tokio::test]
async fn health_is_200_and_503_when_the_store_is_down() {
    let s = start().await;
    let reply = s.send(s.request(Method::GET, "/health")).await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(
        (
            body["status"].as_str(),
            body["store"]["status"].as_str(),
            body["executor"]["status"].as_str()
        ),
        (Some("ok"), Some("ok"), Some("ok"))
    );
    s.store
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let reply = s.send(s.request(Method::GET, "/health")).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json()["store"]["status"], "unavailable");
    // Other endpoints answer 503 without leaking the backend's message.
    let reply = s.get("/jobs", &s.token("alice")).await;
    assert_eq!((reply.status, reply.code()), (503, "unavailable".into()));
    assert!(
        !reply.text.contains("db.internal") && !reply.text.contains("secret"),
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn events_come_in_pages() {
    let s = start().await;
    let token = s.token("alice");
    let job = s.submit("alice", &chain("c", 3)).await;
    s.wait(&job).await;
    let all = s
        .get(&format!("/job/{job}/events?limit=1000"), &token)
        .await
        .json();
    let events = all["events"].as_array().unwrap();
    assert_eq!(events[0]["name"], "execution.submitted");
    assert_eq!(events.last().unwrap()["name"], "execution.completed");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(all["next_after"].is_null());
    let page = s
        .get(&format!("/job/{job}/events?after=2&limit=3"), &token)
        .await
        .json();
    let seqs: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    assert_eq!(page["next_after"], 5);
    assert_eq!(
        s.get(&format!("/job/{job}/events?after=x"), &token)
            .await
            .status,
        400
    );
}

/// Reads a whole SSE stream: `(id, event, data)` per event.
async fn read_stream(
    s: &Server,
    job: &str,
    last_event_id: Option<u64>,
) -> Vec<(u64, String, Value)> {
    let mut req = s
        .request(Method::GET, &format!("/job/{job}/events"))
        .bearer_auth(s.token("alice"))
        .header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id.to_string());
    }
    let reply = s.send(req).await;
    assert_eq!(reply.status, 200);
    assert!(reply.content_type().starts_with("text/event-stream"));
    parse_sse(&reply.text)
}

fn parse_sse(text: &str) -> Vec<(u64, String, Value)> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let (mut id, mut event, mut data) = (None, None, String::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if let (Some(id), Some(event)) = (id, event) {
            out.push((id, event, serde_json::from_str(&data).unwrap()));
        }
    }
    out
}

#[tokio::test]
async fn sse_streams_live_and_resumes_from_last_event_id() {
    let s = start().await;
    // A job that is still running when the stream opens.
    let job = s
        .submit(
            "alice",
            &json!({"name": "live", "dag_definition": {"nodes": [
                {"id": "a", "type": "sleep", "params": {"duration": "150ms"}},
                {"id": "b", "type": "sleep", "params": {"duration": "150ms"}, "depends_on": ["a"]}
            ]}}),
        )
        .await;
    let events = read_stream(&s, &job, None).await;
    // Every record exactly once, in order, ending with the final one.
    let ids: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    assert_eq!(events.last().unwrap().1, "execution.completed");
    assert!(events.iter().any(|e| e.1 == "node.started"));
    for (id, name, data) in &events {
        assert_eq!(
            (data["seq"].as_u64(), data["name"].as_str()),
            (Some(*id), Some(name.as_str()))
        );
    }
    let stored = s
        .get(&format!("/job/{job}/events?limit=1000"), &s.token("alice"))
        .await
        .json();
    assert_eq!(stored["events"].as_array().unwrap().len(), events.len());

    // Resuming after event 4 gets 5.. exactly.
    let resumed = read_stream(&s, &job, Some(4)).await;
    assert_eq!(resumed.first().unwrap().0, 5);
    assert_eq!(resumed.len(), events.len() - 4);
    assert_eq!(
        resumed.iter().map(|e| &e.1).collect::<Vec<_>>(),
        events[4..].iter().map(|e| &e.1).collect::<Vec<_>>()
    );

    let bad = s
        .send(
            s.request(Method::GET, &format!("/job/{job}/events"))
                .bearer_auth(s.token("alice"))
                .header("accept", "text/event-stream")
                .header("last-event-id", "yesterday"),
        )
        .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn sse_delivers_events_as_they_happen() {
    let s = start().await;
    let job = s
        .submit("alice", &json!({"name": "live", "dag_definition": {"nodes": [{"id": "a", "type": "sleep", "params": {"duration": "30s"}}]}}))
        .await;
    let resp = s
        .client
        .get(format!("{}/job/{job}/events", s.url))
        .bearer_auth(s.token("alice"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    use futures::StreamExt as _;
    // The node starts: its event arrives while the job runs.
    while !text.contains("event: node.started") {
        text.push_str(&String::from_utf8_lossy(
            &body.next().await.unwrap().unwrap(),
        ));
    }
    // Cancelling shows up live too, and the stream ends after the final record.
    assert_eq!(
        s.delete(&format!("/job/{job}"), &s.token("alice"))
            .await
            .status,
        200
    );
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let events = parse_sse(&text);
    assert_eq!(events.last().unwrap().1, "execution.cancelled");
}

#[tokio::test]
async fn retry_reruns_what_did_not_succeed() {
    let s = start().await;
    let token = s.token("alice");
    s.scripted.script(
        "flaky",
        [orchestrator_core::runner::Outcome::fail(
            orchestrator_core::FailureClass::Permanent,
        )],
    );
    let job = s
        .submit(
            "alice",
            &json!({"name": "suite", "dag_definition": {"nodes": [
                {"id": "build", "type": "noop"},
                {"id": "flaky", "type": "scripted", "depends_on": ["build"]},
                {"id": "report", "type": "noop", "depends_on": ["flaky"]}
            ]}}),
        )
        .await;
    assert_eq!(s.wait(&job).await.state, JobState::Failed);
    // Whatever was wrong is fixed now.
    s.scripted
        .script("flaky", [orchestrator_core::runner::Outcome::succeed()]);
    let reply = s
        .send(
            s.request(Method::POST, &format!("/job/{job}/retry"))
                .bearer_auth(&token),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let new = reply.json();
    let new_id = new["id"].as_str().unwrap().to_owned();
    assert_eq!(
        reply.header("location").unwrap(),
        format!("{BASE}/job/{new_id}")
    );
    assert_eq!(new["labels"]["rerun_of"], job.as_str());
    // Every node is there; what succeeded is carried over, not run again.
    let state_of = |id: &str| {
        new["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .map(|n| n["state"].as_str().unwrap().to_owned())
    };
    assert_eq!(state_of("build").as_deref(), Some("succeeded"));
    assert_ne!(state_of("flaky").as_deref(), Some("failed"));
    // The re-run succeeds, and `build` did not run again.
    assert_eq!(s.wait(&new_id).await.state, JobState::Succeeded);
    assert_eq!(s.scripted.runs_of("flaky"), 2);

    // A succeeded job has nothing to retry; a running one is not finished.
    let reply = s
        .send(
            s.request(Method::POST, &format!("/job/{new_id}/retry"))
                .bearer_auth(&token),
        )
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (422, "nothing_to_retry".into())
    );
    let slow = s.submit("alice", &json!({"name": "slow", "dag_definition": {"nodes": [{"id": "a", "type": "sleep", "params": {"duration": "30s"}}]}})).await;
    let reply = s
        .send(
            s.request(Method::POST, &format!("/job/{slow}/retry"))
                .bearer_auth(&token),
        )
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (422, "job_not_finished".into())
    );
    assert_eq!(
        s.send(
            s.request(Method::POST, "/job/01ARZ3NDEKTSV4RRFFQ69G5FAV/retry")
                .bearer_auth(&token)
        )
        .await
        .status,
        404
    );
}

#[tokio::test]
async fn metrics_count_jobs_nodes_and_requests() {
    let s = start().await;
    let job = s.submit("alice", &chain("m", 2)).await;
    s.wait(&job).await;
    s.get("/job/01ARZ3NDEKTSV4RRFFQ69G5FAV", &s.token("alice"))
        .await;
    let reply = s.send(s.request(Method::GET, "/metrics")).await;
    assert_eq!(reply.status, 200);
    assert!(reply
        .content_type()
        .starts_with("text/plain; version=0.0.4"));
    let text = reply.text;
    for line in [
        "orchestrator_jobs_submitted_total 1",
        "orchestrator_jobs_finished_total{state=\"succeeded\"} 1",
        "orchestrator_jobs{state=\"running\"} 0",
        "orchestrator_node_attempts_total 2",
        "orchestrator_node_results_total{result=\"succeeded\",class=\"\"} 2",
        &format!("orchestrator_http_requests_total{{method=\"POST\",route=\"{BASE}/job\",status=\"202\"}} 1"),
        &format!("orchestrator_http_requests_total{{method=\"GET\",route=\"{BASE}/job/{{job_id}}\",status=\"404\"}} 1"),
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("orchestrator_http_request_duration_seconds_bucket{"));
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated_and_quoted_in_errors() {
    let s = start().await;
    let reply = s
        .send(
            s.request(Method::GET, "/jobs")
                .header("x-request-id", "trace-42"),
        )
        .await;
    assert_eq!(reply.header("x-request-id"), Some("trace-42"));
    assert_eq!(reply.json()["request_id"], "trace-42");
    let reply = s
        .send(
            s.request(Method::GET, "/jobs")
                .header("x-request-id", "bad id\twith tab"),
        )
        .await;
    let id = reply.header("x-request-id").unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(reply.json()["request_id"], id.as_str());
    let reply = s.get("/jobs", &s.token("alice")).await;
    assert_eq!(reply.header("x-request-id").map(str::len), Some(32));
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let s = start().await;
    let reply = s.send(s.request(Method::GET, "/nope")).await;
    assert_eq!((reply.status, reply.code()), (404, "not_found".into()));
    let reply = s
        .send(
            s.request(Method::PUT, "/jobs")
                .bearer_auth(s.token("alice")),
        )
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (405, "method_not_allowed".into())
    );
    assert!(reply.content_type().starts_with("application/problem+json"));
}

#[tokio::test]
async fn the_openapi_document_is_valid_and_served_where_the_api_is_mounted() {
    let s = start_with(Options {
        prefix: "/ci",
        ..Options::default()
    })
    .await;
    let reply = s.send(s.request(Method::GET, "/openapi.json")).await;
    assert_eq!(reply.status, 200);
    let doc = reply.json();
    assert_eq!(doc["servers"][0]["url"], format!("/ci{BASE}"));
    // It parses as OpenAPI 3.1 …
    let parsed: oas3::OpenApiV3Spec = serde_json::from_str(&reply.text).unwrap();
    assert!(parsed.openapi.starts_with("3.1"));
    // … every reference resolves …
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r.strip_prefix('#').unwrap();
        assert!(doc.pointer(pointer).is_some(), "dangling {r}");
    }
    // … every route is described, with its security …
    for (path, method) in [
        ("/job", "post"),
        ("/job/{job_id}", "get"),
        ("/job/{job_id}", "delete"),
        ("/jobs", "get"),
        ("/job/{job_id}/events", "get"),
        ("/job/{job_id}/retry", "post"),
        ("/flaky", "get"),
        ("/health", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/docs", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    assert_eq!(
        doc["paths"]["/job"]["post"]["security"][0]["bearer"],
        json!([])
    );
    assert!(doc["paths"]["/health"]["get"]["security"].is_null());
    // … and the submit body schema accepts exactly the spec's fields.
    let spec_schema = &doc["components"]["schemas"]["JobSpec"];
    let documented: std::collections::BTreeSet<&str> = spec_schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let full = orchestrator_core::JobSpec::builder("x")
        .description("d")
        .priority(1)
        .label("a", "b")
        .timeout(Duration::from_secs(1))
        .max_concurrency(1)
        .retry(orchestrator_core::RetrySpec::new())
        .pool("p", 1)
        .on_failure(orchestrator_core::OnFailure::Rollback)
        .flaky(orchestrator_core::flaky::FlakySpec::default())
        .node(orchestrator_core::NodeSpec::new("a", "noop"))
        .build();
    let mut full = full;
    full.policy = Some("farm@1".into());
    full.classify =
        serde_json::from_value(serde_json::json!([{"exit_codes": [3], "class": "infrastructure"}]))
            .unwrap();
    full.breakers.insert(
        "db".into(),
        orchestrator_core::breaker::BreakerSpec::default(),
    );
    let serialized = serde_json::to_value(&full).unwrap();
    let fields: std::collections::BTreeSet<&str> = serialized
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(documented, fields);
    assert_eq!(spec_schema["additionalProperties"], false);

    // The docs page loads the document relative to itself, so it works under the prefix.
    let reply = s.send(s.request(Method::GET, "/docs")).await;
    assert_eq!(reply.status, 200);
    assert!(reply.content_type().starts_with("text/html"));
    assert!(reply.text.contains("data-url=\"openapi.json\""));

    // Mounted under a prefix, Location points under it too.
    let reply = s.post_json("/job", &s.token("alice"), &chain("p", 1)).await;
    assert!(reply
        .header("location")
        .unwrap()
        .starts_with(&format!("/ci{BASE}/job/")));
}

#[tokio::test]
async fn the_default_config_is_the_documented_one() {
    let c = HttpConfig::default();
    assert_eq!(
        c.rate_limit,
        Some(RateLimit {
            requests_per_minute: 100
        })
    );
    assert_eq!(c.nodes.types().collect::<Vec<_>>(), ["noop", "sleep"]);
    assert_eq!(c.max_body_bytes, 1 << 20);
}
