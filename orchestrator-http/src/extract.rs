//! Extractors that turn every malformed input into an [`ApiError`]: the
//! job spec body ([`SpecBody`]) and the job id in the path ([`JobPath`]).

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use orchestrator_core::{JobId, JobSpec};

use crate::error::{ApiError, FieldProblem};
use crate::state::ApiState;

/// A submitted job spec: `Content-Type` JSON (415 otherwise), at most
/// [`HttpConfig::max_body_bytes`](crate::HttpConfig) (413), well-formed
/// JSON (400) of the spec's shape (422 with the offending path).
#[derive(Debug)]
pub struct SpecBody(pub JobSpec);

/// Whether `value` names JSON: `application/json` or `application/*+json`,
/// any parameters.
fn is_json(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl FromRequest<ApiState> for SpecBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ApiState) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json);
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = state.config().max_body_bytes;
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        let bytes = Limited::new(req.into_body(), limit)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    ApiError::PayloadTooLarge { limit }
                } else {
                    ApiError::MalformedJson("the body could not be read".into())
                }
            })?
            .to_bytes();
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| ApiError::MalformedJson("the body is not UTF-8".into()))?;
        JobSpec::from_json(text).map(SpecBody).map_err(|e| {
            if e.code == "syntax" {
                ApiError::MalformedJson(e.message)
            } else {
                ApiError::InvalidSpec(vec![FieldProblem::new(e.path, e.code, e.message)])
            }
        })
    }
}

/// The `{job_id}` of the path. An id that cannot exist is simply not found.
#[derive(Debug)]
pub struct JobPath(pub JobId);

impl<S: Send + Sync> FromRequestParts<S> for JobPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::JobNotFound)?;
        raw.parse().map(JobPath).map_err(|_| ApiError::JobNotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_media_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/jsonx",
            "application/x-www-form-urlencoded",
            "",
        ] {
            assert!(!is_json(bad), "{bad}");
        }
    }
}
