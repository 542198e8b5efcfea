//! [`LeaseStore`] on sled: one `leases` tree, `id` → [`LeaseRecord`].
//!
//! Each operation is a transaction over the job's summary (which must
//! exist, and says whether the job is finished) and its lease, so a claim
//! can never interleave with an append's fencing check.

use std::time::Duration;

use async_trait::async_trait;
use orchestrator_core::store::lease::{
    sort_claimable, CancelRequest, Claimable, Granted, Lease, LeaseRecord, LeaseStore,
};
use orchestrator_core::{JobId, StoreError, Timestamp};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::Transactional;

use crate::error::{from_sled, from_tx};
use crate::keys::{self, LEASES, UNFINISHED};
use crate::{codec, fail, tx_summary, SledStore};

/// Reads a job's lease inside a transaction (the default when never claimed).
pub(crate) fn tx_lease(
    leases: &TransactionalTree,
    job: &JobId,
) -> Result<LeaseRecord, ConflictableTransactionError<StoreError>> {
    match leases.get(keys::job(job))? {
        None => Ok(LeaseRecord::default()),
        Some(raw) => codec::decode(&raw, Some(job), || keys::describe(LEASES, job)).or_else(fail),
    }
}

impl SledStore {
    /// Runs `f` on the job's lease in a transaction with its summary, and
    /// stores the lease if `f` returns `(true, _)`.
    fn with_lease<T>(
        &self,
        job: &JobId,
        doing: &str,
        f: impl Fn(&mut LeaseRecord, bool) -> Result<(bool, T), StoreError>,
    ) -> Result<T, StoreError> {
        (&self.summaries, &self.leases)
            .transaction(|(st, lt)| {
                let Some(summary) = tx_summary(st, job)? else {
                    return fail(StoreError::NotFound { job: job.clone() });
                };
                let mut lease = tx_lease(lt, job)?;
                let (write, out) =
                    f(&mut lease, summary.progress.state.is_terminal()).or_else(fail)?;
                if write {
                    lt.insert(keys::job(job), codec::encode(&lease).or_else(fail)?)?;
                }
                Ok(out)
            })
            .map_err(|e| from_tx(e, doing))
    }
}

#[async_trait]
impl LeaseStore for SledStore {
    async fn claim(
        &self,
        job: &JobId,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
        force: bool,
    ) -> Result<Granted, StoreError> {
        self.with_lease(job, "claiming a lease", |lease, _| {
            lease.claim(job, owner, now, ttl, force).map(|g| (true, g))
        })
    }

    async fn renew(
        &self,
        lease: &Lease,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Granted, StoreError> {
        self.with_lease(&lease.job, "renewing a lease", |stored, _| {
            stored.renew(lease, now, ttl).map(|g| (true, g))
        })
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.with_lease(&lease.job, "releasing a lease", |stored, _| {
            let current = stored.token == lease.token;
            stored.release(lease);
            Ok((current, ()))
        })
    }

    async fn lease(&self, job: &JobId) -> Result<LeaseRecord, StoreError> {
        self.with_lease(job, "reading a lease", |stored, _| {
            Ok((false, stored.clone()))
        })
    }

    async fn claimable(&self, now: Timestamp, limit: usize) -> Result<Vec<Claimable>, StoreError> {
        let mut out = Vec::new();
        for item in &self.unfinished {
            let (k, _) = item.map_err(|e| from_sled(e, "listing unfinished jobs"))?;
            let Some(job) = std::str::from_utf8(&k)
                .ok()
                .and_then(|s| s.parse::<JobId>().ok())
            else {
                tracing::error!(key = %keys::describe_raw(UNFINISHED, &k), "malformed unfinished-job key; skipped");
                continue;
            };
            let lease: LeaseRecord = match self
                .leases
                .get(keys::job(&job))
                .map_err(|e| from_sled(e, "reading a lease"))?
            {
                None => LeaseRecord::default(),
                Some(raw) => codec::decode(&raw, Some(&job), || keys::describe(LEASES, &job))?,
            };
            if lease.is_live(now) {
                continue;
            }
            let summary = match self.load_summary(&job) {
                Ok(s) => s,
                // Finished or removed since the index was read.
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            out.push(Claimable {
                job,
                priority: summary.priority,
                created_at: summary.created_at,
                token: lease.token,
            });
        }
        sort_claimable(&mut out);
        out.truncate(limit);
        Ok(out)
    }

    async fn request_cancel(
        &self,
        job: &JobId,
        request: &CancelRequest,
    ) -> Result<bool, StoreError> {
        self.with_lease(job, "requesting a cancel", |lease, finished| {
            if finished {
                return Ok((false, false));
            }
            lease.cancel = Some(request.clone());
            Ok((true, true))
        })
    }

    fn exclusive(&self) -> bool {
        true
    }
}
