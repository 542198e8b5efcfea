//! The job endpoints and `/health`: thin handlers over the executor.

use std::collections::HashSet;

use axum::extract::{OriginalUri, RawQuery, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use orchestrator_core::store::{Cursor, JobQuery};
use orchestrator_core::{
    ExecutorError, JobId, JobSpec, JobStatus, JobSummary, NodeState, StoreExt,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ApiError, FieldProblem, ProblemDetails};
use crate::extract::{JobPath, SpecBody};
use crate::query::{list_query, Paging};
use crate::state::ApiState;

/// A page of `GET /jobs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    /// The caller's jobs (every job for an admin), newest first.
    pub jobs: Vec<JobSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// With `page`: how many jobs match in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// With `page`: the page returned, from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u64>,
    /// The page size used.
    pub limit: u32,
}

/// The body of `GET /health`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` when a component is down.
    pub status: String,
    /// The store.
    pub store: ComponentHealth,
    /// The executor.
    pub executor: ComponentHealth,
}

/// One component of [`Health`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComponentHealth {
    /// `ok` or `unavailable`.
    pub status: String,
    /// How long the check took, in milliseconds.
    pub latency_ms: f64,
    /// For the executor: jobs it is running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_jobs: Option<u64>,
}

/// `base` (the request path up to and including `/job`) plus `/{id}`.
fn location(base: &str, id: &JobId) -> HeaderValue {
    HeaderValue::from_str(&format!("{}/{id}", base.trim_end_matches('/')))
        .unwrap_or_else(|_| HeaderValue::from_static("/"))
}

/// Every problem of `spec` for this server: the node policy's and the
/// engine's (without duplicate "unknown type" reports for types the policy
/// already refused). Stored policies the spec names are looked up in the
/// store ([`Executor::check`](orchestrator_core::Executor::check)), so a
/// reference to an existing one is not reported as unknown.
pub(crate) async fn check_spec(state: &ApiState, spec: &JobSpec) -> Result<(), ApiError> {
    let policy = state.config().nodes.check(spec);
    if policy.is_empty() {
        return Ok(());
    }
    let flagged: HashSet<&str> = policy.iter().map(|p| p.path.as_str()).collect();
    let mut problems: Vec<FieldProblem> = match state.executor().check(spec).await {
        Ok(_) => Vec::new(),
        Err(ExecutorError::Invalid(e)) => FieldProblem::from_validation(&e)
            .into_iter()
            .filter(|p| !(p.code == "unknown_node_type" && flagged.contains(p.path.as_str())))
            .collect(),
        Err(other) => return Err(other.into()),
    };
    problems.extend(policy);
    Err(ApiError::InvalidSpec(problems))
}

/// Submits a job owned by the caller.
#[utoipa::path(
    post, path = "/job", tag = "jobs",
    request_body(content = JobSpec, description = "The job: `name`, `description`, `dag_definition {nodes, edges}` and the optional fields of the spec.", content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted: journaled and queued.", body = JobStatus,
            headers(("Location" = String, description = "URL of the new job"))),
        (status = 400, description = "Malformed JSON.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "Body too large.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "Invalid spec: every problem with its path and code, including node types or commands not allowed over HTTP.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited; see `Retry-After`.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Store or executor unavailable.", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn submit(
    State(state): State<ApiState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    SpecBody(spec): SpecBody,
) -> Result<Response, ApiError> {
    check_spec(&state, &spec).await?;
    let id = state.executor().submit(spec, &caller.sub).await?;
    let status = state.executor().status(&id).await?;
    tracing::info!(job = %id, user = %caller.sub, "job submitted");
    Ok((
        StatusCode::ACCEPTED,
        [(LOCATION, location(uri.path(), &id))],
        Json(status),
    )
        .into_response())
}

/// The job's status, if the caller may see it.
async fn visible_status(
    state: &ApiState,
    caller: &Caller,
    id: &JobId,
) -> Result<JobStatus, ApiError> {
    let status = state.executor().status(id).await?;
    if caller.may_see(&status.owner) {
        Ok(status)
    } else {
        Err(ApiError::JobNotFound)
    }
}

/// Checks that the caller may see job `id`, from its summary.
pub(crate) async fn visible_summary(
    state: &ApiState,
    caller: &Caller,
    id: &JobId,
) -> Result<JobSummary, ApiError> {
    let summary = state.executor().store().summary(id).await?;
    if caller.may_see(&summary.owner) {
        Ok(summary)
    } else {
        Err(ApiError::JobNotFound)
    }
}

/// A job's status: state, progress, and every node's state, attempts,
/// timings and last error.
#[utoipa::path(
    get, path = "/job/{job_id}", tag = "jobs",
    params(("job_id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job.", body = JobStatus),
        (status = 401, description = "Missing or invalid token.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such job, or another user's.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable.", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_job(
    State(state): State<ApiState>,
    caller: Caller,
    JobPath(id): JobPath,
) -> Result<Json<JobStatus>, ApiError> {
    visible_status(&state, &caller, &id).await.map(Json)
}

/// Cancels a job: running attempts are signalled, nothing new starts.
#[utoipa::path(
    delete, path = "/job/{job_id}", tag = "jobs",
    params(("job_id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "Cancellation journaled; the job as it is now (`cancelling` or `cancelled`).", body = JobStatus),
        (status = 401, description = "Missing or invalid token.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such job, or another user's.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "The job already finished (`job_finished`).", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Store or executor unavailable.", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cancel(
    State(state): State<ApiState>,
    caller: Caller,
    JobPath(id): JobPath,
) -> Result<Json<JobStatus>, ApiError> {
    visible_summary(&state, &caller, &id).await?;
    let reason = format!("cancelled over HTTP by {}", caller.sub);
    state.executor().cancel(&id, Some(reason)).await?;
    tracing::info!(job = %id, user = %caller.sub, "job cancelled");
    let status = state.executor().status(&id).await?;
    Ok(Json(status))
}

/// Lists the caller's jobs (an admin's: everyone's), newest first.
#[utoipa::path(
    get, path = "/jobs", tag = "jobs",
    params(
        ("status" = Option<String>, Query, description = "Only jobs in these states: repeat the parameter or separate with commas (`pending`, `queued`, `running`, `recovering`, `succeeded`, `failed`, `cancelling`, `cancelled`, `timed_out`)."),
        ("name" = Option<String>, Query, description = "Only jobs whose name contains this text (case-insensitive)."),
        ("label" = Option<String>, Query, description = "Only jobs with this label, as `key=value`; repeat for several (all must match)."),
        ("created_after" = Option<String>, Query, description = "Only jobs created at or after this time: RFC 3339 or milliseconds since the epoch."),
        ("created_before" = Option<String>, Query, description = "Only jobs created before this time: RFC 3339 or milliseconds since the epoch."),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 100 (default 20).", minimum = 1, maximum = 100),
        ("cursor" = Option<String>, Query, description = "Continue after a previous page's `next_cursor`."),
        ("page" = Option<u64>, Query, description = "Page number from 1 instead of a cursor; the response then carries `total`.", minimum = 1),
    ),
    responses(
        (status = 200, description = "A page of jobs.", body = JobList),
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
) -> Result<Json<JobList>, ApiError> {
    let (mut query, paging) = list_query(raw.as_deref())?;
    query.owner = caller.owner_filter();
    let limit = query.limit as u32;
    match paging {
        Paging::Cursor => {
            let page = state.executor().list(&query).await?;
            Ok(Json(JobList {
                jobs: page.jobs,
                next_cursor: page.next_cursor,
                total: None,
                page: None,
                limit,
            }))
        }
        Paging::Page(n) => page_of(&state, query, n).await.map(Json),
    }
}

/// Page `n` (from 1) of `query` and the total: walks the matching jobs in
/// store-sized pages, so it costs O(total); cursors cost O(page).
async fn page_of(state: &ApiState, query: JobQuery, n: u64) -> Result<JobList, ApiError> {
    let limit = query.limit;
    let skip = (n - 1).saturating_mul(limit as u64);
    let mut scan = JobQuery {
        limit: JobQuery::MAX_LIMIT,
        cursor: None,
        ..query
    };
    let mut total: u64 = 0;
    let mut jobs = Vec::with_capacity(limit);
    loop {
        let page = state.executor().list(&scan).await?;
        for job in page.jobs {
            if total >= skip && jobs.len() < limit {
                jobs.push(job);
            }
            total += 1;
        }
        match page.next_cursor {
            Some(c) => scan.cursor = Some(c.parse::<Cursor>()?),
            None => break,
        }
    }
    let next_cursor = (skip + (jobs.len() as u64) < total)
        .then(|| jobs.last().map(|j| Cursor::after(j).to_string()))
        .flatten();
    Ok(JobList {
        jobs,
        next_cursor,
        total: Some(total),
        page: Some(n),
        limit: limit as u32,
    })
}

/// Re-runs what did not succeed in a finished job, as a new job.
#[utoipa::path(
    post, path = "/job/{job_id}/retry", tag = "jobs",
    params(("job_id" = String, Path, description = "The finished job to re-run")),
    responses(
        (status = 202, description = "The new run: the nodes that did not succeed (failed, timed out, cancelled, skipped, upstream-failed, …) run again; succeeded nodes are carried over with their outputs (state `succeeded`, never run again). Labelled `rerun_of=<job_id>`.", body = JobStatus,
            headers(("Location" = String, description = "URL of the new job"))),
        (status = 401, description = "Missing or invalid token.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such job, or another user's.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "The job is not finished (`job_not_finished`), every node succeeded (`nothing_to_retry`), or its nodes are no longer allowed (`invalid_spec`).", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Store or executor unavailable.", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn retry(
    State(state): State<ApiState>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    JobPath(id): JobPath,
) -> Result<Response, ApiError> {
    visible_summary(&state, &caller, &id).await?;
    let view = state.executor().store().load_view(&id).await?;
    if !view.state.is_terminal() {
        return Err(ApiError::JobNotFinished {
            job: id,
            state: view.state,
        });
    }
    if view.nodes.iter().all(|n| n.state() == NodeState::Succeeded) {
        return Err(ApiError::NothingToRetry(id));
    }
    // The node types may have been allowed when the job was submitted and
    // no longer be.
    check_spec(&state, view.spec()).await?;
    let owner = view.header.owner.clone();
    let new = state
        .executor()
        .rerun(&id, None, &std::collections::BTreeMap::new(), &owner)
        .await?;
    let status = state.executor().status(&new).await?;
    tracing::info!(job = %new, rerun_of = %id, user = %caller.sub, "job retried");
    // The request path is `…/job/{id}/retry`; the new job lives at `…/job/{new}`.
    let path = uri.path();
    let base = path
        .strip_suffix("/retry")
        .and_then(|p| p.rsplit_once('/'))
        .map_or(path, |(base, _)| base);
    Ok((
        StatusCode::ACCEPTED,
        [(LOCATION, location(base, &new))],
        Json(status),
    )
        .into_response())
}

/// Liveness and readiness: the store answers and the executor runs.
#[utoipa::path(
    get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "Healthy.", body = Health),
        (status = 503, description = "The store or the executor is unavailable.", body = Health),
    )
)]
pub(crate) async fn health(State(state): State<ApiState>) -> Response {
    let timeout = state.config().health_timeout;
    let started = std::time::Instant::now();
    let store_ok = matches!(
        tokio::time::timeout(timeout, state.executor().store().ping()).await,
        Ok(Ok(()))
    );
    let store_ms = started.elapsed().as_secs_f64() * 1000.0;
    let started = std::time::Instant::now();
    let active = match tokio::time::timeout(timeout, state.executor().active_jobs()).await {
        Ok(Ok(jobs)) => Some(jobs.len() as u64),
        // Shut down, or too slow to answer.
        Ok(Err(_)) | Err(_) => None,
    };
    let exec_ms = started.elapsed().as_secs_f64() * 1000.0;
    let word = |ok: bool| if ok { "ok" } else { "unavailable" }.to_owned();
    let healthy = store_ok && active.is_some();
    let body = Health {
        status: word(healthy),
        store: ComponentHealth {
            status: word(store_ok),
            latency_ms: store_ms,
            active_jobs: None,
        },
        executor: ComponentHealth {
            status: word(active.is_some()),
            latency_ms: exec_ms,
            active_jobs: active,
        },
    };
    if !healthy {
        tracing::warn!(
            store = store_ok,
            executor = active.is_some(),
            "health check failed"
        );
    }
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    (code, headers, Json(body)).into_response()
}
