//! The dead-letter queue on MongoDB: [`DeadLetterStore`] for [`MongoStore`].
//!
//! One document per entry in `dead_letters`, in the crate's portable
//! subset (string ids, `int64` milliseconds, every field present, the entry
//! itself as its JSON text since nothing queries inside it):
//!
//! | field | what |
//! | --- | --- |
//! | `_id` | entry id `<job>.<node index>.<n>` |
//! | `job`, `owner`, `node_type`, `status`, `reason` | filterable copies of the entry's fields (strings) |
//! | `created_at` | ms, for sorting and range filters |
//! | `rev` | incremented by every write: the compare-and-set token |
//! | `entry` | the [`DeadLetter`] as JSON |
//!
//! Indexes `{created_at: -1}` (listing) and `{job: 1}`.
//!
//! Without transactions, every write is a single-document compare-and-set:
//! read the entry, compute the next one (the merge of
//! [`DeadLetter::merge`], or the resolution of an open entry), and replace
//! it filtered on the `rev` read; a miss means someone else wrote, so read
//! again. A first write is an `insert_one` whose duplicate key means the
//! same. Exactly one of any number of racing resolutions therefore
//! matches.

use async_trait::async_trait;
use mongodb::bson::{doc, Document, RawDocumentBuf};
use mongodb::IndexModel;
use orchestrator_core::store::dead_letter::{
    check_resolution, DeadLetter, DeadLetterId, DeadLetterPage, DeadLetterQuery, DeadLetterStatus,
    Resolution, Resolve,
};
use orchestrator_core::store::DeadLetterStore;
use orchestrator_core::StoreError;
use serde::{Deserialize, Serialize};

use crate::error::{corrupt, from_driver, is_duplicate_key};
use crate::schema;
use crate::store::MongoStore;

/// How often a write re-reads after losing a compare-and-set before it
/// reports the contention as retryable.
const CAS_TRIES: usize = 64;

/// A document of `dead_letters`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct DeadLetterDoc {
    #[serde(rename = "_id")]
    id: String,
    job: String,
    owner: String,
    node_type: String,
    status: String,
    reason: String,
    created_at: i64,
    rev: i64,
    /// The [`DeadLetter`] as JSON.
    entry: String,
}

impl DeadLetterDoc {
    fn new(d: &DeadLetter, rev: i64) -> Result<Self, StoreError> {
        Ok(Self {
            id: d.id.to_string(),
            job: d.job.to_string(),
            owner: d.owner.clone(),
            node_type: d.node_type.clone(),
            status: d.status.as_str().to_owned(),
            reason: d.reason.as_str().to_owned(),
            created_at: schema::int(d.created_at.0, "created_at")?,
            rev,
            entry: serde_json::to_string(d)
                .map_err(|e| StoreError::Invalid(format!("dead letter cannot be encoded: {e}")))?,
        })
    }

    fn entry(&self) -> Result<DeadLetter, StoreError> {
        let d: DeadLetter = serde_json::from_str(&self.entry)
            .map_err(|e| corrupt(None, format!("dead_letters/{}", self.id), e))?;
        if d.id.to_string() != self.id {
            return Err(StoreError::Corrupt {
                job: Some(d.job.clone()),
                key: format!("dead_letters/{}", self.id),
                message: format!("the document holds entry {}", d.id),
            });
        }
        Ok(d)
    }
}

/// The indexes of `dead_letters`, created on first use.
pub(crate) fn indexes() -> Vec<IndexModel> {
    vec![
        // Listing, newest first; the `_id` tie-break is resolved within a
        // millisecond's entries (no index involves `_id`: not portable).
        IndexModel::builder()
            .keys(doc! { "created_at": -1 })
            .build(),
        IndexModel::builder().keys(doc! { "job": 1 }).build(),
    ]
}

fn list_filter(query: &DeadLetterQuery) -> Result<Document, StoreError> {
    let mut and: Vec<Document> = Vec::new();
    if let Some(job) = &query.job {
        and.push(doc! { "job": job.as_str() });
    }
    if let Some(owner) = &query.owner {
        and.push(doc! { "owner": owner.as_str() });
    }
    if let Some(t) = &query.node_type {
        and.push(doc! { "node_type": t.as_str() });
    }
    if !query.statuses.is_empty() {
        let s: Vec<&str> = query.statuses.iter().map(|s| s.as_str()).collect();
        and.push(doc! { "status": { "$in": s } });
    }
    if !query.reasons.is_empty() {
        let r: Vec<&str> = query.reasons.iter().map(|r| r.as_str()).collect();
        and.push(doc! { "reason": { "$in": r } });
    }
    // Times beyond i64 match nothing (after) or everything (before).
    if let Some(after) = query.created_after {
        match i64::try_from(after.0) {
            Ok(t) => and.push(doc! { "created_at": { "$gte": t } }),
            Err(_) => return Ok(doc! { "_id": { "$in": [] } }),
        }
    }
    if let Some(before) = query.created_before {
        if let Ok(t) = i64::try_from(before.0) {
            and.push(doc! { "created_at": { "$lt": t } });
        }
    }
    if let Some(c) = &query.cursor {
        if let Ok(t) = i64::try_from(c.created_at.0) {
            and.push(doc! { "$or": [
                { "created_at": { "$lt": t } },
                { "created_at": t, "_id": { "$lt": c.id.as_str() } },
            ] });
        }
    }
    Ok(match and.len() {
        0 => Document::new(),
        1 => and.pop().unwrap_or_default(),
        _ => doc! { "$and": and },
    })
}

impl MongoStore {
    fn dead_letters(&self) -> mongodb::Collection<DeadLetterDoc> {
        self.db.collection(&self.names.dead_letters)
    }

    async fn dead_letter_doc(&self, id: &str) -> Result<Option<DeadLetterDoc>, StoreError> {
        self.dead_letters()
            .find_one(doc! { "_id": id })
            .await
            .map_err(|e| from_driver(e, &format!("reading dead_letters/{id}"), None))
    }

    /// Replaces `stored` by `next` if nobody wrote since it was read.
    async fn swap(&self, stored: &DeadLetterDoc, next: &DeadLetter) -> Result<bool, StoreError> {
        let doc = DeadLetterDoc::new(next, stored.rev + 1)?;
        let r = self
            .dead_letters()
            .replace_one(doc! { "_id": &stored.id, "rev": stored.rev }, &doc)
            .await
            .map_err(|e| from_driver(e, &format!("writing dead_letters/{}", stored.id), None))?;
        Ok(r.matched_count == 1)
    }
}

fn contended(id: &DeadLetterId) -> StoreError {
    StoreError::Unavailable {
        message: format!("dead letter {id} kept changing under {CAS_TRIES} writes; try again"),
        source: None,
    }
}

#[async_trait]
impl DeadLetterStore for MongoStore {
    async fn put_dead_letter(&self, entry: &DeadLetter) -> Result<(), StoreError> {
        let id = entry.id.to_string();
        self.call("storing a dead letter", async {
            for _ in 0..CAS_TRIES {
                let Some(stored) = self.dead_letter_doc(&id).await? else {
                    match self
                        .dead_letters()
                        .insert_one(DeadLetterDoc::new(entry, 1)?)
                        .await
                    {
                        Ok(_) => return Ok(()),
                        // Someone else inserted it first: merge into theirs.
                        Err(e) if is_duplicate_key(&e) => continue,
                        Err(e) => {
                            return Err(from_driver(e, &format!("writing dead_letters/{id}"), None))
                        }
                    }
                };
                let Some(next) = DeadLetter::merge(&stored.entry()?, entry) else {
                    return Ok(());
                };
                if self.swap(&stored, &next).await? {
                    return Ok(());
                }
            }
            Err(contended(&entry.id))
        })
        .await
    }

    async fn dead_letter(&self, id: &DeadLetterId) -> Result<Option<DeadLetter>, StoreError> {
        self.call("reading a dead letter", async {
            self.dead_letter_doc(&id.to_string())
                .await?
                .map(|d| d.entry())
                .transpose()
        })
        .await
    }

    async fn list_dead_letters(
        &self,
        query: &DeadLetterQuery,
    ) -> Result<DeadLetterPage, StoreError> {
        query.check()?;
        let filter = list_filter(query)?;
        self.call("listing dead letters", async {
            let coll = self.dead_letters().clone_with_type::<RawDocumentBuf>();
            let mut cursor = coll
                .find(filter)
                .sort(doc! { "created_at": -1, "_id": -1 })
                .limit(i64::try_from(query.limit + 1).unwrap_or(i64::MAX))
                .await
                .map_err(|e| from_driver(e, "listing dead letters", None))?;
            let mut hits = Vec::with_capacity(query.limit + 1);
            while cursor
                .advance()
                .await
                .map_err(|e| from_driver(e, "listing dead letters", None))?
            {
                let decoded = mongodb::bson::deserialize_from_slice::<DeadLetterDoc>(
                    cursor.current().as_bytes(),
                )
                .map_err(|e| corrupt(None, "dead_letters/?".into(), e))
                .and_then(|d| d.entry());
                match decoded {
                    Ok(d) => hits.push(d),
                    // One bad document must not hide every other entry.
                    Err(e) => {
                        tracing::error!(error = %e, "skipping a dead letter that does not decode");
                    }
                }
            }
            Ok(query.page(hits))
        })
        .await
    }

    async fn resolve_dead_letter(
        &self,
        id: &DeadLetterId,
        resolution: &Resolution,
    ) -> Result<Resolve, StoreError> {
        check_resolution(resolution)?;
        let key = id.to_string();
        self.call("resolving a dead letter", async {
            for _ in 0..CAS_TRIES {
                let Some(stored) = self.dead_letter_doc(&key).await? else {
                    return Ok(Resolve::Missing);
                };
                let entry = stored.entry()?;
                if entry.status != DeadLetterStatus::Open {
                    return Ok(Resolve::Conflict(entry));
                }
                let next = entry.resolved(resolution.clone());
                if self.swap(&stored, &next).await? {
                    return Ok(Resolve::Done(next));
                }
            }
            Err(contended(id))
        })
        .await
    }
}
