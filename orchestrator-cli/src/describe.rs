//! What `validate` says about a valid plan: its size and shape.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use orchestrator_core::{Dag, JobSpec};
use serde::Serialize;

/// Levels listed node by node up to this many nodes; larger plans get counts.
const LIST_LEVELS_UP_TO: usize = 60;

/// The shape of a valid plan.
#[derive(Debug, Serialize)]
pub(crate) struct Description {
    /// The job's name.
    pub(crate) name: String,
    /// Number of nodes.
    pub(crate) nodes: usize,
    /// Nodes per runner type.
    pub(crate) types: BTreeMap<String, usize>,
    /// Number of dependency edges (duplicates merged).
    pub(crate) edges: usize,
    /// Number of levels: the longest chain of dependencies, in nodes.
    pub(crate) depth: u32,
    /// The longest chain of dependencies, by node id.
    pub(crate) critical_path: Vec<String>,
    /// Nodes without dependencies.
    pub(crate) roots: Vec<String>,
    /// Node ids by level (level 1 first).
    pub(crate) levels: Vec<Vec<String>>,
}

impl Description {
    /// Describes `dag`, compiled from `spec`.
    pub(crate) fn new(spec: &JobSpec, dag: &Dag) -> Self {
        let id = |i: u32| spec.nodes()[i as usize].id.clone();
        let mut types = BTreeMap::new();
        for n in spec.nodes() {
            *types.entry(n.kind.clone()).or_insert(0) += 1;
        }
        Self {
            name: spec.name.clone(),
            nodes: dag.len(),
            types,
            edges: dag.edge_count(),
            depth: dag.depth(),
            critical_path: dag.critical_path().into_iter().map(id).collect(),
            roots: dag.roots().map(id).collect(),
            levels: dag
                .levels()
                .into_iter()
                .map(|level| level.into_iter().map(id).collect())
                .collect(),
        }
    }

    /// The description as text, under a first line naming `file`.
    pub(crate) fn text(&self, file: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{file}: valid job {:?}", self.name);
        let types: Vec<String> = self
            .types
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        let _ = writeln!(
            out,
            "  nodes          {} ({})",
            self.nodes,
            types.join(", ")
        );
        let _ = writeln!(out, "  edges          {}", self.edges);
        let widest = self.levels.iter().map(Vec::len).max().unwrap_or(0);
        let _ = writeln!(
            out,
            "  depth          {} level{} (widest: {widest} node{})",
            self.depth,
            if self.depth == 1 { "" } else { "s" },
            if widest == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            out,
            "  critical path  {} ({} node{})",
            abbreviate(&self.critical_path, " -> ", 12),
            self.critical_path.len(),
            if self.critical_path.len() == 1 {
                ""
            } else {
                "s"
            }
        );
        let _ = writeln!(
            out,
            "  roots          {}",
            abbreviate(&self.roots, ", ", 12)
        );
        if self.nodes <= LIST_LEVELS_UP_TO {
            let _ = writeln!(out, "  levels");
            for (i, level) in self.levels.iter().enumerate() {
                let _ = writeln!(out, "    {:>3}  {}", i + 1, level.join(", "));
            }
        }
        out
    }
}

/// `items` joined by `sep`, the middle elided past `max` items.
fn abbreviate(items: &[String], sep: &str, max: usize) -> String {
    if items.len() <= max {
        return items.join(sep);
    }
    let head = &items[..max / 2];
    let tail = &items[items.len() - max / 2..];
    format!(
        "{}{sep}… {} more …{sep}{}",
        head.join(sep),
        items.len() - max,
        tail.join(sep)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_core::{Limits, NodeSpec, PolicyRegistry};

    #[test]
    fn describes_size_depth_and_critical_path() {
        let spec = JobSpec::builder("ci")
            .node(NodeSpec::new("lint", "process"))
            .node(NodeSpec::new("unit", "process").depends_on(["lint"]))
            .node(NodeSpec::new("docs", "noop"))
            .node(NodeSpec::new("report", "noop").depends_on(["unit", "docs"]))
            .build();
        let dag = Dag::compile(&spec, &Limits::default(), &PolicyRegistry::default()).unwrap();
        let d = Description::new(&spec, &dag);
        assert_eq!(d.critical_path, ["lint", "unit", "report"]);
        let text = d.text("ci.yaml");
        assert!(text.starts_with("ci.yaml: valid job \"ci\"\n"), "{text}");
        assert!(
            text.contains("  nodes          4 (noop: 2, process: 2)\n"),
            "{text}"
        );
        assert!(text.contains("  edges          3\n"), "{text}");
        assert!(
            text.contains("  depth          3 levels (widest: 2 nodes)\n"),
            "{text}"
        );
        assert!(
            text.contains("  critical path  lint -> unit -> report (3 nodes)\n"),
            "{text}"
        );
        assert!(text.contains("      1  lint, docs\n"), "{text}");
    }

    #[test]
    fn long_lists_are_elided() {
        let items: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        assert_eq!(abbreviate(&items, ", ", 4), "0, 1, … 16 more …, 18, 19");
    }
}
