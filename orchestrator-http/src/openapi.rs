//! `GET /openapi.json` and `GET /docs`, plus `GET /metrics`.
//!
//! The OpenAPI document is generated from the handlers' annotations and
//! from the very types the handlers serialize (the core's `JobStatus`,
//! `JobSummary`, `JobSpec`, … derive their schemas under the core's
//! `openapi` feature), so it cannot describe a different shape than the
//! one sent. The integration tests check every response they receive
//! against it.

use std::collections::HashMap;

use axum::extract::{OriginalUri, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::server::Server;
use utoipa::{Modify, OpenApi};

use orchestrator_core::StoreExt;

use crate::state::ApiState;
use crate::BASE_PATH;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT signed with the server's key (HS256 by default; RS256 or ES256 when configured). `exp` and `sub` are required; the `admin` role sees every job.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI description of the API (paths relative to the server URL,
/// which is [`BASE_PATH`] unless the router is mounted under a prefix).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "orchestrator",
        description = "Submit DAGs of test-execution nodes, follow them live, cancel and retry them. Every state change is journaled before it is acted on.\n\nErrors are `application/problem+json` bodies with a stable `code`. Authenticated requests are rate-limited per user (`429` with `Retry-After`). Every response carries an `X-Request-Id`."
    ),
    servers((url = "/api/v1/orchestration")),
    paths(
        crate::api::submit,
        crate::api::get_job,
        crate::api::cancel,
        crate::api::list,
        crate::api::retry,
        crate::stats::stats,
        crate::events::events,
        crate::dlq::list,
        crate::dlq::show,
        crate::dlq::requeue,
        crate::dlq::discard,
        crate::flaky::report,
        crate::policies::list,
        crate::policies::show,
        crate::policies::create,
        crate::policies::breakers,
        crate::api::health,
        metrics,
        spec,
        docs,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "jobs", description = "Submit, inspect, cancel, retry and follow jobs (bearer token required)."),
        (name = "dead letters", description = "Nodes that failed for good: list, inspect, requeue or discard them (the job's owner or an admin)."),
        (name = "policies", description = "Stored, versioned retry policies (admins store them) and the executor's circuit breakers."),
        (name = "operations", description = "Health, metrics and this description (no token)."),
    )
)]
pub struct ApiDoc;

/// Prometheus metrics: jobs by state, node attempts and results by class,
/// escalations by cause, HTTP requests by route and status, request
/// durations, circuit breakers.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4.", body = String, content_type = "text/plain"))
)]
pub(crate) async fn metrics(State(state): State<ApiState>) -> Response {
    if state.metrics().take_stale() {
        // Rebuild the active-job gauges from what the executor runs now.
        if let Ok(ids) = state.executor().active_jobs().await {
            let mut active = HashMap::with_capacity(ids.len());
            let mut nodes = HashMap::with_capacity(ids.len());
            for id in ids {
                if let Ok(view) = state.executor().store().load_view(&id).await {
                    if !view.state.is_terminal() {
                        active.insert(id.clone(), view.state);
                        nodes.insert(id, crate::metrics::JobNodes::from_view(&view));
                    }
                }
            }
            state.metrics().resync(active);
            state.metrics().resync_nodes(nodes);
        }
    }
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        {
            let mut text = state.metrics().render();
            // An executor that has shut down has no breakers to report.
            if let Ok(breakers) = state.executor().breakers().await {
                crate::breaker_metrics::render(&mut text, &breakers);
            }
            text
        },
    )
        .into_response()
}

/// This API's OpenAPI 3.1 description.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document.", body = Object, content_type = "application/json"))
)]
pub(crate) async fn spec(OriginalUri(uri): OriginalUri) -> Response {
    let mut doc = ApiDoc::openapi();
    // Mounted under a prefix, the API lives at the prefix plus BASE_PATH:
    // point the server URL at where this document was actually served from.
    let base = uri
        .path()
        .strip_suffix("/openapi.json")
        .unwrap_or(BASE_PATH);
    doc.servers = Some(vec![Server::new(base)]);
    (
        [(CACHE_CONTROL, HeaderValue::from_static("no-cache"))],
        Json(doc),
    )
        .into_response()
}

/// Interactive documentation of the API (Scalar, rendering `openapi.json`).
#[utoipa::path(
    get, path = "/docs", tag = "operations",
    responses((status = 200, description = "An HTML page.", body = String, content_type = "text/html"))
)]
pub(crate) async fn docs() -> Html<&'static str> {
    // The page loads the renderer from a CDN in the reader's browser; the
    // server itself fetches nothing. `openapi.json` is relative, so the
    // page works under any prefix.
    Html(DOCS_PAGE)
}

const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>orchestrator API</title>
</head>
<body>
  <noscript>This page needs JavaScript; the raw description is at <a href="openapi.json">openapi.json</a>.</noscript>
  <script id="api-reference" data-url="openapi.json"></script>
  <script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference"></script>
</body>
</html>
"#;
