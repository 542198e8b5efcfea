//! [`MemoryStore`]: the in-memory [`Store`], for tests, benchmarks and
//! embedders that need no durability.

use std::sync::Mutex;

use async_trait::async_trait;
use foldhash::HashMap;

use super::{check_sequence, Cursor, JobPage, JobQuery, Store, StoreError};
use crate::journal::{JobSummary, Progress, Record, Snapshot};
use crate::time::JobId;

/// Keeps everything in process memory behind one mutex. The lock is never
/// held across an await (there is none inside), so it cannot stall the
/// runtime, and every operation is atomic.
#[derive(Debug, Default)]
pub struct MemoryStore {
    jobs: Mutex<HashMap<JobId, Entry>>,
}

#[derive(Debug)]
struct Entry {
    summary: JobSummary,
    records: Vec<Record>,
    snapshot: Option<Snapshot>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Entry>> {
        // A panic while holding the lock cannot leave an entry half-written
        // (every mutation below is a single push/assign after all checks), so
        // a poisoned lock is still consistent.
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_job(&self, summary: &JobSummary, records: &[Record]) -> Result<(), StoreError> {
        check_sequence(&summary.id, 0, records)?;
        if records.is_empty() {
            return Err(StoreError::Invalid(
                "a job is created with at least one record".into(),
            ));
        }
        let mut jobs = self.lock();
        if let Some(e) = jobs.get(&summary.id) {
            if e.records.len() >= records.len() && e.records[..records.len()] == *records {
                return Ok(());
            }
            return Err(StoreError::AlreadyExists {
                job: summary.id.clone(),
            });
        }
        let mut summary = summary.clone();
        summary.progress.version = records.len() as u64;
        jobs.insert(
            summary.id.clone(),
            Entry {
                summary,
                records: records.to_vec(),
                snapshot: None,
            },
        );
        Ok(())
    }

    async fn append(
        &self,
        job: &JobId,
        expected: u64,
        records: &[Record],
        progress: &Progress,
    ) -> Result<u64, StoreError> {
        check_sequence(job, expected, records)?;
        let mut jobs = self.lock();
        let e = jobs
            .get_mut(job)
            .ok_or_else(|| StoreError::NotFound { job: job.clone() })?;
        let actual = e.records.len() as u64;
        if actual != expected {
            let start = expected as usize;
            let already = actual > expected
                && e.records.len() >= start + records.len()
                && e.records[start..start + records.len()] == *records;
            if already {
                return Ok(expected + records.len() as u64);
            }
            return Err(StoreError::Conflict {
                job: job.clone(),
                expected,
                actual,
            });
        }
        e.records.extend_from_slice(records);
        e.summary.progress = *progress;
        e.summary.progress.version = e.records.len() as u64;
        Ok(e.records.len() as u64)
    }

    async fn read(&self, job: &JobId, after: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        let jobs = self.lock();
        let e = jobs
            .get(job)
            .ok_or_else(|| StoreError::NotFound { job: job.clone() })?;
        let start = (after as usize).min(e.records.len());
        let end = start.saturating_add(limit).min(e.records.len());
        Ok(e.records[start..end].to_vec())
    }

    async fn put_snapshot(&self, job: &JobId, snapshot: &Snapshot) -> Result<(), StoreError> {
        let mut jobs = self.lock();
        let e = jobs
            .get_mut(job)
            .ok_or_else(|| StoreError::NotFound { job: job.clone() })?;
        if snapshot.view.header.id != *job {
            return Err(StoreError::Invalid(format!(
                "snapshot of job {} stored under {job}",
                snapshot.view.header.id
            )));
        }
        if snapshot.view.version > e.records.len() as u64 {
            return Err(StoreError::Invalid(format!(
                "snapshot at version {} is ahead of job {job} at version {}",
                snapshot.view.version,
                e.records.len()
            )));
        }
        if e.snapshot
            .as_ref()
            .is_none_or(|s| s.view.version < snapshot.view.version)
        {
            e.snapshot = Some(snapshot.clone());
        }
        Ok(())
    }

    async fn snapshot(&self, job: &JobId) -> Result<Option<Snapshot>, StoreError> {
        let jobs = self.lock();
        let e = jobs
            .get(job)
            .ok_or_else(|| StoreError::NotFound { job: job.clone() })?;
        Ok(e.snapshot.clone())
    }

    async fn summary(&self, job: &JobId) -> Result<JobSummary, StoreError> {
        let jobs = self.lock();
        jobs.get(job)
            .map(|e| e.summary.clone())
            .ok_or_else(|| StoreError::NotFound { job: job.clone() })
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage, StoreError> {
        query.check()?;
        let jobs = self.lock();
        let mut hits: Vec<&JobSummary> = jobs
            .values()
            .map(|e| &e.summary)
            .filter(|s| query.matches(s) && query.after_cursor(s))
            .collect();
        hits.sort_unstable_by_key(|s| Cursor::sort_key(s));
        let more = hits.len() > query.limit;
        hits.truncate(query.limit);
        let next_cursor = if more {
            hits.last().map(|s| Cursor::after(s).to_string())
        } else {
            None
        };
        Ok(JobPage {
            jobs: hits.into_iter().cloned().collect(),
            next_cursor,
        })
    }

    async fn unfinished_jobs(&self) -> Result<Vec<JobId>, StoreError> {
        let jobs = self.lock();
        let mut ids: Vec<JobId> = jobs
            .values()
            .filter(|e| !e.summary.progress.state.is_terminal())
            .map(|e| e.summary.id.clone())
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
