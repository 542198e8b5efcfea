//! Property tests: parsing and validation never panic on any input, and every
//! compiled `Dag` is consistent with an independent model of its input graph
//! (petgraph for cycles, a fixed-point check for levels and critical paths).

use std::collections::{BTreeMap, BTreeSet};

use orchestrator_core::{validate, Dag, JobSpec, Limits, NodeSpec, PolicyRegistry, ProblemCode};
use petgraph::algo::{is_cyclic_directed, kosaraju_scc};
use petgraph::graph::{DiGraph, NodeIndex};
use proptest::prelude::*;
use serde_json::{Map, Value};

const PARSE_CODES: [&str; 6] = [
    "syntax",
    "unknown_field",
    "unknown_variant",
    "missing_field",
    "invalid_type",
    "invalid_value",
];

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Parses `text`; on success validates and compiles it (neither may panic,
/// and they must agree); on failure checks the error's shape.
fn parse_and_validate(text: &str) -> Result<(), TestCaseError> {
    match JobSpec::from_json(text) {
        Ok(spec) => {
            let limits = Limits::default();
            let policies = PolicyRegistry::default();
            let validated = validate(&spec, &limits, &policies);
            let compiled = Dag::compile(&spec, &limits, &policies);
            prop_assert_eq!(validated.is_ok(), compiled.is_ok());
            if let Err(errors) = validated {
                prop_assert!(!errors.problems().is_empty());
                for p in errors.problems() {
                    prop_assert!(p.path.is_empty() || p.path.starts_with('/'), "{:?}", p);
                    prop_assert!(!p.message.is_empty());
                }
            }
            // What parsed must serialize and parse back to the same spec.
            let again = JobSpec::from_json(&serde_json::to_string(&spec).unwrap());
            prop_assert_eq!(again.as_ref(), Ok(&spec));
        }
        Err(err) => {
            prop_assert!(PARSE_CODES.contains(&err.code), "code {:?}", err.code);
            prop_assert!(
                err.path.is_empty() || err.path.starts_with('/'),
                "{:?}",
                err
            );
            prop_assert!(!err.message.is_empty());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Arbitrary JSON.

/// Field names of the spec schema (and near misses), so random objects often
/// hit real fields.
const KEYS: [&str; 22] = [
    "name",
    "description",
    "dag_definition",
    "nodes",
    "edges",
    "id",
    "type",
    "depends_on",
    "from",
    "to",
    "timeout",
    "heartbeat_timeout",
    "trigger",
    "pool",
    "pools",
    "max_concurrency",
    "priority",
    "labels",
    "params",
    "compensate",
    "on_failure",
    "nmae",
];

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Quarter steps are exact in binary, so a float survives a round trip.
        (-4000i32..4000).prop_map(|q| Value::from(f64::from(q) / 4.0)),
        "[a-z0-9 ._/~-]{0,8}".prop_map(Value::String),
        prop::sample::select(
            &[
                "5s", "0", "250ms", "1h", "-1s", "1.5m", "soon", "", "all_done", "always",
                "rollback", "a", "b",
            ][..]
        )
        .prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        3 => prop::sample::select(&KEYS[..]).prop_map(str::to_owned),
                        1 => "[a-z_]{1,6}",
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A spec-shaped object whose fields are sometimes right, sometimes wrong.
fn jsonish_spec() -> impl Strategy<Value = Value> {
    // Nodes are mostly called `n{index}` (so many specs are valid), sometimes
    // something odd; references draw from the same names plus unknown ones.
    let odd_id = prop::sample::select(&["n0", "n1", "", "a/b", "x\u{1}"][..]).prop_map(Value::from);
    let reference = prop::sample::select(&["n0", "n1", "n2", "n3", "n4", "n5", "ghost", ""][..])
        .prop_map(Value::from);
    let duration = prop_oneof![
        4 => prop::sample::select(&["5s", "250ms", "1h", "1.5s", "2m", "0", "0ms", "-1s", "1w", "99999999999d"][..])
            .prop_map(Value::from),
        2 => (-3i64..100_000).prop_map(Value::from),
        1 => json_leaf(),
    ];
    let trigger = prop::sample::select(
        &[
            "all_success",
            "all_failed",
            "all_done",
            "one_success",
            "one_failed",
            "none_failed",
            "none_failed_min_one_success",
            "none_skipped",
            "always",
            "sometimes",
        ][..],
    )
    .prop_map(Value::from);
    let node = (
        prop::option::weighted(0.15, odd_id),
        prop_oneof![8 => Just(Value::from("noop")), 1 => json_leaf()],
        prop::option::weighted(
            0.3,
            prop::collection::vec(reference.clone(), 0..3).prop_map(Value::from),
        ),
        prop::option::weighted(0.15, duration.clone()),
        prop::option::weighted(0.15, duration.clone()),
        prop::option::weighted(0.3, trigger),
        prop::option::weighted(
            0.1,
            prop::sample::select(&["browser", "gpu"][..]).prop_map(Value::from),
        ),
        prop::option::weighted(0.3, json_value()),
        prop::option::weighted(0.05, (prop::sample::select(&KEYS[..]), json_leaf())),
    )
        .prop_map(
            |(id, kind, deps, timeout, heartbeat, trigger, pool, params, extra)| {
                let mut m = Map::new();
                if let Some(id) = id {
                    m.insert("id".into(), id);
                }
                m.insert("type".into(), kind);
                let optional = [
                    ("depends_on", deps),
                    ("timeout", timeout),
                    ("heartbeat_timeout", heartbeat),
                    ("trigger", trigger),
                    ("pool", pool),
                    ("params", params),
                ];
                for (k, v) in optional {
                    if let Some(v) = v {
                        m.insert(k.into(), v);
                    }
                }
                if let Some((k, v)) = extra {
                    m.insert(k.into(), v);
                }
                m
            },
        );
    let nodes = prop::collection::vec(node, 0..7).prop_map(|nodes| {
        let named = nodes.into_iter().enumerate().map(|(i, mut m)| {
            m.entry("id")
                .or_insert_with(|| Value::from(format!("n{i}")));
            Value::Object(m)
        });
        Value::Array(named.collect())
    });
    let edge = (reference.clone(), reference)
        .prop_map(|(from, to)| serde_json::json!({"from": from, "to": to}));
    (
        prop_oneof![6 => "[a-z][a-z ]{0,9}".prop_map(Value::from), 1 => json_leaf()],
        nodes,
        prop::collection::vec(edge, 0..3),
        prop::option::weighted(0.3, duration),
        prop::option::weighted(0.3, (-2i64..5).prop_map(Value::from)),
        prop::option::weighted(
            0.3,
            prop::collection::btree_map(
                prop::sample::select(&["browser", "gpu", "a/b"][..]),
                (-1i64..3).prop_map(Value::from),
                0..3,
            ),
        ),
    )
        .prop_map(|(name, nodes, edges, timeout, max_concurrency, pools)| {
            let mut m = Map::new();
            m.insert("name".into(), name);
            m.insert(
                "dag_definition".into(),
                serde_json::json!({"nodes": nodes, "edges": edges}),
            );
            if let Some(t) = timeout {
                m.insert("timeout".into(), t);
            }
            if let Some(c) = max_concurrency {
                m.insert("max_concurrency".into(), c);
            }
            if let Some(pools) = pools {
                let pools: Map<String, Value> =
                    pools.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                m.insert("pools".into(), Value::Object(pools));
            }
            Value::Object(m)
        })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        parse_and_validate(&value.to_string())?;
    }

    #[test]
    fn jsonish_specs_never_panic(value in jsonish_spec()) {
        parse_and_validate(&value.to_string())?;
    }

    #[test]
    fn arbitrary_text_never_panics(text in "[{}\\[\\]\",:a-z0-9 \\\\]{0,40}") {
        parse_and_validate(&text)?;
    }

    #[test]
    fn truncated_valid_json_never_panics(value in jsonish_spec(), cut in any::<prop::sample::Index>()) {
        let text = value.to_string();
        let mut end = cut.index(text.len() + 1);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        parse_and_validate(&text[..end])?;
    }
}

// ---------------------------------------------------------------------------
// Arbitrary graphs.

/// A random graph over nodes `n0..n{n-1}`. Indices `>= n` in a dependency
/// name a node that does not exist (`ghost{k}`).
#[derive(Clone, Debug)]
struct Graph {
    n: usize,
    /// `(from, to)`: `to` (a real node) lists `from` in its `depends_on`.
    depends_on: Vec<(usize, usize)>,
    /// `(from, to)` written as an explicit edge.
    edges: Vec<(usize, usize)>,
}

fn id(n: usize, i: usize) -> String {
    if i < n {
        format!("n{i}")
    } else {
        format!("ghost{}", i - n)
    }
}

impl Graph {
    fn spec(&self) -> JobSpec {
        let mut nodes: Vec<NodeSpec> = (0..self.n)
            .map(|i| NodeSpec::new(id(self.n, i), "noop"))
            .collect();
        for &(from, to) in &self.depends_on {
            nodes[to].depends_on.push(id(self.n, from));
        }
        let mut builder = JobSpec::builder("graph").nodes(nodes);
        for &(from, to) in &self.edges {
            builder = builder.edge(id(self.n, from), id(self.n, to));
        }
        builder.build()
    }

    /// The distinct edges that are real (both ends exist, not self-loops).
    fn resolved(&self) -> BTreeSet<(usize, usize)> {
        self.depends_on
            .iter()
            .chain(&self.edges)
            .copied()
            .filter(|&(f, t)| f < self.n && t < self.n && f != t)
            .collect()
    }

    fn petgraph(&self) -> DiGraph<usize, ()> {
        let mut g = DiGraph::new();
        for i in 0..self.n {
            g.add_node(i);
        }
        for (f, t) in self.resolved() {
            g.add_edge(NodeIndex::new(f), NodeIndex::new(t), ());
        }
        g
    }

    /// Whether anything other than a cycle makes the spec invalid.
    fn has_bad_reference(&self) -> bool {
        self.depends_on
            .iter()
            .chain(&self.edges)
            .any(|&(f, t)| f >= self.n || t >= self.n || f == t)
    }
}

/// Anything goes: cycles, self-loops, unknown ids, duplicates.
fn wild_graph() -> impl Strategy<Value = Graph> {
    (1usize..=60).prop_flat_map(|n| {
        let pair_dep = (0..n + 2, 0..n);
        let pair_edge = (0..n + 2, 0..n + 2);
        (
            Just(n),
            prop::collection::vec(pair_dep, 0..=2 * n),
            prop::collection::vec(pair_edge, 0..=n),
        )
            .prop_map(|(n, depends_on, edges)| Graph {
                n,
                depends_on,
                edges,
            })
    })
}

/// Only real nodes, no self-loops, and sparse enough that many are acyclic
/// (and some have a few cycles).
fn sparse_graph() -> impl Strategy<Value = Graph> {
    (2usize..=60).prop_flat_map(|n| {
        // `to` skips over `from`, so there are no self-loops.
        let pair = (0..n, 0..n - 1).prop_map(|(f, t)| (f, if t >= f { t + 1 } else { t }));
        (
            Just(n),
            prop::collection::vec(pair.clone(), 0..=n),
            prop::collection::vec(pair, 0..=n / 4),
        )
            .prop_map(|(n, depends_on, edges)| Graph {
                n,
                depends_on,
                edges,
            })
    })
}

/// Always a DAG: edges go forward in a random permutation of the nodes, and
/// some are written twice (once as an edge, once in `depends_on`).
fn dag_graph() -> impl Strategy<Value = Graph> {
    (1usize..=60).prop_flat_map(|n| {
        (
            Just(n),
            Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
            prop::collection::vec((0..n, 0..n, 0u8..4), 0..=3 * n),
        )
            .prop_map(|(n, rank, raw)| {
                let mut g = Graph {
                    n,
                    depends_on: Vec::new(),
                    edges: Vec::new(),
                };
                for (a, b, how) in raw {
                    if a == b {
                        continue;
                    }
                    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
                    let edge = (rank[lo], rank[hi]);
                    match how {
                        0 => g.edges.push(edge),
                        1 => {
                            g.edges.push(edge);
                            g.depends_on.push(edge);
                        }
                        _ => g.depends_on.push(edge),
                    }
                }
                g
            })
    })
}

fn check_graph(g: &Graph) -> Result<(), TestCaseError> {
    let spec = g.spec();
    let limits = Limits::default();
    let policies = PolicyRegistry::default();
    let compiled = Dag::compile(&spec, &limits, &policies);
    prop_assert_eq!(
        validate(&spec, &limits, &policies).is_ok(),
        compiled.is_ok(),
        "validate and compile disagree"
    );
    let pg = g.petgraph();
    let cyclic = is_cyclic_directed(&pg);
    prop_assert_eq!(
        compiled.is_ok(),
        !cyclic && !g.has_bad_reference(),
        "compile result disagrees with the model: {:?}",
        compiled.as_ref().err()
    );
    match compiled {
        Ok(dag) => {
            check_dag(g, &dag)?;
            // Compilation is deterministic.
            prop_assert_eq!(Dag::compile(&spec, &limits, &policies).unwrap(), dag);
        }
        Err(errors) => check_problems(g, &pg, cyclic, errors.problems())?,
    }
    Ok(())
}

fn check_problems(
    g: &Graph,
    pg: &DiGraph<usize, ()>,
    cyclic: bool,
    problems: &[orchestrator_core::Problem],
) -> Result<(), TestCaseError> {
    let n = g.n;
    let cycles: Vec<_> = problems
        .iter()
        .filter(|p| p.code == ProblemCode::Cycle)
        .collect();
    prop_assert_eq!(
        !cycles.is_empty(),
        cyclic,
        "cycle reported iff petgraph finds one: {:?}",
        problems
    );

    // One cycle per non-trivial strongly connected component, named by its
    // lowest index.
    let mut scc_of = vec![usize::MAX; n];
    let mut scc_min = Vec::new();
    for (k, comp) in kosaraju_scc(pg)
        .into_iter()
        .filter(|c| c.len() > 1)
        .enumerate()
    {
        for ix in &comp {
            scc_of[ix.index()] = k;
        }
        scc_min.push(comp.iter().map(|ix| ix.index()).min().unwrap());
    }
    prop_assert_eq!(cycles.len(), scc_min.len(), "{:?}", cycles);
    let resolved = g.resolved();
    let mut seen_sccs = BTreeSet::new();
    for p in &cycles {
        let (_, text) = p.message.rsplit_once(": ").unwrap();
        let path: Vec<usize> = text
            .split(" -> ")
            .map(|s| s.strip_prefix('n').and_then(|i| i.parse().ok()).unwrap())
            .collect();
        prop_assert!(
            path.len() >= 3,
            "a cycle needs two nodes at least: {}",
            text
        );
        prop_assert_eq!(path.first(), path.last(), "{}", text);
        prop_assert_eq!(&p.path, &format!("/dag_definition/nodes/{}", path[0]));
        for w in path.windows(2) {
            prop_assert!(
                resolved.contains(&(w[0], w[1])),
                "{} -> {} is not an edge",
                w[0],
                w[1]
            );
        }
        // A simple cycle: no node twice except the closing one.
        let inner: BTreeSet<_> = path[..path.len() - 1].iter().collect();
        prop_assert_eq!(inner.len(), path.len() - 1, "{}", text);
        let k = scc_of[path[0]];
        prop_assert!(k != usize::MAX);
        prop_assert_eq!(scc_min[k], path[0]);
        prop_assert!(seen_sccs.insert(k), "two cycles reported for one component");
    }

    // Every bad reference is reported where it was written.
    let paths: BTreeMap<&str, ProblemCode> =
        problems.iter().map(|p| (p.path.as_str(), p.code)).collect();
    let mut per_node = vec![0usize; n];
    for &(from, to) in &g.depends_on {
        let j = per_node[to];
        per_node[to] += 1;
        let at = format!("/dag_definition/nodes/{to}/depends_on/{j}");
        let expected = if from >= n {
            Some(ProblemCode::UnknownDependency)
        } else if from == to {
            Some(ProblemCode::SelfLoop)
        } else {
            None
        };
        prop_assert_eq!(paths.get(at.as_str()).copied(), expected, "{}", at);
    }
    for (k, &(from, to)) in g.edges.iter().enumerate() {
        let at_from = format!("/dag_definition/edges/{k}/from");
        let at_to = format!("/dag_definition/edges/{k}/to");
        if to >= n {
            prop_assert_eq!(
                paths.get(at_to.as_str()).copied(),
                Some(ProblemCode::UnknownDependency)
            );
            // (Whether an unknown `from` is reported too when `to` is unknown
            // is pinned down in validation.rs.)
        } else {
            prop_assert!(!paths.contains_key(at_to.as_str()));
            let expected = if from >= n {
                Some(ProblemCode::UnknownDependency)
            } else if from == to {
                Some(ProblemCode::SelfLoop)
            } else {
                None
            };
            prop_assert_eq!(
                paths.get(at_from.as_str()).copied(),
                expected,
                "{}",
                at_from
            );
        }
    }
    // Nothing else is reported.
    for p in problems {
        prop_assert!(
            matches!(
                p.code,
                ProblemCode::Cycle | ProblemCode::UnknownDependency | ProblemCode::SelfLoop
            ),
            "unexpected problem {:?}",
            p
        );
    }
    Ok(())
}

fn check_dag(g: &Graph, dag: &Dag) -> Result<(), TestCaseError> {
    let n = g.n;
    let resolved = g.resolved();
    prop_assert_eq!(dag.len(), n);
    prop_assert!(!dag.is_empty());
    prop_assert_eq!(dag.edge_count(), resolved.len());

    // Successors and predecessors: sorted, deduplicated, exactly the input
    // edges, and mutually inverse.
    let mut edges_from_succ = BTreeSet::new();
    let mut edges_from_pred = BTreeSet::new();
    for v in 0..n as u32 {
        let succ = dag.successors(v);
        let pred = dag.predecessors(v);
        prop_assert!(
            succ.windows(2).all(|w| w[0] < w[1]),
            "successors of {} not strictly sorted: {:?}",
            v,
            succ
        );
        prop_assert!(
            pred.windows(2).all(|w| w[0] < w[1]),
            "predecessors of {} not strictly sorted: {:?}",
            v,
            pred
        );
        prop_assert_eq!(dag.indegree(v) as usize, pred.len());
        for &s in succ {
            prop_assert!(dag.predecessors(s).contains(&v));
            edges_from_succ.insert((v as usize, s as usize));
        }
        for &p in pred {
            prop_assert!(dag.successors(p).contains(&v));
            edges_from_pred.insert((p as usize, v as usize));
        }
    }
    prop_assert_eq!(&edges_from_succ, &resolved);
    prop_assert_eq!(&edges_from_pred, &resolved);

    // Roots: exactly the nodes without predecessors, in index order.
    let roots: Vec<u32> = dag.roots().collect();
    let expected_roots: Vec<u32> = (0..n as u32)
        .filter(|&v| dag.predecessors(v).is_empty())
        .collect();
    prop_assert_eq!(&roots, &expected_roots);
    prop_assert!(!roots.is_empty());

    // Topological order: a permutation in which every edge goes forward.
    let topo = dag.topological_order();
    prop_assert_eq!(topo.len(), n);
    let mut pos = vec![usize::MAX; n];
    for (i, &v) in topo.iter().enumerate() {
        prop_assert!((v as usize) < n);
        prop_assert_eq!(pos[v as usize], usize::MAX, "{} appears twice", v);
        pos[v as usize] = i;
    }
    for &(f, t) in &resolved {
        prop_assert!(pos[f] < pos[t], "edge {} -> {} goes backwards", f, t);
    }

    // Levels: 0 for roots, else 1 + the highest level of a predecessor.
    for v in 0..n as u32 {
        let expected = dag
            .predecessors(v)
            .iter()
            .map(|&p| dag.level(p) + 1)
            .max()
            .unwrap_or(0);
        prop_assert_eq!(dag.level(v), expected, "level of {}", v);
    }
    let max_level = (0..n as u32).map(|v| dag.level(v)).max().unwrap();
    prop_assert_eq!(dag.depth(), max_level + 1);
    let levels = dag.levels();
    prop_assert_eq!(levels.len(), dag.depth() as usize);
    let mut in_levels = 0;
    for (l, members) in levels.iter().enumerate() {
        prop_assert!(!members.is_empty(), "level {} is empty", l);
        for &v in members {
            prop_assert_eq!(dag.level(v) as usize, l);
        }
        in_levels += members.len();
    }
    prop_assert_eq!(in_levels, n);

    // Critical path lengths: 1 for sinks, else 1 + the longest successor.
    for v in 0..n as u32 {
        let expected = dag
            .successors(v)
            .iter()
            .map(|&s| dag.critical_path_len(s))
            .max()
            .unwrap_or(0)
            + 1;
        prop_assert_eq!(dag.critical_path_len(v), expected, "critical path of {}", v);
    }
    // The critical path: a root-to-sink path as long as the DAG is deep.
    let path = dag.critical_path();
    prop_assert_eq!(path.len(), dag.depth() as usize, "{:?}", path);
    prop_assert_eq!(dag.indegree(path[0]), 0);
    prop_assert!(dag.successors(*path.last().unwrap()).is_empty());
    prop_assert_eq!(dag.critical_path_len(path[0]), dag.depth());
    for w in path.windows(2) {
        prop_assert!(resolved.contains(&(w[0] as usize, w[1] as usize)));
    }

    // petgraph sees the same graph.
    let pg = dag.to_petgraph();
    prop_assert_eq!(pg.node_count(), n);
    prop_assert_eq!(pg.edge_count(), resolved.len());
    prop_assert!(!is_cyclic_directed(&pg));
    for e in pg.edge_indices() {
        let (a, b) = pg.edge_endpoints(e).unwrap();
        prop_assert!(resolved.contains(&(pg[a] as usize, pg[b] as usize)));
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn wild_graphs_compile_consistently(g in wild_graph()) {
        check_graph(&g)?;
    }

    #[test]
    fn sparse_graphs_compile_consistently(g in sparse_graph()) {
        check_graph(&g)?;
    }

    #[test]
    fn dags_always_compile_consistently(g in dag_graph()) {
        prop_assert!(Dag::compile(&g.spec(), &Limits::default(), &PolicyRegistry::default()).is_ok());
        check_graph(&g)?;
    }
}

/// The generators must actually reach every branch the properties check.
#[test]
fn graph_generators_cover_valid_cyclic_and_broken_inputs() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut ok, mut cyclic, mut bad) = (0, 0, 0);
    for _ in 0..200 {
        let g = sparse_graph().new_tree(&mut runner).unwrap().current();
        match Dag::compile(&g.spec(), &Limits::default(), &PolicyRegistry::default()) {
            Ok(_) => ok += 1,
            Err(e) if e.has(ProblemCode::Cycle) => cyclic += 1,
            Err(_) => bad += 1,
        }
        let w = wild_graph().new_tree(&mut runner).unwrap().current();
        if w.has_bad_reference() {
            bad += 1;
        }
    }
    assert!(ok > 20, "too few valid sparse graphs: {ok}");
    assert!(cyclic > 20, "too few cyclic sparse graphs: {cyclic}");
    assert!(bad > 20, "too few broken wild graphs: {bad}");
}

/// The spec-shaped generator must reach validation (and sometimes pass it),
/// or the "never panics" property would only exercise the parser.
#[test]
fn jsonish_generator_reaches_validation() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut parsed, mut valid) = (0, 0);
    for _ in 0..300 {
        let value = jsonish_spec().new_tree(&mut runner).unwrap().current();
        if let Ok(spec) = JobSpec::from_json(&value.to_string()) {
            parsed += 1;
            if validate(&spec, &Limits::default(), &PolicyRegistry::default()).is_ok() {
                valid += 1;
            }
        }
    }
    assert!(parsed > 30, "too few spec-shaped values parse: {parsed}");
    assert!(valid > 5, "too few spec-shaped values validate: {valid}");
}
