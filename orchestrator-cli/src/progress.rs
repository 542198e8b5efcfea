//! Showing a job while it runs: [`PlainReporter`] prints one line per
//! journaled event (logs, CI, pipes); [`LiveReporter`] draws an overall bar
//! and a line per running node on a terminal.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::time::{Duration, Instant};

use console::style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use orchestrator_core::breaker::BreakerState;
use orchestrator_core::journal::{JobView, Record};
use orchestrator_core::{Event, HumanDuration, JobSpec, Timestamp};

use crate::follow::Reporter;
use crate::summary::{failure_summary, human_ms, id_width, output_excerpt, pad, shorten};

/// Longest failure excerpt in an event line.
const MAX_MESSAGE: usize = 160;
/// Output lines per stream shown under a node that failed for good.
const EXCERPT_LINES: usize = 10;
/// Most running nodes given a line of their own; the rest are counted.
const MAX_NODE_LINES: usize = 12;

/// Where a command's human-readable output goes: stdout normally, stderr
/// when stdout carries JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sink {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Sink {
    /// Writes one line. Output errors (a closed pipe) are ignored: the
    /// job's outcome is in the store and in the exit code.
    pub(crate) fn line(self, text: &str) {
        let _ = match self {
            Self::Stdout => writeln!(std::io::stdout().lock(), "{text}"),
            Self::Stderr => writeln!(std::io::stderr().lock(), "{text}"),
        };
    }

    /// Writes text as it is.
    pub(crate) fn text(self, text: &str) {
        let _ = match self {
            Self::Stdout => write!(std::io::stdout().lock(), "{text}"),
            Self::Stderr => write!(std::io::stderr().lock(), "{text}"),
        };
    }

    /// The terminal's width in columns, if it is a terminal.
    pub(crate) fn width(self) -> Option<usize> {
        if !self.is_terminal() {
            return None;
        }
        let term = match self {
            Self::Stdout => console::Term::stdout(),
            Self::Stderr => console::Term::stderr(),
        };
        term.size_checked().map(|(_rows, cols)| usize::from(cols))
    }

    /// Whether it is a terminal.
    pub(crate) fn is_terminal(self) -> bool {
        use std::io::IsTerminal as _;
        match self {
            Self::Stdout => std::io::stdout().is_terminal(),
            Self::Stderr => std::io::stderr().is_terminal(),
        }
    }
}

/// The id of node `index` of `spec`.
fn node_id(spec: &JobSpec, index: u32) -> &str {
    spec.nodes()
        .get(index as usize)
        .map_or("?", |n| n.id.as_str())
}

/// One journal record as a line: time offset from `base`, event name, node
/// id, attempt, and what is worth knowing (failure class and first line,
/// retry delay, cancellation reason). `view` is the job with `record`
/// folded in.
pub(crate) fn event_line(view: &JobView, record: &Record, base: Timestamp, idw: usize) -> String {
    let spec = view.spec();
    let offset = record.at.as_millis().saturating_sub(base.as_millis());
    let mut line = format!(
        "{:>4}.{:03}s  {}",
        offset / 1000,
        offset % 1000,
        pad(record.event.name(), 20)
    );
    let took = |node: u32| -> String {
        let n = &view.nodes[node as usize];
        n.started_at
            .map(|s| format!(" after {}", human_ms(record.at.saturating_since(s))))
            .unwrap_or_default()
    };
    let detail = match &record.event {
        Event::Submitted { header } => format!(
            "{} ({} node{})",
            header.spec.name,
            spec.nodes().len(),
            if spec.nodes().len() == 1 { "" } else { "s" }
        ),
        Event::CancelRequested { reason } => reason.clone().unwrap_or_default(),
        Event::BreakerChanged {
            dependency,
            to,
            failures,
            calls,
            ..
        } => match to {
            BreakerState::Open if *calls > 0 => {
                format!("{dependency}: {failures} of {calls} calls failed; its ready nodes wait")
            }
            BreakerState::Open => format!("{dependency}: trial failed; its ready nodes wait"),
            BreakerState::HalfOpen => format!("{dependency}: trial calls"),
            BreakerState::Closed => format!("{dependency}: calls go through"),
        },
        Event::Finished { .. } => format!(
            "{}/{} nodes finished, {} failed",
            view.finished_nodes(),
            view.nodes.len(),
            view.failed_nodes()
        ),
        Event::EscalationRequired { node, reason, .. } => match node {
            Some(n) => format!("{}  {reason}", pad(node_id(spec, *n), idw)),
            None => reason.clone(),
        },
        Event::NodeStarted { node, attempt } => {
            format!("{}  attempt {attempt}", pad(node_id(spec, *node), idw))
        }
        Event::NodeSucceeded { node, attempt, .. } => format!(
            "{}  attempt {attempt}{}",
            pad(node_id(spec, *node), idw),
            took(*node)
        ),
        Event::NodeFailed {
            node,
            attempt,
            failure,
            retry_in_ms,
        } => {
            let retry = retry_in_ms
                .map(|ms| format!("; retry in {}", HumanDuration::from_millis(ms)))
                .unwrap_or_default();
            format!(
                "{}  attempt {attempt}{}  {}: {}{retry}",
                pad(node_id(spec, *node), idw),
                took(*node),
                failure.class,
                failure_summary(&failure.message, MAX_MESSAGE)
            )
        }
        other => other
            .node()
            .map(|n| node_id(spec, n).to_owned())
            .unwrap_or_default(),
    };
    if !detail.is_empty() {
        line.push_str("  ");
        line.push_str(&detail);
    }
    line.trim_end().to_owned()
}

/// One line per journaled event.
pub(crate) struct PlainReporter {
    sink: Sink,
    base: Option<Timestamp>,
    idw: usize,
}

impl PlainReporter {
    /// Prints to `sink`.
    pub(crate) fn new(sink: Sink) -> Self {
        Self {
            sink,
            base: None,
            idw: 4,
        }
    }
}

impl Reporter for PlainReporter {
    fn begin(&mut self, view: &JobView) {
        self.idw = id_width(view.spec().nodes().iter().map(|n| n.id.as_str()));
    }

    fn record(&mut self, view: &JobView, record: &Record) {
        let base = *self.base.get_or_insert(record.at);
        self.sink.line(&event_line(view, record, base, self.idw));
        if let Event::NodeFailed {
            failure,
            retry_in_ms: None,
            ..
        } = &record.event
        {
            for line in output_excerpt(&failure.message, EXCERPT_LINES) {
                self.sink.line(&line);
            }
        }
    }

    fn note(&mut self, text: &str) {
        self.sink.line(text);
    }

    fn end(&mut self, _view: &JobView) {}
}

/// A running node as the live display knows it.
struct Running {
    attempt: u32,
    since: Instant,
}

/// An overall bar plus a line per running node, redrawn in place.
pub(crate) struct LiveReporter {
    multi: MultiProgress,
    overall: ProgressBar,
    node_style: ProgressStyle,
    running: BTreeMap<u32, Running>,
    lines: HashMap<u32, ProgressBar>,
    idw: usize,
    retries: u32,
    /// Longest failure excerpt that fits the terminal on one line.
    message_width: usize,
}

impl LiveReporter {
    /// Draws on `sink` (which should be a terminal).
    pub(crate) fn new(sink: Sink) -> Self {
        let target = match sink {
            Sink::Stdout => ProgressDrawTarget::stdout(),
            Sink::Stderr => ProgressDrawTarget::stderr(),
        };
        let multi = MultiProgress::with_draw_target(target);
        // The templates are constants; a typo is caught by the unit test.
        let overall_style = ProgressStyle::with_template(
            "{spinner:.cyan} [{elapsed_precise}] {bar:32.cyan/blue} {pos}/{len} nodes  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let node_style =
            ProgressStyle::with_template("  {spinner:.yellow} {prefix}  {msg}  {elapsed:.dim}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let overall = multi.add(ProgressBar::new(0).with_style(overall_style));
        overall.enable_steady_tick(Duration::from_millis(120));
        Self {
            multi,
            overall,
            node_style,
            running: BTreeMap::new(),
            lines: HashMap::new(),
            idw: 4,
            retries: 0,
            message_width: sink
                .width()
                .map_or(MAX_MESSAGE, |w| w.saturating_sub(50).clamp(30, MAX_MESSAGE)),
        }
    }

    fn println(&self, text: &str) {
        let _ = self.multi.println(text);
    }

    fn id<'a>(&self, view: &'a JobView, node: u32) -> &'a str {
        node_id(view.spec(), node)
    }

    /// Keeps one line per running node (up to the limit), oldest first.
    fn sync_lines(&mut self) {
        self.lines.retain(|node, bar| {
            let keep = self.running.contains_key(node);
            if !keep {
                bar.finish_and_clear();
                self.multi.remove(bar);
            }
            keep
        });
        let mut by_age: Vec<(&u32, &Running)> = self.running.iter().collect();
        by_age.sort_by_key(|(_, r)| r.since);
        for (node, r) in by_age.into_iter().take(MAX_NODE_LINES) {
            if let Some(bar) = self.lines.get(node) {
                bar.set_message(format!("attempt {}", r.attempt));
                continue;
            }
            let bar = ProgressBar::new_spinner()
                .with_style(self.node_style.clone())
                .with_elapsed(r.since.elapsed())
                .with_message(format!("attempt {}", r.attempt));
            let bar = self.multi.add(bar);
            bar.enable_steady_tick(Duration::from_millis(120));
            self.lines.insert(*node, bar);
        }
    }

    fn set_prefixes(&self, view: &JobView) {
        for (node, bar) in &self.lines {
            bar.set_prefix(pad(&shorten(self.id(view, *node), self.idw), self.idw));
        }
    }

    fn update_overall(&self, view: &JobView) {
        self.overall.set_length(view.nodes.len() as u64);
        self.overall.set_position(u64::from(view.finished_nodes()));
        let mut parts = vec![format!("{} running", self.running.len())];
        if self.running.len() > MAX_NODE_LINES {
            parts[0].push_str(&format!(" ({} shown)", MAX_NODE_LINES));
        }
        let failed = view.failed_nodes();
        if failed > 0 {
            parts.push(style(format!("{failed} failed")).red().to_string());
        }
        if self.retries > 0 {
            parts.push(format!("{} retried", self.retries));
        }
        parts.push(view.state.as_str().to_owned());
        self.overall.set_message(parts.join(" · "));
    }
}

impl Reporter for LiveReporter {
    fn begin(&mut self, view: &JobView) {
        self.idw = id_width(view.spec().nodes().iter().map(|n| n.id.as_str()));
        let now = Instant::now();
        let wall = orchestrator_core::Clock::now(&orchestrator_core::SystemClock);
        for (i, n) in view.nodes.iter().enumerate() {
            if n.state() == orchestrator_core::NodeState::Running {
                let ago = n.started_at.map_or(0, |s| wall.saturating_since(s));
                self.running.insert(
                    i as u32,
                    Running {
                        attempt: n.machine.attempts,
                        since: now.checked_sub(Duration::from_millis(ago)).unwrap_or(now),
                    },
                );
            }
        }
        self.sync_lines();
        self.set_prefixes(view);
        self.update_overall(view);
    }

    fn record(&mut self, view: &JobView, record: &Record) {
        let idw = self.idw;
        match &record.event {
            Event::NodeStarted { node, attempt } => {
                self.running.insert(
                    *node,
                    Running {
                        attempt: *attempt,
                        since: Instant::now(),
                    },
                );
            }
            Event::NodeSucceeded { node, attempt, .. } => {
                self.running.remove(node);
                let took = view.nodes[*node as usize]
                    .first_started_at
                    .map(|s| human_ms(record.at.saturating_since(s)))
                    .unwrap_or_default();
                let flaky = if *attempt > 1 {
                    style(format!("  passed on attempt {attempt} (flaky)"))
                        .yellow()
                        .to_string()
                } else {
                    String::new()
                };
                self.println(&format!(
                    "  {} {}  {took}{flaky}",
                    style("✓").green(),
                    pad(self.id(view, *node), idw)
                ));
            }
            Event::NodeFailed {
                node,
                attempt,
                failure,
                retry_in_ms,
            } => {
                self.running.remove(node);
                let (mark, what) = match retry_in_ms {
                    Some(ms) => {
                        self.retries += 1;
                        (
                            style("↻").yellow(),
                            format!("retry in {}", HumanDuration::from_millis(*ms)),
                        )
                    }
                    None => (style("✗").red().bold(), "failed".to_owned()),
                };
                self.println(&format!(
                    "  {mark} {}  attempt {attempt} {what} — {}: {}",
                    pad(self.id(view, *node), idw),
                    failure.class,
                    failure_summary(&failure.message, self.message_width)
                ));
                if retry_in_ms.is_none() {
                    for line in output_excerpt(&failure.message, EXCERPT_LINES) {
                        self.println(&style(line).dim().to_string());
                    }
                }
            }
            Event::NodeSkipped { node }
            | Event::NodeUpstreamFailed { node }
            | Event::NodeCancelled { node } => {
                self.println(&format!(
                    "  {} {}  {}",
                    style("–").dim(),
                    pad(self.id(view, *node), idw),
                    style(view.nodes[*node as usize].state().as_str()).dim()
                ));
            }
            Event::CancelRequested { reason } => self.println(&format!(
                "{} {}",
                style("cancelling:").yellow().bold(),
                reason.as_deref().unwrap_or("cancelled")
            )),
            Event::TimeoutReached => {
                self.println(
                    &style("job timeout reached; stopping")
                        .red()
                        .bold()
                        .to_string(),
                );
            }
            Event::RecoveryStarted | Event::RecoveryFinished => {
                self.println(&format!("{}", style(record.event.name()).cyan()));
            }
            Event::EscalationRequired { node, reason, .. } => self.println(&format!(
                "{} {}{reason}",
                style("escalation required:").red().bold(),
                node.map(|n| format!("{}: ", self.id(view, n)))
                    .unwrap_or_default()
            )),
            _ => {}
        }
        self.sync_lines();
        self.set_prefixes(view);
        self.update_overall(view);
    }

    fn note(&mut self, text: &str) {
        self.println(&style(text).yellow().to_string());
    }

    fn end(&mut self, _view: &JobView) {
        for bar in self.lines.values() {
            bar.finish_and_clear();
        }
        self.lines.clear();
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
    }
}

impl Drop for LiveReporter {
    /// Leaves the terminal clean however following ended.
    fn drop(&mut self) {
        for bar in self.lines.values() {
            bar.finish_and_clear();
        }
        self.overall.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_core::journal::JobHeader;
    use orchestrator_core::{Failure, JobSpec, NodeSpec};
    use std::sync::Arc;

    fn view() -> JobView {
        let spec = JobSpec::builder("ci")
            .node(NodeSpec::new("lint", "noop"))
            .node(NodeSpec::new("unit-flaky", "noop").depends_on(["lint"]))
            .build();
        JobView::new(Arc::new(JobHeader {
            id: "J1".parse().unwrap(),
            owner: "local".into(),
            created_at: Timestamp(10_000),
            spec: Arc::new(spec),
        }))
    }

    fn fold(view: &mut JobView, at: u64, event: Event) -> Record {
        let r = Record {
            seq: view.version + 1,
            at: Timestamp(at),
            event,
        };
        view.apply(&r).unwrap();
        r
    }

    #[test]
    fn templates_parse() {
        ProgressStyle::with_template(
            "{spinner:.cyan} [{elapsed_precise}] {bar:32.cyan/blue} {pos}/{len} nodes  {msg}",
        )
        .unwrap();
        ProgressStyle::with_template("  {spinner:.yellow} {prefix}  {msg}  {elapsed:.dim}")
            .unwrap();
    }

    #[test]
    fn event_lines_name_the_node_attempt_and_failure() {
        let mut v = view();
        let base = Timestamp(10_000);
        let w = 10;
        let lines: Vec<String> = [
            (10_000, Event::Queued),
            (10_001, Event::Started),
            (10_002, Event::NodeReady { node: 0 }),
            (
                10_003,
                Event::NodeStarted {
                    node: 0,
                    attempt: 1,
                },
            ),
            (
                10_250,
                Event::NodeSucceeded {
                    node: 0,
                    attempt: 1,
                    output: serde_json::Value::Null,
                },
            ),
            (10_251, Event::NodeReady { node: 1 }),
            (
                10_252,
                Event::NodeStarted {
                    node: 1,
                    attempt: 1,
                },
            ),
            (
                11_262,
                Event::NodeFailed {
                    node: 1,
                    attempt: 1,
                    failure: Box::new(Failure::transient(
                        "connection reset\n--- stderr (tail) ---\nx",
                    )),
                    retry_in_ms: Some(200),
                },
            ),
        ]
        .into_iter()
        .map(|(at, e)| {
            let r = fold(&mut v, at, e);
            event_line(&v, &r, base, w)
        })
        .collect();
        assert_eq!(lines[0], "   0.000s  execution.queued");
        assert_eq!(lines[2], "   0.002s  node.ready            lint");
        assert_eq!(
            lines[3],
            "   0.003s  node.started          lint        attempt 1"
        );
        assert_eq!(
            lines[4],
            "   0.250s  node.succeeded        lint        attempt 1 after 0.24s"
        );
        assert_eq!(
            lines[7],
            "   1.262s  node.retry_scheduled  unit-flaky  attempt 1 after 1.01s  transient: connection reset; retry in 200ms"
        );
        let r = fold(
            &mut v,
            11_300,
            Event::CancelRequested {
                reason: Some("interrupted (Ctrl-C)".into()),
            },
        );
        assert_eq!(
            event_line(&v, &r, base, w),
            "   1.300s  execution.cancelling  interrupted (Ctrl-C)"
        );
    }
}
