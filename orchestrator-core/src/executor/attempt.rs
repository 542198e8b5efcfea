//! Running one attempt: the runner's future wrapped with the node timeout,
//! the heartbeat watchdog, graceful cancellation and panic capture.
//!
//! This runs in a crew member's task, not in the scheduler, so the scheduler
//! never polls runner code and a slow or stuck runner costs it nothing.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use serde_json::Value;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::failure::Failure;
use crate::runner::{Heartbeat, RunContext, Runner, MAX_OUTPUT_BYTES};

/// A runner's future, with panics caught.
type Attempt<'a> = futures::future::CatchUnwind<
    AssertUnwindSafe<
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, Failure>> + Send + 'a>>,
    >,
>;

/// Limits of one attempt.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttemptLimits {
    pub(crate) deadline: Option<Instant>,
    pub(crate) heartbeat_timeout: Option<Duration>,
    pub(crate) grace: Duration,
}

/// Why the wrapper stopped waiting for the runner.
enum Stop {
    Cancelled,
    Deadline,
    HeartbeatLost(Duration),
}

/// Runs `runner` under `limits`. `ctx`'s token is the one the runner sees:
/// `own_token` when the attempt has one of its own (a child of the job's,
/// so that a timeout stops just this attempt), else `job_token`, which is
/// cancelled when the whole job is.
pub(crate) async fn run_attempt(
    runner: &dyn Runner,
    ctx: RunContext,
    limits: AttemptLimits,
    job_token: &Arc<CancellationToken>,
    own_token: Option<Arc<CancellationToken>>,
) -> Result<Value, Failure> {
    let heartbeat = ctx.heartbeat().clone();
    // Called on the trait object itself: through `Arc<dyn Runner>`'s own
    // `Runner` impl, every attempt would box a second future around the
    // runner's.
    let mut fut: Attempt<'_> = AssertUnwindSafe(runner.run(ctx)).catch_unwind();

    // Fast path: a runner that finishes on its first poll (noop, cached
    // results) never registers a timer or a cancellation waiter. The slow
    // path is boxed so the spawned task stays small: its future is copied
    // into every task allocation.
    if let Some(result) = (&mut fut).now_or_never() {
        return finish(result);
    }
    let own_token = own_token.unwrap_or_else(|| Arc::clone(job_token));
    Box::pin(supervise(fut, own_token, heartbeat, limits, job_token)).await
}

/// Waits for a runner that did not finish at once, enforcing the deadline,
/// the heartbeat timeout and cancellation with its grace period.
async fn supervise(
    mut fut: Attempt<'_>,
    own_token: Arc<CancellationToken>,
    heartbeat: Heartbeat,
    limits: AttemptLimits,
    job_token: &CancellationToken,
) -> Result<Value, Failure> {
    let watchdog = async {
        match limits.heartbeat_timeout {
            None => std::future::pending::<Duration>().await,
            Some(limit) => loop {
                let quiet = heartbeat.since_last().unwrap_or_default();
                if quiet >= limit {
                    break quiet;
                }
                tokio::time::sleep(limit - quiet).await;
            },
        }
    };
    let deadline = async {
        match limits.deadline {
            Some(d) => sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    let stop = tokio::select! {
        biased;
        result = &mut fut => return finish(result),
        () = job_token.cancelled() => Stop::Cancelled,
        () = deadline => Stop::Deadline,
        quiet = watchdog => Stop::HeartbeatLost(quiet),
    };
    // Ask the runner to stop, then give it the grace period to do so (a
    // process runner uses it to kill its process group cleanly).
    own_token.cancel();
    let late = tokio::time::timeout(limits.grace, &mut fut).await;
    match stop {
        Stop::Cancelled => match late {
            Ok(result) => finish(result),
            Err(_) => Err(Failure::cancelled(format!(
                "cancelled; the runner did not stop within the {} ms grace period and was dropped",
                limits.grace.as_millis()
            ))),
        },
        Stop::Deadline => match late.map(finish) {
            Ok(Err(f)) if f.class == crate::FailureClass::Timeout => Err(f),
            _ => Err(Failure::timeout("the attempt ran past its timeout")),
        },
        Stop::HeartbeatLost(quiet) => Err(Failure::infrastructure(format!(
            "no heartbeat for {} ms; the attempt is presumed lost",
            quiet.as_millis()
        ))),
    }
}

fn finish(result: std::thread::Result<Result<Value, Failure>>) -> Result<Value, Failure> {
    match result {
        Ok(Ok(value)) => check_output(value),
        Ok(Err(failure)) => Err(failure),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            Err(Failure::new(
                crate::FailureClass::Unknown,
                format!("the runner panicked: {what}"),
            ))
        }
    }
}

/// Outputs are journaled, so they are bounded: an oversized output is a
/// permanent failure (retrying would produce it again) rather than a silently
/// mangled value.
fn check_output(value: Value) -> Result<Value, Failure> {
    if value.is_null() || value.is_boolean() || value.is_number() {
        return Ok(value);
    }
    let size = serde_json::to_vec(&value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_OUTPUT_BYTES {
        return Err(Failure::permanent(format!(
            "the runner returned {size} bytes of output, more than the limit of {MAX_OUTPUT_BYTES}"
        )));
    }
    Ok(value)
}
