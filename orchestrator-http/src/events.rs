//! `GET /job/{id}/events`: a job's journal, as pages of JSON or as a live
//! Server-Sent Events stream.
//!
//! The stream subscribes to the executor's feed *before* reading the
//! store, then replays the journal after `Last-Event-ID` and goes on with
//! live events, skipping sequence numbers already sent; a gap (the feed
//! lagged) is filled from the store. So a client that reconnects with the
//! last id it saw gets every event exactly once. Each event has `id:` (the
//! record's seq), `event:` (its name, e.g. `node.failed`) and `data:` (the
//! record as JSON). The stream ends after the job's final record.
//!
//! A live stream also passes on reports the executor could not journal (a
//! stuck job's `escalation.required`, see `orchestrator_core::sweep`):
//! without an `id:`, so they do not move the client's last event id, and
//! with `seq` 0. They are not replayed.

use std::convert::Infallible;

use axum::extract::{RawQuery, State};
use axum::http::header::ACCEPT;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use orchestrator_core::journal::Record;
use orchestrator_core::{Event, JobId, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use utoipa::ToSchema;

use crate::api::visible_summary;
use crate::auth::Caller;
use crate::error::{ApiError, FieldProblem, ProblemDetails};
use crate::extract::JobPath;
use crate::query::events_query;
use crate::state::ApiState;

/// Records read from the store at a time while replaying.
const REPLAY_PAGE: usize = 1000;

/// One journal record, as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventRecord {
    /// Position in the job's journal, from 1 (the SSE event id).
    pub seq: u64,
    /// When it was journaled.
    pub at: Timestamp,
    /// The event's name, e.g. `execution.started`, `node.failed` (the SSE
    /// event type).
    pub name: String,
    /// The record's type, e.g. `started`, `node_failed`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The event's own fields (`node`, `attempt`, `failure`, `output`, …).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
}

impl EventRecord {
    /// The API form of `record`.
    pub fn from_record(record: &Record) -> Self {
        let mut fields = match serde_json::to_value(record) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        fields.remove("seq");
        fields.remove("at");
        let kind = match fields.remove("type") {
            Some(Value::String(s)) => s,
            _ => String::new(),
        };
        Self {
            seq: record.seq,
            at: record.at,
            name: record.event.name().to_owned(),
            kind,
            fields,
        }
    }
}

/// A page of a job's journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    /// Records in journal order.
    pub events: Vec<EventRecord>,
    /// Pass as `after` for the next page; absent when this page was not
    /// full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("text/event-stream")
        })
}

/// A job's journal: JSON pages, or with `Accept: text/event-stream` a live
/// stream resuming after `Last-Event-ID` (or `after`).
#[utoipa::path(
    get, path = "/job/{job_id}/events", tag = "jobs",
    params(
        ("job_id" = String, Path, description = "The job id"),
        ("after" = Option<u64>, Query, description = "Only records with a greater seq (default 0)."),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100); pages only.", minimum = 1, maximum = 1000),
        ("Last-Event-ID" = Option<u64>, Header, description = "Streams only: resume after this seq (wins over `after`)."),
    ),
    responses(
        (status = 200, description = "A page of the journal (JSON), or the live stream (`text/event-stream`: `id` = seq, `event` = name, `data` = the record as JSON).",
            content(
                (EventPage = "application/json"),
                (String = "text/event-stream"),
            )),
        (status = 400, description = "Invalid or unknown parameters.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such job, or another user's.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited.", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable.", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn events(
    State(state): State<ApiState>,
    caller: Caller,
    JobPath(id): JobPath,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (after, limit) = events_query(raw.as_deref())?;
    visible_summary(&state, &caller, &id).await?;
    if !wants_stream(&headers) {
        let records = state.executor().store().read(&id, after, limit).await?;
        let next_after = (records.len() == limit)
            .then(|| records.last().map(|r| r.seq))
            .flatten();
        let events = records.iter().map(EventRecord::from_record).collect();
        return Ok(Json(EventPage { events, next_after }).into_response());
    }
    let after = match headers.get("last-event-id") {
        None => after,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::InvalidParameters(vec![FieldProblem::new(
                    "Last-Event-ID",
                    "invalid_value",
                    "Last-Event-ID must be the seq (an integer) of the last event received",
                )])
            })?,
    };
    Ok(stream(state, id, after).into_response())
}

/// The live stream of job `id` after seq `after`.
fn stream(
    state: ApiState,
    id: JobId,
    after: u64,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let keep_alive = state.config().sse_keep_alive;
    let (tx, mut rx) = mpsc::channel::<SseEvent>(64);
    tokio::spawn(async move {
        let closing = state.closing().clone();
        tokio::select! {
            () = closing.cancelled() => {}
            () = tx.closed() => {}
            result = feed(&state, &id, after, &tx) => {
                if let Err(e) = result {
                    tracing::warn!(job = %id, error = %e, "event stream stopped");
                }
            }
        }
    });
    let events = futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|e| e.map(Ok)));
    Sse::new(events).keep_alive(KeepAlive::new().interval(keep_alive))
}

/// Why a stream stopped early.
#[derive(Debug, thiserror::Error)]
enum FeedError {
    #[error(transparent)]
    Store(#[from] orchestrator_core::StoreError),
    #[error("the client went away")]
    Gone,
}

fn sse_event(record: &Record) -> SseEvent {
    sse_report(record).id(record.seq.to_string())
}

/// `record` as an SSE event without an id: a report that is not journaled.
fn sse_report(record: &Record) -> SseEvent {
    let data =
        serde_json::to_string(&EventRecord::from_record(record)).unwrap_or_else(|_| "{}".into());
    SseEvent::default().event(record.event.name()).data(data)
}

/// Sends `record` unless already sent; says whether it was the last one.
async fn send(
    tx: &mpsc::Sender<SseEvent>,
    last: &mut u64,
    record: &Record,
) -> Result<bool, FeedError> {
    if record.seq <= *last {
        return Ok(false);
    }
    tx.send(sse_event(record))
        .await
        .map_err(|_| FeedError::Gone)?;
    *last = record.seq;
    Ok(matches!(record.event, Event::Finished { .. }))
}

/// Sends every stored record after `*last`; says whether the job is over.
async fn replay(
    state: &ApiState,
    id: &JobId,
    last: &mut u64,
    tx: &mpsc::Sender<SseEvent>,
) -> Result<bool, FeedError> {
    loop {
        let page = state
            .executor()
            .store()
            .read(id, *last, REPLAY_PAGE)
            .await?;
        for r in &page {
            if send(tx, last, r).await? {
                return Ok(true);
            }
        }
        if page.len() < REPLAY_PAGE {
            return Ok(false);
        }
    }
}

async fn feed(
    state: &ApiState,
    id: &JobId,
    after: u64,
    tx: &mpsc::Sender<SseEvent>,
) -> Result<(), FeedError> {
    // Subscribe first: whatever is journaled after this point arrives on
    // the feed, whatever before is in the store.
    let mut live = state.executor().subscribe();
    let mut last = after;
    if replay(state, id, &mut last, tx).await? {
        return Ok(());
    }
    loop {
        match live.recv().await {
            Ok(Some(n)) if &n.job == id && !n.journaled => {
                tx.send(sse_report(&n.record))
                    .await
                    .map_err(|_| FeedError::Gone)?;
            }
            Ok(Some(n)) if &n.job == id => {
                if n.record.seq > last + 1 {
                    // Missed records (journaled between the replay and the
                    // subscription catching up): read them from the store.
                    if replay(state, id, &mut last, tx).await? {
                        return Ok(());
                    }
                }
                if send(tx, &mut last, &n.record).await? {
                    return Ok(());
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => return Ok(()),
            Err(_lagged) => {
                if replay(state, id, &mut last, tx).await? {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn accept_negotiation() {
        let mut h = HeaderMap::new();
        assert!(!wants_stream(&h));
        h.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, Text/Event-Stream;q=0.9"),
        );
        assert!(wants_stream(&h));
    }

    #[test]
    fn records_keep_their_fields() {
        let r = Record {
            seq: 7,
            at: Timestamp(5),
            event: Event::NodeStarted {
                node: 2,
                attempt: 1,
            },
        };
        let e = EventRecord::from_record(&r);
        assert_eq!(
            (e.seq, e.name.as_str(), e.kind.as_str()),
            (7, "node.started", "node_started")
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["node"], 2);
        assert_eq!(json["attempt"], 1);
        assert_eq!(json["at"], 5);
    }
}
