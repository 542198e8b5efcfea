//! The lease keeper: the executor's side of [`crate::store::lease`].
//!
//! Every job an executor runs is held through a lease. The keeper is one
//! task per executor that, every heartbeat:
//!
//! 1. renews the lease of every job the executor runs; a lease the store
//!    says was taken over ([`StoreError::Fenced`]) — or one that could not
//!    be renewed before it lapsed — makes the scheduler drop the job at once
//!    (its attempts are cancelled, nothing more is journaled), since another
//!    executor may be running it now;
//! 2. acts on cancel requests other executors left on those jobs;
//! 3. claims queued and orphaned jobs, highest priority first, up to the
//!    executor's capacity (after a random pause of up to a fifth of the
//!    heartbeat, so that executors ticking in step do not all race for the
//!    same jobs), and hands them to the scheduler, which resumes them from
//!    the journal exactly as after a restart.
//!
//! The keeper never writes to a journal: the scheduler does, carrying the
//! lease's fencing token, so a late write from an executor that lost a job
//! is refused by the store whatever the keeper knows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rand::Rng as _;
use tokio::sync::{mpsc, oneshot};

use super::{Activation, Command, ExecutorError, Shared};
use crate::dag::Dag;
use crate::store::lease::{CancelRequest, Granted, Lease};
use crate::store::{StoreError, StoreExt};
use crate::time::JobId;

/// The leases an executor holds, by job. Shared by the keeper (renewals),
/// the executor handle (claims) and the scheduler (which forgets a job's
/// lease when it lets the job go).
#[derive(Debug, Default)]
pub(crate) struct Held(Mutex<HashMap<JobId, Lease>>);

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Lease>> {
        // Every mutation is a single map operation: a panic elsewhere while
        // the lock was held cannot leave it half-updated.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn hold(&self, lease: Lease) {
        self.lock().insert(lease.job.clone(), lease);
    }

    pub(crate) fn forget(&self, job: &JobId) -> Option<Lease> {
        self.lock().remove(job)
    }

    pub(crate) fn all(&self) -> Vec<Lease> {
        self.lock().values().cloned().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// When the lease held on `job` expires (as last renewed), if held.
    pub(crate) fn expiry(&self, job: &JobId) -> Option<crate::time::Timestamp> {
        self.lock().get(job).map(|l| l.expires_at)
    }

    pub(crate) fn contains(&self, job: &JobId) -> bool {
        self.lock().contains_key(job)
    }

    /// Records a renewal, unless the job was let go meanwhile.
    fn renewed(&self, lease: Lease) {
        if let Some(held) = self.lock().get_mut(&lease.job) {
            if held.token == lease.token {
                *held = lease;
            }
        }
    }
}

/// Claims `job` (taking it over whatever its lease says with `force`) and,
/// if granted, hands it to the scheduler to resume from its journal.
/// `Ok(false)` when someone else holds it or it is finished.
pub(crate) async fn claim_and_activate(
    shared: &Shared,
    tx: &mpsc::UnboundedSender<Command>,
    job: &JobId,
    force: bool,
) -> Result<bool, ExecutorError> {
    if shared.leases.contains(job) {
        return Ok(true);
    }
    let granted = match shared.claim(job, force).await {
        Ok(granted) => granted,
        Err(StoreError::LeaseHeld { .. }) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    // Read the journal only now: whatever the previous holder writes after
    // the claim is fenced off, so this view is final up to our own writes.
    match activate_granted(shared, tx, &granted, true).await {
        Ok(active) => Ok(active),
        Err(e) => {
            // Let the next claimer (or a later tick) have it.
            shared.leases.forget(job);
            let _ = shared.store.release(&granted.lease).await;
            Err(e)
        }
    }
}

/// Loads a job whose lease was just granted and hands it to the scheduler.
/// `Ok(false)` (releasing the lease) when the job turns out finished.
pub(crate) async fn activate_granted(
    shared: &Shared,
    tx: &mpsc::UnboundedSender<Command>,
    granted: &Granted,
    recovering: bool,
) -> Result<bool, ExecutorError> {
    let lease = &granted.lease;
    let view = shared.store.load_view(&lease.job).await?;
    if view.state.is_terminal() {
        let _ = shared.store.release(lease).await;
        return Ok(false);
    }
    let policies = shared.resolve_policies(view.spec()).await?;
    let dag = Dag::compile(view.spec(), &shared.config.limits, &policies).map_err(|e| {
        ExecutorError::Store(StoreError::Corrupt {
            job: Some(lease.job.clone()),
            key: "spec".into(),
            message: e.to_string(),
        })
    })?;
    shared.leases.hold(lease.clone());
    tx.send(Command::Activate(Box::new(Activation {
        view,
        dag: Arc::new(dag),
        recovering,
        fence: lease.token,
        policies,
    })))
    .map_err(|_| ExecutorError::ShutDown)?;
    if let Some(request) = &granted.cancel_requested {
        cancel(tx, &lease.job, request);
    }
    Ok(true)
}

/// Passes a stored cancel request to the scheduler (which ignores it for a
/// job already cancelling or finished).
fn cancel(tx: &mpsc::UnboundedSender<Command>, job: &JobId, request: &CancelRequest) {
    let (reply, _) = oneshot::channel();
    let _ = tx.send(Command::Cancel {
        job: job.clone(),
        reason: request.reason.clone(),
        reply,
    });
}

/// The keeper task (see the module docs). `claim` says whether it takes
/// queued and orphaned jobs ([`super::Recovery::All`]) or only keeps what
/// the executor has.
pub(crate) async fn run(shared: Arc<Shared>, tx: mpsc::WeakUnboundedSender<Command>, claim: bool) {
    let heartbeat = shared
        .config
        .lease
        .heartbeat
        .max(std::time::Duration::from_millis(1));
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(tx) = tx.upgrade() else {
            return;
        };
        renew(&shared, &tx).await;
        if claim {
            let pause = heartbeat / 5;
            if !pause.is_zero() {
                let jitter = rand::rng().random_range(0..=pause.as_millis() as u64);
                tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
            }
            claim_orphans(&shared, &tx).await;
        }
    }
}

/// Renews every held lease; drops the jobs whose lease is gone.
async fn renew(shared: &Shared, tx: &mpsc::UnboundedSender<Command>) {
    let held = shared.leases.all();
    if held.is_empty() {
        return;
    }
    let config = &shared.config.lease;
    let now = shared.clock.now();
    let results = futures::future::join_all(
        held.iter()
            .map(|lease| shared.store.renew(lease, now, config.ttl)),
    )
    .await;
    for (lease, result) in held.into_iter().zip(results) {
        match result {
            Ok(granted) => {
                if let Some(request) = &granted.cancel_requested {
                    cancel(tx, &lease.job, request);
                }
                shared.leases.renewed(granted.lease);
            }
            Err(e @ (StoreError::Fenced { .. } | StoreError::NotFound { .. })) => {
                if shared.leases.forget(&lease.job).is_some() {
                    tracing::warn!(job = %lease.job, error = %e, "lease lost");
                    let _ = tx.send(Command::Lost { job: lease.job });
                }
            }
            Err(e) if now.0 >= lease.expires_at.0 => {
                // The lease lapsed without a renewal: another executor may
                // run the job by now, so this one must stop acting on it.
                if shared.leases.forget(&lease.job).is_some() {
                    tracing::error!(job = %lease.job, error = %e, "lease lapsed: renewal failed; dropping the job");
                    let _ = tx.send(Command::Lost { job: lease.job });
                }
            }
            Err(e) => {
                tracing::warn!(job = %lease.job, error = %e, "lease renewal failed; retrying at the next heartbeat");
            }
        }
    }
}

/// Claims queued and orphaned jobs up to the executor's capacity.
async fn claim_orphans(shared: &Shared, tx: &mpsc::UnboundedSender<Command>) {
    let free = shared
        .config
        .lease
        .capacity
        .saturating_sub(shared.leases.len());
    if free == 0 {
        return;
    }
    let now = shared.clock.now();
    let candidates = match shared.store.claimable(now, free).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "listing claimable jobs failed");
            return;
        }
    };
    for c in candidates {
        match claim_and_activate(shared, tx, &c.job, false).await {
            Ok(true) => {
                tracing::info!(job = %c.job, token = c.token + 1, orphaned = c.token > 0, "claimed job");
            }
            Ok(false) => {}
            Err(ExecutorError::ShutDown) => return,
            Err(e) => tracing::error!(job = %c.job, error = %e, "could not take over job"),
        }
    }
}
