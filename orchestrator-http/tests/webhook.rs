//! The webhook sink against a local receiver (axum on port 0) that fails
//! the first attempts: retries, signature, `Retry-After`, no retry on a
//! refusal, the dead-letter file, and the whole path from a job's
//! journal to the receiver.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use orchestrator_core::notify::{Dispatcher, Envelope, EventFilter, NotificationSink, Route};
use orchestrator_core::runner::{Outcome, ScriptedRunner};
use orchestrator_core::{
    Backoff, Executor, FailureClass, HumanDuration, JobSpec, MemoryStore, NodeSpec, Registry,
    RetrySpec,
};
use orchestrator_http::webhook::{
    read_dead_letters, WebhookConfig, WebhookSink, DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER,
};
use sha2::Sha256;

/// Answers `fail_with` to the first `fail_first` requests, then 200.
#[derive(Clone)]
struct Receiver {
    fail_first: u32,
    fail_with: StatusCode,
    retry_after: Option<&'static str>,
    attempts: Arc<AtomicU32>,
    seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

impl Receiver {
    fn new(fail_first: u32, fail_with: StatusCode) -> Self {
        Self {
            fail_first,
            fail_with,
            retry_after: None,
            attempts: Arc::default(),
            seen: Arc::default(),
        }
    }

    async fn serve(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::SeqCst)
    }
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let n = r.attempts.fetch_add(1, Ordering::SeqCst) + 1;
    r.seen.lock().unwrap().push((headers, body));
    if n <= r.fail_first {
        let mut resp = r.fail_with.into_response();
        if let Some(after) = r.retry_after {
            resp.headers_mut()
                .insert("retry-after", after.parse().unwrap());
        }
        resp
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

fn config(addr: SocketAddr) -> WebhookConfig {
    let mut c = WebhookConfig::new(format!("http://{addr}/hook"));
    c.initial_backoff = Duration::from_millis(1);
    c.max_backoff = Duration::from_millis(5);
    c.timeout = Duration::from_secs(5);
    c
}

fn envelope() -> Envelope {
    let json = serde_json::json!({
        "id": "01JD0000000000000000000000-7",
        "type": "escalation.required",
        "time": "2026-11-23T06:22:56.123Z",
        "job": "01JD0000000000000000000000",
        "seq": 7,
        "node": "deploy",
        "details": {"cause": "dead_lettered", "reason": "node \"deploy\" was dead-lettered", "node_index": 3}
    });
    serde_json::from_value(json).unwrap()
}

fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn retries_5xx_until_delivered_with_the_same_signed_body() {
    let receiver = Receiver::new(2, StatusCode::INTERNAL_SERVER_ERROR);
    let addr = receiver.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(addr);
    c.secret = Some("s3cret".into());
    c.dead_letter = Some(dir.path().join("dead.jsonl"));
    let sink = WebhookSink::new(c).unwrap();
    let e = envelope();
    sink.deliver(&e).await.unwrap();

    assert_eq!(receiver.attempts(), 3, "two 500s, then delivered");
    let seen = receiver.seen.lock().unwrap();
    for (headers, body) in seen.iter() {
        let got: Envelope = serde_json::from_slice(body).unwrap();
        assert_eq!(got, e);
        assert_eq!(body, &seen[0].1, "every attempt sends the same bytes");
        assert_eq!(
            headers[SIGNATURE_HEADER].to_str().unwrap(),
            format!("sha256={}", hmac_hex(b"s3cret", body))
        );
        assert_eq!(headers[EVENT_HEADER], "escalation.required");
        assert_eq!(headers[DELIVERY_HEADER], e.id.as_str());
        assert_eq!(headers["content-type"], "application/json");
    }
    assert!(read_dead_letters(&dir.path().join("dead.jsonl"))
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_receiver_that_keeps_failing_sends_the_event_to_the_dead_letter_file() {
    let receiver = Receiver::new(u32::MAX, StatusCode::SERVICE_UNAVAILABLE);
    let addr = receiver.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead.jsonl");
    let mut c = config(addr);
    c.max_attempts = 4;
    c.dead_letter = Some(path.clone());
    let sink = WebhookSink::new(c).unwrap();
    let e = envelope();
    let err = sink.deliver(&e).await.unwrap_err();
    assert!(err.to_string().contains("4 attempts failed"), "{err}");
    assert_eq!(receiver.attempts(), 4);
    assert!(
        receiver.seen.lock().unwrap()[0]
            .0
            .get(SIGNATURE_HEADER)
            .is_none(),
        "unsigned without a secret"
    );

    // A second failure appends; nothing is overwritten.
    sink.deliver(&e).await.unwrap_err();
    let dead = read_dead_letters(&path).unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].envelope, e);
    assert_eq!(dead[0].attempts, 4);
    assert_eq!(dead[0].url, format!("http://{addr}/hook"));
    assert!(dead[0].error.contains("status 503"), "{}", dead[0].error);
}

#[tokio::test]
async fn a_refusal_is_not_retried() {
    let receiver = Receiver::new(u32::MAX, StatusCode::BAD_REQUEST);
    let addr = receiver.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(addr);
    c.dead_letter = Some(dir.path().join("dead.jsonl"));
    let sink = WebhookSink::new(c).unwrap();
    let err = sink.deliver(&envelope()).await.unwrap_err();
    assert_eq!(receiver.attempts(), 1);
    assert!(err.to_string().contains("400"), "{err}");
    let dead = read_dead_letters(&dir.path().join("dead.jsonl")).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 1);
}

#[tokio::test]
async fn retry_after_replaces_the_backoff() {
    let mut receiver = Receiver::new(1, StatusCode::TOO_MANY_REQUESTS);
    receiver.retry_after = Some("0");
    let addr = receiver.serve().await;
    let mut c = config(addr);
    // Without Retry-After the next attempt would wait 30 s or more.
    c.initial_backoff = Duration::from_secs(60);
    c.max_backoff = Duration::from_secs(60);
    let sink = WebhookSink::new(c).unwrap();
    tokio::time::timeout(Duration::from_secs(5), sink.deliver(&envelope()))
        .await
        .expect("Retry-After: 0 retries at once")
        .unwrap();
    assert_eq!(receiver.attempts(), 2);
}

#[tokio::test]
async fn connection_errors_are_retried_then_dead_lettered() {
    // A port nobody listens on any more.
    let addr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(addr);
    c.max_attempts = 3;
    c.dead_letter = Some(dir.path().join("dead.jsonl"));
    let sink = WebhookSink::new(c).unwrap();
    let err = sink.deliver(&envelope()).await.unwrap_err();
    assert!(err.to_string().contains("3 attempts failed"), "{err}");
    let dead = read_dead_letters(&dir.path().join("dead.jsonl")).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3);
}

#[tokio::test]
async fn a_jobs_recovery_reaches_the_webhook_through_the_dispatcher() {
    let receiver = Receiver::new(1, StatusCode::BAD_GATEWAY);
    let addr = receiver.serve().await;
    let runner = ScriptedRunner::with_default(Outcome::succeed());
    runner.script(
        "n",
        [
            Outcome::fail(FailureClass::Infrastructure),
            Outcome::succeed(),
        ],
    );
    let mut registry = Registry::new();
    registry.register("t", runner.clone());
    let ex = Executor::builder(Arc::new(MemoryStore::new()))
        .registry(registry)
        .start()
        .await
        .unwrap();
    let sink = Arc::new(WebhookSink::new(config(addr)).unwrap());
    let filter: EventFilter = "recovery.*,escalation.*".parse().unwrap();
    let dispatcher = Dispatcher::start(&ex, vec![Route::new(sink, filter)]);
    // Retried at once: the test needs no real wait.
    let spec = JobSpec::builder("hooked")
        .retry(RetrySpec {
            backoff: Some(Backoff::Fixed {
                delay: HumanDuration::from_millis(0),
            }),
            ..RetrySpec::default()
        })
        .node(NodeSpec::new("n", "t"))
        .build();
    let id = ex.submit(spec, "alice").await.unwrap();
    ex.wait(&id).await.unwrap();
    let stats = dispatcher.close().await;
    assert_eq!((stats.sinks[0].delivered, stats.sinks[0].failed), (2, 0));

    let seen = receiver.seen.lock().unwrap();
    // The first recovery.initiated was refused once (502) and re-sent.
    let got: Vec<(String, Option<String>, String)> = seen
        .iter()
        .map(|(_, body)| {
            let e: Envelope = serde_json::from_slice(body).unwrap();
            (
                e.kind,
                e.node,
                e.details["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let initiated = (
        "recovery.initiated".to_owned(),
        Some("n".to_owned()),
        "infrastructure_retry".to_owned(),
    );
    let completed = (
        "recovery.completed".to_owned(),
        Some("n".to_owned()),
        "infrastructure_retry".to_owned(),
    );
    assert_eq!(got, [initiated.clone(), initiated, completed]);
}
