//! The HTTP scenario: submit and status requests through the whole API
//! (JWT check, rate limiter, request id, metrics, validation, journaling
//! into a `MemoryStore`) against a trivial axum handler answering the same
//! routes with a fixed JSON body, both served in this process over
//! loopback and driven by the same client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::{Json, Router};
use orchestrator_core::{Executor, ExecutorConfig, MemoryStore};
use orchestrator_http::{router, ApiState, AuthConfig, HttpConfig, BASE_PATH};
use serde_json::{json, Value};

use crate::report::{peak_rss, reset_peak, Line};

/// Concurrent client connections.
const CLIENTS: usize = 16;

const SECRET: &str = "benchmark-secret-0123456789abcdef-0123";

/// Throughput and tail latency of one kind of request.
#[derive(Clone, Copy, Debug)]
struct Figures {
    per_sec: f64,
    p99_us: f64,
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}{BASE_PATH}")
}

/// Our API with auth, the default node policy and no rate limit (the
/// benchmark's single user would hit it at once).
async fn ours() -> (String, String) {
    let config = ExecutorConfig {
        max_concurrent_nodes: 64,
        ..ExecutorConfig::default()
    };
    let executor = Executor::builder(Arc::new(MemoryStore::new()))
        .config(config)
        .start()
        .await
        .expect("executor starts");
    let auth = AuthConfig::hs256(SECRET).expect("a long enough secret");
    let token = auth
        .mint("bench", &[], Duration::from_secs(3600))
        .expect("token");
    let mut http = HttpConfig::default();
    http.rate_limit = None;
    let state = ApiState::builder(executor, auth).config(http).build();
    (serve(router(state)).await, token)
}

/// The same routes, answered at once with a fixed body.
async fn trivial() -> String {
    let body = json!({"id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "state": "queued"});
    let (a, b) = (body.clone(), body);
    let app = Router::new()
        .route(
            &format!("{BASE_PATH}/job"),
            post(move || {
                let a = a.clone();
                async move { (axum::http::StatusCode::ACCEPTED, Json(a)) }
            }),
        )
        .route(
            &format!("{BASE_PATH}/job/{{job_id}}"),
            get(move || {
                let b = b.clone();
                async move { Json(b) }
            }),
        );
    serve(app).await
}

fn p99(mut samples: Vec<Duration>) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let i = ((samples.len() as f64) * 0.99).ceil() as usize;
    samples[i.clamp(1, samples.len()) - 1].as_secs_f64() * 1e6
}

/// `requests` submits, then `requests` status reads of the submitted jobs,
/// from `CLIENTS` concurrent clients.
async fn drive(base: &str, token: &str, requests: usize) -> (Figures, Figures) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .expect("client");
    let body = json!({"name": "bench", "dag_definition": {"nodes": [{"id": "a", "type": "noop"}], "edges": []}}).to_string();
    let per_client = requests.div_ceil(CLIENTS);

    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, base, token, body) = (
            client.clone(),
            base.to_owned(),
            token.to_owned(),
            body.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(per_client);
            let mut times = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let t = Instant::now();
                let resp = client
                    .post(format!("{base}/job"))
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("submit");
                assert_eq!(resp.status().as_u16(), 202);
                let job: Value = resp.json().await.expect("JSON");
                times.push(t.elapsed());
                ids.push(job["id"].as_str().unwrap_or_default().to_owned());
            }
            (ids, times)
        }));
    }
    let mut all_ids = Vec::new();
    let mut submit_times = Vec::new();
    for t in tasks {
        let (ids, times) = t.await.expect("client task");
        all_ids.push(ids);
        submit_times.extend(times);
    }
    let submit_elapsed = start.elapsed();

    let start = Instant::now();
    let mut tasks = Vec::new();
    for ids in all_ids {
        let (client, base, token) = (client.clone(), base.to_owned(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::with_capacity(ids.len());
            for id in ids {
                let t = Instant::now();
                let resp = client
                    .get(format!("{base}/job/{id}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .expect("status");
                assert_eq!(resp.status().as_u16(), 200);
                let _ = resp.bytes().await.expect("body");
                times.push(t.elapsed());
            }
            times
        }));
    }
    let mut status_times = Vec::new();
    for t in tasks {
        status_times.extend(t.await.expect("client task"));
    }
    let status_elapsed = start.elapsed();
    let n = (per_client * CLIENTS) as f64;
    (
        Figures {
            per_sec: n / submit_elapsed.as_secs_f64(),
            p99_us: p99(submit_times),
        },
        Figures {
            per_sec: n / status_elapsed.as_secs_f64(),
            p99_us: p99(status_times),
        },
    )
}

/// Runs the scenario: four lines, throughput and p99 of submit and status.
pub fn http(quick: bool) -> Vec<Line> {
    let requests = if quick { 400 } else { 20_000 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    runtime.block_on(async {
        reset_peak();
        let (base, token) = ours().await;
        // Warm up connections and code paths on both servers.
        let _ = drive(&base, &token, CLIENTS * 4).await;
        let (submit, status) = drive(&base, &token, requests).await;
        let rss = peak_rss();
        let trivial_base = trivial().await;
        let _ = drive(&trivial_base, &token, CLIENTS * 4).await;
        let (t_submit, t_status) = drive(&trivial_base, &token, requests).await;
        let note = format!("{requests} requests from {CLIENTS} clients over loopback, with JWT auth; baseline: a trivial axum handler on the same routes");
        let line = |scenario: &str, ours: f64, baseline: f64, unit: &'static str| Line {
            scenario: scenario.to_owned(),
            ours,
            baseline,
            unit,
            peak_rss: rss,
            note: note.clone(),
        };
        vec![
            line("http/submit", submit.per_sec, t_submit.per_sec, "req/s"),
            line("http/submit-p99", submit.p99_us, t_submit.p99_us, "us"),
            line("http/status", status.per_sec, t_status.per_sec, "req/s"),
            line("http/status-p99", status.p99_us, t_status.p99_us, "us"),
        ]
    })
}
