//! [`MemoryStore`]: the in-memory [`Store`], for tests, benchmarks and
//! embedders that need no durability.

use std::sync::Mutex;

use async_trait::async_trait;
use foldhash::HashMap;

use super::dead_letter::{
    check_resolution, DeadLetter, DeadLetterId, DeadLetterPage, DeadLetterQuery, DeadLetterStore,
    Resolution, Resolve,
};
use super::lease::{
    sort_claimable, CancelRequest, Claimable, Granted, Lease, LeaseRecord, LeaseStore,
};
use super::memory_journal::Journal;
use super::{check_sequence, Cursor, JobPage, JobQuery, Store, StoreError};
use crate::journal::{JobSummary, Progress, Record, Snapshot};
use crate::time::{JobId, Timestamp};

/// Keeps everything in process memory behind one mutex. The lock is never
/// held across an await (there is none inside), so it cannot stall the
/// runtime, and every operation is atomic.
///
/// A memory store is [exclusive](LeaseStore::exclusive) unless made with
/// [`MemoryStore::shared`]: executors started on it one after another take
/// over its jobs at once, as after a restart. Executors that share one
/// store *at the same time* (to model several processes in a test) need a
/// shared store, so that they respect each other's leases.
#[derive(Debug)]
pub struct MemoryStore {
    jobs: Mutex<HashMap<JobId, Entry>>,
    dead_letters: Mutex<HashMap<DeadLetterId, DeadLetter>>,
    exclusive: bool,
    pub(super) policies: super::policy::MemoryPolicies,
    /// Test histories by key (see `memory_history`).
    pub(super) histories: Mutex<std::collections::BTreeMap<String, Vec<crate::flaky::RunOutcome>>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            jobs: Mutex::default(),
            dead_letters: Mutex::default(),
            exclusive: true,
            policies: super::policy::MemoryPolicies::default(),
            histories: Mutex::default(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    summary: JobSummary,
    records: Journal,
    snapshot: Option<Snapshot>,
    lease: LeaseRecord,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that several executors use at the same time, like
    /// processes sharing a database: not [exclusive](LeaseStore::exclusive).
    pub fn shared() -> Self {
        Self {
            exclusive: false,
            ..Self::default()
        }
    }

    /// Runs `f` on the job's entry, or `NotFound`.
    fn with_entry<T>(
        &self,
        job: &JobId,
        f: impl FnOnce(&mut Entry) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut jobs = self.lock();
        let e = jobs
            .get_mut(job)
            .ok_or_else(|| StoreError::NotFound { job: job.clone() })?;
        f(e)
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
            if e.records.holds_at(0, records) {
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
                records: Journal::from(records),
                snapshot: None,
                lease: LeaseRecord::default(),
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
        fence: u64,
    ) -> Result<u64, StoreError> {
        check_sequence(job, expected, records)?;
        let mut jobs = self.lock();
        let e = jobs
            .get_mut(job)
            .ok_or_else(|| StoreError::NotFound { job: job.clone() })?;
        e.lease.check(job, fence)?;
        let actual = e.records.len() as u64;
        if actual != expected {
            let start = expected as usize;
            let already = actual > expected && e.records.holds_at(start, records);
            if already {
                return Ok(expected + records.len() as u64);
            }
            return Err(StoreError::Conflict {
                job: job.clone(),
                expected,
                actual,
            });
        }
        e.records.extend(records);
        if progress.state.is_terminal() && !e.summary.progress.state.is_terminal() {
            e.lease.finish();
        }
        e.summary.progress = *progress;
        e.summary.progress.version = e.records.len() as u64;
        Ok(e.records.len() as u64)
    }

    async fn read(&self, job: &JobId, after: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        let jobs = self.lock();
        let e = jobs
            .get(job)
            .ok_or_else(|| StoreError::NotFound { job: job.clone() })?;
        let start = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(e.records.len());
        let end = start.saturating_add(limit).min(e.records.len());
        Ok(e.records.range(start, end))
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

impl MemoryStore {
    fn dead_letters(&self) -> std::sync::MutexGuard<'_, HashMap<DeadLetterId, DeadLetter>> {
        // Every mutation is one insert after all checks: a poisoned lock is
        // still consistent.
        self.dead_letters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl DeadLetterStore for MemoryStore {
    async fn put_dead_letter(&self, entry: &DeadLetter) -> Result<(), StoreError> {
        let mut map = self.dead_letters();
        let next = match map.get(&entry.id) {
            Some(stored) => DeadLetter::merge(stored, entry),
            None => Some(entry.clone()),
        };
        if let Some(next) = next {
            map.insert(entry.id.clone(), next);
        }
        Ok(())
    }

    async fn dead_letter(&self, id: &DeadLetterId) -> Result<Option<DeadLetter>, StoreError> {
        Ok(self.dead_letters().get(id).cloned())
    }

    async fn list_dead_letters(
        &self,
        query: &DeadLetterQuery,
    ) -> Result<DeadLetterPage, StoreError> {
        query.check()?;
        let hits = self
            .dead_letters()
            .values()
            .filter(|d| query.matches(d))
            .cloned()
            .collect();
        Ok(query.page(hits))
    }

    async fn resolve_dead_letter(
        &self,
        id: &DeadLetterId,
        resolution: &Resolution,
    ) -> Result<Resolve, StoreError> {
        check_resolution(resolution)?;
        let mut map = self.dead_letters();
        let Some(stored) = map.get_mut(id) else {
            return Ok(Resolve::Missing);
        };
        if stored.status != super::dead_letter::DeadLetterStatus::Open {
            return Ok(Resolve::Conflict(stored.clone()));
        }
        *stored = stored.resolved(resolution.clone());
        Ok(Resolve::Done(stored.clone()))
    }
}

#[async_trait]
impl LeaseStore for MemoryStore {
    async fn claim(
        &self,
        job: &JobId,
        owner: &str,
        now: Timestamp,
        ttl: std::time::Duration,
        force: bool,
    ) -> Result<Granted, StoreError> {
        self.with_entry(job, |e| e.lease.claim(job, owner, now, ttl, force))
    }

    async fn renew(
        &self,
        lease: &Lease,
        now: Timestamp,
        ttl: std::time::Duration,
    ) -> Result<Granted, StoreError> {
        self.with_entry(&lease.job, |e| e.lease.renew(lease, now, ttl))
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.with_entry(&lease.job, |e| {
            e.lease.release(lease);
            Ok(())
        })
    }

    async fn lease(&self, job: &JobId) -> Result<LeaseRecord, StoreError> {
        self.with_entry(job, |e| Ok(e.lease.clone()))
    }

    async fn claimable(&self, now: Timestamp, limit: usize) -> Result<Vec<Claimable>, StoreError> {
        let jobs = self.lock();
        let mut out: Vec<Claimable> = jobs
            .values()
            .filter(|e| !e.summary.progress.state.is_terminal() && !e.lease.is_live(now))
            .map(|e| Claimable {
                job: e.summary.id.clone(),
                priority: e.summary.priority,
                created_at: e.summary.created_at,
                token: e.lease.token,
            })
            .collect();
        sort_claimable(&mut out);
        out.truncate(limit);
        Ok(out)
    }

    async fn request_cancel(
        &self,
        job: &JobId,
        request: &CancelRequest,
    ) -> Result<bool, StoreError> {
        self.with_entry(job, |e| {
            if e.summary.progress.state.is_terminal() {
                return Ok(false);
            }
            e.lease.cancel = Some(request.clone());
            Ok(true)
        })
    }

    fn exclusive(&self) -> bool {
        self.exclusive
    }
}
