//! The stored documents, their collections and indexes, and the conversions
//! between them and the core's types.
//!
//! Every document is read back through one of the typed structs here. The
//! rules that keep the layout portable (to every MongoDB version since 4.4
//! and to wire-compatible servers):
//!
//! - integers that are filtered or sorted on — versions, sequence numbers,
//!   times (epoch milliseconds) — are BSON `int64`; `u64` values above
//!   `i64::MAX` are refused as [`StoreError::Invalid`] before anything is
//!   written;
//! - ids and references are strings; no `ObjectId`, no `Date`;
//! - a journal record's event is stored as its JSON text, exactly as the
//!   other backends encode it: events carry free-form runner outputs whose
//!   numbers (`u64` above `i64::MAX`) and keys (`$`, `.`) BSON cannot hold
//!   faithfully, and nothing queries inside an event;
//! - labels are stored as an array of JSON `[key, value]` strings, matched
//!   by plain array-contains equality, so label keys may contain `.` or `$`;
//! - every field is always present (no null-versus-missing queries).

use mongodb::bson::{doc, Bson, Document};
use mongodb::options::IndexOptions;
use mongodb::IndexModel;
use orchestrator_core::journal::{Event, JobSummary, Progress, Record, Snapshot};
use orchestrator_core::{JobId, JobState, StoreError, Timestamp};
use serde::{Deserialize, Serialize};

/// The layout version written into every job document.
pub(crate) const LAYOUT: i32 = 1;

/// The largest event or snapshot text stored in one document. MongoDB's
/// limit is 16 MiB per document (including the other fields) and
/// the pending copy of a batch shares the job document with the summary,
/// so a batch must fit in this too.
pub(crate) const MAX_TEXT: usize = 15 * 1024 * 1024;

/// The collections' names, each `prefix + base`.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    pub(crate) jobs: String,
    pub(crate) events: String,
    pub(crate) snapshots: String,
    pub(crate) dead_letters: String,
    pub(crate) test_history: String,
}

impl Names {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            jobs: format!("{prefix}jobs"),
            events: format!("{prefix}events"),
            snapshots: format!("{prefix}snapshots"),
            dead_letters: format!("{prefix}dead_letters"),
            test_history: format!("{prefix}test_history"),
        }
    }
}

/// Whether `prefix` is a valid collection-name prefix: letters, digits and
/// underscores only (portable to every server and safe in file names).
pub(crate) fn valid_prefix(prefix: &str) -> bool {
    prefix.len() <= 32
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The indexes of `jobs`, created on first use (besides `_id`).
pub(crate) fn job_indexes() -> Vec<IndexModel> {
    vec![
        // Listing, newest first; the `_id` tie-break is resolved within a
        // millisecond's jobs.
        IndexModel::builder()
            .keys(doc! { "created_at": -1 })
            .build(),
        // `unfinished_jobs` and listing by state.
        IndexModel::builder()
            .keys(doc! { "state": 1, "created_at": -1 })
            .build(),
        // Listing one owner's jobs.
        IndexModel::builder()
            .keys(doc! { "owner": 1, "created_at": -1 })
            .build(),
    ]
}

/// The indexes of `events`: the unique (job, seq) index that makes a
/// journal position writable once.
pub(crate) fn event_indexes() -> Vec<IndexModel> {
    vec![IndexModel::builder()
        .keys(doc! { "job": 1, "seq": 1 })
        .options(IndexOptions::builder().unique(true).build())
        .build()]
}

/// One journal record as stored: in `events`, and (without `job`) in the
/// `pending` array of its job document until it is materialised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct RecordDoc {
    pub(crate) seq: i64,
    pub(crate) at: i64,
    /// The [`Event`] as JSON.
    pub(crate) event: String,
}

/// A document of `events`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct EventDoc {
    /// `<job>/<seq>`.
    #[serde(rename = "_id")]
    pub(crate) id: String,
    pub(crate) job: String,
    pub(crate) seq: i64,
    pub(crate) at: i64,
    pub(crate) event: String,
}

impl EventDoc {
    pub(crate) fn new(job: &JobId, r: &RecordDoc) -> Self {
        Self {
            id: format!("{job}/{}", r.seq),
            job: job.to_string(),
            seq: r.seq,
            at: r.at,
            event: r.event.clone(),
        }
    }

    pub(crate) fn record(&self) -> RecordDoc {
        RecordDoc {
            seq: self.seq,
            at: self.at,
            event: self.event.clone(),
        }
    }
}

/// A document of `jobs`: the summary, the version, and the latest batch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct JobDoc {
    #[serde(rename = "_id")]
    pub(crate) id: String,
    pub(crate) layout: i32,
    pub(crate) name: String,
    /// `name` lower-cased, for the case-insensitive substring filter.
    pub(crate) name_lc: String,
    pub(crate) owner: String,
    /// JSON `[key, value]` pairs.
    pub(crate) labels: Vec<String>,
    pub(crate) priority: i32,
    pub(crate) created_at: i64,
    #[serde(flatten)]
    pub(crate) progress: ProgressDoc,
    #[serde(flatten)]
    pub(crate) batch: BatchDoc,
    #[serde(flatten)]
    pub(crate) lease: LeaseDoc,
}

/// A job's lease, kept in the job document so that an append's fencing
/// check is part of its single-document compare-and-set.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct LeaseDoc {
    /// The last holder (empty: never claimed).
    #[serde(default)]
    pub(crate) lease_owner: String,
    /// The fencing token (0: never claimed).
    #[serde(default)]
    pub(crate) lease_token: i64,
    /// When the lease lapses, epoch ms (0: released).
    #[serde(default)]
    pub(crate) lease_expires: i64,
    /// 1 when a cancel was requested, else 0 (a value, so no query depends
    /// on a missing versus a null field; an integer, because the test
    /// server reads back a boolean written by `$set` as an integer).
    #[serde(default)]
    pub(crate) cancel_requested: i32,
    /// Its reason ("" for none).
    #[serde(default)]
    pub(crate) cancel_reason: String,
}

/// The fields of [`LeaseDoc`], for projections.
pub(crate) fn lease_projection() -> Document {
    doc! {
        "lease_owner": 1, "lease_token": 1, "lease_expires": 1,
        "cancel_requested": 1, "cancel_reason": 1,
    }
}

/// The fields of a job document that every append sets.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ProgressDoc {
    pub(crate) state: JobState,
    /// Seq of the last committed record.
    pub(crate) version: i64,
    pub(crate) updated_at: i64,
    pub(crate) nodes_total: i64,
    pub(crate) nodes_finished: i64,
    pub(crate) nodes_failed: i64,
    pub(crate) nodes_running: i64,
}

/// The latest committed batch: its id and its records, which end at the
/// job's version. They may not be in `events` yet (see the crate docs).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct BatchDoc {
    pub(crate) batch: String,
    pub(crate) pending: Vec<RecordDoc>,
}

/// A job document without its pending batch: what summaries and listings
/// read (the projection [`summary_projection`] selects it).
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct SummaryDoc {
    #[serde(rename = "_id")]
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) owner: String,
    pub(crate) labels: Vec<String>,
    pub(crate) priority: i32,
    pub(crate) created_at: i64,
    #[serde(flatten)]
    pub(crate) progress: ProgressDoc,
}

/// The part of a job document appends and reads decide on.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct HeadDoc {
    pub(crate) version: i64,
    /// The job's fencing token (see `LeaseDoc`).
    #[serde(default)]
    pub(crate) lease_token: i64,
    #[serde(flatten)]
    pub(crate) batch: BatchDoc,
}

/// Just the version.
#[derive(Clone, Copy, Debug, Deserialize)]
pub(crate) struct VersionDoc {
    pub(crate) version: i64,
}

/// Just the id.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct IdDoc {
    #[serde(rename = "_id")]
    pub(crate) id: String,
}

/// A document of `snapshots`: the newest snapshot of one job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SnapshotDoc {
    #[serde(rename = "_id")]
    pub(crate) id: String,
    pub(crate) version: i64,
    /// The [`Snapshot`] as JSON.
    pub(crate) snapshot: String,
}

pub(crate) fn summary_projection() -> Document {
    doc! { "pending": 0, "batch": 0, "name_lc": 0, "layout": 0 }
}

pub(crate) fn head_projection() -> Document {
    doc! { "version": 1, "batch": 1, "pending": 1, "lease_token": 1 }
}

// ---------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------

/// A `u64` as the `int64` stored for it, or `Invalid` naming `what`.
pub(crate) fn int(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v)
        .map_err(|_| StoreError::Invalid(format!("{what} {v} is beyond what MongoDB stores (i64)")))
}

/// A stored `int64` as `u64`, or `Corrupt`.
pub(crate) fn uint(v: i64, job: Option<&JobId>, key: &str) -> Result<u64, StoreError> {
    u64::try_from(v)
        .map_err(|_| crate::error::corrupt(job, key.to_owned(), format!("negative value {v}")))
}

fn count(v: u32) -> i64 {
    i64::from(v)
}

fn uncount(v: i64, job: &JobId, key: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| {
        crate::error::corrupt(Some(job), key.to_owned(), format!("count {v} out of range"))
    })
}

/// The JSON `[key, value]` pair a label is stored as.
pub(crate) fn label_pair(k: &str, v: &str) -> String {
    serde_json::Value::Array(vec![k.into(), v.into()]).to_string()
}

pub(crate) fn record_doc(r: &Record) -> Result<RecordDoc, StoreError> {
    let event = serde_json::to_string(&r.event)
        .map_err(|e| StoreError::Invalid(format!("record {} does not encode: {e}", r.seq)))?;
    if event.len() > MAX_TEXT {
        return Err(StoreError::Invalid(format!(
            "record {} is {} bytes of JSON; MongoDB documents hold at most 16 MiB",
            r.seq,
            event.len()
        )));
    }
    Ok(RecordDoc {
        seq: int(r.seq, "seq")?,
        at: int(r.at.0, "timestamp")?,
        event,
    })
}

pub(crate) fn record_docs(records: &[Record]) -> Result<Vec<RecordDoc>, StoreError> {
    let docs = records
        .iter()
        .map(record_doc)
        .collect::<Result<Vec<_>, _>>()?;
    let total: usize = docs.iter().map(|d| d.event.len() + 32).sum();
    if total > MAX_TEXT {
        return Err(StoreError::Invalid(format!(
            "a batch of {} records is {total} bytes; one append holds at most {MAX_TEXT} bytes in MongoDB (split it)",
            docs.len()
        )));
    }
    Ok(docs)
}

pub(crate) fn record(job: &JobId, d: &RecordDoc) -> Result<Record, StoreError> {
    let key = || format!("events/{job}/{}", d.seq);
    let event: Event =
        serde_json::from_str(&d.event).map_err(|e| crate::error::corrupt(Some(job), key(), e))?;
    Ok(Record {
        seq: uint(d.seq, Some(job), &key())?,
        at: Timestamp(uint(d.at, Some(job), &key())?),
        event,
    })
}

pub(crate) fn progress_doc(p: &Progress, version: u64) -> Result<ProgressDoc, StoreError> {
    Ok(ProgressDoc {
        state: p.state,
        version: int(version, "version")?,
        updated_at: int(p.updated_at.0, "updated_at")?,
        nodes_total: count(p.nodes_total),
        nodes_finished: count(p.nodes_finished),
        nodes_failed: count(p.nodes_failed),
        nodes_running: count(p.nodes_running),
    })
}

/// The `$set` of an append: the new progress, and the new batch unless the
/// append has no records.
pub(crate) fn append_update(
    progress: &ProgressDoc,
    finished: bool,
    batch: Option<&BatchDoc>,
) -> Result<Document, StoreError> {
    let mut set = to_document(progress)?;
    if let Some(b) = batch {
        set.extend(to_document(b)?);
    }
    if finished {
        // The append that finishes a job ends its lease (keeping the token)
        // and drops a pending cancel request with it.
        set.insert("lease_expires", 0_i64);
        set.insert("cancel_requested", 0_i32);
        set.insert("cancel_reason", "");
    }
    Ok(doc! { "$set": set })
}

pub(crate) fn to_document<T: Serialize>(value: &T) -> Result<Document, StoreError> {
    mongodb::bson::serialize_to_document(value)
        .map_err(|e| StoreError::Invalid(format!("does not encode as BSON: {e}")))
}

pub(crate) fn to_bson<T: Serialize>(value: &T) -> Result<Bson, StoreError> {
    mongodb::bson::serialize_to_bson(value)
        .map_err(|e| StoreError::Invalid(format!("does not encode as BSON: {e}")))
}

pub(crate) fn job_doc(s: &JobSummary, version: u64, batch: BatchDoc) -> Result<JobDoc, StoreError> {
    Ok(JobDoc {
        id: s.id.to_string(),
        layout: LAYOUT,
        name: s.name.clone(),
        name_lc: s.name.to_lowercase(),
        owner: s.owner.clone(),
        labels: s.labels.iter().map(|(k, v)| label_pair(k, v)).collect(),
        priority: s.priority,
        created_at: int(s.created_at.0, "created_at")?,
        progress: progress_doc(&s.progress, version)?,
        batch,
        lease: LeaseDoc::default(),
    })
}

pub(crate) fn summary(d: SummaryDoc) -> Result<JobSummary, StoreError> {
    let id: JobId =
        d.id.parse()
            .map_err(|e| crate::error::corrupt(None, format!("jobs/{}", d.id), e))?;
    let key = format!("jobs/{id}");
    let mut labels = std::collections::BTreeMap::new();
    for pair in &d.labels {
        let (k, v): (String, String) = serde_json::from_str(pair).map_err(|e| {
            crate::error::corrupt(Some(&id), key.clone(), format!("label {pair:?}: {e}"))
        })?;
        labels.insert(k, v);
    }
    let p = &d.progress;
    let progress = Progress {
        state: p.state,
        version: uint(p.version, Some(&id), &key)?,
        updated_at: Timestamp(uint(p.updated_at, Some(&id), &key)?),
        nodes_total: uncount(p.nodes_total, &id, &key)?,
        nodes_finished: uncount(p.nodes_finished, &id, &key)?,
        nodes_failed: uncount(p.nodes_failed, &id, &key)?,
        nodes_running: uncount(p.nodes_running, &id, &key)?,
    };
    Ok(JobSummary {
        created_at: Timestamp(uint(d.created_at, Some(&id), &key)?),
        id,
        name: d.name,
        owner: d.owner,
        labels,
        priority: d.priority,
        progress,
    })
}

pub(crate) fn snapshot_doc(job: &JobId, s: &Snapshot) -> Result<SnapshotDoc, StoreError> {
    let text = serde_json::to_string(s)
        .map_err(|e| StoreError::Invalid(format!("snapshot of {job} does not encode: {e}")))?;
    if text.len() > MAX_TEXT {
        return Err(StoreError::Invalid(format!(
            "the snapshot of {job} is {} bytes of JSON; MongoDB documents hold at most 16 MiB",
            text.len()
        )));
    }
    Ok(SnapshotDoc {
        id: job.to_string(),
        version: int(s.view.version, "snapshot version")?,
        snapshot: text,
    })
}

pub(crate) fn snapshot(job: &JobId, d: &SnapshotDoc) -> Result<Snapshot, StoreError> {
    serde_json::from_str(&d.snapshot)
        .map_err(|e| crate::error::corrupt(Some(job), format!("snapshots/{job}"), e))
}

/// The non-terminal states, as stored.
pub(crate) fn unfinished_states() -> Result<Bson, StoreError> {
    let states: Vec<JobState> = JobState::ALL
        .into_iter()
        .filter(|s| !s.is_terminal())
        .collect();
    to_bson(&states)
}

/// `text` as a regular expression matching it literally, in both PCRE
/// (MongoDB) and Python `re` (the test server): ASCII punctuation and
/// spaces are escaped, letters, digits and non-ASCII characters are left as
/// they are (a backslash before a letter would be a class or an escape).
pub(crate) fn regex_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if c.is_ascii() && !c.is_ascii_alphanumeric() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_literal_escapes_punctuation_only() {
        assert_eq!(regex_literal("a.b*(c) d"), r"a\.b\*\(c\)\ d");
        assert_eq!(regex_literal("nightly-1"), r"nightly\-1");
        assert_eq!(regex_literal("ünïcode"), "ünïcode");
        assert_eq!(regex_literal(r"\d"), r"\\d");
    }

    #[test]
    fn prefixes_are_letters_digits_underscores() {
        assert!(valid_prefix(""));
        assert!(valid_prefix("orchestrator_"));
        assert!(!valid_prefix("a.b"));
        assert!(!valid_prefix("a-b"));
        assert!(!valid_prefix("a$"));
    }

    #[test]
    fn labels_round_trip_whatever_their_characters() {
        let pair = label_pair("a.b$c", "x\"y");
        let (k, v): (String, String) = serde_json::from_str(&pair).unwrap();
        assert_eq!((k.as_str(), v.as_str()), ("a.b$c", "x\"y"));
    }

    #[test]
    fn integers_beyond_i64_are_invalid() {
        assert!(matches!(int(u64::MAX, "seq"), Err(StoreError::Invalid(_))));
        assert_eq!(int(42, "seq").unwrap(), 42);
        assert!(matches!(
            uint(-1, None, "k"),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
