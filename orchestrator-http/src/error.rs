//! [`ApiError`]: every failure of the API, and the one place it becomes a
//! status code and an `application/problem+json` body (RFC 9457).
//!
//! Each variant has a stable machine `code` that clients match on; `title`
//! and `detail` are for people and may change. Server-side failures (5xx)
//! are logged in full here and answered with a generic detail: a response
//! never carries a store path, a backend message or a stack of causes.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use orchestrator_core::{
    DeadLetterError, ExecutorError, JobId, JobState, StoreError, ValidationErrors,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One problem found in a request: a spec problem (path into the body), a
/// forbidden node type, or a bad query parameter (path `?name`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldProblem {
    /// JSON pointer into the request body (`/dag_definition/nodes/0/type`),
    /// or `?param` for a query parameter.
    pub path: String,
    /// Machine-readable code, e.g. `cycle`, `unknown_dependency`,
    /// `node_type_not_allowed`, `command_not_allowed`, `invalid_value`.
    pub code: String,
    /// A sentence for people.
    pub message: String,
}

impl FieldProblem {
    /// A problem at `path`.
    pub fn new(
        path: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            code: code.into(),
            message: message.into(),
        }
    }

    /// The problems of a failed core validation.
    pub fn from_validation(errors: &ValidationErrors) -> Vec<Self> {
        errors
            .problems()
            .iter()
            .map(|p| Self::new(p.path.clone(), p.code.as_str(), p.message.clone()))
            .collect()
    }
}

/// The body of every error response (`application/problem+json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProblemDetails {
    /// A URI naming the problem type: `urn:orchestrator:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// The stable machine-readable code (see the API docs' table).
    pub code: String,
    /// What went wrong with this request, for people.
    pub detail: String,
    /// The request's `X-Request-Id`, to quote when reporting the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Every problem found, for validation errors and bad parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<FieldProblem>>,
}

/// Why a bearer token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` header.
    Missing,
    /// Not a `Bearer` token, or not a JWT at all.
    Malformed,
    /// Signature, algorithm, issuer, audience, `nbf` or claims are wrong.
    Invalid,
    /// Past its `exp`.
    Expired,
}

impl AuthFailure {
    fn code(self) -> &'static str {
        match self {
            Self::Missing => "missing_token",
            Self::Malformed => "malformed_token",
            Self::Invalid => "invalid_token",
            Self::Expired => "token_expired",
        }
    }

    fn detail(self) -> &'static str {
        match self {
            Self::Missing => "this endpoint needs an `Authorization: Bearer <JWT>` header",
            Self::Malformed => "the Authorization header is not `Bearer <JWT>`",
            Self::Invalid => "the token was not accepted (signature, algorithm, issuer, audience, not-before or claims)",
            Self::Expired => "the token has expired",
        }
    }
}

/// Every failure of the API. Its [`IntoResponse`] is the only place a
/// failure is mapped to a status and a body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The body is not well-formed JSON (400 `malformed_json`).
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// Query parameters are invalid or unknown (400 `invalid_parameter`).
    #[error("invalid query parameters")]
    InvalidParameters(Vec<FieldProblem>),
    /// No valid bearer token (401).
    #[error("unauthorized: {0:?}")]
    Unauthorized(AuthFailure),
    /// No such job, or not the caller's (404 `job_not_found`).
    #[error("job not found")]
    JobNotFound,
    /// No such route (404 `not_found`).
    #[error("no such endpoint")]
    RouteNotFound,
    /// The route exists, the method does not (405 `method_not_allowed`).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The body is larger than allowed (413 `payload_too_large`).
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body is not JSON (415 `unsupported_media_type`).
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// The job spec is invalid: every problem (422 `invalid_spec`).
    #[error("invalid job spec")]
    InvalidSpec(Vec<FieldProblem>),
    /// The job is already over (422 `job_finished`).
    #[error("job {job} already finished ({state})")]
    JobFinished {
        /// The job.
        job: JobId,
        /// Its final state.
        state: JobState,
    },
    /// The job is not over yet (422 `job_not_finished`).
    #[error("job {job} is not finished ({state})")]
    JobNotFinished {
        /// The job.
        job: JobId,
        /// Its state.
        state: JobState,
    },
    /// Every node of the job succeeded (422 `nothing_to_retry`).
    #[error("job {0} has nothing to retry")]
    NothingToRetry(JobId),
    /// No such dead letter, or not the caller's (404 `dead_letter_not_found`).
    #[error("dead letter not found")]
    DeadLetterNotFound,
    /// The dead letter was already requeued or discarded (409
    /// `dead_letter_resolved`).
    #[error("dead letter {id} is already {status}")]
    DeadLetterResolved {
        /// The entry.
        id: String,
        /// Its status.
        status: String,
    },
    /// The dead letter cannot be requeued (409 `not_requeueable`).
    #[error("{0}")]
    NotRequeueable(String),
    /// The caller's token lacks the role the endpoint needs (403
    /// `forbidden`).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// No such stored policy (404 `policy_not_found`).
    #[error("policy not found")]
    PolicyNotFound,
    /// A different policy is stored under this `name@version` (409
    /// `policy_conflict`): versions are immutable.
    #[error("policy {name}@{version} already exists with a different body")]
    PolicyConflict {
        /// The policy's name.
        name: String,
        /// The version.
        version: u32,
    },
    /// The request body is JSON of the wrong shape (422 `invalid_body`).
    #[error("invalid request body")]
    InvalidBody(Vec<FieldProblem>),
    /// Too many requests (429 `rate_limited`).
    #[error("rate limited; retry after {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a request will be accepted (`Retry-After`).
        retry_after_secs: u64,
    },
    /// The store or the executor cannot serve now (503 `unavailable`).
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// Anything else (500 `internal`); the cause is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_) | Self::InvalidParameters(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::JobNotFound
            | Self::RouteNotFound
            | Self::DeadLetterNotFound
            | Self::PolicyNotFound => StatusCode::NOT_FOUND,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::DeadLetterResolved { .. }
            | Self::NotRequeueable(_)
            | Self::PolicyConflict { .. } => StatusCode::CONFLICT,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::InvalidSpec(_)
            | Self::JobFinished { .. }
            | Self::JobNotFinished { .. }
            | Self::NothingToRetry(_)
            | Self::InvalidBody(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed_json",
            Self::InvalidParameters(_) => "invalid_parameter",
            Self::Unauthorized(f) => f.code(),
            Self::JobNotFound => "job_not_found",
            Self::RouteNotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::InvalidSpec(_) => "invalid_spec",
            Self::JobFinished { .. } => "job_finished",
            Self::JobNotFinished { .. } => "job_not_finished",
            Self::NothingToRetry(_) => "nothing_to_retry",
            Self::DeadLetterNotFound => "dead_letter_not_found",
            Self::DeadLetterResolved { .. } => "dead_letter_resolved",
            Self::NotRequeueable(_) => "not_requeueable",
            Self::Forbidden(_) => "forbidden",
            Self::PolicyNotFound => "policy_not_found",
            Self::PolicyConflict { .. } => "policy_conflict",
            Self::InvalidBody(_) => "invalid_body",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "Malformed JSON",
            Self::InvalidParameters(_) => "Invalid query parameters",
            Self::Unauthorized(_) => "Unauthorized",
            Self::JobNotFound => "Job not found",
            Self::RouteNotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::PayloadTooLarge { .. } => "Payload too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::InvalidSpec(_) => "Invalid job spec",
            Self::JobFinished { .. } => "Job already finished",
            Self::JobNotFinished { .. } => "Job not finished",
            Self::NothingToRetry(_) => "Nothing to retry",
            Self::DeadLetterNotFound => "Dead letter not found",
            Self::DeadLetterResolved { .. } => "Dead letter already resolved",
            Self::NotRequeueable(_) => "Dead letter not requeueable",
            Self::Forbidden(_) => "Forbidden",
            Self::PolicyNotFound => "Policy not found",
            Self::PolicyConflict { .. } => "Policy version already exists",
            Self::InvalidBody(_) => "Invalid request body",
            Self::RateLimited { .. } => "Too many requests",
            Self::Unavailable(_) => "Service unavailable",
            Self::Internal(_) => "Internal server error",
        }
    }

    /// The body this error is answered with (without a request id).
    pub fn problem(&self) -> ProblemDetails {
        let detail = match self {
            Self::MalformedJson(m) => format!("the body is not valid JSON: {m}"),
            Self::InvalidParameters(p) => format!(
                "{} invalid query parameter{}",
                p.len(),
                if p.len() == 1 { "" } else { "s" }
            ),
            Self::Unauthorized(f) => f.detail().to_owned(),
            Self::JobNotFound => "no job with this id is visible to you".to_owned(),
            Self::RouteNotFound => "no endpoint at this path".to_owned(),
            Self::MethodNotAllowed => "this endpoint does not accept this method".to_owned(),
            Self::PayloadTooLarge { limit } => {
                format!("the request body is larger than {limit} bytes")
            }
            Self::UnsupportedMediaType => {
                "the body must be JSON (`Content-Type: application/json`)".to_owned()
            }
            Self::InvalidSpec(p) => format!(
                "the job spec has {} problem{}",
                p.len(),
                if p.len() == 1 { "" } else { "s" }
            ),
            Self::JobFinished { job, state } => {
                format!("job {job} already finished ({state})")
            }
            Self::JobNotFinished { job, state } => {
                format!("job {job} is {state}; only a finished job can be retried")
            }
            Self::NothingToRetry(job) => {
                format!("every node of job {job} succeeded; there is nothing to retry")
            }
            Self::DeadLetterNotFound => "no dead letter with this id is visible to you".to_owned(),
            Self::DeadLetterResolved { id, status } => {
                format!("dead letter {id} is already {status}")
            }
            Self::NotRequeueable(why) => why.clone(),
            Self::Forbidden(why) => (*why).to_owned(),
            Self::PolicyNotFound => "no stored policy with this name or version".to_owned(),
            Self::PolicyConflict { name, version } => format!(
                "policy {name}@{version} already exists with a different body; versions are immutable: store a new version instead"
            ),
            Self::InvalidBody(p) => format!(
                "the request body has {} problem{}",
                p.len(),
                if p.len() == 1 { "" } else { "s" }
            ),
            Self::RateLimited { retry_after_secs } => {
                format!("too many requests; retry in {retry_after_secs} s")
            }
            // Never the cause: it may name paths, hosts or internals.
            Self::Unavailable(_) => {
                "the service cannot handle the request now; retry later".to_owned()
            }
            Self::Internal(_) => {
                "an internal error occurred; quote the request id when reporting it".to_owned()
            }
        };
        let problems = match self {
            Self::InvalidParameters(p) | Self::InvalidSpec(p) | Self::InvalidBody(p) => {
                Some(p.clone())
            }
            _ => None,
        };
        ProblemDetails {
            kind: format!("urn:orchestrator:problem:{}", self.code()),
            title: self.title().to_owned(),
            status: self.status().as_u16(),
            code: self.code().to_owned(),
            detail,
            request_id: None,
            problems,
        }
    }
}

/// Maps executor failures: unknown jobs stay 404, invalid specs 422, a
/// finished job 422, a store that is down or an executor that stopped 503,
/// anything else 500.
impl From<ExecutorError> for ApiError {
    fn from(e: ExecutorError) -> Self {
        match e {
            ExecutorError::NotFound(_) => Self::JobNotFound,
            ExecutorError::Invalid(errors) => {
                Self::InvalidSpec(FieldProblem::from_validation(&errors))
            }
            ExecutorError::AlreadyFinished { job, state } => Self::JobFinished { job, state },
            // E.g. a job rolling back: not in a state for the operation.
            ExecutorError::Busy { job, state } => Self::JobNotFinished { job, state },
            ExecutorError::Store(e) => e.into(),
            ExecutorError::ShutDown => Self::Unavailable("the executor has shut down".into()),
            ExecutorError::DeadLetter(e) => e.into(),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<DeadLetterError> for ApiError {
    fn from(e: DeadLetterError) -> Self {
        match e {
            DeadLetterError::NotFound(_) => Self::DeadLetterNotFound,
            DeadLetterError::Conflict { id, status } => Self::DeadLetterResolved {
                id: id.to_string(),
                status: status.to_string(),
            },
            e @ DeadLetterError::NotRequeueable { .. } => Self::NotRequeueable(e.to_string()),
            e @ DeadLetterError::BadReason => Self::InvalidBody(vec![FieldProblem::new(
                "/reason",
                "invalid_value",
                e.to_string(),
            )]),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => Self::JobNotFound,
            e @ (StoreError::Unavailable { .. } | StoreError::Backend { .. }) => {
                Self::Unavailable(e.to_string())
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

/// Serializes a problem body.
pub(crate) fn problem_body(problem: &ProblemDetails) -> String {
    serde_json::to_string(problem).unwrap_or_else(|_| {
        r#"{"type":"urn:orchestrator:problem:internal","title":"Internal server error","status":500,"code":"internal","detail":"an internal error occurred"}"#.to_owned()
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::Internal(cause) => tracing::error!(code = self.code(), %cause, "request failed"),
            Self::Unavailable(cause) => {
                tracing::warn!(code = self.code(), %cause, "request failed");
            }
            _ => tracing::debug!(code = self.code(), "request refused"),
        }
        let problem = self.problem();
        let mut response = (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
            problem_body(&problem),
        )
            .into_response();
        match self {
            Self::Unauthorized(f) => {
                let value = if f == AuthFailure::Missing {
                    HeaderValue::from_static("Bearer")
                } else {
                    HeaderValue::from_static("Bearer error=\"invalid_token\"")
                };
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
            Self::RateLimited { retry_after_secs } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            _ => {}
        }
        // The request-context middleware adds the request id to the body.
        response.extensions_mut().insert(problem);
        response
    }
}
