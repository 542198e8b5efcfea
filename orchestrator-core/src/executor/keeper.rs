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
//! 3. pings the scheduler, which sweeps its jobs for stuck ones and answers
//!    at once; a scheduler that has not answered for longer than the stall
//!    timeout is wedged, and the keeper reports and hands off every job it
//!    holds instead of renewing it (see [`crate::sweep`]);
//! 4. claims queued and orphaned jobs, highest priority first, up to the
//!    executor's capacity (after a random pause of up to a fifth of the
//!    heartbeat, so that executors ticking in step do not all race for the
//!    same jobs), and hands them to the scheduler, which resumes them from
//!    the journal exactly as after a restart — unless the scheduler is
//!    wedged.
//!
//! The keeper never writes to a journal: the scheduler does, carrying the
//! lease's fencing token, so a late write from an executor that lost a job
//! is refused by the store whatever the keeper knows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rand::Rng as _;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Activation, Command, CommandTx, ExecutorError, Shared, WeakCommandTx};
use crate::dag::Dag;
use crate::store::lease::{CancelRequest, Granted, Lease};
use crate::store::{StoreError, StoreExt};
use crate::time::{JobId, Timestamp};

/// The leases an executor holds, by job. Shared by the keeper (renewals,
/// hand-offs), the executor handle (claims) and the scheduler (which
/// forgets a job's lease when it lets the job go).
#[derive(Debug, Default)]
pub(crate) struct Held(Mutex<HashMap<JobId, Holding>>);

/// One held lease, and what stops the job's attempts.
#[derive(Debug)]
struct Holding {
    lease: Lease,
    /// The job's cancellation token, once the scheduler runs it.
    attempts: Option<Arc<CancellationToken>>,
    /// The lease's expiry as the scheduler reads it (see [`LeaseGauge`]).
    gauge: LeaseGauge,
}

/// A held lease's expiry, shared with the scheduler so that the check
/// before every attempt start is one atomic load instead of a lock and a
/// lookup by job id. The table keeps it current: a renewal stores the new
/// expiry, and forgetting the lease (a loss, a hand-off, a release) stores
/// 0, so the scheduler sees a job let go at its next check, as it did
/// through the table.
#[derive(Clone, Debug, Default)]
pub(crate) struct LeaseGauge(Arc<AtomicU64>);

impl LeaseGauge {
    fn new(expires_at: Timestamp) -> Self {
        Self(Arc::new(AtomicU64::new(expires_at.0)))
    }

    fn set(&self, expires_at: Timestamp) {
        self.0.store(expires_at.0, Ordering::Release);
    }

    /// Whether the lease, as last renewed and not let go, is live at `now`.
    pub(crate) fn live(&self, now: Timestamp) -> bool {
        now.0 < self.0.load(Ordering::Acquire)
    }
}

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Holding>> {
        // Every mutation is a single map operation: a panic elsewhere while
        // the lock was held cannot leave it half-updated.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn hold(&self, lease: Lease) {
        let mut held = self.lock();
        // A lease held anew keeps its gauge: whoever reads it follows the
        // new lease, as a lookup by job id would.
        let gauge = match held.get(&lease.job) {
            Some(old) => {
                old.gauge.set(lease.expires_at);
                old.gauge.clone()
            }
            None => LeaseGauge::new(lease.expires_at),
        };
        held.insert(
            lease.job.clone(),
            Holding {
                lease,
                attempts: None,
                gauge,
            },
        );
    }

    /// Remembers the token that stops `job`'s attempts, for a hand-off,
    /// and returns the gauge of its lease (one that is never live if the
    /// lease is not held).
    pub(crate) fn attach(&self, job: &JobId, attempts: Arc<CancellationToken>) -> LeaseGauge {
        match self.lock().get_mut(job) {
            Some(held) => {
                held.attempts = Some(attempts);
                held.gauge.clone()
            }
            None => LeaseGauge::default(),
        }
    }

    pub(crate) fn forget(&self, job: &JobId) -> Option<Lease> {
        let holding = self.lock().remove(job)?;
        holding.gauge.set(Timestamp(0));
        Some(holding.lease)
    }

    /// Forgets every lease.
    fn drain(&self) -> Vec<(JobId, Holding)> {
        let all: Vec<(JobId, Holding)> = self.lock().drain().collect();
        for (_, holding) in &all {
            holding.gauge.set(Timestamp(0));
        }
        all
    }

    pub(crate) fn all(&self) -> Vec<Lease> {
        self.lock().values().map(|h| h.lease.clone()).collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn contains(&self, job: &JobId) -> bool {
        self.lock().contains_key(job)
    }

    /// Records a renewal, unless the job was let go meanwhile.
    fn renewed(&self, lease: Lease) {
        if let Some(held) = self.lock().get_mut(&lease.job) {
            if held.lease.token == lease.token {
                held.gauge.set(lease.expires_at);
                held.lease = lease;
            }
        }
    }
}

/// Claims `job` (taking it over whatever its lease says with `force`) and,
/// if granted, hands it to the scheduler to resume from its journal.
/// `Ok(false)` when someone else holds it or it is finished.
pub(crate) async fn claim_and_activate(
    shared: &Shared,
    tx: &CommandTx,
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
    tx: &CommandTx,
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
    tx.send(Command::Activate(Box::new(Activation::new(
        view,
        dag,
        recovering,
        lease.token,
        policies,
    ))))
    .map_err(|_| ExecutorError::ShutDown)?;
    if let Some(request) = &granted.cancel_requested {
        cancel(tx, &lease.job, request);
    }
    Ok(true)
}

/// Passes a stored cancel request to the scheduler (which ignores it for a
/// job already cancelling or finished).
fn cancel(tx: &CommandTx, job: &JobId, request: &CancelRequest) {
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
pub(crate) async fn run(shared: Arc<Shared>, tx: WeakCommandTx, claim: bool) {
    let heartbeat = shared
        .config
        .lease
        .heartbeat
        .max(std::time::Duration::from_millis(1));
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut scheduler = Liveness::new();
    loop {
        tick.tick().await;
        let Some(tx) = tx.upgrade() else {
            return;
        };
        let wedged = scheduler.wedged(&shared, &tx);
        renew(&shared, &tx).await;
        scheduler.ping(&tx);
        if claim && !wedged {
            let pause = heartbeat / 5;
            if !pause.is_zero() {
                let jitter = rand::rng().random_range(0..=pause.as_millis() as u64);
                tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
            }
            claim_orphans(&shared, &tx).await;
        }
    }
}

/// What the keeper knows of the scheduler's liveness (see
/// [`crate::sweep`]).
struct Liveness {
    /// When the scheduler last answered a ping.
    answered: Instant,
    /// The answer to the last ping, until it comes.
    reply: Option<oneshot::Receiver<Instant>>,
    /// Whether a ping is unanswered (also when the scheduler is gone and
    /// never will answer).
    waiting: bool,
    /// Whether it is wedged: its jobs are handed off.
    wedged: bool,
}

impl Liveness {
    fn new() -> Self {
        Self {
            answered: Instant::now(),
            reply: None,
            waiting: false,
            wedged: false,
        }
    }

    /// Sends the next ping (and with it the sweep of every job), unless the
    /// last one is unanswered.
    fn ping(&mut self, tx: &CommandTx) {
        if !self.waiting {
            let (reply, rx) = oneshot::channel();
            self.waiting = true;
            if tx.send(Command::Sweep { reply }).is_ok() {
                self.reply = Some(rx);
            }
        }
    }

    /// Whether the scheduler is wedged: a ping is unanswered, and it has
    /// not answered one for longer than the stall timeout. Then every job
    /// still held is handed off (see [`hand_off`]), now and at every tick
    /// until it answers again.
    fn wedged(&mut self, shared: &Shared, tx: &CommandTx) -> bool {
        if let Some(reply) = &mut self.reply {
            match reply.try_recv() {
                Ok(at) => {
                    self.answered = at;
                    self.reply = None;
                    self.waiting = false;
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
                // Dropped unanswered: the scheduler is gone.
                Err(oneshot::error::TryRecvError::Closed) => self.reply = None,
            }
        }
        let silent = self.answered.elapsed();
        let wedged = self.waiting && silent > shared.config.lease.stall_timeout;
        if wedged != self.wedged {
            if wedged {
                tracing::error!(
                    silent_ms = silent.as_millis() as u64,
                    "the scheduler has stopped answering; reporting its jobs stuck and handing them to other executors"
                );
            } else {
                tracing::warn!("the scheduler answers again; claiming jobs again");
            }
            self.wedged = wedged;
        }
        if wedged {
            hand_off(shared, tx, silent);
        }
        wedged
    }
}

/// Lets go of every job a wedged executor holds, so that another executor
/// runs it: reports it stuck (on the event feed: its journal cannot take
/// the record), forgets its lease, has the scheduler drop it when it wakes
/// up, stops its attempts, and releases the lease once the attempts had the
/// cancel grace to stop.
fn hand_off(shared: &Shared, tx: &CommandTx, silent: std::time::Duration) {
    let mut released = Vec::new();
    for (job, holding) in shared.leases.drain() {
        let silent_ms = silent.as_millis() as u64;
        tracing::error!(%job, silent_ms, "job stuck: its executor's scheduler has not answered for {silent_ms} ms; handing the job over");
        shared.report_unjournaled(&job, crate::recovery::stuck_job_escalation(silent_ms));
        // Before the attempts are stopped: what a stopped attempt reports
        // must find the job already dropped, never be journaled as a
        // cancellation.
        let _ = tx.send(Command::Lost { job });
        if let Some(attempts) = holding.attempts {
            attempts.cancel();
        }
        released.push(holding.lease);
    }
    if released.is_empty() {
        return;
    }
    let store = Arc::clone(&shared.store);
    let grace = shared.config.cancel_grace;
    let bound = shared.config.lease.heartbeat;
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        let results = futures::future::join_all(
            released
                .iter()
                .map(|lease| tokio::time::timeout(bound, store.release(lease))),
        )
        .await;
        for (lease, result) in released.iter().zip(results) {
            match result {
                Ok(Ok(())) => {
                    tracing::info!(job = %lease.job, "lease released for another executor to take over");
                }
                Ok(Err(e)) => {
                    tracing::warn!(job = %lease.job, error = %e, "releasing the lease failed; it lapses after its TTL");
                }
                Err(_) => {
                    tracing::warn!(job = %lease.job, "releasing the lease timed out; it lapses after its TTL");
                }
            }
        }
    });
}

/// Renews every held lease; drops the jobs whose lease is gone.
async fn renew(shared: &Shared, tx: &CommandTx) {
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
async fn claim_orphans(shared: &Shared, tx: &CommandTx) {
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
