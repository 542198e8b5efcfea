//! The crew: long-lived tasks that run attempts, one at a time each.
//!
//! Spawning a tokio task per attempt costs an aligned allocation, a lock on
//! the runtime's task list going in and again going out, a join handle and
//! a free, which on a chain of no-op nodes was a third of the time per node.
//! A crew member instead waits on its own [`Mailbox`]: handing it an
//! attempt is a lock and a wake-up, like the report it sends back.
//!
//! The scheduler owns the crew and knows who is free without asking: a
//! member is busy from the assignment until the scheduler folds in the
//! [`Finished`] it reports (which names it), and it only ever reports after
//! its attempt is over. So a mailbox holds at most one letter, and the
//! member may still be on its way back to it when the next one lands.
//!
//! The crew grows to the most attempts ever in flight at once (bounded by
//! the concurrency limit); members that sat idle through a whole sweep
//! period are retired, so a burst does not keep its tasks forever. Dropping
//! the crew aborts every member, with its attempt, as a crash would.

use std::future::poll_fn;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use futures::FutureExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{keep_waker, AttemptRunner, Finished};
use crate::executor::attempt::{run_attempt, AttemptLimits};
use crate::failure::Failure;
use crate::runner::{Heartbeat, JobContext, RunContext, Runner};

/// One attempt to run, with everything its task needs and reports back.
pub(super) struct Assignment {
    pub(super) job: Arc<JobContext>,
    pub(super) slot: usize,
    pub(super) gen: u64,
    pub(super) node: u32,
    pub(super) attempt: u32,
    pub(super) compensation: bool,
    /// The breaker that admitted the attempt, and whether as a trial.
    pub(super) breaker: Option<(u32, bool)>,
    pub(super) runner: AttemptRunner,
    pub(super) limits: AttemptLimits,
    /// A child of the job's token, when the attempt has limits of its own.
    pub(super) own_token: Option<Arc<CancellationToken>>,
    pub(super) heartbeat: Heartbeat,
}

impl Assignment {
    /// Runs the attempt and reports it, as crew member `member`.
    async fn run(self, member: usize) {
        let Self {
            job,
            slot,
            gen,
            node,
            attempt,
            compensation,
            breaker,
            runner,
            limits,
            own_token,
            heartbeat,
        } = self;
        let mut ctx = RunContext::for_attempt(Arc::clone(&job), node, attempt, own_token.clone())
            .with_deadline(limits.deadline)
            .with_heartbeat(heartbeat);
        if compensation {
            ctx = ctx.for_compensation();
        }
        let runner: Result<&dyn Runner, String> = match &runner {
            // Set before the assignment, and never unset.
            AttemptRunner::Job(index) => job.runners[*index]
                .get()
                .map(AsRef::as_ref)
                .ok_or_else(|| "the node type's runner is gone".into()),
            AttemptRunner::Own(r) => Ok(r.as_ref()),
            AttemptRunner::Missing(message) => Err(message.clone()),
        };
        let result = match runner {
            Ok(runner) => run_attempt(runner, ctx, limits, &job.cancel, own_token).await,
            Err(message) => Err(Failure::permanent(message)),
        };
        job.done.push(Finished {
            member,
            slot,
            gen,
            node,
            attempt,
            compensation,
            breaker,
            result,
        });
    }
}

/// What a member finds in its mailbox.
enum Letter {
    Attempt(Assignment),
    /// Not needed any more: the member ends.
    Retire,
}

/// A member's mailbox: at most one letter, and the member's waker.
#[derive(Default)]
struct Mailbox {
    /// The letter and the member's waker under one lock, which orders a
    /// post and the registration it must see without an `AtomicWaker`'s
    /// handshake on top.
    slot: Mutex<Slot>,
    /// Whether the slot holds a letter: looked at without the lock, which
    /// the member then takes only to collect a letter that is there.
    full: AtomicBool,
}

/// What a [`Mailbox`] keeps under its lock.
#[derive(Default)]
struct Slot {
    letter: Option<Letter>,
    waker: Option<Waker>,
}

impl Mailbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn post(&self, letter: Letter) {
        let waker = {
            let mut slot = self.lock();
            let old = slot.letter.replace(letter);
            debug_assert!(old.is_none(), "a letter was posted to a busy member");
            slot.waker.take()
        };
        self.full.store(true, Ordering::Release);
        // Outside the lock, which the woken member may want at once.
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn take(&self) -> Option<Letter> {
        if !self.full.load(Ordering::Acquire) {
            return None;
        }
        // Only this mailbox's member empties it, and only the scheduler
        // fills it, once the member reported: no letter lands in between.
        self.full.store(false, Ordering::Relaxed);
        self.lock().letter.take()
    }

    /// Ready with the next letter. Checked without the lock first (the
    /// letter is often there already), then under it, where the member's
    /// waker is left for the next post. Each letter spends a unit of tokio's
    /// cooperative budget, so a member whose attempts finish at once still
    /// lets its worker thread run other tasks now and then.
    fn poll_letter(&self, cx: &mut Context<'_>) -> Poll<Letter> {
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let letter = match self.take() {
            Some(letter) => letter,
            None => {
                let mut slot = self.lock();
                match slot.letter.take() {
                    Some(letter) => letter,
                    None => {
                        keep_waker(&mut slot.waker, cx.waker());
                        return Poll::Pending;
                    }
                }
            }
        };
        coop.made_progress();
        Poll::Ready(letter)
    }
}

/// A member's task: attempts, one after the other, until retired.
async fn serve(member: usize, mailbox: Arc<Mailbox>) {
    loop {
        match poll_fn(|cx| mailbox.poll_letter(cx)).await {
            // The runner's own panics are caught in `run_attempt`; this
            // catches those of what an attempt drops after it reported
            // (the last count on a replaced runner, say), which would
            // otherwise end a member the scheduler counts as free.
            Letter::Attempt(assignment) => {
                let _ = AssertUnwindSafe(assignment.run(member))
                    .catch_unwind()
                    .await;
            }
            Letter::Retire => return,
        }
    }
}

struct Member {
    mailbox: Arc<Mailbox>,
    /// Kept so dropping the crew aborts the member (and its attempt).
    task: JoinHandle<()>,
}

/// The scheduler's attempt tasks.
#[derive(Default)]
pub(super) struct Crew {
    /// A slab: a member's index is stable for its life, and is what its
    /// reports name.
    members: Vec<Option<Member>>,
    vacant: Vec<usize>,
    /// Members with nothing to do, most recently freed last.
    idle: Vec<usize>,
    /// The fewest members idle at once since the last [`Crew::trim`]:
    /// that many were never needed in the period.
    spare: usize,
}

impl Crew {
    /// Hands `assignment` to an idle member, or to a new one.
    pub(super) fn assign(&mut self, assignment: Assignment) {
        let letter = Letter::Attempt(assignment);
        if let Some(member) = self.idle.pop() {
            self.spare = self.spare.min(self.idle.len());
            if let Some(m) = &self.members[member] {
                m.mailbox.post(letter);
                return;
            }
        }
        let member = self.vacant.pop().unwrap_or_else(|| {
            self.members.push(None);
            self.members.len() - 1
        });
        let mailbox = Arc::new(Mailbox::default());
        mailbox.post(letter);
        let task = tokio::spawn(serve(member, Arc::clone(&mailbox)));
        self.members[member] = Some(Member { mailbox, task });
    }

    /// `member` reported its attempt: it is free for the next one.
    pub(super) fn returned(&mut self, member: usize) {
        if self.members.get(member).is_some_and(Option::is_some) {
            self.idle.push(member);
        }
    }

    /// Retires the members no attempt needed since the last call (the
    /// longest idle first), and starts a new period.
    pub(super) fn trim(&mut self) {
        // The longest idle are at the front.
        for member in self.idle.drain(..self.spare.min(self.idle.len())) {
            if let Some(m) = self.members[member].take() {
                m.mailbox.post(Letter::Retire);
                self.vacant.push(member);
            }
        }
        self.spare = self.idle.len();
    }

    /// Members alive (busy or idle).
    #[cfg(test)]
    pub(super) fn size(&self) -> usize {
        self.members.iter().flatten().count()
    }
}

impl Drop for Crew {
    /// Stops every attempt in flight, as a crash of the process would.
    fn drop(&mut self) {
        for m in self.members.iter().flatten() {
            m.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;
    use std::time::Duration;

    use async_trait::async_trait;
    use serde_json::Value;

    use super::*;
    use crate::executor::Completions;
    use crate::{JobSpec, NodeSpec};

    /// Finishes when told to; counts the futures dropped unfinished.
    struct Gate {
        open: tokio::sync::Semaphore,
        dropped: AtomicUsize,
    }

    struct Guard<'a>(&'a AtomicUsize, bool);

    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            if !self.1 {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    #[async_trait]
    impl Runner for Gate {
        async fn run(&self, _ctx: RunContext) -> Result<Value, Failure> {
            let mut guard = Guard(&self.dropped, false);
            self.open
                .acquire()
                .await
                .map_err(|e| Failure::permanent(e.to_string()))?
                .forget();
            guard.1 = true;
            Ok(Value::Null)
        }
    }

    fn job(runner: Arc<Gate>) -> Arc<JobContext> {
        let spec = JobSpec::builder("crew")
            .node(NodeSpec::new("a", "gate"))
            .build();
        let runners: Box<[OnceLock<Arc<dyn Runner>>]> = Box::new([OnceLock::new()]);
        let _ = runners[0].set(runner);
        Arc::new(JobContext {
            job_id: "job-1".parse().unwrap(),
            spec: Arc::new(spec),
            cancel: Arc::new(CancellationToken::new()),
            runners,
            done: Arc::new(Completions::default()),
        })
    }

    fn assignment(job: &Arc<JobContext>, attempt: u32) -> Assignment {
        Assignment {
            job: Arc::clone(job),
            slot: 0,
            gen: 1,
            node: 0,
            attempt,
            compensation: false,
            breaker: None,
            runner: AttemptRunner::Job(0),
            limits: AttemptLimits {
                deadline: None,
                heartbeat_timeout: None,
                grace: Duration::from_millis(10),
            },
            own_token: None,
            heartbeat: Heartbeat::disabled(),
        }
    }

    fn gate() -> Arc<Gate> {
        Arc::new(Gate {
            open: tokio::sync::Semaphore::new(0),
            dropped: AtomicUsize::new(0),
        })
    }

    /// Waits for `n` reports, as the scheduler would, and hands their
    /// members back to `crew`; returns them.
    async fn reports(job: &JobContext, crew: &mut Crew, n: usize) -> Vec<Finished> {
        let mut got = Vec::new();
        while got.len() < n {
            poll_fn(|cx| job.done.poll_take(cx, &mut got)).await;
        }
        for f in &got {
            crew.returned(f.member);
        }
        got
    }

    #[tokio::test]
    async fn a_member_runs_one_attempt_after_another() {
        let runner = gate();
        let job = job(Arc::clone(&runner));
        let mut crew = Crew::default();
        for attempt in 1..=3 {
            crew.assign(assignment(&job, attempt));
            runner.open.add_permits(1);
            let got = reports(&job, &mut crew, 1).await;
            assert_eq!(got[0].attempt, attempt);
            assert_eq!(got[0].member, 0);
            assert!(got[0].result.is_ok());
        }
        assert_eq!(crew.size(), 1, "one member was enough, and was reused");
    }

    #[tokio::test]
    async fn the_crew_grows_to_the_attempts_in_flight_then_retires_the_unneeded() {
        let runner = gate();
        let job = job(Arc::clone(&runner));
        let mut crew = Crew::default();
        for attempt in 1..=3 {
            crew.assign(assignment(&job, attempt));
        }
        assert_eq!(crew.size(), 3, "three attempts at once, three members");
        runner.open.add_permits(3);
        let mut members: Vec<usize> = reports(&job, &mut crew, 3)
            .await
            .iter()
            .map(|f| f.member)
            .collect();
        members.sort_unstable();
        assert_eq!(members, [0, 1, 2]);

        // The period in which all three were needed ends: nobody retires.
        crew.trim();
        assert_eq!(crew.size(), 3);
        // In this period one attempt at a time runs: two members sit idle
        // throughout, and retire at its end.
        for attempt in 4..=5 {
            crew.assign(assignment(&job, attempt));
            runner.open.add_permits(1);
            reports(&job, &mut crew, 1).await;
        }
        crew.trim();
        assert_eq!(crew.size(), 1);
        // The retired members' slots are reused when the crew grows again.
        crew.assign(assignment(&job, 6));
        crew.assign(assignment(&job, 7));
        assert_eq!(crew.size(), 2);
        assert!(crew.members.len() <= 3);
        runner.open.add_permits(2);
        reports(&job, &mut crew, 2).await;
        assert_eq!(runner.dropped.load(Ordering::SeqCst), 0);
    }

    /// Panics when dropped: the last count on it goes with the attempt,
    /// after its report.
    struct PanicsOnDrop;

    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("a runner that panics when dropped");
        }
    }

    #[async_trait]
    impl Runner for PanicsOnDrop {
        async fn run(&self, _ctx: RunContext) -> Result<Value, Failure> {
            Ok(Value::Null)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_after_the_report_leaves_the_member_serving() {
        let runner = gate();
        let job = job(Arc::clone(&runner));
        let mut crew = Crew::default();
        let mut own = assignment(&job, 1);
        own.runner = AttemptRunner::Own(Arc::new(PanicsOnDrop));
        crew.assign(own);
        let got = reports(&job, &mut crew, 1).await;
        assert!(got[0].result.is_ok());
        // The member that dropped the runner (and panicked doing so) takes
        // the next attempt.
        crew.assign(assignment(&job, 2));
        runner.open.add_permits(1);
        // A dead member would never report: time out (paused time, so at
        // once) rather than hang.
        let got = tokio::time::timeout(Duration::from_secs(5), reports(&job, &mut crew, 1))
            .await
            .expect("the member is alive and reports");
        assert_eq!((got[0].member, got[0].attempt), (0, 2));
        assert_eq!(crew.size(), 1);
    }

    /// Reports pushed from other threads while the queue is being taken
    /// (the emptiness flag read without the lock) all arrive, each once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn completions_pushed_from_other_threads_all_arrive() {
        const PUSHERS: u32 = 4;
        const EACH: u32 = 2_000;
        let done = Arc::new(Completions::default());
        let pushers: Vec<_> = (0..PUSHERS)
            .map(|p| {
                let done = Arc::clone(&done);
                std::thread::spawn(move || {
                    for attempt in 0..EACH {
                        done.push(Finished {
                            member: p as usize,
                            slot: 0,
                            gen: 1,
                            node: p,
                            attempt,
                            compensation: false,
                            breaker: None,
                            result: Ok(Value::Null),
                        });
                    }
                })
            })
            .collect();
        let mut got = Vec::new();
        let mut taken = Vec::new();
        let all = async {
            while taken.len() < (PUSHERS * EACH) as usize {
                poll_fn(|cx| done.poll_take(cx, &mut got)).await;
                taken.extend(got.drain(..).map(|f| (f.node, f.attempt)));
            }
        };
        // A lost report would leave the taker waiting for good.
        tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .expect("every report is taken");
        for p in pushers {
            p.join().expect("pusher thread");
        }
        done.take(&mut got);
        assert!(got.is_empty(), "nothing more than was pushed");
        taken.sort_unstable();
        taken.dedup();
        assert_eq!(taken.len(), (PUSHERS * EACH) as usize, "each report once");
    }

    #[tokio::test]
    async fn dropping_the_crew_aborts_attempts_in_flight() {
        let runner = gate();
        let job = job(Arc::clone(&runner));
        let mut crew = Crew::default();
        crew.assign(assignment(&job, 1));
        crew.assign(assignment(&job, 1));
        // Let both start waiting.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        drop(crew);
        for _ in 0..10 {
            if runner.dropped.load(Ordering::SeqCst) == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(
            runner.dropped.load(Ordering::SeqCst),
            2,
            "both attempts were dropped"
        );
        let mut left = Vec::new();
        job.done.take(&mut left);
        assert!(left.is_empty(), "an aborted attempt reports nothing");
    }
}
