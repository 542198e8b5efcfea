//! Text for people: the summary table and totals line that end `run`,
//! `resume` and `jobs show`, the `jobs list` table, and the small
//! formatting helpers the other displays share.

use std::fmt::Write as _;

use console::style;
use orchestrator_core::journal::JobSummary;
use orchestrator_core::{JobState, JobStatus, NodeState, NodeStatus, Timestamp};

/// Widest node id column before ids are shortened.
const MAX_ID_WIDTH: usize = 40;
/// Longest error excerpt in the table.
const MAX_ERROR_WIDTH: usize = 90;

/// `1234` ms as `1.23s`, `83000` as `1m23s`, `7_500_000` as `2h05m`.
pub(crate) fn human_ms(ms: u64) -> String {
    let secs = ms / 1000;
    if secs < 60 {
        format!("{}.{:02}s", secs, (ms % 1000) / 10)
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    }
}

/// How the `process` runner marks the output tails it appends to a
/// failure message.
const STDERR_MARK: &str = "\n--- stderr (tail) ---\n";
const STDOUT_MARK: &str = "\n--- stdout (tail) ---\n";

/// A failure message split into its head and the output tails the
/// `process` runner appends: `(head, stdout, stderr)`.
pub(crate) fn split_output(message: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, stdout) = match message.split_once(STDOUT_MARK) {
        Some((a, b)) => (a, Some(b)),
        None => (message, None),
    };
    let (head, stderr) = match rest.split_once(STDERR_MARK) {
        Some((a, b)) => (a, Some(b)),
        None => (rest, None),
    };
    (head, stdout, stderr)
}

/// A failure message as one line of at most `max` characters: its head
/// (without output tails) with line breaks folded, and the middle elided
/// when long, since a failure often names a long command first and says
/// what happened at the end.
pub(crate) fn failure_summary(message: &str, max: usize) -> String {
    let (head, _, _) = split_output(message);
    let folded = head.split_whitespace().collect::<Vec<_>>().join(" ");
    let n = folded.chars().count();
    if n <= max {
        return folded;
    }
    let keep = max.saturating_sub(1);
    let front = keep / 2;
    let back = keep - front;
    let mut out: String = folded.chars().take(front).collect();
    out.push('…');
    out.extend(folded.chars().skip(n - back));
    out
}

/// The last lines of the output tails a failure message carries, each
/// indented and labelled with its stream, stderr first: what a person
/// reading a CI log needs to see next to a failed node.
pub(crate) fn output_excerpt(message: &str, max_lines: usize) -> Vec<String> {
    let (_, stdout, stderr) = split_output(message);
    let mut out = Vec::new();
    for (name, text) in [("stderr", stderr), ("stdout", stdout)] {
        let Some(text) = text else { continue };
        let lines: Vec<&str> = text.lines().collect();
        let skip = lines.len().saturating_sub(max_lines);
        if skip > 0 {
            out.push(format!(
                "      {name} | … {skip} earlier line{}",
                if skip == 1 { "" } else { "s" }
            ));
        }
        for line in &lines[skip..] {
            out.push(
                format!("      {name} | {}", shorten(line, 200))
                    .trim_end()
                    .to_owned(),
            );
        }
    }
    out
}

/// `text` cut to at most `max` characters, ending with `…` if cut.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `text` padded with spaces to `width` characters.
pub(crate) fn pad(text: &str, width: usize) -> String {
    let n = text.chars().count();
    let mut out = text.to_owned();
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(n)));
    out
}

/// Whether a node passed only after failed attempts (the engine's own
/// notion, [`NodeStatus::flaky`]).
pub(crate) fn is_flaky(node: &NodeStatus) -> bool {
    node.flaky
}

/// The width of the node id column for these ids.
pub(crate) fn id_width<'a>(ids: impl IntoIterator<Item = &'a str>) -> usize {
    ids.into_iter()
        .map(|id| id.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(4, MAX_ID_WIDTH)
}

/// A timestamp as `2024-05-01 12:34:56Z`.
pub(crate) fn utc(t: Timestamp) -> String {
    i64::try_from(t.as_millis())
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || format!("{} ms", t.as_millis()),
            |d| d.format("%Y-%m-%d %H:%M:%SZ").to_string(),
        )
}

fn styled_state(text: &str, state: NodeState, flaky: bool) -> String {
    let s = style(text.to_owned());
    match state {
        NodeState::Succeeded if flaky => s.yellow(),
        NodeState::Succeeded | NodeState::Compensated => s.green(),
        NodeState::Failed | NodeState::TimedOut | NodeState::DeadLettered => s.red().bold(),
        NodeState::UpstreamFailed | NodeState::Cancelled => s.red(),
        NodeState::Skipped | NodeState::Pending => s.dim(),
        _ => s.cyan(),
    }
    .to_string()
}

fn styled_job_state(state: JobState) -> String {
    let s = style(state.as_str().to_owned());
    match state {
        JobState::Succeeded => s.green().bold(),
        JobState::Failed | JobState::TimedOut => s.red().bold(),
        JobState::Cancelled => s.yellow().bold(),
        _ => s.cyan().bold(),
    }
    .to_string()
}

/// The per-node table: node, status, attempts, duration, last error. On a
/// terminal `width` columns wide, errors are cut to fit.
pub(crate) fn node_table(status: &JobStatus, width: Option<usize>) -> String {
    let idw = id_width(status.nodes.iter().map(|n| n.id.as_str()));
    let states: Vec<String> = status
        .nodes
        .iter()
        .map(|n| {
            if is_flaky(n) {
                format!("{} (flaky)", n.state)
            } else if n.quarantined {
                format!("{} (quarantined)", n.state)
            } else {
                n.state.to_string()
            }
        })
        .collect();
    let stw = states.iter().map(String::len).max().unwrap_or(0).max(6);
    let error_width = width.map_or(MAX_ERROR_WIDTH, |w| {
        w.saturating_sub(idw + stw + 24).clamp(20, MAX_ERROR_WIDTH)
    });
    let mut out = String::new();
    let header = format!(
        "{}  {}  ATTEMPTS  DURATION  LAST ERROR",
        pad("NODE", idw),
        pad("STATUS", stw)
    );
    let _ = writeln!(out, "{}", style(header).bold());
    for (n, state) in status.nodes.iter().zip(&states) {
        let duration = n.duration_ms.map_or_else(|| "-".to_owned(), human_ms);
        let error = n
            .last_error
            .as_ref()
            .map(|f| failure_summary(&format!("{}: {}", f.class, f.message), error_width))
            .unwrap_or_default();
        let line = format!(
            "{}  {}  {:>8}  {:>8}  {}",
            pad(&shorten(&n.id, idw), idw),
            styled_state(&pad(state, stw), n.state, is_flaky(n)),
            n.attempts,
            duration,
            error
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// The totals line: the outcome, time, node counts by state, attempts.
pub(crate) fn totals_line(status: &JobStatus) -> String {
    let start = status.started_at.unwrap_or(status.created_at);
    let took = status
        .finished_at
        .map(|end| format!(" in {}", human_ms(end.saturating_since(start))))
        .unwrap_or_default();
    let mut counts = Vec::new();
    for state in NodeState::ALL {
        let n = status.nodes.iter().filter(|x| x.state == state).count();
        if n == 0 {
            continue;
        }
        let flaky = status.nodes.iter().filter(|x| is_flaky(x)).count();
        let quarantined = status
            .nodes
            .iter()
            .filter(|x| x.state == state && x.quarantined)
            .count();
        if state == NodeState::Succeeded && flaky > 0 {
            counts.push(format!("{n} {state} ({flaky} flaky)"));
        } else if quarantined > 0 {
            counts.push(format!("{n} {state} ({quarantined} quarantined)"));
        } else {
            counts.push(format!("{n} {state}"));
        }
    }
    let attempts: u64 = status.nodes.iter().map(|n| u64::from(n.attempts)).sum();
    let reason = match (&status.cancel_reason, status.state) {
        (Some(r), JobState::Cancelled) => format!(" ({r})"),
        _ => String::new(),
    };
    format!(
        "job {} {}{reason}{took}: {} node{}, {}; {attempts} attempt{}",
        status.id,
        styled_job_state(status.state),
        status.nodes_total,
        if status.nodes_total == 1 { "" } else { "s" },
        counts.join(", "),
        if attempts == 1 { "" } else { "s" },
    )
}

/// The `jobs list` table.
pub(crate) fn jobs_table(jobs: &[JobSummary]) -> String {
    let idw = jobs
        .iter()
        .map(|j| j.id.as_str().len())
        .max()
        .unwrap_or(0)
        .max(2);
    let namew = jobs
        .iter()
        .map(|j| j.name.chars().count().min(32))
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = String::new();
    let header = format!(
        "{}  {}  {}  NODES      FAILED  CREATED",
        pad("ID", idw),
        pad("NAME", namew),
        pad("STATE", 10)
    );
    let _ = writeln!(out, "{}", style(header).bold());
    for j in jobs {
        let p = &j.progress;
        let line = format!(
            "{}  {}  {}  {:<9}  {:>6}  {}",
            pad(j.id.as_str(), idw),
            pad(&shorten(&j.name, 32), namew),
            pad(p.state.as_str(), 10),
            format!("{}/{}", p.nodes_finished, p.nodes_total),
            p.nodes_failed,
            utc(j.created_at)
        );
        let _ = writeln!(out, "{line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_core::{Failure, JobId};

    fn node(id: &str, state: NodeState, attempts: u32, error: Option<Failure>) -> NodeStatus {
        NodeStatus {
            id: id.into(),
            kind: "process".into(),
            state,
            attempts,
            started_at: None,
            finished_at: None,
            duration_ms: (attempts > 0).then_some(1234),
            retry_at: None,
            last_error: error,
            output: serde_json::Value::Null,
            flaky: state == NodeState::Succeeded && attempts > 1,
            quarantined: false,
        }
    }

    fn status(state: JobState, nodes: Vec<NodeStatus>) -> JobStatus {
        JobStatus {
            id: "01TESTJOB".parse::<JobId>().unwrap(),
            name: "ci".into(),
            description: None,
            owner: "local".into(),
            labels: Default::default(),
            priority: 0,
            state,
            progress_percent: 100.0,
            nodes_total: nodes.len() as u32,
            nodes_finished: nodes.len() as u32,
            nodes_failed: 0,
            created_at: Timestamp(1_000),
            started_at: Some(Timestamp(1_000)),
            finished_at: Some(Timestamp(4_210)),
            updated_at: Timestamp(4_210),
            version: 30,
            cancel_reason: None,
            nodes,
        }
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_ms(0), "0.00s");
        assert_eq!(human_ms(1234), "1.23s");
        assert_eq!(human_ms(83_000), "1m23s");
        assert_eq!(human_ms(7_500_000), "2h05m");
    }

    #[test]
    fn text_is_cut_and_padded_by_characters() {
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("ééé", 3), "ééé");
        assert_eq!(pad("ab", 4), "ab  ");
        assert_eq!(shorten("ab", 4), "ab");
    }

    #[test]
    fn failures_fold_into_one_line_that_keeps_both_ends() {
        let m = "`sh -c 'echo one\nsleep 1\nexit 1'` exited with code 1 after 5 ms\n--- stderr (tail) ---\nboom\n";
        assert_eq!(
            failure_summary(m, 200),
            "`sh -c 'echo one sleep 1 exit 1'` exited with code 1 after 5 ms"
        );
        assert_eq!(failure_summary(m, 21), "`sh -c 'ec…after 5 ms");
        assert_eq!(
            split_output("x\n--- stderr (tail) ---\nboom\n--- stdout (tail) ---\nok\n"),
            ("x", Some("ok\n"), Some("boom"))
        );
        assert_eq!(split_output("plain"), ("plain", None, None));
        assert_eq!(
            output_excerpt(
                "x\n--- stderr (tail) ---\na\nb\nc\n--- stdout (tail) ---\nok\n",
                2
            ),
            [
                "      stderr | … 1 earlier line",
                "      stderr | b",
                "      stderr | c",
                "      stdout | ok"
            ]
        );
        assert!(output_excerpt("no output", 5).is_empty());
    }

    #[test]
    fn table_and_totals_describe_every_node() {
        console::set_colors_enabled(false);
        let s = status(
            JobState::Failed,
            vec![
                node("lint", NodeState::Succeeded, 1, None),
                node(
                    "unit-flaky",
                    NodeState::Succeeded,
                    2,
                    Some(Failure::transient("connection reset\nmore")),
                ),
                node(
                    "unit-broken",
                    NodeState::Failed,
                    1,
                    Some(Failure::permanent("exit 1")),
                ),
                node("deploy", NodeState::UpstreamFailed, 0, None),
            ],
        );
        let table = node_table(&s, None);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NODE         STATUS"), "{table}");
        assert!(lines[0].ends_with("ATTEMPTS  DURATION  LAST ERROR"));
        assert!(lines[1].starts_with("lint         succeeded "));
        assert!(lines[2].contains("succeeded (flaky)"));
        assert!(
            lines[2].ends_with("1.23s  transient: connection reset more"),
            "{}",
            lines[2]
        );
        assert!(lines[3].ends_with("permanent: exit 1"));
        assert!(lines[4].contains("upstream_failed") && lines[4].contains("        -"));
        assert_eq!(
            totals_line(&s),
            "job 01TESTJOB failed in 3.21s: 4 nodes, 2 succeeded (1 flaky), 1 failed, 1 upstream_failed; 4 attempts"
        );
    }
}
