//! The node and job state machines and the trigger rules.
//!
//! The transition tables below are transcribed from the doc comments of
//! `NodeMachine::apply` and `JobState::apply`; every (state, event) pair is
//! checked against them, and everything they do not list must be rejected.

use std::collections::BTreeSet;
use std::time::Duration;

use orchestrator_core::state::{
    InvalidTransition, JobEffect, JobEvent, JobState, NodeEffect, NodeEvent, NodeMachine,
    NodeState, TriggerDecision, Upstream,
};
use orchestrator_core::{FailureClass, TriggerRule};
use proptest::prelude::*;

const DELAY: Duration = Duration::from_millis(1500);

const RULES: [TriggerRule; 9] = [
    TriggerRule::AllSuccess,
    TriggerRule::AllFailed,
    TriggerRule::AllDone,
    TriggerRule::OneSuccess,
    TriggerRule::OneFailed,
    TriggerRule::NoneFailed,
    TriggerRule::NoneFailedMinOneSuccess,
    TriggerRule::NoneSkipped,
    TriggerRule::Always,
];

/// Node states nothing may leave.
const NODE_ABSORBING: [NodeState; 3] = [
    NodeState::Cancelled,
    NodeState::DeadLettered,
    NodeState::Compensated,
];

/// Node states only a dead-letter requeue leaves: `requeue` (failed,
/// timed out) and `reset` (skipped, upstream-failed downstream of it).
const NODE_LEFT_BY_REQUEUE: [NodeState; 4] = [
    NodeState::Failed,
    NodeState::TimedOut,
    NodeState::Skipped,
    NodeState::UpstreamFailed,
];

// ---------------------------------------------------------------------------
// Node transition table.

/// The documented node table, one row per concrete case. Events are written
/// as labels (see [`label`]) so payload variants can be listed explicitly.
fn node_table() -> Vec<(NodeState, String, NodeState, NodeEffect)> {
    use NodeEffect as E;
    use NodeState as S;
    let mut rows: Vec<(NodeState, String, NodeState, NodeEffect)> = vec![
        (S::Pending, "ready".into(), S::Ready, E::Enqueue),
        (S::Pending, "skip".into(), S::Skipped, E::ReleaseDownstream),
        (
            S::Pending,
            "upstream_failed".into(),
            S::UpstreamFailed,
            E::ReleaseDownstream,
        ),
        (
            S::Ready,
            "start(attempts+1)".into(),
            S::Running,
            E::RunAttempt,
        ),
        (
            S::Pending,
            "start(attempts+1)".into(),
            S::Running,
            E::RunAttempt,
        ),
        (
            S::Running,
            "succeed".into(),
            S::Succeeded,
            E::ReleaseDownstream,
        ),
        (
            S::Running,
            "fail(timeout, no retry)".into(),
            S::TimedOut,
            E::ReleaseDownstream,
        ),
        (
            S::Running,
            "fail(cancelled, no retry)".into(),
            S::Cancelled,
            E::ReleaseDownstream,
        ),
        (S::RetryWaiting, "retry_due".into(), S::Ready, E::Enqueue),
        (
            S::Succeeded,
            "compensate".into(),
            S::Compensating,
            E::RunCompensation,
        ),
        (
            S::Compensating,
            "compensated".into(),
            S::Compensated,
            E::ReleaseUpstream,
        ),
        (
            S::Compensating,
            "compensation_retry".into(),
            S::Compensating,
            E::RunCompensation,
        ),
        (
            S::Pending,
            "carry_over".into(),
            S::Succeeded,
            E::ReleaseDownstream,
        ),
        (
            S::Compensating,
            "compensation_failed".into(),
            S::DeadLettered,
            E::DeadLetter,
        ),
        (S::Failed, "requeue".into(), S::Ready, E::Enqueue),
        (S::TimedOut, "requeue".into(), S::Ready, E::Enqueue),
        (S::Skipped, "reset".into(), S::Pending, E::None),
        (S::UpstreamFailed, "reset".into(), S::Pending, E::None),
    ];
    for class in FailureClass::ALL {
        if class != FailureClass::Cancelled {
            rows.push((
                S::Running,
                format!("fail({class}, retry)"),
                S::RetryWaiting,
                E::ScheduleRetry(DELAY),
            ));
        }
        if !matches!(class, FailureClass::Timeout | FailureClass::Cancelled) {
            rows.push((
                S::Running,
                format!("fail({class}, no retry)"),
                S::Failed,
                E::ReleaseDownstream,
            ));
        }
    }
    for from in [S::Pending, S::Ready, S::RetryWaiting] {
        rows.push((from, "cancel".into(), S::Cancelled, E::ReleaseDownstream));
    }
    rows
}

fn label(machine: NodeMachine, event: NodeEvent) -> String {
    match event {
        NodeEvent::Start { attempt } if u64::from(attempt) == u64::from(machine.attempts) + 1 => {
            "start(attempts+1)".into()
        }
        NodeEvent::Start { .. } => "start(other attempt)".into(),
        NodeEvent::Fail {
            class,
            retry_in: Some(_),
        } => format!("fail({class}, retry)"),
        NodeEvent::Fail {
            class,
            retry_in: None,
        } => format!("fail({class}, no retry)"),
        other => other.name().into(),
    }
}

/// Every event kind with representative payloads, for a node that has made
/// `attempts` attempts.
fn node_events(attempts: u32) -> Vec<NodeEvent> {
    let mut events = vec![
        NodeEvent::Ready,
        NodeEvent::Skip,
        NodeEvent::UpstreamFailed,
        NodeEvent::Start { attempt: attempts },
        NodeEvent::Start {
            attempt: attempts.wrapping_add(2),
        },
        NodeEvent::Start { attempt: 0 },
        NodeEvent::Start { attempt: u32::MAX },
        NodeEvent::Succeed,
        NodeEvent::RetryDue,
        NodeEvent::Cancel,
        NodeEvent::Compensate,
        NodeEvent::CompensationRetry,
        NodeEvent::Compensated,
        NodeEvent::CompensationFailed,
        NodeEvent::CarryOver,
        NodeEvent::Requeue,
        NodeEvent::Reset,
    ];
    if let Some(next) = attempts.checked_add(1) {
        events.push(NodeEvent::Start { attempt: next });
    }
    for class in FailureClass::ALL {
        events.push(NodeEvent::Fail {
            class,
            retry_in: None,
        });
        events.push(NodeEvent::Fail {
            class,
            retry_in: Some(DELAY),
        });
    }
    events
}

#[test]
fn every_node_state_and_event_matches_the_table() {
    let table = node_table();
    assert_eq!(table.len(), 30, "the documented table expands to 30 rows");
    let mut used = BTreeSet::new();
    let mut accepted = 0;
    for state in NodeState::ALL {
        for attempts in [0, 1, 3, u32::MAX - 1, u32::MAX] {
            let machine = NodeMachine { state, attempts };
            for event in node_events(attempts) {
                let label = label(machine, event);
                let result = machine.apply(event);
                let row = table
                    .iter()
                    .position(|(from, ev, _, _)| *from == state && *ev == label);
                match row {
                    Some(i) => {
                        used.insert(i);
                        accepted += 1;
                        let (_, _, to, effect) = table[i];
                        let attempts = if to == NodeState::Running {
                            attempts + 1
                        } else {
                            attempts
                        };
                        assert_eq!(
                            result,
                            Ok((
                                NodeMachine {
                                    state: to,
                                    attempts
                                },
                                effect
                            )),
                            "{state} + {label} (attempts {})",
                            machine.attempts
                        );
                    }
                    None => assert_eq!(
                        result,
                        Err(InvalidTransition {
                            entity: "node",
                            from: state.as_str(),
                            event: event.name(),
                        }),
                        "{state} + {label} (attempts {}) must be rejected",
                        machine.attempts
                    ),
                }
            }
        }
    }
    assert_eq!(used.len(), table.len(), "every row is exercised");
    assert!(accepted > 0);
}

#[test]
fn start_carries_the_attempt_number_and_retry_carries_its_delay() {
    let ready = NodeMachine {
        state: NodeState::Ready,
        attempts: 4,
    };
    let (running, fx) = ready.apply(NodeEvent::Start { attempt: 5 }).unwrap();
    assert_eq!(running.attempts, 5);
    assert_eq!(fx, NodeEffect::RunAttempt);
    for delay in [Duration::ZERO, Duration::from_millis(1), Duration::MAX] {
        let (next, fx) = running
            .apply(NodeEvent::Fail {
                class: FailureClass::Transient,
                retry_in: Some(delay),
            })
            .unwrap();
        assert_eq!(next.state, NodeState::RetryWaiting);
        assert_eq!(next.attempts, 5);
        assert_eq!(fx, NodeEffect::ScheduleRetry(delay));
    }
}

#[test]
fn a_node_runs_retries_succeeds_and_is_compensated() {
    let steps = [
        (NodeEvent::Ready, NodeState::Ready, 0),
        (NodeEvent::Start { attempt: 1 }, NodeState::Running, 1),
        (
            NodeEvent::Fail {
                class: FailureClass::Transient,
                retry_in: Some(DELAY),
            },
            NodeState::RetryWaiting,
            1,
        ),
        (NodeEvent::RetryDue, NodeState::Ready, 1),
        (NodeEvent::Start { attempt: 2 }, NodeState::Running, 2),
        (NodeEvent::Succeed, NodeState::Succeeded, 2),
        (NodeEvent::Compensate, NodeState::Compensating, 2),
        (NodeEvent::Compensated, NodeState::Compensated, 2),
    ];
    let mut node = NodeMachine::default();
    assert_eq!(
        node,
        NodeMachine {
            state: NodeState::Pending,
            attempts: 0
        }
    );
    for (event, state, attempts) in steps {
        node = node.apply(event).unwrap().0;
        assert_eq!((node.state, node.attempts), (state, attempts), "{event:?}");
    }
}

#[test]
fn invalid_transitions_explain_themselves() {
    let err = NodeMachine {
        state: NodeState::Succeeded,
        attempts: 1,
    }
    .apply(NodeEvent::Start { attempt: 2 })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid node transition: start is not allowed in state succeeded"
    );
    let err = JobState::Succeeded.apply(JobEvent::Cancel).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid job transition: cancel is not allowed in state succeeded"
    );
}

// ---------------------------------------------------------------------------
// Job transition table.

fn job_table() -> Vec<(JobState, JobEvent, JobState, JobEffect)> {
    use JobEffect as E;
    use JobEvent as Ev;
    use JobState as S;
    vec![
        (S::Pending, Ev::Enqueue, S::Queued, E::None),
        (S::Queued, Ev::Start, S::Running, E::Dispatch),
        (S::Queued, Ev::RecoveryStarted, S::Recovering, E::None),
        (S::Running, Ev::RecoveryStarted, S::Recovering, E::None),
        (S::Cancelling, Ev::RecoveryStarted, S::Cancelling, E::None),
        (S::Recovering, Ev::RecoveryFinished, S::Running, E::Dispatch),
        (S::Cancelling, Ev::RecoveryFinished, S::Cancelling, E::None),
        (S::Pending, Ev::Cancel, S::Cancelled, E::Finished),
        (S::Queued, Ev::Cancel, S::Cancelled, E::Finished),
        (S::Running, Ev::Cancel, S::Cancelling, E::StopRunning),
        (S::Recovering, Ev::Cancel, S::Cancelling, E::StopRunning),
        (S::Cancelling, Ev::Cancel, S::Cancelling, E::None),
        (S::Queued, Ev::TimeOut, S::Cancelling, E::StopRunning),
        (S::Running, Ev::TimeOut, S::Cancelling, E::StopRunning),
        (S::Recovering, Ev::TimeOut, S::Cancelling, E::StopRunning),
        (
            S::Running,
            Ev::Finish(S::Succeeded),
            S::Succeeded,
            E::Finished,
        ),
        (S::Running, Ev::Finish(S::Failed), S::Failed, E::Finished),
        (
            S::Cancelling,
            Ev::Finish(S::Cancelled),
            S::Cancelled,
            E::Finished,
        ),
        (
            S::Cancelling,
            Ev::Finish(S::TimedOut),
            S::TimedOut,
            E::Finished,
        ),
        (S::Running, Ev::Rollback, S::RollingBack, E::RollBack),
        (S::Succeeded, Ev::Rollback, S::RollingBack, E::RollBack),
        (S::Failed, Ev::Rollback, S::RollingBack, E::RollBack),
        (S::Cancelled, Ev::Rollback, S::RollingBack, E::RollBack),
        (S::TimedOut, Ev::Rollback, S::RollingBack, E::RollBack),
        (S::RollingBack, Ev::RecoveryStarted, S::RollingBack, E::None),
        (
            S::RollingBack,
            Ev::RecoveryFinished,
            S::RollingBack,
            E::RollBack,
        ),
        (
            S::RollingBack,
            Ev::Finish(S::RolledBack),
            S::RolledBack,
            E::Finished,
        ),
        (
            S::RollingBack,
            Ev::Finish(S::RollbackIncomplete),
            S::RollbackIncomplete,
            E::Finished,
        ),
        (S::Failed, Ev::Reopen, S::Running, E::Dispatch),
    ]
}

fn job_events() -> Vec<JobEvent> {
    let mut events = vec![
        JobEvent::Enqueue,
        JobEvent::Start,
        JobEvent::RecoveryStarted,
        JobEvent::RecoveryFinished,
        JobEvent::Cancel,
        JobEvent::TimeOut,
        JobEvent::Rollback,
        JobEvent::Reopen,
    ];
    events.extend(JobState::ALL.map(JobEvent::Finish));
    events
}

#[test]
fn every_job_state_and_event_matches_the_table() {
    let table = job_table();
    let events = job_events();
    assert_eq!(events.len(), 20);
    let mut used = BTreeSet::new();
    for state in JobState::ALL {
        for &event in &events {
            let result = state.apply(event);
            match table
                .iter()
                .position(|&(from, ev, _, _)| from == state && ev == event)
            {
                Some(i) => {
                    used.insert(i);
                    let (_, _, to, effect) = table[i];
                    assert_eq!(result, Ok((to, effect)), "{state} + {event:?}");
                }
                None => assert_eq!(
                    result,
                    Err(InvalidTransition {
                        entity: "job",
                        from: state.as_str(),
                        event: event.name(),
                    }),
                    "{state} + {event:?} must be rejected"
                ),
            }
        }
    }
    assert_eq!(used.len(), table.len(), "every row is exercised");
}

#[test]
fn terminal_job_states_are_left_only_by_a_rollback_request_or_a_reopen() {
    for state in JobState::ALL {
        let leaves_otherwise = job_events()
            .into_iter()
            .filter(|&e| e != JobEvent::Rollback && e != JobEvent::Reopen)
            .any(|e| state.apply(e).is_ok());
        assert_eq!(state.is_terminal(), !leaves_otherwise, "{state}");
    }
    // A finished rollback is final; any other finished job can be rolled back.
    for state in [JobState::RolledBack, JobState::RollbackIncomplete] {
        assert!(state.apply(JobEvent::Rollback).is_err(), "{state}");
    }
}

// ---------------------------------------------------------------------------
// Serde: events are journaled, so each must round-trip under its name.

#[test]
fn events_round_trip_through_json_under_their_names() {
    let mut node_events = node_events(2);
    node_events.push(NodeEvent::Fail {
        class: FailureClass::Permanent,
        retry_in: Some(Duration::new(3, 5)),
    });
    for event in node_events {
        let json = serde_json::to_value(event).unwrap();
        assert_eq!(json["event"], event.name(), "{json}");
        assert_eq!(serde_json::from_value::<NodeEvent>(json).unwrap(), event);
    }
    for event in job_events() {
        let json = serde_json::to_value(event).unwrap();
        assert_eq!(json["event"], event.name(), "{json}");
        assert_eq!(serde_json::from_value::<JobEvent>(json).unwrap(), event);
    }
    for state in NodeState::ALL {
        assert_eq!(
            serde_json::to_value(state).unwrap(),
            serde_json::json!(state.as_str())
        );
    }
    for state in JobState::ALL {
        assert_eq!(
            serde_json::to_value(state).unwrap(),
            serde_json::json!(state.as_str())
        );
    }
}

// ---------------------------------------------------------------------------
// Trigger rules.

fn up(total: u32, succeeded: u32, failed: u32, skipped: u32) -> Upstream {
    Upstream {
        total,
        succeeded,
        failed,
        skipped,
    }
}

#[test]
fn trigger_rules_follow_airflow() {
    use TriggerDecision::{Run, Skip, UpstreamFailed as UpFailed, Wait};
    use TriggerRule as R;
    let cases = [
        // all_success: a failure decides at once, and wins over a skip.
        // (Whether a skip may decide before every upstream is done is left
        // to the monotonicity properties below.)
        (R::AllSuccess, up(3, 0, 0, 0), Wait),
        (R::AllSuccess, up(3, 2, 0, 0), Wait),
        (R::AllSuccess, up(3, 3, 0, 0), Run),
        (R::AllSuccess, up(3, 1, 1, 0), UpFailed),
        (R::AllSuccess, up(2, 1, 0, 1), Skip),
        (R::AllSuccess, up(3, 0, 1, 1), UpFailed),
        // all_failed: any success or skip skips at once.
        (R::AllFailed, up(2, 0, 1, 0), Wait),
        (R::AllFailed, up(2, 0, 2, 0), Run),
        (R::AllFailed, up(2, 1, 0, 0), Skip),
        (R::AllFailed, up(3, 0, 1, 1), Skip),
        // all_done: waits for everything, whatever the outcomes.
        (R::AllDone, up(3, 1, 1, 0), Wait),
        (R::AllDone, up(3, 1, 1, 1), Run),
        (R::AllDone, up(2, 0, 2, 0), Run),
        (R::AllDone, up(2, 0, 0, 2), Run),
        // one_success: runs on the first success; all skipped -> skipped;
        // done without a success -> upstream_failed.
        (R::OneSuccess, up(3, 1, 0, 0), Run),
        (R::OneSuccess, up(3, 0, 2, 0), Wait),
        (R::OneSuccess, up(3, 0, 2, 1), UpFailed),
        (R::OneSuccess, up(2, 0, 1, 1), UpFailed),
        (R::OneSuccess, up(2, 0, 0, 2), Skip),
        // one_failed: runs on the first failure; done without one -> skipped.
        (R::OneFailed, up(3, 0, 1, 0), Run),
        (R::OneFailed, up(3, 2, 0, 0), Wait),
        (R::OneFailed, up(3, 2, 0, 1), Skip),
        (R::OneFailed, up(2, 0, 0, 2), Skip),
        // none_failed: skips are fine, a failure decides at once.
        (R::NoneFailed, up(3, 1, 0, 1), Wait),
        (R::NoneFailed, up(3, 2, 0, 1), Run),
        (R::NoneFailed, up(2, 0, 0, 2), Run),
        (R::NoneFailed, up(3, 0, 1, 0), UpFailed),
        // none_failed_min_one_success: as none_failed, but all skipped -> skipped.
        (R::NoneFailedMinOneSuccess, up(2, 1, 0, 1), Run),
        (R::NoneFailedMinOneSuccess, up(2, 0, 0, 2), Skip),
        (R::NoneFailedMinOneSuccess, up(3, 1, 1, 0), UpFailed),
        (R::NoneFailedMinOneSuccess, up(3, 0, 0, 2), Wait),
        (R::NoneFailedMinOneSuccess, up(3, 1, 0, 0), Wait),
        // none_skipped: failures are fine, a skip decides at once.
        (R::NoneSkipped, up(3, 0, 0, 1), Skip),
        (R::NoneSkipped, up(3, 0, 1, 1), Skip),
        (R::NoneSkipped, up(2, 1, 1, 0), Run),
        (R::NoneSkipped, up(3, 1, 1, 0), Wait),
        // always: runs at once.
        (R::Always, up(3, 0, 0, 0), Run),
        (R::Always, up(3, 0, 3, 0), Run),
        (R::Always, up(3, 0, 0, 3), Run),
    ];
    for (rule, upstream, expected) in cases {
        assert_eq!(rule.decide(upstream), expected, "{rule} with {upstream:?}");
    }
    // Every rule appears in the cases above.
    for rule in RULES {
        assert!(cases.iter().any(|&(r, _, _)| r == rule), "{rule}");
    }
}

/// BUG (state.rs, `TriggerRule::decide`): in Airflow a task without upstream
/// tasks always passes its trigger rule. Here a root node (`total == 0`)
/// with `one_success`, `one_failed` or `none_failed_min_one_success` is
/// skipped, so such a node at the top of a DAG silently never runs.
#[test]
fn a_node_without_upstream_always_runs() {
    for rule in RULES {
        assert_eq!(
            rule.decide(Upstream::default()),
            TriggerDecision::Run,
            "{rule} with no upstream nodes"
        );
    }
}

#[test]
fn upstream_outcomes_are_counted_by_kind() {
    use NodeState as S;
    let mut counts = Upstream {
        total: 10,
        ..Upstream::default()
    };
    for state in [S::Succeeded, S::Compensating, S::Compensated] {
        counts.record(state);
    }
    counts.record(S::Skipped);
    for state in [
        S::Failed,
        S::TimedOut,
        S::DeadLettered,
        S::Cancelled,
        S::UpstreamFailed,
    ] {
        counts.record(state);
        assert!(state.is_failure(), "{state}");
    }
    assert_eq!(counts, up(10, 3, 5, 1));
    assert_eq!(counts.done(), 9);
}

/// Airflow's outcome for a node whose `total >= 1` upstream nodes are all
/// done, written from the rules' documentation.
fn final_decision(rule: TriggerRule, s: u32, f: u32, k: u32) -> TriggerDecision {
    use TriggerDecision::{Run, Skip, UpstreamFailed};
    match rule {
        TriggerRule::AllSuccess if f > 0 => UpstreamFailed,
        TriggerRule::AllSuccess if k > 0 => Skip,
        TriggerRule::AllSuccess => Run,
        TriggerRule::AllFailed if s > 0 || k > 0 => Skip,
        TriggerRule::AllFailed => Run,
        TriggerRule::AllDone | TriggerRule::Always => Run,
        TriggerRule::OneSuccess if s > 0 => Run,
        TriggerRule::OneSuccess if f > 0 => UpstreamFailed,
        TriggerRule::OneSuccess => Skip,
        TriggerRule::OneFailed if f > 0 => Run,
        TriggerRule::OneFailed => Skip,
        TriggerRule::NoneFailed if f > 0 => UpstreamFailed,
        TriggerRule::NoneFailed => Run,
        TriggerRule::NoneFailedMinOneSuccess if f > 0 => UpstreamFailed,
        TriggerRule::NoneFailedMinOneSuccess if s > 0 => Run,
        TriggerRule::NoneFailedMinOneSuccess => Skip,
        TriggerRule::NoneSkipped if k > 0 => Skip,
        TriggerRule::NoneSkipped => Run,
    }
}

/// Exhaustively, for up to six upstream nodes: `decide` never returns what
/// the outcomes still to come could change, returns the final decision once
/// every upstream is done, and releases a node that cannot run as soon as
/// that is certain ("decides as early as the outcomes allow").
///
/// BUG (state.rs, `TriggerRule::decide`): `all_success` returns `Skip` as
/// soon as one upstream is skipped, although a later failure turns the
/// decision into `UpstreamFailed` (which also wins when both are already
/// known). The decision then depends on arrival order, against the doc's
/// promise that it never changes.
#[test]
fn trigger_rules_decide_as_early_as_possible_and_never_wrongly() {
    let mut wrong = Vec::new();
    for rule in RULES {
        for total in 1..=6u32 {
            for s in 0..=total {
                for f in 0..=total - s {
                    for k in 0..=total - s - f {
                        let rest = total - s - f - k;
                        let mut finals = Vec::new();
                        for ds in 0..=rest {
                            for df in 0..=rest - ds {
                                let dk = rest - ds - df;
                                let d = final_decision(rule, s + ds, f + df, k + dk);
                                if !finals.contains(&d) {
                                    finals.push(d);
                                }
                            }
                        }
                        let got = rule.decide(up(total, s, f, k));
                        let determined = match finals[..] {
                            [only] => Some(only),
                            _ => None,
                        };
                        let ok = match (got, determined) {
                            // Never decide what later outcomes could change.
                            (TriggerDecision::Wait, None) => true,
                            (_, None) => false,
                            // A node that will not run is released as soon
                            // as that is certain; `one_*` and `always` run
                            // as soon as they can; the others run when every
                            // upstream is done.
                            (TriggerDecision::Wait, Some(d)) => {
                                d == TriggerDecision::Run
                                    && rest > 0
                                    && !matches!(
                                        rule,
                                        TriggerRule::OneSuccess
                                            | TriggerRule::OneFailed
                                            | TriggerRule::Always
                                    )
                            }
                            (got, Some(d)) => got == d,
                        };
                        if !ok {
                            let expected = determined.unwrap_or(TriggerDecision::Wait);
                            wrong.push(format!(
                                "{rule} with {s} succeeded, {f} failed, {k} skipped of {total}: \
                                 got {got:?}, expected {expected:?} (possible outcomes {finals:?})"
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong decisions:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

fn finished_node_state() -> impl Strategy<Value = NodeState> {
    prop::sample::select(vec![
        NodeState::Succeeded,
        NodeState::Compensated,
        NodeState::Skipped,
        NodeState::Failed,
        NodeState::TimedOut,
        NodeState::DeadLettered,
        NodeState::Cancelled,
        NodeState::UpstreamFailed,
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Outcomes arrive one by one in any order: once a rule decides, its
    /// decision never changes, and with every upstream done it has decided.
    /// (Fails on `all_success` with `[Skipped, Failed]`: see above.)
    #[test]
    fn trigger_decisions_are_monotonic(outcomes in prop::collection::vec(finished_node_state(), 0..8)) {
        let total = outcomes.len() as u32;
        for rule in RULES {
            let mut counts = Upstream { total, ..Upstream::default() };
            let mut decided = None;
            let first = rule.decide(counts);
            if first != TriggerDecision::Wait {
                decided = Some(first);
            }
            for &state in &outcomes {
                counts.record(state);
                let now = rule.decide(counts);
                if let Some(before) = decided {
                    prop_assert_eq!(now, before, "{} changed its mind after {:?}", rule, counts);
                } else if now != TriggerDecision::Wait {
                    decided = Some(now);
                }
            }
            prop_assert_eq!(counts.done(), total);
            prop_assert_ne!(rule.decide(counts), TriggerDecision::Wait, "{} still waits with all done", rule);
            if rule == TriggerRule::Always {
                prop_assert_eq!(first, TriggerDecision::Run);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Random event sequences.

/// A node event; `Start` is relative to the machine's attempt count so that
/// random sequences actually get somewhere.
#[derive(Clone, Copy, Debug)]
enum NodeStep {
    Event(NodeEvent),
    /// `Start { attempt: attempts + offset }` (offset 1 is the legal one).
    Start(i64),
}

fn node_step() -> impl Strategy<Value = NodeStep> {
    let class = prop::sample::select(FailureClass::ALL.to_vec());
    let retry = prop::option::of((0u64..10_000).prop_map(Duration::from_millis));
    prop_oneof![
        3 => prop::sample::select(vec![
            NodeEvent::Ready,
            NodeEvent::Skip,
            NodeEvent::UpstreamFailed,
            NodeEvent::Succeed,
            NodeEvent::RetryDue,
            NodeEvent::Cancel,
            NodeEvent::Compensate,
            NodeEvent::CompensationRetry,
            NodeEvent::Compensated,
            NodeEvent::CompensationFailed,
            NodeEvent::CarryOver,
            NodeEvent::Requeue,
            NodeEvent::Reset,
        ])
        .prop_map(NodeStep::Event),
        1 => (class, retry).prop_map(|(class, retry_in)| NodeStep::Event(NodeEvent::Fail { class, retry_in })),
        2 => prop_oneof![3 => Just(1i64), 1 => -2i64..4].prop_map(NodeStep::Start),
    ]
}

fn job_event() -> impl Strategy<Value = JobEvent> {
    prop::sample::select(job_events())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn node_sequences_keep_the_invariants(
        start_state in prop::sample::select(NodeState::ALL.to_vec()),
        start_attempts in 0u32..4,
        from_default in any::<bool>(),
        steps in prop::collection::vec(node_step(), 0..48),
    ) {
        let mut node = if from_default {
            NodeMachine::default()
        } else {
            NodeMachine { state: start_state, attempts: start_attempts }
        };
        let mut succeeded = node.state == NodeState::Succeeded;
        for step in steps {
            let event = match step {
                NodeStep::Event(e) => e,
                NodeStep::Start(offset) => NodeEvent::Start {
                    attempt: u32::try_from(i64::from(node.attempts) + offset).unwrap_or(0),
                },
            };
            let before = node;
            match before.apply(event) {
                Ok((after, effect)) => {
                    prop_assert!(
                        !NODE_ABSORBING.contains(&before.state),
                        "{} left absorbing state {} for {}", event.name(), before.state, after.state
                    );
                    if NODE_LEFT_BY_REQUEUE.contains(&before.state) {
                        prop_assert!(
                            matches!(event, NodeEvent::Requeue | NodeEvent::Reset),
                            "{} left {} without a requeue", event.name(), before.state
                        );
                    }
                    if before.state == NodeState::Succeeded {
                        prop_assert_eq!(after.state, NodeState::Compensating);
                    }
                    prop_assert!(after.attempts >= before.attempts, "attempts decreased");
                    if after.state == NodeState::Running {
                        // Started from ready, or straight from pending
                        // (readiness implied).
                        prop_assert!(matches!(before.state, NodeState::Ready | NodeState::Pending));
                        prop_assert_eq!(event, NodeEvent::Start { attempt: before.attempts + 1 });
                        prop_assert_eq!(after.attempts, before.attempts + 1);
                        // A node that succeeded is never run again.
                        prop_assert!(!succeeded, "a succeeded node was started again");
                    } else {
                        prop_assert_eq!(after.attempts, before.attempts);
                    }
                    // Effects match the transition.
                    prop_assert_eq!(
                        effect == NodeEffect::ReleaseDownstream,
                        !before.state.is_finished() && after.state.is_finished()
                    );
                    prop_assert_eq!(effect == NodeEffect::RunAttempt, after.state == NodeState::Running);
                    prop_assert_eq!(effect == NodeEffect::Enqueue, after.state == NodeState::Ready);
                    if let NodeEffect::ScheduleRetry(d) = effect {
                        prop_assert_eq!(after.state, NodeState::RetryWaiting);
                        let carried = matches!(event, NodeEvent::Fail { retry_in: Some(x), .. } if x == d);
                        prop_assert!(carried, "the retry delay comes from the event");
                    } else {
                        prop_assert_ne!(after.state, NodeState::RetryWaiting);
                    }
                    succeeded |= after.state == NodeState::Succeeded;
                    node = after;
                }
                Err(err) => {
                    prop_assert_eq!(err.entity, "node");
                    prop_assert_eq!(err.from, before.state.as_str());
                    prop_assert_eq!(err.event, event.name());
                }
            }
        }
    }

    #[test]
    fn job_sequences_keep_the_invariants(
        start in prop::sample::select(JobState::ALL.to_vec()),
        events in prop::collection::vec(job_event(), 0..32),
    ) {
        let mut job = start;
        let mut cancelling = job == JobState::Cancelling;
        for event in events {
            let before = job;
            match before.apply(event) {
                Ok((after, effect)) => {
                    // Only an explicit rollback request, or a requeue of a
                    // failed job's dead letter, reopens a finished job.
                    prop_assert!(
                        !before.is_terminal()
                            || (event == JobEvent::Rollback && after == JobState::RollingBack)
                            || (event == JobEvent::Reopen && before == JobState::Failed && after == JobState::Running),
                        "{} left terminal state {}", event.name(), before
                    );
                    prop_assert_ne!(after, JobState::Pending, "nothing leads back to pending");
                    prop_assert_eq!(effect == JobEffect::Finished, after.is_terminal());
                    prop_assert_eq!(effect == JobEffect::Dispatch, after == JobState::Running);
                    if effect == JobEffect::StopRunning {
                        prop_assert_eq!(after, JobState::Cancelling);
                        prop_assert_ne!(before, JobState::Cancelling);
                    }
                    if let JobEvent::Finish(s) = event {
                        prop_assert_eq!(after, s);
                    }
                    // Once cancellation starts it is never undone (a rollback
                    // of the cancelled job is a new chapter).
                    if event == JobEvent::Rollback {
                        cancelling = false;
                    }
                    if cancelling {
                        prop_assert!(
                            matches!(after, JobState::Cancelling | JobState::Cancelled | JobState::TimedOut),
                            "cancelling job went to {}", after
                        );
                    }
                    cancelling |= after == JobState::Cancelling;
                    job = after;
                }
                Err(err) => {
                    prop_assert_eq!(err.entity, "job");
                    prop_assert_eq!(err.from, before.as_str());
                    prop_assert_eq!(err.event, event.name());
                }
            }
        }
    }
}
