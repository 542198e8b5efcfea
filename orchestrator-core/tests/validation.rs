//! Validation of job specs: one test per problem code with its exact path,
//! "all problems at once", dependency merging, and the parse errors of
//! `JobSpec::from_json` / `from_yaml`.

use std::time::Duration;

use orchestrator_core::{
    validate, Dag, JobSpec, Limits, NodeSpec, PolicyRegistry, Problem, ProblemCode,
};
use serde_json::json;

const SEED: &str = r#"{"name": "Test Suite Execution", "description": "Execute comprehensive test suite", "dag_definition": {"nodes": [{"id": "test1", "type": "test_case"}], "edges": []}}"#;

fn problems_with(spec: &JobSpec, limits: &Limits) -> Vec<Problem> {
    let result = validate(spec, limits, &PolicyRegistry::default());
    // `validate` and `Dag::compile` must agree on every spec.
    let compiled = Dag::compile(spec, limits, &PolicyRegistry::default());
    assert_eq!(
        result.as_ref().err(),
        compiled.as_ref().err(),
        "validate and Dag::compile disagree"
    );
    match result {
        Ok(()) => Vec::new(),
        Err(errors) => {
            assert!(
                !errors.problems().is_empty(),
                "ValidationErrors must never be empty"
            );
            errors.0
        }
    }
}

fn problems(spec: &JobSpec) -> Vec<Problem> {
    problems_with(spec, &Limits::default())
}

/// `(path, code)` of every problem, in the order reported.
fn codes(spec: &JobSpec) -> Vec<(String, ProblemCode)> {
    codes_with(spec, &Limits::default())
}

fn codes_with(spec: &JobSpec, limits: &Limits) -> Vec<(String, ProblemCode)> {
    problems_with(spec, limits)
        .into_iter()
        .map(|p| (p.path, p.code))
        .collect()
}

fn one(path: &str, code: ProblemCode) -> Vec<(String, ProblemCode)> {
    vec![(path.to_owned(), code)]
}

/// The node ids of a reported cycle, parsed from its message
/// (`"...: a -> b -> a"`).
fn cycle_ids(problem: &Problem) -> Vec<String> {
    assert_eq!(problem.code, ProblemCode::Cycle);
    let (_, path) = problem
        .message
        .rsplit_once(": ")
        .expect("a cycle message names its path after a colon");
    path.split(" -> ").map(str::to_owned).collect()
}

fn noop(id: &str) -> NodeSpec {
    NodeSpec::new(id, "noop")
}

fn job(nodes: impl IntoIterator<Item = NodeSpec>) -> JobSpec {
    JobSpec::builder("job").nodes(nodes).build()
}

// ---------------------------------------------------------------------------
// The happy path.

#[test]
fn seed_request_parses_and_validates() {
    let spec = JobSpec::from_json(SEED).unwrap();
    assert_eq!(spec.name, "Test Suite Execution");
    assert_eq!(
        spec.description.as_deref(),
        Some("Execute comprehensive test suite")
    );
    assert_eq!(spec.nodes().len(), 1);
    assert_eq!(spec.nodes()[0].id, "test1");
    assert_eq!(spec.nodes()[0].kind, "test_case");
    assert!(spec.dag_definition.edges.is_empty());
    assert_eq!(problems(&spec), vec![]);
    let dag = Dag::compile(&spec, &Limits::default(), &PolicyRegistry::default()).unwrap();
    assert_eq!(dag.len(), 1);
    assert_eq!(dag.edge_count(), 0);
    assert_eq!(dag.topological_order(), &[0]);
}

#[cfg(feature = "yaml")]
#[test]
fn seed_request_in_yaml_validates_the_same() {
    let yaml = "name: Test Suite Execution\ndescription: Execute comprehensive test suite\n\
                dag_definition:\n  nodes:\n    - id: test1\n      type: test_case\n  edges: []\n";
    let spec = JobSpec::from_yaml(yaml).unwrap();
    assert_eq!(spec, JobSpec::from_json(SEED).unwrap());
    assert_eq!(problems(&spec), vec![]);
}

#[test]
fn a_well_formed_job_with_every_feature_is_valid() {
    let spec = JobSpec::builder("full")
        .max_concurrency(1)
        .pool("browser", 1)
        .timeout(Duration::from_millis(1))
        .node(
            noop("a")
                .pool("browser")
                .timeout(Duration::from_secs(1))
                .heartbeat_timeout(Duration::from_millis(1))
                .params(json!({"k": "v"}))
                .compensate("noop", json!(null)),
        )
        .node(noop("b").depends_on(["a"]))
        .edge("a", "b")
        .build();
    assert_eq!(problems(&spec), vec![]);
}

// ---------------------------------------------------------------------------
// One test per problem code.

#[test]
fn empty_job() {
    let spec = JobSpec::builder("nothing").build();
    let found = problems(&spec);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "/dag_definition/nodes");
    assert_eq!(found[0].code, ProblemCode::EmptyJob);
    assert!(!found[0].message.is_empty());
}

#[test]
fn invalid_name_empty_blank_or_too_long() {
    for name in ["", "   ", "\t\n"] {
        let spec = JobSpec::builder(name).node(noop("a")).build();
        assert_eq!(
            codes(&spec),
            one("/name", ProblemCode::InvalidName),
            "{name:?}"
        );
    }
    let limits = Limits {
        max_id_len: 8,
        ..Limits::default()
    };
    let at_limit = JobSpec::builder("x".repeat(8)).node(noop("a")).build();
    assert_eq!(codes_with(&at_limit, &limits), vec![]);
    let too_long = JobSpec::builder("x".repeat(9)).node(noop("a")).build();
    assert_eq!(
        codes_with(&too_long, &limits),
        one("/name", ProblemCode::InvalidName)
    );
    // The default limit is 256 bytes.
    let default_too_long = JobSpec::builder("x".repeat(257)).node(noop("a")).build();
    assert_eq!(
        codes(&default_too_long),
        one("/name", ProblemCode::InvalidName)
    );
}

#[test]
fn empty_node_id() {
    let spec = job([noop("a"), noop("")]);
    assert_eq!(
        codes(&spec),
        one("/dag_definition/nodes/1/id", ProblemCode::EmptyNodeId)
    );
}

#[test]
fn invalid_node_id_too_long_or_with_control_characters() {
    let limits = Limits {
        max_id_len: 4,
        ..Limits::default()
    };
    let spec = job([noop("abcd"), noop("abcde"), noop("a\nb"), noop("x\u{7f}")]);
    assert_eq!(
        codes_with(&spec, &limits),
        vec![
            (
                "/dag_definition/nodes/1/id".to_owned(),
                ProblemCode::InvalidNodeId
            ),
            (
                "/dag_definition/nodes/2/id".to_owned(),
                ProblemCode::InvalidNodeId
            ),
            (
                "/dag_definition/nodes/3/id".to_owned(),
                ProblemCode::InvalidNodeId
            ),
        ]
    );
}

#[test]
fn duplicate_node_ids_are_reported_at_each_repeat() {
    let spec = job([noop("a"), noop("b"), noop("a"), noop("a")]);
    assert_eq!(
        codes(&spec),
        vec![
            (
                "/dag_definition/nodes/2/id".to_owned(),
                ProblemCode::DuplicateNodeId
            ),
            (
                "/dag_definition/nodes/3/id".to_owned(),
                ProblemCode::DuplicateNodeId
            ),
        ]
    );
    let message = &problems(&spec)[0].message;
    assert!(message.contains("\"a\""), "{message}");
}

/// BUG (validate.rs/dag.rs): a duplicated id is removed from the id map, so
/// every dependency on it is then reported as `unknown_dependency` ("no node
/// has id \"a\"") although the node plainly exists: a cascade of misleading
/// noise that the module docs promise not to produce.
#[test]
fn a_referenced_duplicate_id_is_reported_once_not_as_unknown() {
    let spec = JobSpec::builder("dup")
        .node(noop("a"))
        .node(noop("a"))
        .node(noop("b").depends_on(["a"]))
        .edge("a", "b")
        .edge("b", "a")
        .build();
    assert_eq!(
        codes(&spec),
        one("/dag_definition/nodes/1/id", ProblemCode::DuplicateNodeId)
    );
}

#[test]
fn empty_node_type_and_empty_compensation_type() {
    let spec = job([
        NodeSpec::new("a", ""),
        NodeSpec::new("b", "  "),
        noop("c").compensate(" ", json!(null)),
    ]);
    assert_eq!(
        codes(&spec),
        vec![
            (
                "/dag_definition/nodes/0/type".to_owned(),
                ProblemCode::EmptyNodeType
            ),
            (
                "/dag_definition/nodes/1/type".to_owned(),
                ProblemCode::EmptyNodeType
            ),
            (
                "/dag_definition/nodes/2/compensate/type".to_owned(),
                ProblemCode::EmptyNodeType
            ),
        ]
    );
}

#[test]
fn unknown_dependency_in_depends_on() {
    let spec = job([noop("a"), noop("b").depends_on(["a", "ghost"])]);
    let found = problems(&spec);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "/dag_definition/nodes/1/depends_on/1");
    assert_eq!(found[0].code, ProblemCode::UnknownDependency);
    assert!(found[0].message.contains("ghost"), "{}", found[0].message);
}

#[test]
fn unknown_dependency_in_edge_from() {
    let spec = JobSpec::builder("j")
        .nodes([noop("a"), noop("b")])
        .edge("a", "b")
        .edge("ghost", "b")
        .build();
    let found = problems(&spec);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "/dag_definition/edges/1/from");
    assert_eq!(found[0].code, ProblemCode::UnknownDependency);
    assert!(found[0].message.contains("ghost"), "{}", found[0].message);
}

#[test]
fn unknown_dependency_in_edge_to() {
    let spec = JobSpec::builder("j")
        .nodes([noop("a"), noop("b")])
        .edge("a", "ghost")
        .build();
    let found = problems(&spec);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "/dag_definition/edges/0/to");
    assert_eq!(found[0].code, ProblemCode::UnknownDependency);
    assert!(found[0].message.contains("ghost"), "{}", found[0].message);
}

/// BUG (dag.rs): when an edge's `to` is unknown its `from` is never looked
/// at, so an edge with two bad ends reports one problem: the user fixes it,
/// resubmits, and only then learns about the second one.
#[test]
fn an_edge_with_both_ends_unknown_reports_both() {
    let spec = JobSpec::builder("j")
        .node(noop("a"))
        .edge("ghost1", "ghost2")
        .build();
    assert_eq!(
        codes(&spec),
        vec![
            (
                "/dag_definition/edges/0/from".to_owned(),
                ProblemCode::UnknownDependency
            ),
            (
                "/dag_definition/edges/0/to".to_owned(),
                ProblemCode::UnknownDependency
            ),
        ]
    );
}

#[test]
fn self_loop_in_depends_on() {
    let spec = job([noop("a"), noop("b").depends_on(["a", "b"])]);
    let found = problems(&spec);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "/dag_definition/nodes/1/depends_on/1");
    assert_eq!(found[0].code, ProblemCode::SelfLoop);
    assert!(found[0].message.contains("\"b\""), "{}", found[0].message);
}

#[test]
fn self_loop_in_edges() {
    let spec = JobSpec::builder("j")
        .nodes([noop("a"), noop("b")])
        .edge("b", "b")
        .build();
    assert_eq!(
        codes(&spec),
        one("/dag_definition/edges/0/from", ProblemCode::SelfLoop)
    );
}

#[test]
fn cycle_reports_its_exact_path() {
    // The doc example: a <- c, b <- a, c <- b.
    let spec = job([
        noop("a").depends_on(["c"]),
        noop("b").depends_on(["a"]),
        noop("c").depends_on(["b"]),
    ]);
    let errors = validate(&spec, &Limits::default(), &PolicyRegistry::default()).unwrap_err();
    assert_eq!(errors.problems().len(), 1, "{errors}");
    let cycle = &errors.problems()[0];
    assert_eq!(cycle.code, ProblemCode::Cycle);
    assert_eq!(cycle.path, "/dag_definition/nodes/0");
    assert_eq!(cycle_ids(cycle), ["a", "b", "c", "a"]);
    assert!(errors.to_string().contains("a -> b -> c -> a"), "{errors}");
}

#[test]
fn cycle_path_starts_at_its_lowest_index_and_ignores_downstream_nodes() {
    // `entry` feeds the cycle y -> z -> x -> y; `tail` hangs off it. Neither
    // is part of the cycle, and the cycle is written with edges and
    // depends_on mixed.
    let spec = JobSpec::builder("j")
        .node(noop("entry"))
        .node(noop("z").depends_on(["y"]))
        .node(noop("y").depends_on(["entry"]))
        .node(noop("x"))
        .node(noop("tail").depends_on(["x"]))
        .edge("z", "x")
        .edge("x", "y")
        .build();
    let found = problems(&spec);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "/dag_definition/nodes/1");
    assert_eq!(cycle_ids(&found[0]), ["z", "x", "y", "z"]);
}

#[test]
fn cycle_report_is_a_shortest_cycle_through_its_first_node() {
    // One strongly connected component {a, b, c, d} with a long way round
    // (a -> b -> c -> d -> a) and a short one (a -> b -> a).
    let spec = JobSpec::builder("j")
        .nodes([noop("a"), noop("b"), noop("c"), noop("d")])
        .edge("a", "b")
        .edge("b", "c")
        .edge("c", "d")
        .edge("d", "a")
        .edge("b", "a")
        .build();
    let found = problems(&spec);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(cycle_ids(&found[0]), ["a", "b", "a"]);
}

#[test]
fn several_disjoint_cycles_are_all_reported() {
    let spec = JobSpec::builder("j")
        .node(noop("a").depends_on(["b"]))
        .node(noop("b").depends_on(["a"]))
        .node(noop("free"))
        .node(noop("c").depends_on(["e"]))
        .node(noop("d").depends_on(["c", "free"]))
        .node(noop("e").depends_on(["d"]))
        .node(noop("after").depends_on(["a", "e"]))
        .node(noop("f"))
        .edge("f", "f2")
        .node(noop("f2"))
        .edge("f2", "f")
        .build();
    let found = problems(&spec);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found.iter().all(|p| p.code == ProblemCode::Cycle));
    assert_eq!(found[0].path, "/dag_definition/nodes/0");
    assert_eq!(cycle_ids(&found[0]), ["a", "b", "a"]);
    assert_eq!(found[1].path, "/dag_definition/nodes/3");
    assert_eq!(cycle_ids(&found[1]), ["c", "d", "e", "c"]);
    assert_eq!(found[2].path, "/dag_definition/nodes/7");
    assert_eq!(cycle_ids(&found[2]), ["f", "f2", "f"]);
}

#[test]
fn the_cycle_report_is_bounded() {
    // 1,000 disjoint two-node cycles: the report stays readable, and what is
    // reported are the first cycles in index order.
    let nodes = (0..1000).flat_map(|i| {
        [
            noop(&format!("a{i}")).depends_on([format!("b{i}")]),
            noop(&format!("b{i}")).depends_on([format!("a{i}")]),
        ]
    });
    let found = problems(&job(nodes));
    assert!(found.iter().all(|p| p.code == ProblemCode::Cycle));
    assert!(
        !found.is_empty() && found.len() <= 100,
        "{} cycles reported",
        found.len()
    );
    for (i, p) in found.iter().enumerate() {
        assert_eq!(p.path, format!("/dag_definition/nodes/{}", 2 * i));
        assert_eq!(
            cycle_ids(p),
            [format!("a{i}"), format!("b{i}"), format!("a{i}")]
        );
    }
}

#[test]
fn zero_durations_are_invalid() {
    let spec = JobSpec::builder("j")
        .timeout(Duration::ZERO)
        .node(noop("a").timeout(Duration::ZERO))
        .node(noop("b").heartbeat_timeout(Duration::ZERO))
        // Below the millisecond precision of a spec: truncated to zero.
        .node(noop("c").timeout(Duration::from_micros(999)))
        .build();
    assert_eq!(
        codes(&spec),
        vec![
            ("/timeout".to_owned(), ProblemCode::InvalidDuration),
            (
                "/dag_definition/nodes/0/timeout".to_owned(),
                ProblemCode::InvalidDuration
            ),
            (
                "/dag_definition/nodes/1/heartbeat_timeout".to_owned(),
                ProblemCode::InvalidDuration
            ),
            (
                "/dag_definition/nodes/2/timeout".to_owned(),
                ProblemCode::InvalidDuration
            ),
        ]
    );
    // Zero durations written in JSON are caught the same way.
    let text = r#"{"name": "j", "timeout": 0, "dag_definition": {"nodes": [
        {"id": "a", "type": "noop", "timeout": "0s", "heartbeat_timeout": "0ms"}]}}"#;
    assert_eq!(
        codes(&JobSpec::from_json(text).unwrap()),
        vec![
            ("/timeout".to_owned(), ProblemCode::InvalidDuration),
            (
                "/dag_definition/nodes/0/timeout".to_owned(),
                ProblemCode::InvalidDuration
            ),
            (
                "/dag_definition/nodes/0/heartbeat_timeout".to_owned(),
                ProblemCode::InvalidDuration
            ),
        ]
    );
}

#[test]
fn unknown_pool() {
    let spec = JobSpec::builder("j")
        .pool("browser", 2)
        .node(noop("a").pool("browser"))
        .node(noop("b").pool("gpu"))
        .build();
    let found = problems(&spec);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "/dag_definition/nodes/1/pool");
    assert_eq!(found[0].code, ProblemCode::UnknownPool);
    assert!(found[0].message.contains("gpu"), "{}", found[0].message);
}

#[test]
fn zero_max_concurrency_is_an_invalid_limit() {
    let spec = JobSpec::builder("j")
        .max_concurrency(0)
        .node(noop("a"))
        .build();
    assert_eq!(
        codes(&spec),
        one("/max_concurrency", ProblemCode::InvalidLimit)
    );
}

#[test]
fn zero_pool_size_is_an_invalid_limit_with_an_escaped_path() {
    let spec = JobSpec::builder("j")
        .pool("browser", 0)
        .pool("gpu", 1)
        .pool("a/b~c", 0)
        .node(noop("a").pool("browser"))
        .build();
    let mut found = codes(&spec);
    found.sort();
    assert_eq!(
        found,
        vec![
            ("/pools/a~1b~0c".to_owned(), ProblemCode::InvalidLimit),
            ("/pools/browser".to_owned(), ProblemCode::InvalidLimit),
        ]
    );
}

#[test]
fn too_many_nodes_against_a_small_limit() {
    let limits = Limits {
        max_nodes: 3,
        ..Limits::default()
    };
    let three = job([noop("a"), noop("b"), noop("c")]);
    assert_eq!(codes_with(&three, &limits), vec![]);
    let four = job([noop("a"), noop("b"), noop("c"), noop("d")]);
    assert_eq!(
        codes_with(&four, &limits),
        one("/dag_definition/nodes", ProblemCode::TooManyNodes)
    );
}

#[test]
fn too_many_edges_against_a_small_limit() {
    let limits = Limits {
        max_edges: 2,
        ..Limits::default()
    };
    // Edges and depends_on entries count together, duplicates included.
    let two = JobSpec::builder("j")
        .nodes([noop("a"), noop("b").depends_on(["a"])])
        .edge("a", "b")
        .build();
    assert_eq!(codes_with(&two, &limits), vec![]);
    let three = JobSpec::builder("j")
        .nodes([noop("a"), noop("b").depends_on(["a"]), noop("c")])
        .edge("a", "b")
        .edge("b", "c")
        .build();
    assert_eq!(
        codes_with(&three, &limits),
        one("/dag_definition/edges", ProblemCode::TooManyNodes)
    );
}

#[test]
fn params_too_large() {
    let params = json!({"args": ["x".repeat(40)]});
    let size = serde_json::to_string(&params).unwrap().len();
    let spec = job([noop("a"), noop("b").params(params)]);
    let at_limit = Limits {
        max_params_bytes: size,
        ..Limits::default()
    };
    assert_eq!(codes_with(&spec, &at_limit), vec![]);
    let below = Limits {
        max_params_bytes: size - 1,
        ..Limits::default()
    };
    assert_eq!(
        codes_with(&spec, &below),
        one(
            "/dag_definition/nodes/1/params",
            ProblemCode::ParamsTooLarge
        )
    );
}

// ---------------------------------------------------------------------------
// Reporting as a whole.

#[test]
fn one_call_returns_every_problem() {
    let spec = JobSpec::builder("")
        .node(noop("a").pool("nowhere"))
        .node(noop("").timeout(Duration::ZERO))
        .node(noop("c").depends_on(["ghost"]))
        .build();
    let found = codes(&spec);
    assert_eq!(found.len(), 5, "{found:?}");
    let mut expected = vec![
        ("/name".to_owned(), ProblemCode::InvalidName),
        (
            "/dag_definition/nodes/0/pool".to_owned(),
            ProblemCode::UnknownPool,
        ),
        (
            "/dag_definition/nodes/1/id".to_owned(),
            ProblemCode::EmptyNodeId,
        ),
        (
            "/dag_definition/nodes/1/timeout".to_owned(),
            ProblemCode::InvalidDuration,
        ),
        (
            "/dag_definition/nodes/2/depends_on/0".to_owned(),
            ProblemCode::UnknownDependency,
        ),
    ];
    let mut sorted = found;
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected);
}

#[test]
fn graph_and_field_problems_are_reported_together() {
    let spec = JobSpec::builder("j")
        .max_concurrency(0)
        .node(noop("a").depends_on(["b"]))
        .node(noop("b").depends_on(["a"]))
        .node(noop("c").depends_on(["c"]))
        .build();
    let found = codes(&spec);
    assert!(found.contains(&("/max_concurrency".to_owned(), ProblemCode::InvalidLimit)));
    assert!(found.contains(&(
        "/dag_definition/nodes/2/depends_on/0".to_owned(),
        ProblemCode::SelfLoop
    )));
    assert!(found.contains(&("/dag_definition/nodes/0".to_owned(), ProblemCode::Cycle)));
    assert_eq!(found.len(), 3, "{found:?}");
}

#[test]
fn the_same_dependency_written_twice_is_merged() {
    let spec = JobSpec::builder("j")
        .node(noop("a"))
        .node(noop("b").depends_on(["a", "a"]))
        .node(noop("c").depends_on(["b"]))
        .edge("a", "b")
        .edge("a", "b")
        .edge("b", "c")
        .build();
    assert_eq!(problems(&spec), vec![]);
    let dag = Dag::compile(&spec, &Limits::default(), &PolicyRegistry::default()).unwrap();
    assert_eq!(dag.edge_count(), 2);
    assert_eq!(dag.predecessors(1), &[0]);
    assert_eq!(dag.successors(0), &[1]);
    assert_eq!(dag.indegree(1), 1);
    assert_eq!(dag.indegree(2), 1);
    assert_eq!(dag.depth(), 3);
}

#[test]
fn problems_display_their_path_code_and_count() {
    let spec = job([noop("a").depends_on(["ghost"])]);
    let errors = validate(&spec, &Limits::default(), &PolicyRegistry::default()).unwrap_err();
    let text = errors.to_string();
    assert!(text.starts_with("1 problem"), "{text}");
    assert!(
        text.contains("/dag_definition/nodes/0/depends_on/0"),
        "{text}"
    );
    assert!(text.contains("unknown_dependency"), "{text}");
    assert!(errors.has(ProblemCode::UnknownDependency));
    assert!(!errors.has(ProblemCode::Cycle));
    // The wire form is a bare array of {path, code, message}.
    let wire = serde_json::to_value(&errors).unwrap();
    assert_eq!(
        wire[0]["path"],
        json!("/dag_definition/nodes/0/depends_on/0")
    );
    assert_eq!(wire[0]["code"], json!("unknown_dependency"));
}

// ---------------------------------------------------------------------------
// Parse errors.

fn parse_err(text: &str) -> (String, &'static str) {
    let err = JobSpec::from_json(text).unwrap_err();
    assert!(
        err.to_string().contains(&err.message),
        "Display carries the message"
    );
    (err.path, err.code)
}

#[test]
fn unknown_fields_name_their_path() {
    let cases = [
        (
            r#"{"name": "j", "nmae": "x", "dag_definition": {"nodes": []}}"#,
            "/nmae",
        ),
        (
            r#"{"name": "j", "dag_definition": {"nodes": [], "edgez": []}}"#,
            "/dag_definition/edgez",
        ),
        (
            r#"{"name": "j", "dag_definition": {"nodes": [{"id": "a", "type": "noop"},
               {"id": "b", "type": "noop", "depnds_on": ["a"]}]}}"#,
            "/dag_definition/nodes/1/depnds_on",
        ),
        (
            r#"{"name": "j", "dag_definition": {"nodes": [{"id": "a", "type": "noop"}],
               "edges": [{"from": "a", "too": "a"}]}}"#,
            "/dag_definition/edges/0/too",
        ),
        (
            r#"{"name": "j", "dag_definition": {"nodes": [{"id": "a", "type": "noop",
               "compensate": {"type": "noop", "param": 1}}]}}"#,
            "/dag_definition/nodes/0/compensate/param",
        ),
    ];
    for (text, path) in cases {
        assert_eq!(
            parse_err(text),
            (path.to_owned(), "unknown_field"),
            "{text}"
        );
    }
}

#[test]
fn bad_durations_name_their_path() {
    let node = |timeout: &str| {
        format!(
            r#"{{"name": "j", "dag_definition": {{"nodes": [{{"id": "a", "type": "noop", "timeout": {timeout}}}]}}}}"#
        )
    };
    for bad in [r#""soon""#, r#""1w""#, r#""-1s""#, "-5", r#""""#, "1e300"] {
        assert_eq!(
            parse_err(&node(bad)),
            (
                "/dag_definition/nodes/0/timeout".to_owned(),
                "invalid_value"
            ),
            "{bad}"
        );
    }
    for bad in ["true", "[]", "{}"] {
        assert_eq!(
            parse_err(&node(bad)),
            ("/dag_definition/nodes/0/timeout".to_owned(), "invalid_type"),
            "{bad}"
        );
    }
    assert_eq!(
        parse_err(r#"{"name": "j", "timeout": "forever", "dag_definition": {"nodes": []}}"#),
        ("/timeout".to_owned(), "invalid_value")
    );
    assert_eq!(
        parse_err(
            r#"{"name": "j", "dag_definition": {"nodes": [{"id": "a", "type": "noop", "heartbeat_timeout": "5 parsecs"}]}}"#
        ),
        (
            "/dag_definition/nodes/0/heartbeat_timeout".to_owned(),
            "invalid_value"
        )
    );
    // Good durations in every documented form parse.
    for good in [
        r#""250ms""#,
        r#""30s""#,
        r#""5m""#,
        r#""1h""#,
        "1500",
        r#""1.5s""#,
    ] {
        let spec = JobSpec::from_json(&node(good)).unwrap();
        assert!(spec.nodes()[0].timeout.is_some(), "{good}");
    }
}

#[test]
fn other_parse_errors_carry_path_and_code() {
    assert_eq!(parse_err("{"), (String::new(), "syntax"));
    assert_eq!(parse_err(""), (String::new(), "syntax"));
    assert_eq!(parse_err("[1, 2]").1, "invalid_type");
    assert_eq!(
        parse_err(r#"{"dag_definition": {"nodes": []}}"#).1,
        "missing_field"
    );
    assert_eq!(
        parse_err(r#"{"name": "j", "dag_definition": {"nodes": [{"id": "a"}]}}"#),
        ("/dag_definition/nodes/0".to_owned(), "missing_field")
    );
    assert_eq!(
        parse_err(r#"{"name": "j", "dag_definition": {"nodes": [{"id": 7, "type": "noop"}]}}"#),
        ("/dag_definition/nodes/0/id".to_owned(), "invalid_type")
    );
    assert_eq!(
        parse_err(
            r#"{"name": "j", "dag_definition": {"nodes": [{"id": "a", "type": "noop", "trigger": "sometimes"}]}}"#
        ),
        (
            "/dag_definition/nodes/0/trigger".to_owned(),
            "unknown_variant"
        )
    );
    assert_eq!(
        parse_err(r#"{"name": "j", "on_failure": "panic", "dag_definition": {"nodes": []}}"#),
        ("/on_failure".to_owned(), "unknown_variant")
    );
    assert_eq!(
        parse_err(r#"{"name": "j", "max_concurrency": -1, "dag_definition": {"nodes": []}}"#),
        ("/max_concurrency".to_owned(), "invalid_value")
    );
}

/// BUG (spec.rs): `from_json` never calls `Deserializer::end`, so anything
/// after the first JSON value is silently ignored: a second document, a
/// truncated paste, or garbage is accepted as if it were not there.
#[test]
fn trailing_input_after_the_spec_is_a_syntax_error() {
    for tail in [" x", "}", r#" {"name": "second"}"#, ",", "]"] {
        let text = format!("{SEED}{tail}");
        let err = JobSpec::from_json(&text).expect_err(&text);
        assert_eq!(err.code, "syntax", "{text}");
    }
    // Trailing whitespace is fine.
    assert!(JobSpec::from_json(&format!("{SEED} \n\t")).is_ok());
}

#[cfg(feature = "yaml")]
#[test]
fn yaml_parse_errors_carry_path_and_code() {
    let err = JobSpec::from_yaml(
        "name: j\ndag_definition:\n  nodes:\n    - id: a\n      type: noop\n      timeout: soon\n",
    )
    .unwrap_err();
    assert_eq!(err.path, "/dag_definition/nodes/0/timeout");
    assert_eq!(err.code, "invalid_value");
    let err =
        JobSpec::from_yaml("name: j\ndag_definition:\n  nodes:\n    - id: a\n      tpye: noop\n")
            .unwrap_err();
    assert_eq!(err.path, "/dag_definition/nodes/0/tpye");
    assert_eq!(err.code, "unknown_field");
}
