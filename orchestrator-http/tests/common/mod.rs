//! The test harness: a real server on port 0, a real HTTP client, and a
//! check of every response against the served OpenAPI document.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use orchestrator_core::journal::{JobSummary, Progress, Record, Snapshot};
use orchestrator_core::runner::ScriptedRunner;
use orchestrator_core::store::{JobPage, JobQuery};
use orchestrator_core::{
    Executor, JobId, ManualClock, MemoryStore, Registry, Store, StoreError, Timestamp,
};
use orchestrator_http::{router, ApiDoc, ApiState, AuthConfig, HttpConfig, NodePolicy, RateLimit};
use reqwest::{Method, RequestBuilder};
use serde_json::Value;
use utoipa::OpenApi as _;

pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789";
pub const BASE: &str = "/api/v1/orchestration";

/// A store whose `ping` (and, when asked, everything) fails.
#[derive(Debug, Default)]
pub struct FlakyStore {
    pub inner: MemoryStore,
    pub down: AtomicBool,
}

impl FlakyStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable {
                message: "connection refused to db.internal:5432 (secret detail)".into(),
                source: None,
            })
        } else {
            Ok(())
        }
    }
}

orchestrator_core::forward_store_extensions!(FlakyStore => inner);

#[async_trait]
impl Store for FlakyStore {
    async fn create_job(&self, summary: &JobSummary, records: &[Record]) -> Result<(), StoreError> {
        self.check()?;
        self.inner.create_job(summary, records).await
    }
    async fn append(
        &self,
        job: &JobId,
        expected: u64,
        records: &[Record],
        progress: &Progress,
        fence: u64,
    ) -> Result<u64, StoreError> {
        self.check()?;
        self.inner
            .append(job, expected, records, progress, fence)
            .await
    }
    async fn read(&self, job: &JobId, after: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.check()?;
        self.inner.read(job, after, limit).await
    }
    async fn put_snapshot(&self, job: &JobId, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.check()?;
        self.inner.put_snapshot(job, snapshot).await
    }
    async fn snapshot(&self, job: &JobId) -> Result<Option<Snapshot>, StoreError> {
        self.check()?;
        self.inner.snapshot(job).await
    }
    async fn summary(&self, job: &JobId) -> Result<JobSummary, StoreError> {
        self.check()?;
        self.inner.summary(job).await
    }
    async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage, StoreError> {
        self.check()?;
        self.inner.list_jobs(query).await
    }
    async fn unfinished_jobs(&self) -> Result<Vec<JobId>, StoreError> {
        self.check()?;
        self.inner.unfinished_jobs().await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.ping().await
    }
}

/// What a test server is built with.
pub struct Options {
    pub config: HttpConfig,
    pub auth: AuthConfig,
    /// Mount under this prefix (`""`: at the root).
    pub prefix: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        let mut config = HttpConfig::default();
        config.rate_limit = Some(RateLimit {
            requests_per_minute: 10_000,
        });
        config.nodes = NodePolicy::default().allow_type("scripted");
        Self {
            config,
            auth: AuthConfig::hs256(SECRET).unwrap(),
            prefix: "",
        }
    }
}

pub struct Server {
    /// `http://127.0.0.1:PORT{prefix}{BASE}`.
    pub url: String,
    pub prefix: &'static str,
    pub client: reqwest::Client,
    pub state: ApiState,
    pub store: Arc<FlakyStore>,
    pub scripted: ScriptedRunner,
    pub clock: Arc<ManualClock>,
    pub auth: AuthConfig,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.state.shutdown();
        self.task.abort();
    }
}

pub async fn start() -> Server {
    start_with(Options::default()).await
}

pub async fn start_with(options: Options) -> Server {
    let store = Arc::new(FlakyStore::default());
    let scripted = ScriptedRunner::new();
    let mut registry = Registry::with_builtins();
    registry.register("scripted", scripted.clone());
    // One clock for the API (tokens, rate limits) and the journal, so tests
    // move time instead of sleeping.
    let clock = Arc::new(ManualClock::new(Timestamp(1_700_000_000_000)));
    let executor = Executor::builder(store.clone())
        .registry(registry)
        .clock(clock.clone())
        .start()
        .await
        .unwrap();
    let state = ApiState::builder(executor, options.auth.clone())
        .config(options.config)
        .clock(clock.clone())
        .build();
    let app = if options.prefix.is_empty() {
        router(state.clone())
    } else {
        axum::Router::new().nest(options.prefix, router(state.clone()))
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server {
        url: format!("http://{addr}{}{BASE}", options.prefix),
        prefix: options.prefix,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        state,
        store,
        scripted,
        clock,
        auth: options.auth,
        task,
    }
}

/// A checked response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The problem `code` of an error body.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }
}

impl Server {
    pub fn token(&self, sub: &str) -> String {
        self.auth.mint(sub, &[], Duration::from_secs(600)).unwrap()
    }

    pub fn admin_token(&self, sub: &str) -> String {
        self.auth
            .mint(sub, &["admin".into()], Duration::from_secs(600))
            .unwrap()
    }

    /// A request to `path` (relative to the API base).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.url))
    }

    /// Sends, reads the body, and checks the response against the spec.
    pub async fn send(&self, req: RequestBuilder) -> Reply {
        let req = req.build().unwrap();
        let method = req.method().clone();
        let path = req.url().path().to_owned();
        let resp = self.client.execute(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let reply = Reply {
            status,
            headers,
            text,
        };
        let api_path = path
            .strip_prefix(self.prefix)
            .and_then(|p| p.strip_prefix(BASE))
            .unwrap_or(&path)
            .to_owned();
        conform(&method, &api_path, &reply);
        reply
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.send(self.request(Method::GET, path).bearer_auth(token))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.send(self.request(Method::DELETE, path).bearer_auth(token))
            .await
    }

    pub async fn post_json(&self, path: &str, token: &str, body: &Value) -> Reply {
        self.send(
            self.request(Method::POST, path)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    /// Submits `body` as `user` and returns the job id (asserting 202).
    pub async fn submit(&self, user: &str, body: &Value) -> String {
        let reply = self.post_json("/job", &self.token(user), body).await;
        assert_eq!(reply.status, 202, "{}", reply.text);
        reply.json()["id"].as_str().unwrap().to_owned()
    }

    /// Waits until the job is finished.
    pub async fn wait(&self, id: &str) -> orchestrator_core::JobStatus {
        self.state
            .executor()
            .wait(&id.parse().unwrap())
            .await
            .unwrap()
    }
}

/// A job of `n` noop nodes in a chain.
pub fn chain(name: &str, n: usize) -> Value {
    let nodes: Vec<Value> = (0..n)
        .map(|i| {
            if i == 0 {
                serde_json::json!({"id": "n0", "type": "noop"})
            } else {
                serde_json::json!({"id": format!("n{i}"), "type": "noop", "depends_on": [format!("n{}", i - 1)]})
            }
        })
        .collect();
    serde_json::json!({"name": name, "dag_definition": {"nodes": nodes, "edges": []}})
}

/// The OpenAPI document, as served.
pub fn openapi() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| serde_json::to_value(ApiDoc::openapi()).unwrap())
}

/// The path template of the spec that `path` matches.
fn template_of<'a>(doc: &'a Value, path: &str) -> Option<&'a str> {
    let segments: Vec<&str> = path.split('/').collect();
    doc["paths"]
        .as_object()?
        .keys()
        .map(String::as_str)
        .find(|t| {
            let ts: Vec<&str> = t.split('/').collect();
            ts.len() == segments.len()
                && ts.iter().zip(&segments).all(|(t, s)| {
                    (t.starts_with('{') && t.ends_with('}') && !s.is_empty()) || t == s
                })
        })
}

/// Asserts that the spec documents this response: the path, the method,
/// the status, the content type, and a body valid against the schema.
pub fn conform(method: &Method, path: &str, reply: &Reply) {
    let doc = openapi();
    let Some(template) = template_of(doc, path) else {
        // Unknown routes answer 404/405 problems; nothing to look up.
        assert!(
            matches!(reply.status, 404 | 405),
            "undocumented path {path} answered {}",
            reply.status
        );
        assert!(reply.content_type().starts_with("application/problem+json"));
        return;
    };
    let op = &doc["paths"][template][method.as_str().to_ascii_lowercase()];
    if op.is_null() {
        assert_eq!(
            reply.status, 405,
            "{method} {template} is undocumented but answered {}",
            reply.status
        );
        return;
    }
    let response = &op["responses"][reply.status.to_string()];
    assert!(
        !response.is_null(),
        "{method} {template}: status {} is not documented; body {}",
        reply.status,
        reply.text
    );
    let essence = reply
        .content_type()
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    let content = &response["content"];
    if content.is_null() {
        assert!(
            reply.text.is_empty(),
            "{method} {template} {}: undocumented body",
            reply.status
        );
        return;
    }
    let media = &content[&essence];
    assert!(
        !media.is_null(),
        "{method} {template} {}: content type {essence} not documented (have {content})",
        reply.status
    );
    if essence.ends_with("json") {
        let mut schema = media["schema"].clone();
        if let Value::Object(map) = &mut schema {
            map.insert("components".into(), doc["components"].clone());
        }
        let validator = jsonschema::draft202012::new(&schema)
            .unwrap_or_else(|e| panic!("bad schema for {template}: {e}"));
        let body = reply.json();
        let errors: Vec<String> = validator
            .iter_errors(&body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {template} {}: body does not match the spec: {errors:?}\n{body}",
            reply.status
        );
    }
}
