//! [`Dag`]: the compiled, validated plan of a job.
//!
//! The graph is stored as two compressed adjacency arrays (successors and
//! predecessors, CSR layout) indexed by node index (the node's position in the
//! spec). That is what makes a million-node job an ordinary input: about 20
//! bytes per node plus 8 per edge, one allocation per array, and the
//! successors of a finished node are one contiguous slice, so the executor
//! finds newly ready nodes in O(out-degree). Cycle analysis uses petgraph's
//! strongly connected components (Kosaraju's, which does not recurse, so a
//! hostile 100,000-node cycle cannot overflow the stack) on the part of the graph that the
//! topological sort could not order, and [`Dag::to_petgraph`] hands the whole
//! graph to petgraph for any other algorithm.

use std::collections::VecDeque;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::retry::PolicyRegistry;
use crate::spec::JobSpec;
use crate::validate::{check_fields, Limits, Problem, ProblemCode, ValidationErrors, AMBIGUOUS};

/// Most cycles reported for one spec; a graph with thousands of cycles is
/// better served by the first hundred than by a megabyte of paths.
const MAX_REPORTED_CYCLES: usize = 100;

/// Longest cycle path spelled out in full in a problem message.
const MAX_CYCLE_TEXT_NODES: usize = 40;

/// A validated DAG. Node `i` is `spec.dag_definition.nodes[i]`.
///
/// ```
/// use orchestrator_core::{Dag, JobSpec, Limits, NodeSpec, PolicyRegistry};
///
/// let spec = JobSpec::builder("ci")
///     .node(NodeSpec::new("lint", "noop"))
///     .node(NodeSpec::new("unit", "noop").depends_on(["lint"]))
///     .node(NodeSpec::new("docs", "noop"))
///     .node(NodeSpec::new("report", "noop").depends_on(["unit", "docs"]))
///     .build();
/// let dag = Dag::compile(&spec, &Limits::default(), &PolicyRegistry::default()).unwrap();
/// assert_eq!(dag.len(), 4);
/// assert_eq!(dag.depth(), 3);
/// assert_eq!(dag.successors(0), &[1]);
/// assert_eq!(dag.critical_path(), vec![0, 1, 3]); // lint -> unit -> report
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dag {
    succ_off: Vec<u32>,
    succ: Vec<u32>,
    pred_off: Vec<u32>,
    pred: Vec<u32>,
    topo: Vec<u32>,
    level: Vec<u32>,
    critical: Vec<u32>,
    depth: u32,
}

impl Dag {
    /// Validates `spec` and compiles it. Returns every problem at once.
    pub fn compile(
        spec: &JobSpec,
        limits: &Limits,
        policies: &PolicyRegistry,
    ) -> Result<Dag, ValidationErrors> {
        let mut problems = Vec::new();
        let ids = check_fields(spec, limits, policies, &mut problems);
        let nodes = spec.nodes();
        if problems.iter().any(|p| p.code == ProblemCode::TooManyNodes) {
            return Err(ValidationErrors(problems));
        }
        let n = nodes.len();

        // Resolve every dependency to (from, to) pairs, reporting unknown ids
        // and self-loops where they were written.
        let mut in_count = vec![0u32; n];
        let mut edges: Vec<(u32, u32)> = Vec::with_capacity(
            spec.dag_definition.edges.len()
                + nodes.iter().map(|x| x.depends_on.len()).sum::<usize>(),
        );
        // Where a dependency was written, spelled out only for a problem:
        // formatting it for each of millions of edges cost more than
        // resolving them.
        enum At {
            DependsOn(usize, usize),
            Edge(usize),
        }
        let path = |at: At| match at {
            At::DependsOn(i, j) => format!("/dag_definition/nodes/{i}/depends_on/{j}"),
            At::Edge(k) => format!("/dag_definition/edges/{k}/from"),
        };
        let mut resolve =
            |from: &str, to: u32, at: At, problems: &mut Vec<Problem>| match ids.get(from) {
                None => problems.push(Problem::new(
                    path(at),
                    ProblemCode::UnknownDependency,
                    format!("no node has id {from:?}"),
                )),
                // Already reported as a duplicate or malformed id.
                Some(&AMBIGUOUS) => {}
                Some(&f) if f == to => problems.push(Problem::new(
                    path(at),
                    ProblemCode::SelfLoop,
                    format!("node {from:?} depends on itself"),
                )),
                Some(&f) => {
                    edges.push((f, to));
                    in_count[to as usize] += 1;
                }
            };
        for (i, node) in nodes.iter().enumerate() {
            for (j, dep) in node.depends_on.iter().enumerate() {
                resolve(dep, i as u32, At::DependsOn(i, j), &mut problems);
            }
        }
        for (k, edge) in spec.dag_definition.edges.iter().enumerate() {
            match ids.get(edge.to.as_str()) {
                Some(&AMBIGUOUS) => {}
                Some(&to) => resolve(&edge.from, to, At::Edge(k), &mut problems),
                None => {
                    if !ids.contains_key(edge.from.as_str()) {
                        problems.push(Problem::new(
                            path(At::Edge(k)),
                            ProblemCode::UnknownDependency,
                            format!("no node has id {:?}", edge.from),
                        ));
                    }
                    problems.push(Problem::new(
                        format!("/dag_definition/edges/{k}/to"),
                        ProblemCode::UnknownDependency,
                        format!("no node has id {:?}", edge.to),
                    ));
                }
            }
        }

        // Predecessor CSR by counting sort, then sort+dedup each (short) row:
        // the same dependency may be written both as an edge and in depends_on.
        let (pred_off, pred) = {
            let mut off = Vec::with_capacity(n + 1);
            let mut acc = 0u32;
            off.push(0);
            for &c in &in_count {
                acc += c;
                off.push(acc);
            }
            let mut cursor: Vec<u32> = off[..n].to_vec();
            let mut pred = vec![0u32; edges.len()];
            for &(f, t) in &edges {
                pred[cursor[t as usize] as usize] = f;
                cursor[t as usize] += 1;
            }
            drop(edges);
            // Compact in place after deduplicating each row.
            let mut write = 0usize;
            let mut new_off = Vec::with_capacity(n + 1);
            new_off.push(0u32);
            for i in 0..n {
                let (s, e) = (off[i] as usize, off[i + 1] as usize);
                let row = &mut pred[s..e];
                row.sort_unstable();
                let mut last = None;
                for r in s..e {
                    let v = pred[r];
                    if last != Some(v) {
                        pred[write] = v;
                        write += 1;
                        last = Some(v);
                    }
                }
                new_off.push(write as u32);
            }
            pred.truncate(write);
            pred.shrink_to_fit();
            (new_off, pred)
        };

        // Successor CSR from the predecessor rows.
        let mut out_count = vec![0u32; n + 1];
        for &p in &pred {
            out_count[p as usize + 1] += 1;
        }
        for i in 0..n {
            out_count[i + 1] += out_count[i];
        }
        let succ_off = out_count;
        let mut cursor: Vec<u32> = succ_off[..n].to_vec();
        let mut succ = vec![0u32; pred.len()];
        for to in 0..n {
            for &from in &pred[pred_off[to] as usize..pred_off[to + 1] as usize] {
                succ[cursor[from as usize] as usize] = to as u32;
                cursor[from as usize] += 1;
            }
        }
        drop(cursor);

        // Kahn's algorithm; levels fall out of the same pass.
        let mut indeg: Vec<u32> = (0..n).map(|i| pred_off[i + 1] - pred_off[i]).collect();
        let mut level = vec![0u32; n];
        let mut topo = Vec::with_capacity(n);
        topo.extend((0..n as u32).filter(|&i| indeg[i as usize] == 0));
        let mut head = 0;
        while head < topo.len() {
            let v = topo[head] as usize;
            head += 1;
            for &s in &succ[succ_off[v] as usize..succ_off[v + 1] as usize] {
                let s = s as usize;
                level[s] = level[s].max(level[v] + 1);
                indeg[s] -= 1;
                if indeg[s] == 0 {
                    topo.push(s as u32);
                }
            }
        }
        if topo.len() < n {
            report_cycles(spec, &indeg, &succ_off, &succ, &mut problems);
        }
        if !problems.is_empty() {
            return Err(ValidationErrors(problems));
        }

        // Critical path length (in nodes) from each node to a sink.
        let mut critical = vec![1u32; n];
        for &v in topo.iter().rev() {
            let v = v as usize;
            let best = succ[succ_off[v] as usize..succ_off[v + 1] as usize]
                .iter()
                .map(|&s| critical[s as usize])
                .max()
                .unwrap_or(0);
            critical[v] = best + 1;
        }
        let depth = level.iter().max().map_or(0, |&l| l + 1);
        Ok(Dag {
            succ_off,
            succ,
            pred_off,
            pred,
            topo,
            level,
            critical,
            depth,
        })
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.topo.len()
    }

    /// Whether the DAG has no nodes (never true for a compiled spec).
    pub fn is_empty(&self) -> bool {
        self.topo.is_empty()
    }

    /// Number of distinct edges.
    pub fn edge_count(&self) -> usize {
        self.succ.len()
    }

    /// Nodes that run after `node`.
    pub fn successors(&self, node: u32) -> &[u32] {
        let i = node as usize;
        &self.succ[self.succ_off[i] as usize..self.succ_off[i + 1] as usize]
    }

    /// Nodes `node` runs after.
    pub fn predecessors(&self, node: u32) -> &[u32] {
        let i = node as usize;
        &self.pred[self.pred_off[i] as usize..self.pred_off[i + 1] as usize]
    }

    /// Number of distinct upstream nodes of `node`.
    pub fn indegree(&self, node: u32) -> u32 {
        let i = node as usize;
        self.pred_off[i + 1] - self.pred_off[i]
    }

    /// Nodes without upstream nodes, in index order.
    pub fn roots(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len() as u32).filter(|&i| self.indegree(i) == 0)
    }

    /// A topological order (every node after all of its upstream nodes).
    pub fn topological_order(&self) -> &[u32] {
        &self.topo
    }

    /// Length of the longest path from a root to `node`, in edges.
    pub fn level(&self, node: u32) -> u32 {
        self.level[node as usize]
    }

    /// Number of levels (the longest path, in nodes).
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Nodes grouped by level.
    pub fn levels(&self) -> Vec<Vec<u32>> {
        let mut out = vec![Vec::new(); self.depth as usize];
        for &v in &self.topo {
            out[self.level[v as usize] as usize].push(v);
        }
        out
    }

    /// Nodes on the longest path from `node` to a sink, `node` included. The
    /// executor dispatches longer critical paths first among equal priorities.
    pub fn critical_path_len(&self, node: u32) -> u32 {
        self.critical[node as usize]
    }

    /// One longest path through the DAG, from a root to a sink.
    pub fn critical_path(&self) -> Vec<u32> {
        let Some(mut v) = self
            .roots()
            .max_by_key(|&r| (self.critical[r as usize], std::cmp::Reverse(r)))
        else {
            return Vec::new();
        };
        let mut path = vec![v];
        while let Some(&next) = self
            .successors(v)
            .iter()
            .max_by_key(|&&s| (self.critical[s as usize], std::cmp::Reverse(s)))
        {
            path.push(next);
            v = next;
        }
        path
    }

    /// The graph as a petgraph `DiGraph` whose node weights are node indices.
    pub fn to_petgraph(&self) -> DiGraph<u32, ()> {
        let mut g = DiGraph::with_capacity(self.len(), self.edge_count());
        for i in 0..self.len() as u32 {
            g.add_node(i);
        }
        for from in 0..self.len() as u32 {
            for &to in self.successors(from) {
                g.add_edge(
                    NodeIndex::new(from as usize),
                    NodeIndex::new(to as usize),
                    (),
                );
            }
        }
        g
    }
}

/// Reports one cycle per strongly connected component of the nodes that the
/// topological sort could not order (those with `indeg > 0`).
fn report_cycles(
    spec: &JobSpec,
    indeg: &[u32],
    succ_off: &[u32],
    succ: &[u32],
    problems: &mut Vec<Problem>,
) {
    let stuck: Vec<u32> = (0..indeg.len() as u32)
        .filter(|&i| indeg[i as usize] > 0)
        .collect();
    let mut local = vec![u32::MAX; indeg.len()];
    let mut g: DiGraph<u32, ()> = DiGraph::with_capacity(stuck.len(), stuck.len());
    for &v in &stuck {
        local[v as usize] = g.add_node(v).index() as u32;
    }
    for &v in &stuck {
        for &s in &succ[succ_off[v as usize] as usize..succ_off[v as usize + 1] as usize] {
            if local[s as usize] != u32::MAX {
                g.add_edge(
                    NodeIndex::new(local[v as usize] as usize),
                    NodeIndex::new(local[s as usize] as usize),
                    (),
                );
            }
        }
    }
    let mut sccs: Vec<Vec<u32>> = petgraph::algo::kosaraju_scc(&g)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let mut ids: Vec<u32> = c.into_iter().map(|ix| g[ix]).collect();
            ids.sort_unstable();
            ids
        })
        .collect();
    sccs.sort_unstable();
    for component in sccs.into_iter().take(MAX_REPORTED_CYCLES) {
        let cycle = shortest_cycle_through(component[0], &component, succ_off, succ);
        let name = |i: u32| spec.nodes()[i as usize].id.as_str();
        let text = if cycle.len() <= MAX_CYCLE_TEXT_NODES {
            cycle
                .iter()
                .map(|&i| name(i))
                .collect::<Vec<_>>()
                .join(" -> ")
        } else {
            // A 100,000-node cycle would make a megabyte-long message; show
            // both ends of the path and how much is left out.
            let half = MAX_CYCLE_TEXT_NODES / 2;
            let head: Vec<&str> = cycle[..half].iter().map(|&i| name(i)).collect();
            let tail: Vec<&str> = cycle[cycle.len() - half..]
                .iter()
                .map(|&i| name(i))
                .collect();
            format!(
                "{} -> ... ({} more) ... -> {}",
                head.join(" -> "),
                cycle.len() - 2 * half,
                tail.join(" -> ")
            )
        };
        problems.push(Problem::new(
            format!("/dag_definition/nodes/{}", component[0]),
            ProblemCode::Cycle,
            format!("dependency cycle: {text}"),
        ));
    }
}

/// A shortest cycle from `start` back to itself, staying inside `component`
/// (sorted). The path starts and ends with `start`.
fn shortest_cycle_through(
    start: u32,
    component: &[u32],
    succ_off: &[u32],
    succ: &[u32],
) -> Vec<u32> {
    use std::collections::HashMap;
    let mut parent: HashMap<u32, u32> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &s in &succ[succ_off[v as usize] as usize..succ_off[v as usize + 1] as usize] {
            if component.binary_search(&s).is_err() {
                continue;
            }
            if s == start {
                let mut path = vec![start];
                let mut cur = v;
                while cur != start {
                    path.push(cur);
                    cur = parent[&cur];
                }
                // The walk went backwards from `v`; put it in edge order.
                path[1..].reverse();
                path.push(start);
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(s) {
                e.insert(v);
                queue.push_back(s);
            }
        }
    }
    // A strongly connected component always has a cycle through each member.
    vec![start, start]
}
