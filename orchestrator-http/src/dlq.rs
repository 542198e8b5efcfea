//! The dead-letter queue endpoints (`/dlq…`): list, show, requeue and
//! discard, for the entry's job owner or an admin. Anyone else gets the
//! same 404 as for an id that does not exist, so existence never leaks.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use orchestrator_core::store::dead_letter::{DeadLetter, DeadLetterId, MAX_REASON_LEN};
use orchestrator_core::{JobStatus, StoreExt};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::check_spec;
use crate::auth::Caller;
use crate::error::{ApiError, FieldProblem, ProblemDetails};
use crate::query::dlq_query;
use crate::state::ApiState;

/// A page of `GET /dlq`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterList {
    /// The entries of the caller's jobs (every job's for an admin), newest first.
    pub dead_letters: Vec<DeadLetter>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// The page size used.
    pub limit: u32,
}

/// The body of `POST /dlq/{id}/discard`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscardRequest {
    /// Why the entry is left as it is (1 to 1000 bytes); kept in the job's journal.
    pub reason: String,
}

/// The entry, if the caller may see it (else the same 404 as a missing one).
async fn visible(state: &ApiState, caller: &Caller, raw: &str) -> Result<DeadLetter, ApiError> {
    let id: DeadLetterId = raw.parse().map_err(|_| ApiError::DeadLetterNotFound)?;
    let entry = state.executor().dead_letter(&id).await?;
    if caller.may_see(&entry.owner) {
        Ok(entry)
    } else {
        Err(ApiError::DeadLetterNotFound)
    }
}

/// Lists dead letters of the caller's jobs (an admin's: everyone's), newest first.
#[utoipa::path(
    get, path = "/dlq", tag = "dead letters",
    params(
        ("job" = Option<String>, Query, description = "Only this job's entries."),
        ("status" = Option<String>, Query, description = "Only entries in these statuses (`open`, `requeued`, `discarded`): repeat or separate with commas."),
        ("reason" = Option<String>, Query, description = "Only entries with these reasons (`retries_exhausted`, `non_retryable`, `compensation_failed`): repeat or separate with commas."),
        ("node_type" = Option<String>, Query, description = "Only entries of nodes of this type."),
        ("created_after" = Option<String>, Query, description = "Only entries created at or after this time: RFC 3339 or milliseconds since the epoch."),
        ("created_before" = Option<String>, Query, description = "Only entries created before this time: RFC 3339 or milliseconds since the epoch."),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 100 (default 20).", minimum = 1, maximum = 100),
        ("cursor" = Option<String>, Query, description = "Continue after a previous page's `next_cursor`."),
    ),
    responses(
        (status = 200, description = "A page of dead letters.", body = DeadLetterList),
        (status = 400, description = "Invalid or unknown parameters, every one listed.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable.", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<DeadLetterList>, ApiError> {
    let mut query = dlq_query(raw.as_deref())?;
    query.owner = caller.owner_filter();
    let limit = query.limit as u32;
    let page = state.executor().dead_letters(&query).await?;
    Ok(Json(DeadLetterList {
        dead_letters: page.dead_letters,
        next_cursor: page.next_cursor,
        limit,
    }))
}

/// One dead letter: the node, its params, why it is here, its full attempt
/// history, and who resolved it.
#[utoipa::path(
    get, path = "/dlq/{id}", tag = "dead letters",
    params(("id" = String, Path, description = "The entry id, `<job>.<node index>.<n>`")),
    responses(
        (status = 200, description = "The entry.", body = DeadLetter),
        (status = 401, description = "Missing or invalid token.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such entry, or another user's (`dead_letter_not_found`).", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable.", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn show(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeadLetter>, ApiError> {
    visible(&state, &caller, &id).await.map(Json)
}

/// Runs the entry's node again in its own job (reopened), with a fresh
/// attempt budget; the nodes downstream of it that were skipped or
/// upstream-failed run after it succeeds.
#[utoipa::path(
    post, path = "/dlq/{id}/requeue", tag = "dead letters",
    params(("id" = String, Path, description = "The entry id")),
    responses(
        (status = 202, description = "Requeued: journaled, the job is running again; here it is.", body = JobStatus),
        (status = 401, description = "Missing or invalid token.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such entry, or another user's.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "Already requeued or discarded (`dead_letter_resolved`), or not requeueable (`not_requeueable`: a failed compensation, a job not ended `failed`, an older entry of the node).", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "The job is still running (`job_not_finished`), or its nodes are no longer allowed (`invalid_spec`).", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Store or executor unavailable.", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn requeue(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let entry = visible(&state, &caller, &id).await?;
    // The node's type may have been allowed when the job was submitted and
    // no longer be.
    let view = state.executor().store().load_view(&entry.job).await?;
    check_spec(&state, view.spec()).await?;
    let job = state.executor().requeue(&entry.id, &caller.sub).await?;
    tracing::info!(dead_letter = %entry.id, user = %caller.sub, "dead letter requeued");
    let status = state.executor().status(&job).await?;
    Ok((StatusCode::ACCEPTED, Json(status)).into_response())
}

/// Leaves the entry as it is, with a reason kept in its job's journal.
#[utoipa::path(
    post, path = "/dlq/{id}/discard", tag = "dead letters",
    params(("id" = String, Path, description = "The entry id")),
    request_body(content = DiscardRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Discarded: journaled; the entry as it is now.", body = DeadLetter),
        (status = 400, description = "Malformed JSON.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such entry, or another user's.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "Already requeued or discarded (`dead_letter_resolved`).", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "No reason, or one longer than 1000 bytes (`invalid_body`).", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Store or executor unavailable.", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn discard(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<DiscardRequest>, JsonRejection>,
) -> Result<Json<DeadLetter>, ApiError> {
    let entry = visible(&state, &caller, &id).await?;
    let Json(body) = body.map_err(|e| match e {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        JsonRejection::JsonDataError(e) => ApiError::InvalidBody(vec![FieldProblem::new(
            "/reason",
            "invalid_value",
            format!("the body must be {{\"reason\": \"…\"}} ({e})"),
        )]),
        other => ApiError::MalformedJson(other.body_text()),
    })?;
    if body.reason.trim().is_empty() || body.reason.len() > MAX_REASON_LEN {
        return Err(ApiError::InvalidBody(vec![FieldProblem::new(
            "/reason",
            "invalid_value",
            format!("reason must be 1 to {MAX_REASON_LEN} bytes"),
        )]));
    }
    state
        .executor()
        .discard(&entry.id, &caller.sub, &body.reason)
        .await?;
    tracing::info!(dead_letter = %entry.id, user = %caller.sub, "dead letter discarded");
    Ok(Json(state.executor().dead_letter(&entry.id).await?))
}
