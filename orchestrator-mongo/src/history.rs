//! [`TestHistoryStore`] for [`MongoStore`]: one document per test key in
//! `test_history`, `{_id: key, rev, job_names, outcomes}`.
//!
//! `outcomes` is the JSON text of the kept runs (oldest first), like
//! journal events: nothing queries inside it. `job_names` (the distinct job
//! names of those runs) is what the job-name filter matches, by plain
//! array-contains equality. A recording merges each key by optimistic
//! compare-and-set, within the portable subset: read the document, merge
//! in Rust, then `insert_one` (a duplicate key means someone created it
//! first) or `update_one` filtered on the `rev` read (no match means
//! someone wrote in between); either way read again and retry. So
//! concurrent recordings on one key all land, and each key's update is
//! atomic; a call over several keys is atomic per key (every key of a call
//! is checked before anything is written).

use std::collections::BTreeMap;

use async_trait::async_trait;
use mongodb::bson::{doc, Document};
use orchestrator_core::flaky::{RunOutcome, TestOutcome};
use orchestrator_core::store::history::{check_key, check_recording, merge};
use orchestrator_core::store::{HistoryPage, HistoryQuery, TestHistory, TestHistoryStore};
use orchestrator_core::StoreError;
use serde::{Deserialize, Serialize};

use crate::error::{corrupt, from_driver, is_duplicate_key};
use crate::MongoStore;

/// Compare-and-set attempts on one key before giving up as unavailable
/// (only a storm of writers on one test could exhaust them).
const CAS_TRIES: usize = 64;

#[derive(Debug, Serialize, Deserialize)]
struct HistoryDoc {
    #[serde(rename = "_id")]
    key: String,
    rev: i64,
    job_names: Vec<String>,
    outcomes: String,
}

impl HistoryDoc {
    fn decode(&self, coll: &str) -> Result<Vec<RunOutcome>, StoreError> {
        serde_json::from_str(&self.outcomes)
            .map_err(|e| corrupt(None, format!("{coll}/{}", self.key), e))
    }
}

fn job_names(history: &[RunOutcome]) -> Vec<String> {
    let mut names: Vec<String> = history.iter().map(|o| o.job_name.clone()).collect();
    names.sort_unstable();
    names.dedup();
    names
}

impl MongoStore {
    fn history(&self) -> mongodb::Collection<HistoryDoc> {
        self.db.collection(&self.names.test_history)
    }

    async fn read_history(&self, key: &str) -> Result<Option<HistoryDoc>, StoreError> {
        self.history()
            .find_one(doc! { "_id": key })
            .await
            .map_err(|e| from_driver(e, "reading a test history", None))
    }

    /// Merges `new` into the history of `key`, retrying on concurrent writes.
    async fn merge_key(
        &self,
        key: &str,
        new: &[&RunOutcome],
        keep: usize,
    ) -> Result<(), StoreError> {
        let coll = &self.names.test_history;
        for _ in 0..CAS_TRIES {
            let stored = self.read_history(key).await?;
            let (rev, mut history) = match &stored {
                None => (0, Vec::new()),
                Some(d) => (
                    d.rev,
                    d.decode(coll).unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "replacing an unreadable test history");
                        Vec::new()
                    }),
                ),
            };
            let mut changed = false;
            for o in new {
                changed |= merge(&mut history, o, keep);
            }
            if !changed {
                return Ok(());
            }
            let outcomes = serde_json::to_string(&history)
                .map_err(|e| StoreError::Invalid(format!("outcomes cannot be encoded: {e}")))?;
            let names = job_names(&history);
            if stored.is_none() {
                let d = HistoryDoc {
                    key: key.to_owned(),
                    rev: 1,
                    job_names: names,
                    outcomes,
                };
                match self.history().insert_one(&d).await {
                    Ok(_) => return Ok(()),
                    Err(e) if is_duplicate_key(&e) => continue,
                    Err(e) => return Err(from_driver(e, "recording test outcomes", None)),
                }
            }
            let update =
                doc! { "$set": { "rev": rev + 1, "job_names": names, "outcomes": outcomes } };
            let r = self
                .history()
                .update_one(doc! { "_id": key, "rev": rev }, update)
                .await
                .map_err(|e| from_driver(e, "recording test outcomes", None))?;
            if r.matched_count == 1 {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable {
            message: format!("test history {key:?} kept changing under {CAS_TRIES} attempts"),
            source: None,
        })
    }
}

#[async_trait]
impl TestHistoryStore for MongoStore {
    async fn record_outcomes(
        &self,
        outcomes: &[TestOutcome],
        keep: usize,
    ) -> Result<(), StoreError> {
        check_recording(outcomes, keep)?;
        let mut by_key: BTreeMap<&str, Vec<&RunOutcome>> = BTreeMap::new();
        for o in outcomes {
            by_key.entry(&o.key).or_default().push(&o.outcome);
        }
        self.call("recording test outcomes", async {
            for (key, new) in &by_key {
                self.merge_key(key, new, keep).await?;
            }
            Ok(())
        })
        .await
    }

    async fn test_history(&self, key: &str) -> Result<Vec<RunOutcome>, StoreError> {
        check_key(key)?;
        self.call("reading a test history", async {
            match self.read_history(key).await? {
                None => Ok(Vec::new()),
                Some(d) => d.decode(&self.names.test_history),
            }
        })
        .await
    }

    async fn list_test_histories(&self, query: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        query.check()?;
        let prefix = query.prefix.clone().unwrap_or_default();
        let mut filter = Document::new();
        match &query.cursor {
            Some(c) if *c >= prefix => filter.insert("_id", doc! { "$gt": c.as_str() }),
            _ => filter.insert("_id", doc! { "$gte": prefix.as_str() }),
        };
        if let Some(name) = &query.job_name {
            filter.insert("job_names", name.as_str());
        }
        self.call("listing test histories", async {
            let coll = &self.names.test_history;
            let mut cursor = self
                .history()
                .find(filter)
                .sort(doc! { "_id": 1 })
                .limit(i64::try_from(query.limit + 1).unwrap_or(i64::MAX))
                .await
                .map_err(|e| from_driver(e, "listing test histories", None))?;
            let mut tests: Vec<TestHistory> = Vec::new();
            let mut more = false;
            while cursor
                .advance()
                .await
                .map_err(|e| from_driver(e, "listing test histories", None))?
            {
                let d = match cursor.deserialize_current() {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::error!(error = %e, "skipping a test history that does not decode");
                        continue;
                    }
                };
                if !d.key.starts_with(&prefix) {
                    break;
                }
                if tests.len() == query.limit {
                    more = true;
                    break;
                }
                match d.decode(coll) {
                    Ok(outcomes) => tests.push(TestHistory {
                        key: d.key,
                        outcomes,
                    }),
                    Err(e) => {
                        tracing::error!(error = %e, "skipping a test history that does not decode");
                    }
                }
            }
            let next_cursor = if more {
                tests.last().map(|t| t.key.clone())
            } else {
                None
            };
            Ok(HistoryPage { tests, next_cursor })
        })
        .await
    }
}
