//! The middleware every request passes: its `X-Request-Id` (taken from the
//! request when well-formed, generated otherwise), a log span and line
//! carrying it, the HTTP metrics, and the request id in problem bodies.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

use crate::error::{problem_body, ProblemDetails};
use crate::state::ApiState;

/// The request-id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the current request, in the request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

/// A client's id is kept if it is 1 to 128 characters of `[A-Za-z0-9._:-]`,
/// so it cannot forge log lines or headers.
fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

fn generate() -> String {
    format!("{:032x}", rand::random::<u128>())
}

pub(crate) async fn request_context(
    State(state): State<ApiState>,
    mut req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map_or_else(generate, str::to_owned);
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let span = tracing::info_span!("request", request_id = %id, %method, path = %req.uri().path());
    let mut response = next.run(req).instrument(span.clone()).await;
    if let Some(mut problem) = response.extensions_mut().remove::<ProblemDetails>() {
        problem.request_id = Some(id.clone());
        *response.body_mut() = Body::from(problem_body(&problem));
        response
            .headers_mut()
            .remove(axum::http::header::CONTENT_LENGTH);
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let took = start.elapsed();
    let status = response.status().as_u16();
    state
        .metrics()
        .request(method.as_str(), &route, status, took);
    span.in_scope(|| {
        tracing::info!(
            status,
            duration_ms = took.as_secs_f64() * 1000.0,
            "answered"
        );
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_harmless() {
        assert!(acceptable("abc-123_x.y:z"));
        assert!(!acceptable(""));
        assert!(!acceptable("a b"));
        assert!(!acceptable("a\nb"));
        assert!(!acceptable(&"x".repeat(129)));
        let g = generate();
        assert_eq!(g.len(), 32);
        assert!(acceptable(&g));
    }
}
