//! `GET /stats`: recovery analytics over the caller's jobs (an admin's:
//! everyone's, or one owner's), computed from their journals by
//! [`orchestrator_core::analytics`].

use axum::extract::{RawQuery, State};
use axum::Json;
use orchestrator_core::analytics::{self, RecoveryStats};

use crate::auth::Caller;
use crate::error::{ApiError, ProblemDetails};
use crate::query::stats_query;
use crate::state::ApiState;

/// Recovery statistics: mean time to recovery, the share of failures
/// recovered automatically, retries per node type, recoveries by kind.
#[utoipa::path(
    get, path = "/stats", tag = "jobs",
    params(
        ("since" = Option<String>, Query, description = "Only jobs created at or after this time: RFC 3339 or milliseconds since the epoch."),
        ("until" = Option<String>, Query, description = "Only jobs created before this time: RFC 3339 or milliseconds since the epoch."),
        ("owner" = Option<String>, Query, description = "Only this owner's jobs. Callers other than admins only ever see their own."),
        ("max_jobs" = Option<u32>, Query, description = "Read at most this many jobs, newest first, 1 to 10000 (default 1000); `truncated` says when more matched.", minimum = 1, maximum = 10000),
    ),
    responses(
        (status = 200, description = "The statistics.", body = RecoveryStats),
        (status = 400, description = "Invalid or unknown parameters, every one listed.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable.", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn stats(
    State(state): State<ApiState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<RecoveryStats>, ApiError> {
    let (mut query, max_jobs) = stats_query(raw.as_deref())?;
    if !caller.admin {
        // Someone else's jobs look like no jobs at all, as everywhere.
        if query.owner.as_ref().is_some_and(|o| *o != caller.sub) {
            return Ok(Json(RecoveryStats::default()));
        }
        query.owner = Some(caller.sub.clone());
    }
    let stats = analytics::collect(state.executor().store().as_ref(), &query, max_jobs).await?;
    Ok(Json(stats))
}
