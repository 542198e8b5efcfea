//! Drawing a DAG as Graphviz dot or a Mermaid flowchart, optionally with
//! each node coloured by its state in a job. Edges on the critical path
//! are bold.

use std::collections::HashSet;
use std::fmt::Write as _;

use orchestrator_core::{Dag, JobSpec, NodeState};

use crate::cli::GraphFormat;

/// What is known of a node in a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shown {
    /// Its state.
    pub(crate) state: NodeState,
    /// Attempts started.
    pub(crate) attempts: u32,
}

/// Fill and border colours of a state.
fn colours(state: NodeState) -> (&'static str, &'static str) {
    match state {
        NodeState::Pending => ("#f5f5f5", "#9e9e9e"),
        NodeState::Ready => ("#e3f2fd", "#1e88e5"),
        NodeState::Running => ("#fff59d", "#f9a825"),
        NodeState::RetryWaiting => ("#ffe0b2", "#ef6c00"),
        NodeState::Succeeded => ("#c8e6c9", "#2e7d32"),
        NodeState::Failed => ("#ffcdd2", "#c62828"),
        NodeState::TimedOut => ("#ffab91", "#bf360c"),
        NodeState::Skipped => ("#e0e0e0", "#757575"),
        NodeState::UpstreamFailed => ("#f8bbd0", "#ad1457"),
        NodeState::Cancelled => ("#d7ccc8", "#5d4037"),
        NodeState::DeadLettered => ("#ef9a9a", "#b71c1c"),
        NodeState::Compensating => ("#b3e5fc", "#0277bd"),
        NodeState::Compensated => ("#b2dfdb", "#00695c"),
    }
}

/// The edges of the critical path, as (from, to) index pairs.
fn critical_edges(dag: &Dag) -> HashSet<(u32, u32)> {
    let path = dag.critical_path();
    path.windows(2).map(|w| (w[0], w[1])).collect()
}

/// Renders `dag` (compiled from `spec`) in `format`. `states`, when given,
/// has one entry per node (`None` for nodes the job does not know).
pub(crate) fn render(
    format: GraphFormat,
    spec: &JobSpec,
    dag: &Dag,
    states: Option<&[Option<Shown>]>,
    title: &str,
) -> String {
    match format {
        GraphFormat::Dot => dot(spec, dag, states, title),
        GraphFormat::Mermaid => mermaid(spec, dag, states, title),
    }
}

fn state_label(s: Shown) -> String {
    format!(
        "{} · {} attempt{}",
        s.state,
        s.attempts,
        if s.attempts == 1 { "" } else { "s" }
    )
}

/// A Graphviz double-quoted string.
fn dot_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn dot(spec: &JobSpec, dag: &Dag, states: Option<&[Option<Shown>]>, title: &str) -> String {
    let critical = critical_edges(dag);
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", dot_str(&spec.name));
    let _ = writeln!(
        out,
        "  graph [rankdir=LR, label={}, labelloc=t, fontname=\"Helvetica\"];",
        dot_str(title)
    );
    let _ = writeln!(
        out,
        "  node [shape=box, style=\"rounded,filled\", fillcolor=\"#ffffff\", fontname=\"Helvetica\"];"
    );
    let _ = writeln!(out, "  edge [color=\"#607d8b\"];");
    for (i, node) in spec.nodes().iter().enumerate() {
        let shown = states.and_then(|s| s.get(i).copied().flatten());
        let mut label = format!("{}\n{}", node.id, node.kind);
        let mut attrs = String::new();
        if let Some(s) = shown {
            let (fill, border) = colours(s.state);
            let _ = write!(label, "\n{}", state_label(s));
            let _ = write!(attrs, ", fillcolor=\"{fill}\", color=\"{border}\"");
            if s.state == NodeState::Skipped {
                attrs.push_str(", style=\"rounded,filled,dashed\"");
            }
        }
        let _ = writeln!(out, "  n{i} [label={}{attrs}];", dot_str(&label));
    }
    for from in 0..dag.len() as u32 {
        for &to in dag.successors(from) {
            let bold = if critical.contains(&(from, to)) {
                " [penwidth=2.5, color=\"#263238\"]"
            } else {
                ""
            };
            let _ = writeln!(out, "  n{from} -> n{to}{bold};");
        }
    }
    out.push_str("}\n");
    out
}

/// Mermaid label text: quotes and markup characters as entity codes.
fn mermaid_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '#' => out.push_str("#35;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '&' => out.push_str("#amp;"),
            '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn mermaid(spec: &JobSpec, dag: &Dag, states: Option<&[Option<Shown>]>, title: &str) -> String {
    let critical = critical_edges(dag);
    let mut out = String::new();
    let _ = writeln!(out, "---\ntitle: {}\n---", mermaid_str(title));
    out.push_str("flowchart LR\n");
    let mut used = Vec::new();
    for (i, node) in spec.nodes().iter().enumerate() {
        let shown = states.and_then(|s| s.get(i).copied().flatten());
        let mut label = format!(
            "{}<br/><small>{}</small>",
            mermaid_str(&node.id),
            mermaid_str(&node.kind)
        );
        let class = shown.map(|s| {
            let _ = write!(label, "<br/>{}", mermaid_str(&state_label(s)));
            if !used.contains(&s.state) {
                used.push(s.state);
            }
            format!(":::{}", s.state)
        });
        let _ = writeln!(out, "  n{i}[\"{label}\"]{}", class.unwrap_or_default());
    }
    let mut bold = Vec::new();
    let mut k = 0usize;
    for from in 0..dag.len() as u32 {
        for &to in dag.successors(from) {
            let _ = writeln!(out, "  n{from} --> n{to}");
            if critical.contains(&(from, to)) {
                bold.push(k.to_string());
            }
            k += 1;
        }
    }
    for state in used {
        let (fill, border) = colours(state);
        let _ = writeln!(
            out,
            "  classDef {state} fill:{fill},stroke:{border},color:#000"
        );
    }
    if !bold.is_empty() {
        let _ = writeln!(out, "  linkStyle {} stroke-width:3px", bold.join(","));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_core::{Limits, NodeSpec, PolicyRegistry};

    fn plan() -> (JobSpec, Dag) {
        let spec = JobSpec::builder("ci \"main\"")
            .node(NodeSpec::new("lint", "process"))
            .node(NodeSpec::new("unit<a>", "process").depends_on(["lint"]))
            .node(NodeSpec::new("docs", "noop"))
            .node(NodeSpec::new("report", "noop").depends_on(["unit<a>", "docs"]))
            .build();
        let dag = Dag::compile(&spec, &Limits::default(), &PolicyRegistry::default()).unwrap();
        (spec, dag)
    }

    #[test]
    fn dot_lists_nodes_edges_and_the_critical_path() {
        let (spec, dag) = plan();
        let text = render(GraphFormat::Dot, &spec, &dag, None, "ci");
        assert!(text.starts_with("digraph \"ci \\\"main\\\"\" {"), "{text}");
        assert!(
            text.contains("  n1 [label=\"unit<a>\\nprocess\"];"),
            "{text}"
        );
        assert!(text.contains("  n0 -> n1 [penwidth=2.5"), "{text}");
        assert!(text.contains("  n2 -> n3;"), "{text}");
        assert!(text.trim_end().ends_with('}'));
    }

    #[test]
    fn states_colour_the_nodes() {
        let (spec, dag) = plan();
        let states = [
            Some(Shown {
                state: NodeState::Succeeded,
                attempts: 1,
            }),
            Some(Shown {
                state: NodeState::Failed,
                attempts: 3,
            }),
            None,
            Some(Shown {
                state: NodeState::UpstreamFailed,
                attempts: 0,
            }),
        ];
        let dot = render(
            GraphFormat::Dot,
            &spec,
            &dag,
            Some(&states),
            "job J1: failed",
        );
        assert!(
            dot.contains(
                "n1 [label=\"unit<a>\\nprocess\\nfailed · 3 attempts\", fillcolor=\"#ffcdd2\""
            ),
            "{dot}"
        );
        assert!(dot.contains("n2 [label=\"docs\\nnoop\"];"), "{dot}");
        let mermaid = render(
            GraphFormat::Mermaid,
            &spec,
            &dag,
            Some(&states),
            "job J1: failed",
        );
        assert!(mermaid.contains("flowchart LR\n"), "{mermaid}");
        assert!(mermaid.contains("  n1[\"unit#lt;a#gt;<br/><small>process</small><br/>failed · 3 attempts\"]:::failed"), "{mermaid}");
        assert!(
            mermaid.contains("  classDef failed fill:#ffcdd2"),
            "{mermaid}"
        );
        assert!(mermaid.contains("  n0 --> n1\n"), "{mermaid}");
        assert!(
            mermaid.contains("  linkStyle 0,1 stroke-width:3px"),
            "{mermaid}"
        );
    }
}
