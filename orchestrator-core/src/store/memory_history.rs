//! [`TestHistoryStore`] for [`MemoryStore`]: a sorted map from key to kept
//! history, behind its own mutex (never held across an await).

use async_trait::async_trait;

use super::history::{check_key, check_recording, merge};
use super::{HistoryPage, HistoryQuery, MemoryStore, StoreError, TestHistory, TestHistoryStore};
use crate::flaky::{RunOutcome, TestOutcome};

#[async_trait]
impl TestHistoryStore for MemoryStore {
    async fn record_outcomes(
        &self,
        outcomes: &[TestOutcome],
        keep: usize,
    ) -> Result<(), StoreError> {
        check_recording(outcomes, keep)?;
        // Every mutation is a complete merge after all checks, so a
        // poisoned lock still holds consistent histories.
        let mut all = self
            .histories
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for o in outcomes {
            merge(all.entry(o.key.clone()).or_default(), &o.outcome, keep);
        }
        Ok(())
    }

    async fn test_history(&self, key: &str) -> Result<Vec<RunOutcome>, StoreError> {
        check_key(key)?;
        let all = self
            .histories
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(all.get(key).cloned().unwrap_or_default())
    }

    async fn list_test_histories(&self, query: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        query.check()?;
        let all = self
            .histories
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut tests = Vec::new();
        let mut next_cursor = None;
        for (key, outcomes) in all.iter().filter(|(k, _)| query.after_cursor(k)) {
            let h = TestHistory {
                key: key.clone(),
                outcomes: outcomes.clone(),
            };
            if !query.matches(&h) {
                continue;
            }
            if tests.len() == query.limit {
                next_cursor = tests.last().map(|t: &TestHistory| t.key.clone());
                break;
            }
            tests.push(h);
        }
        Ok(HistoryPage { tests, next_cursor })
    }
}
