//! Stored retry policies (`/policies…`) and the executor's circuit breakers
//! (`/breakers`).
//!
//! Policies are shared by every user of a server (a spec names one by
//! `name` or `name@version`), so any authenticated caller may read them;
//! storing one needs the `admin` role, because every job naming the policy
//! by its bare name picks up a new version. Versions are immutable: posting
//! the stored body again is a harmless 200 (a retried create), a different
//! body for an existing version is a 409.
//!
//! One policy is addressed as `/policies/{name}` (its latest version) or
//! `/policies/{name}@{version}`, the same text a spec's `policy` field
//! holds.
//!
//! Breakers live in the executor process, not in the store: `/breakers`
//! reports the ones of the executor behind this server.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use orchestrator_core::executor::BreakerStatus;
use orchestrator_core::policy::{PolicyRef, StoredPolicy};
use orchestrator_core::{ExecutorError, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ApiError, FieldProblem, ProblemDetails};
use crate::query::policies_query;
use crate::state::ApiState;

/// The body of `GET /policies`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PolicyList {
    /// The latest version of every policy by name; with `all=true` every
    /// version, by name then version.
    pub policies: Vec<StoredPolicy>,
}

/// The body of `GET /breakers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BreakerList {
    /// Every breaker of the executor, by dependency.
    pub breakers: Vec<BreakerStatus>,
}

/// Lists stored policies: the latest version of each, or every version.
#[utoipa::path(
    get, path = "/policies", tag = "policies",
    params(("all" = Option<bool>, Query, description = "`true`: every version of every policy (default `false`: the latest of each).")),
    responses(
        (status = 200, description = "The policies, by name.", body = PolicyList),
        (status = 400, description = "Invalid or unknown parameters.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable.", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    _caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<PolicyList>, ApiError> {
    let all = policies_query(raw.as_deref())?;
    let store = state.executor().store();
    let latest = store.list_policies().await?;
    let policies = if all {
        let mut every = Vec::new();
        for p in &latest {
            every.extend(store.policy_versions(&p.name).await?);
        }
        every
    } else {
        latest
    };
    Ok(Json(PolicyList { policies }))
}

/// One stored policy: `{name}` for the latest version, `{name}@{version}`
/// for that one.
#[utoipa::path(
    get, path = "/policies/{policy}", tag = "policies",
    params(("policy" = String, Path, description = "`name` (the latest version) or `name@version`")),
    responses(
        (status = 200, description = "The policy.", body = StoredPolicy),
        (status = 401, description = "Missing or invalid token.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such policy or version (`policy_not_found`).", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable.", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn show(
    State(state): State<ApiState>,
    _caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<StoredPolicy>, ApiError> {
    // A reference that cannot parse names no policy.
    let r: PolicyRef = raw.parse().map_err(|_| ApiError::PolicyNotFound)?;
    state
        .executor()
        .store()
        .get_policy(&r.name, r.version)
        .await?
        .map(Json)
        .ok_or(ApiError::PolicyNotFound)
}

/// Stores a policy version (admins only). Versions are immutable.
#[utoipa::path(
    post, path = "/policies", tag = "policies",
    request_body(content = StoredPolicy, description = "The policy: `name`, `version` (from 1), optional `description`, `retry` and `classify`.", content_type = "application/json"),
    responses(
        (status = 201, description = "Stored.", body = StoredPolicy),
        (status = 200, description = "This exact version was already stored: nothing changed.", body = StoredPolicy),
        (status = 400, description = "Malformed JSON.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the `admin` role (`forbidden`).", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "This version exists with a different body (`policy_conflict`).", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "Not a valid policy: every problem with its path (`invalid_body`).", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable.", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create(
    State(state): State<ApiState>,
    caller: Caller,
    body: Result<Json<StoredPolicy>, JsonRejection>,
) -> Result<Response, ApiError> {
    if !caller.admin {
        return Err(ApiError::Forbidden(
            "storing a policy needs the admin role: it changes how every job naming it retries",
        ));
    }
    let Json(policy) = body.map_err(|e| match e {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        JsonRejection::JsonDataError(e) => {
            ApiError::InvalidBody(vec![FieldProblem::new("", "invalid_value", e.body_text())])
        }
        other => ApiError::MalformedJson(other.body_text()),
    })?;
    let executor = state.executor();
    let stored = executor
        .store()
        .get_policy(&policy.name, Some(policy.version))
        .await?;
    if stored.as_ref() == Some(&policy) {
        return Ok((StatusCode::OK, Json(policy)).into_response());
    }
    match executor.create_policy(&policy).await {
        Ok(()) => {}
        Err(ExecutorError::Invalid(errors)) => {
            return Err(ApiError::InvalidBody(FieldProblem::from_validation(
                &errors,
            )))
        }
        Err(ExecutorError::Store(StoreError::PolicyConflict { name, version })) => {
            return Err(ApiError::PolicyConflict { name, version })
        }
        Err(other) => return Err(other.into()),
    }
    tracing::info!(policy = %policy.key(), user = %caller.sub, "policy stored");
    Ok((StatusCode::CREATED, Json(policy)).into_response())
}

/// The executor's circuit breakers: state, window counts, when an open one
/// starts trials, and how many ready nodes wait for each.
#[utoipa::path(
    get, path = "/breakers", tag = "policies",
    responses(
        (status = 200, description = "Every breaker of the executor behind this server.", body = BreakerList),
        (status = 401, description = "Missing or invalid token.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Executor unavailable.", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn breakers(
    State(state): State<ApiState>,
    _caller: Caller,
) -> Result<Json<BreakerList>, ApiError> {
    let breakers = state.executor().breakers().await?;
    Ok(Json(BreakerList { breakers }))
}
