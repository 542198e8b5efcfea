//! Job leases and fencing tokens: how several executor processes share one
//! store and still run each job in exactly one of them at a time.
//!
//! # The model
//!
//! Each job carries, next to its journal, a lease: the **owner** (an
//! executor process's id), an **expiry**, and a **fencing token**. An
//! executor runs a job only while it holds the job's lease, renews it by
//! heartbeat well before it expires, and passes the token with every
//! [`Store::append`](super::Store::append). Whoever claims a job whose lease
//! has expired (its owner crashed, hung, or was partitioned away) gets the
//! previous token plus one; from then on the store rejects every append
//! carrying an older token with [`StoreError::Fenced`]. So a process that
//! was paused past its lease and wakes up cannot write a single record into
//! a journal that another process now owns, whatever it believes — the
//! check happens in the same atomic step as the version compare-and-set.
//!
//! A job that was never claimed has token 0 and no owner: it is *queued*.
//! The append that moves a job into a terminal state ends its lease (the
//! token stays), so a finished job can be claimed at once — by whoever rolls
//! it back or requeues part of it — and a cancel request pending on it is
//! dropped with it.
//!
//! # Contract
//!
//! - [`LeaseStore::claim`] succeeds when the job has no live lease at `now`
//!   (never claimed, released, expired), or always with `force`; the new
//!   holder's token is the old one plus one. A live lease held by anyone is
//!   [`StoreError::LeaseHeld`] (even the caller: renewing is a separate
//!   call, so a claim can never silently reuse a token).
//! - [`LeaseStore::renew`] extends a lease whose token is still current
//!   (whether or not it expired meanwhile: nobody took over); a token that
//!   moved on is [`StoreError::Fenced`].
//! - [`LeaseStore::release`] ends a current lease now, keeping its token; a
//!   stale one is ignored.
//! - `append` with a token older than the job's is [`StoreError::Fenced`],
//!   and writes nothing.
//! - [`LeaseStore::claimable`] lists unfinished jobs without a live lease,
//!   highest priority first, then oldest.
//! - [`LeaseStore::request_cancel`] marks an unfinished job so that its
//!   owner (at its next renewal) or its next claimer cancels it.
//!
//! Timestamps are the caller's (`now`), so every process must share a
//! roughly synchronised wall clock; the lease TTL must exceed the clock
//! skew between processes by a wide margin (the defaults use seconds).

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::time::{JobId, Timestamp};

/// A lease on one job, as its holder knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The job.
    pub job: JobId,
    /// The holder: an executor process id.
    pub owner: String,
    /// The fencing token; every append of the holder carries it.
    pub token: u64,
    /// When the lease lapses unless renewed.
    pub expires_at: Timestamp,
}

/// The outcome of a successful claim or renewal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Granted {
    /// The lease now held.
    pub lease: Lease,
    /// A cancellation someone requested for the job, to act on now.
    pub cancel_requested: Option<CancelRequest>,
}

/// A pending cancellation of a job (see [`LeaseStore::request_cancel`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRequest {
    /// Why, if the requester said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the store knows of a job's lease.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The last holder; empty when the job was never claimed.
    #[serde(default)]
    pub owner: String,
    /// The current fencing token (0: never claimed).
    #[serde(default)]
    pub token: u64,
    /// When the lease lapses (epoch ms); 0 when released.
    #[serde(default)]
    pub expires_at: u64,
    /// A pending cancel request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<CancelRequest>,
}

impl LeaseRecord {
    /// Whether someone holds the lease at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.token > 0 && self.expires_at > now.0
    }

    /// The lease as its holder knows it.
    pub fn lease(&self, job: &JobId) -> Lease {
        Lease {
            job: job.clone(),
            owner: self.owner.clone(),
            token: self.token,
            expires_at: Timestamp(self.expires_at),
        }
    }

    /// Applies a claim by `owner` at `now` (see [`LeaseStore::claim`]): the
    /// one rule every backend shares.
    pub fn claim(
        &mut self,
        job: &JobId,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
        force: bool,
    ) -> Result<Granted, StoreError> {
        if !force && self.is_live(now) {
            return Err(StoreError::LeaseHeld {
                job: job.clone(),
                owner: self.owner.clone(),
                expires_at: Timestamp(self.expires_at),
            });
        }
        self.owner = owner.to_owned();
        self.token += 1;
        self.expires_at = expiry(now, ttl);
        Ok(self.granted(job))
    }

    /// Applies a renewal of `lease` at `now` (see [`LeaseStore::renew`]).
    pub fn renew(
        &mut self,
        lease: &Lease,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Granted, StoreError> {
        self.check(&lease.job, lease.token)?;
        if self.expires_at == 0 {
            // Released (the job finished, or its holder let go): a renewal
            // must not resurrect it.
            return Err(StoreError::Fenced {
                job: lease.job.clone(),
                token: lease.token,
                current: self.token,
            });
        }
        self.expires_at = expiry(now, ttl);
        Ok(self.granted(&lease.job))
    }

    /// Applies a release of `lease`: ends it if it is current.
    pub fn release(&mut self, lease: &Lease) {
        if self.token == lease.token {
            self.expires_at = 0;
        }
    }

    /// Whether a writer holding `token` may append: [`StoreError::Fenced`]
    /// if the job's token is newer.
    pub fn check(&self, job: &JobId, token: u64) -> Result<(), StoreError> {
        if token < self.token {
            return Err(StoreError::Fenced {
                job: job.clone(),
                token,
                current: self.token,
            });
        }
        Ok(())
    }

    /// What an append that moves the job into a terminal state does to the
    /// lease: ends it (keeping the token) and drops a pending cancel.
    pub fn finish(&mut self) {
        self.expires_at = 0;
        self.cancel = None;
    }

    fn granted(&self, job: &JobId) -> Granted {
        Granted {
            lease: self.lease(job),
            cancel_requested: self.cancel.clone(),
        }
    }
}

/// The expiry of a lease granted at `now` for `ttl`.
pub fn expiry(now: Timestamp, ttl: Duration) -> u64 {
    let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    now.0.saturating_add(ttl)
}

/// An unfinished job nobody holds, as [`LeaseStore::claimable`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimable {
    /// The job.
    pub job: JobId,
    /// Its priority (higher first).
    pub priority: i32,
    /// When it was submitted (older first among equal priorities).
    pub created_at: Timestamp,
    /// Its current token (0: never claimed, i.e. queued; more: orphaned).
    pub token: u64,
}

/// Sorts claimable jobs the way [`LeaseStore::claimable`] returns them.
pub fn sort_claimable(jobs: &mut [Claimable]) {
    jobs.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.created_at.cmp(&b.created_at))
            .then_with(|| a.job.cmp(&b.job))
    });
}

/// Job leases with fencing tokens. See the [module docs](self).
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Claims `job` for `owner` until `now + ttl`: when nobody holds it at
    /// `now`, or always with `force` (for stores only one process can open,
    /// where any lease found at start is a dead process's). The token
    /// becomes the previous one plus one. A live lease is
    /// [`StoreError::LeaseHeld`]; a missing job [`StoreError::NotFound`].
    /// Finished jobs can be claimed (to roll them back or requeue a node).
    async fn claim(
        &self,
        job: &JobId,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
        force: bool,
    ) -> Result<Granted, StoreError>;

    /// Extends `lease` until `now + ttl` if its token is still the job's
    /// and it was not released; otherwise [`StoreError::Fenced`].
    async fn renew(
        &self,
        lease: &Lease,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Granted, StoreError>;

    /// Ends `lease` now if it is current (its token stays, so the next
    /// claimer gets a newer one); does nothing otherwise.
    async fn release(&self, lease: &Lease) -> Result<(), StoreError>;

    /// The job's lease as stored.
    async fn lease(&self, job: &JobId) -> Result<LeaseRecord, StoreError>;

    /// Up to `limit` unfinished jobs without a live lease at `now`,
    /// highest priority first, then oldest.
    async fn claimable(&self, now: Timestamp, limit: usize) -> Result<Vec<Claimable>, StoreError>;

    /// Asks whoever runs `job` to cancel it. Returns `false`, writing
    /// nothing, when the job is already finished.
    async fn request_cancel(
        &self,
        job: &JobId,
        request: &CancelRequest,
    ) -> Result<bool, StoreError>;

    /// Whether only one process at a time can open this store (an embedded
    /// database locks its directory). An executor starting on such a store
    /// knows that every lease it finds belongs to a dead process and takes
    /// its jobs over at once instead of waiting for their leases to lapse.
    fn exclusive(&self) -> bool {
        false
    }
}
