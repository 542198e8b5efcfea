//! `GET /flaky`: the flakiness report over the store's test histories.
//!
//! Histories are per test key and shared by every job that runs the test,
//! whoever owns it. Scoping is therefore by *run*, not by key: a user sees
//! the tests their own jobs ran, scored over their own runs only (so other
//! users' results never show, not even through a score); an admin sees
//! every run.

use axum::extract::{RawQuery, State};
use axum::Json;
use orchestrator_core::flaky::FlakyReport;

use crate::auth::Caller;
use crate::error::{ApiError, ProblemDetails};
use crate::query::flaky_query;
use crate::state::ApiState;

/// Tests with their flakiness scores, in key order.
#[utoipa::path(
    get, path = "/flaky", tag = "jobs",
    params(
        ("job_name" = Option<String>, Query, description = "Only tests run by jobs of exactly this name."),
        ("prefix" = Option<String>, Query, description = "Only test keys starting with this."),
        ("min_score" = Option<f64>, Query, description = "Only tests whose flakiness score (flip rate, 0 to 1) is at least this."),
        ("class" = Option<String>, Query, description = "Only tests of this class: new, stable, flaky, failing."),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)."),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page."),
    ),
    responses(
        (status = 200, description = "The caller's tests (every test for an admin), scored over the caller's runs.", body = FlakyReport),
        (status = 400, description = "Invalid parameters, each with its problem.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited; see `Retry-After`.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable.", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn report(
    State(state): State<ApiState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<FlakyReport>, ApiError> {
    let mut query = flaky_query(raw.as_deref())?;
    query.owner = caller.owner_filter();
    Ok(Json(state.executor().flaky_report(&query).await?))
}
