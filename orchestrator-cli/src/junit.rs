//! JUnit XML reports, the way cargo-nextest writes them (with its own
//! `quick-junit` crate): one `<testsuite>` per job, one `<testcase>` per
//! node.
//!
//! | node | testcase |
//! | --- | --- |
//! | succeeded on its first attempt | passes |
//! | succeeded after failed attempts (flaky) | passes, with a `<flakyFailure>` per failed attempt |
//! | failed, timed out, dead-lettered | `<failure>` for its first failed attempt, `<rerunFailure>` for each later one |
//! | cancelled while running | `<error type="cancelled">` |
//! | skipped, upstream failed, or never started | `<skipped>` with the reason |
//! | quarantined and failed or timed out | `<skipped type="quarantined">` with the failure as its message (JUnit consumers show it, none counts it as a failure) |
//!
//! Every quarantined testcase also carries the property `quarantined=true`,
//! and a flaky one (failed, then passed) `flaky=true`.
//!
//! A node's attempts come from the job's journal, which records every
//! attempt's start and failure. The `process` runner's output
//! (`stdout`/`stderr`) becomes `<system-out>`/`<system-err>`; for a failed
//! attempt, the output tails its failure message carries are split back
//! out the same way.

use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use orchestrator_core::journal::Record;
use orchestrator_core::{Event, Failure, JobStatus, NodeState, Timestamp};
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestRerun, TestSuite};
use serde_json::Value;

use crate::summary::{failure_summary, split_output};

/// One attempt of a node, from the journal.
#[derive(Clone, Debug, Default, PartialEq)]
struct Attempt {
    number: u32,
    started: Option<Timestamp>,
    ended: Option<Timestamp>,
    failure: Option<Failure>,
}

impl Attempt {
    fn time(&self) -> Option<Duration> {
        Some(Duration::from_millis(
            self.ended?.saturating_since(self.started?),
        ))
    }
}

/// Every attempt of every node, by node index, from a job's journal.
fn attempts(nodes: usize, records: &[Record]) -> Vec<Vec<Attempt>> {
    let mut out = vec![Vec::<Attempt>::new(); nodes];
    let find = |list: &mut Vec<Attempt>, number: u32| -> Option<usize> {
        list.iter().rposition(|a| a.number == number)
    };
    for r in records {
        match &r.event {
            Event::NodeStarted { node, attempt } => {
                if let Some(list) = out.get_mut(*node as usize) {
                    list.push(Attempt {
                        number: *attempt,
                        started: Some(r.at),
                        ..Attempt::default()
                    });
                }
            }
            Event::NodeSucceeded { node, attempt, .. } => {
                if let Some(list) = out.get_mut(*node as usize) {
                    if let Some(i) = find(list, *attempt) {
                        list[i].ended = Some(r.at);
                    }
                }
            }
            Event::NodeFailed {
                node,
                attempt,
                failure,
                ..
            } => {
                if let Some(list) = out.get_mut(*node as usize) {
                    let i = find(list, *attempt).unwrap_or_else(|| {
                        list.push(Attempt {
                            number: *attempt,
                            ..Attempt::default()
                        });
                        list.len() - 1
                    });
                    list[i].ended = Some(r.at);
                    list[i].failure = Some(Failure::clone(failure));
                }
            }
            _ => {}
        }
    }
    out
}

fn datetime(t: Timestamp) -> Option<DateTime<FixedOffset>> {
    let ms = i64::try_from(t.as_millis()).ok()?;
    Some(DateTime::from_timestamp_millis(ms)?.fixed_offset())
}

/// A flaky or re-run attempt.
fn rerun(attempt: &Attempt, failure: &Failure) -> TestRerun {
    let kind = non_success_kind(failure);
    let mut rerun = TestRerun::new(kind);
    let (head, stdout, stderr) = split_output(&failure.message);
    rerun
        .set_type(failure.class.as_str())
        .set_message(format!(
            "attempt {}: {}",
            attempt.number,
            failure_summary(head, 500)
        ))
        .set_description(head);
    if let Some(t) = attempt.started.and_then(datetime) {
        rerun.set_timestamp(t);
    }
    if let Some(d) = attempt.time() {
        rerun.set_time(d);
    }
    if let Some(s) = stdout {
        rerun.set_system_out(s);
    }
    if let Some(s) = stderr {
        rerun.set_system_err(s);
    }
    rerun
}

/// Failures of the test itself are `failure`s; the machinery failing
/// around it (lost worker, cancellation) is an `error`.
fn non_success_kind(failure: &Failure) -> NonSuccessKind {
    use orchestrator_core::FailureClass as C;
    match failure.class {
        C::Infrastructure | C::Cancelled => NonSuccessKind::Error,
        _ => NonSuccessKind::Failure,
    }
}

/// The `<testsuite>` of one finished (or stopped) job.
pub(crate) fn test_suite(status: &JobStatus, records: &[Record]) -> TestSuite {
    let history = attempts(status.nodes.len(), records);
    let mut suite = TestSuite::new(status.name.as_str());
    suite
        .add_property(("job_id", status.id.as_str()))
        .add_property(("state", status.state.as_str()))
        .add_property(("owner", status.owner.as_str()));
    if let Some(t) = status
        .started_at
        .or(Some(status.created_at))
        .and_then(datetime)
    {
        suite.set_timestamp(t);
    }
    if let (Some(start), Some(end)) = (status.started_at, status.finished_at) {
        suite.set_time(Duration::from_millis(end.saturating_since(start)));
    }
    for (node, tries) in status.nodes.iter().zip(&history) {
        let failed: Vec<(&Attempt, &Failure)> = tries
            .iter()
            .filter_map(|a| a.failure.as_ref().map(|f| (a, f)))
            .collect();
        let mut main: Option<&Attempt> = tries.last();
        let status_of_case = match node.state {
            NodeState::Failed | NodeState::TimedOut if node.quarantined => {
                // A quarantined failure does not count: reported as skipped
                // (what every JUnit consumer understands), failure included.
                let mut s = TestCaseStatus::skipped();
                let why = failed.last().map_or_else(
                    || format!("quarantined: {}", node.state),
                    |(_, f)| {
                        let (head, _, _) = split_output(&f.message);
                        format!(
                            "quarantined: {} ({}: {})",
                            node.state,
                            f.class,
                            failure_summary(head, 400)
                        )
                    },
                );
                s.set_type("quarantined").set_message(why);
                s
            }
            NodeState::Succeeded | NodeState::Compensating | NodeState::Compensated => {
                let mut s = TestCaseStatus::success();
                s.add_reruns(failed.iter().map(|(a, f)| rerun(a, f)));
                s
            }
            NodeState::Failed
            | NodeState::TimedOut
            | NodeState::DeadLettered
            | NodeState::Cancelled
                if !failed.is_empty() =>
            {
                // As nextest does: the first failure is the testcase's, the
                // later attempts are its reruns.
                let (first, failure) = failed[0];
                main = Some(first);
                let mut s = TestCaseStatus::non_success(non_success_kind(failure));
                let (head, _, _) = split_output(&failure.message);
                s.set_type(failure.class.as_str())
                    .set_message(failure_summary(head, 500))
                    .set_description(head);
                s.add_reruns(failed[1..].iter().map(|(a, f)| rerun(a, f)));
                s
            }
            state => {
                let mut s = TestCaseStatus::skipped();
                let why = match state {
                    NodeState::Skipped => "skipped: its trigger rule said not to run",
                    NodeState::UpstreamFailed => "upstream_failed: a node it depends on failed",
                    NodeState::Cancelled => "cancelled before it ran",
                    _ => "not run: the job ended before this node finished",
                };
                s.set_type(state.as_str()).set_message(why);
                s
            }
        };
        let mut case = TestCase::new(node.id.as_str(), status_of_case);
        case.set_classname(status.name.as_str());
        if node.quarantined {
            case.add_property(("quarantined", "true"));
        }
        if node.flaky {
            case.add_property(("flaky", "true"));
        }
        if let Some(d) = node.duration_ms {
            case.set_time(Duration::from_millis(d));
        }
        if let Some(t) = node.started_at.and_then(datetime) {
            case.set_timestamp(t);
        }
        // Captured output: the successful attempt's, else the output tails
        // of the failure the testcase reports.
        let out = |key: &str| {
            node.output
                .get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let tails = main
            .and_then(|a| a.failure.as_ref())
            .filter(|_| !matches!(node.state, NodeState::Succeeded))
            .map(|f| split_output(&f.message));
        if let Some(stdout) = out("stdout").or(tails.and_then(|t| t.1)) {
            case.set_system_out(stdout);
        }
        if let Some(stderr) = out("stderr").or(tails.and_then(|t| t.2)) {
            case.set_system_err(stderr);
        }
        suite.add_test_case(case);
    }
    suite
}

/// A report of these jobs, each with its journal.
pub(crate) fn report(jobs: &[(JobStatus, Vec<Record>)]) -> Report {
    let name = match jobs {
        [(only, _)] => only.name.as_str(),
        _ => "orchestrator",
    };
    let mut report = Report::new(name);
    if let Some(t) = jobs
        .iter()
        .filter_map(|(s, _)| s.started_at.or(Some(s.created_at)))
        .min()
        .and_then(datetime)
    {
        report.set_timestamp(t);
    }
    report.add_test_suites(jobs.iter().map(|(s, r)| test_suite(s, r)));
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_core::{FailureClass, JobId, JobState, NodeStatus};

    fn rec(seq: u64, at: u64, event: Event) -> Record {
        Record {
            seq,
            at: Timestamp(at),
            event,
        }
    }

    #[test]
    fn attempts_pair_starts_with_outcomes() {
        let fail = Failure::new(FailureClass::Unknown, "exit 1");
        let records = vec![
            rec(
                1,
                0,
                Event::NodeStarted {
                    node: 0,
                    attempt: 1,
                },
            ),
            rec(
                2,
                100,
                Event::NodeFailed {
                    node: 0,
                    attempt: 1,
                    failure: Box::new(fail.clone()),
                    retry_in_ms: Some(10),
                },
            ),
            rec(
                3,
                120,
                Event::NodeStarted {
                    node: 0,
                    attempt: 2,
                },
            ),
            rec(
                4,
                150,
                Event::NodeSucceeded {
                    node: 0,
                    attempt: 2,
                    output: Value::Null,
                },
            ),
            rec(
                5,
                160,
                Event::NodeStarted {
                    node: 7,
                    attempt: 1,
                },
            ),
        ];
        let a = attempts(1, &records);
        assert_eq!(a[0].len(), 2);
        assert_eq!(a[0][0].failure, Some(fail));
        assert_eq!(a[0][0].time(), Some(Duration::from_millis(100)));
        assert_eq!(a[0][1].failure, None);
        assert_eq!(a[0][1].time(), Some(Duration::from_millis(30)));
    }

    fn node(id: &str, state: NodeState, attempts: u32) -> NodeStatus {
        let ran = attempts > 0;
        NodeStatus {
            id: id.into(),
            kind: "process".into(),
            state,
            attempts,
            started_at: ran.then_some(Timestamp(1_000)),
            finished_at: Some(Timestamp(1_200)),
            duration_ms: ran.then_some(200),
            retry_at: None,
            last_error: None,
            output: if state == NodeState::Succeeded {
                serde_json::json!({"exit_code": 0, "stdout": "3 passed\n", "stderr": ""})
            } else {
                Value::Null
            },
            flaky: state == NodeState::Succeeded && attempts > 1,
            quarantined: false,
        }
    }

    #[test]
    fn quarantined_failures_are_skipped_with_their_failure() {
        let mut q = node("e2e", NodeState::Failed, 1);
        q.quarantined = true;
        let status = JobStatus {
            id: "J2".parse::<JobId>().unwrap(),
            name: "ci".into(),
            description: None,
            owner: "local".into(),
            labels: Default::default(),
            priority: 0,
            state: JobState::Succeeded,
            progress_percent: 100.0,
            nodes_total: 2,
            nodes_finished: 2,
            nodes_failed: 1,
            created_at: Timestamp(900),
            started_at: Some(Timestamp(1_000)),
            finished_at: Some(Timestamp(1_300)),
            updated_at: Timestamp(1_300),
            version: 9,
            cancel_reason: None,
            nodes: vec![q, node("unit", NodeState::Succeeded, 2)],
        };
        let records = [
            rec(
                3,
                1_000,
                Event::NodeStarted {
                    node: 0,
                    attempt: 1,
                },
            ),
            rec(
                4,
                1_200,
                Event::NodeFailed {
                    node: 0,
                    attempt: 1,
                    failure: Box::new(Failure::new(FailureClass::Unknown, "exit 1")),
                    retry_in_ms: None,
                },
            ),
        ];
        let xml = report(&[(status, records.to_vec())]).to_string().unwrap();
        assert!(
            xml.contains(
                r#"<skipped message="quarantined: failed (unknown: exit 1)" type="quarantined"/>"#
            ),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<property name="quarantined" value="true"/>"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<property name="flaky" value="true"/>"#),
            "{xml}"
        );
        assert!(!xml.contains("<failure"), "{xml}");
    }

    #[test]
    fn flaky_failed_and_skipped_nodes_serialize_like_nextest() {
        let flaky = Failure::new(
            FailureClass::Unknown,
            "`sh -c 'x'` exited with code 1 after 5 ms\n--- stderr (tail) ---\nconnection reset <&>\n",
        );
        let records = vec![
            rec(
                1,
                1_000,
                Event::NodeStarted {
                    node: 0,
                    attempt: 1,
                },
            ),
            rec(
                2,
                1_050,
                Event::NodeFailed {
                    node: 0,
                    attempt: 1,
                    failure: Box::new(flaky),
                    retry_in_ms: Some(10),
                },
            ),
            rec(
                3,
                1_100,
                Event::NodeStarted {
                    node: 0,
                    attempt: 2,
                },
            ),
            rec(
                4,
                1_200,
                Event::NodeSucceeded {
                    node: 0,
                    attempt: 2,
                    output: Value::Null,
                },
            ),
            rec(
                5,
                1_000,
                Event::NodeStarted {
                    node: 1,
                    attempt: 1,
                },
            ),
            rec(
                6,
                1_200,
                Event::NodeFailed {
                    node: 1,
                    attempt: 1,
                    failure: Box::new(Failure::permanent("assertion failed")),
                    retry_in_ms: None,
                },
            ),
        ];
        let status = JobStatus {
            id: "J1".parse::<JobId>().unwrap(),
            name: "ci".into(),
            description: None,
            owner: "local".into(),
            labels: Default::default(),
            priority: 0,
            state: JobState::Failed,
            progress_percent: 100.0,
            nodes_total: 3,
            nodes_finished: 3,
            nodes_failed: 2,
            created_at: Timestamp(900),
            started_at: Some(Timestamp(1_000)),
            finished_at: Some(Timestamp(1_300)),
            updated_at: Timestamp(1_300),
            version: 9,
            cancel_reason: None,
            nodes: vec![
                node("unit-flaky", NodeState::Succeeded, 2),
                node("unit-broken", NodeState::Failed, 1),
                node("deploy", NodeState::UpstreamFailed, 0),
            ],
        };
        let xml = report(&[(status, records)]).to_string().unwrap();
        assert!(
            xml.contains(r#"<testsuites name="ci" tests="3" skipped="1" failures="1" errors="0""#),
            "{xml}"
        );
        assert!(xml.contains(r#"<testcase name="unit-flaky" classname="ci" timestamp="1970-01-01T00:00:01.000+00:00" time="0.200">"#), "{xml}");
        assert!(xml.contains(r#"<flakyFailure timestamp="1970-01-01T00:00:01.000+00:00" time="0.050" message="attempt 1: `sh -c &apos;x&apos;` exited with code 1 after 5 ms" type="unknown">"#), "{xml}");
        assert!(xml.contains("connection reset &lt;&amp;&gt;"), "{xml}");
        assert!(
            xml.contains(
                r#"<failure message="assertion failed" type="permanent">assertion failed</failure>"#
            ),
            "{xml}"
        );
        assert!(xml.contains(r#"<skipped message="upstream_failed: a node it depends on failed" type="upstream_failed"/>"#), "{xml}");
        assert!(xml.contains("<system-out>3 passed\n</system-out>"), "{xml}");
        // It parses back, flaky run included.
        let parsed = Report::deserialize_from_str(&xml).unwrap();
        let case = &parsed.test_suites[0].test_cases[0];
        let TestCaseStatus::Success { flaky_runs } = &case.status else {
            panic!("not a success: {case:?}");
        };
        assert_eq!(flaky_runs.len(), 1);
        assert_eq!(
            flaky_runs[0]
                .system_err
                .as_ref()
                .unwrap()
                .as_str()
                .trim_end(),
            "connection reset <&>"
        );
    }
}
