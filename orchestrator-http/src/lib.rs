//! The REST API of **orchestrator** as an [axum] router: submit jobs, follow
//! them live, cancel and retry them — with JWT authentication, per-user
//! scoping, rate limits, Prometheus metrics and an OpenAPI description.
//!
//! [`router`] returns an `axum::Router` serving everything under
//! [`BASE_PATH`]; a team mounts it in its own application, under any prefix,
//! next to its own routes. `orchestrator serve` runs it as a server.
//!
//! ```
//! use std::sync::Arc;
//! use axum::Router;
//! use orchestrator_core::{Executor, MemoryStore};
//! use orchestrator_http::{router, ApiState, AuthConfig};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let executor = Executor::builder(Arc::new(MemoryStore::new())).start().await?;
//! let auth = AuthConfig::hs256("a shared secret of at least 32 bytes!")?;
//! let app: Router = Router::new()
//!     .route("/", axum::routing::get(|| async { "my app" }))
//!     // The API is now at /ci/api/v1/orchestration/…
//!     .nest("/ci", router(ApiState::new(executor, auth)));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let server = tokio::spawn(async move { axum::serve(listener, app).await });
//! # server.abort();
//! # Ok(()) }
//! ```
//!
//! # Endpoints
//!
//! All under [`BASE_PATH`] (`/api/v1/orchestration`):
//!
//! | method and path | what | statuses |
//! |---|---|---|
//! | `POST /job` | submit a job | 202 (+ `Location`), 400, 401, 413, 415, 422, 429 |
//! | `GET /job/{id}` | status: state, progress, nodes | 200, 401, 404, 429 |
//! | `DELETE /job/{id}` | cancel | 200, 401, 404, 422, 429 |
//! | `GET /jobs` | list the caller's jobs: filters, cursor or page | 200, 400, 401, 429 |
//! | `GET /stats` | recovery analytics over the caller's jobs: MTTR, share recovered, retries per node type | 200, 400, 401, 429 |
//! | `GET /job/{id}/events` | the journal, paged; or live SSE | 200, 400, 401, 404, 429 |
//! | `POST /job/{id}/retry` | re-run what did not succeed, as a new job | 202, 401, 404, 422, 429 |
//! | `GET /flaky` | flakiness report: tests with their scores, scored over the caller's runs (every run for an admin) | 200, 400, 401, 429 |
//! | `GET /policies` | stored retry policies: the latest of each, or every version (`all=true`) | 200, 400, 401, 429 |
//! | `POST /policies` | store a policy version (admin) | 201, 200 (identical), 400, 401, 403, 409, 415, 422, 429 |
//! | `GET /policies/{name}[@{version}]` | one policy: the latest version, or that one | 200, 401, 404, 429 |
//! | `GET /breakers` | the executor's circuit breakers: state, window, waiting nodes | 200, 401, 429 |
//! | `GET /health` | store and executor status (no token) | 200, 503 |
//! | `GET /metrics` | Prometheus text (no token) | 200 |
//! | `GET /openapi.json`, `GET /docs` | the OpenAPI description and a docs page (no token) | 200 |
//!
//! Any of them may also answer 503 when the store or the executor is
//! unavailable, and 500 for a bug; neither body says more than that.
//!
//! # Module map
//!
//! | module | what it holds |
//! |---|---|
//! | [`state`] | [`ApiState`] (executor, policies, limiter, metrics) and [`HttpConfig`] |
//! | [`auth`] | [`AuthConfig`] (HS256 / RS256 / ES256, claims checks, minting) and the [`Caller`] extractor |
//! | [`error`] | [`ApiError`], the one mapping of failures to statuses and problem+json bodies |
//! | [`policy`] | [`NodePolicy`]: node types and commands allowed over HTTP |
//! | [`limit`] | [`RateLimit`]: the per-user token bucket |
//! | [`extract`] | extractors for the spec body and the job id |
//! | [`query`] | strict parsing of query strings |
//! | [`events`] | journal pages and the SSE stream |
//! | [`webhook`] | the webhook notification sink: signed POSTs, retries with backoff, a dead-letter file |
//! | [`openapi`] | [`ApiDoc`], `/openapi.json`, `/docs`, `/metrics` |
//! | `flaky` | `GET /flaky`, the flakiness report, and how it is scoped |
//! | `policies` | stored retry policies and the executor's circuit breakers ([`PolicyList`], [`BreakerList`]) |
//! | `api`, `stats`, `context`, `metrics`, `breaker_metrics` | the job handlers and `/health`; request ids, logs and HTTP metrics; the Prometheus registry; the breaker block of `/metrics` |
//!
//! # Security model
//!
//! - Every job endpoint needs `Authorization: Bearer <JWT>`. The algorithm
//!   is pinned by the configured key (HS256 secret, or RS256/ES256 public
//!   key): `alg: none` and algorithm confusion are refused. `exp` and `sub`
//!   are required, `nbf` is checked, `iss` and `aud` when configured.
//! - `sub` owns the jobs it submits. Other users' jobs answer 404, exactly
//!   like jobs that do not exist; the `admin` role sees and manages all.
//! - Only the node types of the [`NodePolicy`] may be submitted (`noop` and
//!   `sleep` by default); `process` needs an explicit command allowlist.
//! - Bodies are size-limited, query strings parsed strictly, and every
//!   response carries an `X-Request-Id` that also tags its log lines.

pub mod auth;
pub mod error;
pub mod events;
pub mod extract;
pub mod limit;
pub mod openapi;
pub mod policy;
pub mod query;
pub mod state;
pub mod webhook;

mod api;
mod breaker_metrics;
mod context;
mod dlq;
mod flaky;
mod metrics;
mod policies;
mod stats;

use axum::routing::{get, post};
use axum::Router;

pub use api::{ComponentHealth, Health, JobList};
pub use auth::{AuthConfig, AuthConfigError, Caller, Claims, ADMIN_ROLE};
pub use context::{RequestId, REQUEST_ID};
pub use dlq::{DeadLetterList, DiscardRequest};
pub use error::{ApiError, FieldProblem, ProblemDetails, PROBLEM_JSON};
pub use events::{EventPage, EventRecord};
pub use limit::RateLimit;
pub use openapi::ApiDoc;
pub use policies::{BreakerList, PolicyList};
pub use policy::NodePolicy;
pub use state::{ApiState, ApiStateBuilder, HttpConfig};

/// Where the API lives within [`router`].
pub const BASE_PATH: &str = "/api/v1/orchestration";

/// The API as a router with its state applied: mount it with
/// `Router::nest` (or serve it as is). See the [crate docs](crate).
pub fn router(state: ApiState) -> Router {
    let at = |path: &str| format!("{BASE_PATH}{path}");
    Router::new()
        .route(&at("/job"), post(api::submit))
        .route(&at("/job/{job_id}"), get(api::get_job).delete(api::cancel))
        .route(&at("/job/{job_id}/events"), get(events::events))
        .route(&at("/job/{job_id}/retry"), post(api::retry))
        .route(&at("/jobs"), get(api::list))
        .route(&at("/stats"), get(stats::stats))
        .route(&at("/dlq"), get(dlq::list))
        .route(&at("/dlq/{id}"), get(dlq::show))
        .route(&at("/dlq/{id}/requeue"), post(dlq::requeue))
        .route(&at("/dlq/{id}/discard"), post(dlq::discard))
        .route(&at("/flaky"), get(flaky::report))
        .route(&at("/policies"), get(policies::list).post(policies::create))
        .route(&at("/policies/{policy}"), get(policies::show))
        .route(&at("/breakers"), get(policies::breakers))
        .route(&at("/health"), get(api::health))
        .route(&at("/metrics"), get(openapi::metrics))
        .route(&at("/openapi.json"), get(openapi::spec))
        .route(&at("/docs"), get(openapi::docs))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            context::request_context,
        ))
        .with_state(state)
}
