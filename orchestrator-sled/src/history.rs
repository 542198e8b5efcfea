//! [`TestHistoryStore`] for [`SledStore`]: one tree, `test_history`, from
//! the test key's UTF-8 bytes to `0x01` + the JSON of its kept outcomes
//! (oldest first). Keys sort bytewise, which is the listing order.
//!
//! A recording merges every key of the call in one sled transaction (so a
//! call lands whole or not at all, and concurrent calls on one key are
//! serialised by sled), then waits for durability like an append. A stored
//! history that no longer decodes is an optimisation of nothing: it is
//! logged and replaced by the new outcome rather than blocking every later
//! run of the test; reading it is [`StoreError::Corrupt`] naming the key.

use std::collections::BTreeMap;
use std::ops::Bound;

use async_trait::async_trait;
use orchestrator_core::flaky::{RunOutcome, TestOutcome};
use orchestrator_core::store::history::{check_key, check_recording, merge};
use orchestrator_core::store::{HistoryPage, HistoryQuery, TestHistory, TestHistoryStore};
use orchestrator_core::StoreError;

use crate::error::{from_sled, from_tx};
use crate::{codec, SledStore};

/// The tree of test histories.
pub(crate) const HISTORY: &str = "test_history";

impl SledStore {
    fn history_tree(&self) -> Result<sled::Tree, StoreError> {
        self.db
            .open_tree(HISTORY)
            .map_err(|e| from_sled(e, "opening the test-history tree"))
    }
}

fn describe(key: &[u8]) -> String {
    format!("{HISTORY}/{}", String::from_utf8_lossy(key))
}

fn decode(key: &[u8], raw: &[u8]) -> Result<Vec<RunOutcome>, StoreError> {
    codec::decode(raw, None, || describe(key))
}

#[async_trait]
impl TestHistoryStore for SledStore {
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
        let tree = self.history_tree()?;
        let wrote = tree
            .transaction(|t| {
                let mut wrote = false;
                for (key, new) in &by_key {
                    let mut history = match t.get(key.as_bytes())? {
                        None => Vec::new(),
                        Some(raw) => decode(key.as_bytes(), &raw).unwrap_or_else(|e| {
                            tracing::warn!(error = %e, "replacing an unreadable test history");
                            Vec::new()
                        }),
                    };
                    let mut changed = false;
                    for o in new {
                        changed |= merge(&mut history, o, keep);
                    }
                    if changed {
                        let value = codec::encode(&history)
                            .map_err(sled::transaction::ConflictableTransactionError::Abort)?;
                        t.insert(key.as_bytes(), value)?;
                        wrote = true;
                    }
                }
                Ok(wrote)
            })
            .map_err(|e| from_tx(e, "recording test outcomes"))?;
        if wrote {
            self.committed().await?;
        }
        Ok(())
    }

    async fn test_history(&self, key: &str) -> Result<Vec<RunOutcome>, StoreError> {
        check_key(key)?;
        match self
            .history_tree()?
            .get(key.as_bytes())
            .map_err(|e| from_sled(e, "reading a test history"))?
        {
            None => Ok(Vec::new()),
            Some(raw) => decode(key.as_bytes(), &raw),
        }
    }

    async fn list_test_histories(&self, query: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        query.check()?;
        let tree = self.history_tree()?;
        let prefix = query.prefix.as_deref().unwrap_or("").as_bytes();
        let start = match &query.cursor {
            Some(c) if c.as_bytes() >= prefix => Bound::Excluded(c.as_bytes().to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        let mut tests: Vec<TestHistory> = Vec::new();
        let mut next_cursor = None;
        for item in tree.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let (k, raw) = item.map_err(|e| from_sled(e, "listing test histories"))?;
            if !k.starts_with(prefix) {
                break;
            }
            let outcomes = match decode(&k, &raw) {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an unreadable test history");
                    continue;
                }
            };
            let h = TestHistory {
                key: String::from_utf8_lossy(&k).into_owned(),
                outcomes,
            };
            if !query.matches(&h) {
                continue;
            }
            if tests.len() == query.limit {
                next_cursor = tests.last().map(|t| t.key.clone());
                break;
            }
            tests.push(h);
        }
        Ok(HistoryPage { tests, next_cursor })
    }
}
