//! Validation: every problem of a spec, at once, each with a path and a code.
//!
//! [`validate`] never panics and never stops at the first problem: a user
//! fixing a plan should see the whole list. Graph checks (unknown
//! dependencies, self-loops, cycles) run only on the parts of the graph that
//! are well-formed, so one typo does not produce a cascade of noise.

use std::collections::BTreeSet;

// foldhash: several times faster than SipHash on short keys, with a per-process
// random seed, so ids from untrusted specs cannot be chosen to collide.
use foldhash::{HashMap, HashMapExt};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::retry::PolicyRegistry;
use crate::spec::JobSpec;

/// Machine-readable kind of a validation problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProblemCode {
    /// The job has no nodes.
    EmptyJob,
    /// The job name is empty or too long.
    InvalidName,
    /// A node id is empty.
    EmptyNodeId,
    /// A node id is longer than [`Limits::max_id_len`] or contains control
    /// characters.
    InvalidNodeId,
    /// Two nodes share an id.
    DuplicateNodeId,
    /// A dependency or edge names a node that does not exist.
    UnknownDependency,
    /// A node depends on itself.
    SelfLoop,
    /// The dependencies form a cycle.
    Cycle,
    /// A duration is out of its allowed range (e.g. a zero timeout).
    InvalidDuration,
    /// A retry policy value is invalid.
    InvalidPolicy,
    /// A retry policy names a custom policy nobody registered.
    UnknownPolicy,
    /// A node names a pool the job does not declare.
    UnknownPool,
    /// A limit, concurrency or pool size is zero.
    InvalidLimit,
    /// A node type is empty.
    EmptyNodeType,
    /// No runner is registered for a node type (checked at submission).
    UnknownNodeType,
    /// More nodes or edges than allowed.
    TooManyNodes,
    /// A node's params are larger than allowed.
    ParamsTooLarge,
    /// A failure classification rule is invalid (no condition, a bad regex…).
    InvalidRule,
    /// A circuit breaker's settings are invalid.
    InvalidBreaker,
    /// A `flaky` setting or a `test_id` is invalid.
    InvalidFlaky,
}

impl ProblemCode {
    /// The snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EmptyJob => "empty_job",
            Self::InvalidName => "invalid_name",
            Self::EmptyNodeId => "empty_node_id",
            Self::InvalidNodeId => "invalid_node_id",
            Self::DuplicateNodeId => "duplicate_node_id",
            Self::UnknownDependency => "unknown_dependency",
            Self::SelfLoop => "self_loop",
            Self::Cycle => "cycle",
            Self::InvalidDuration => "invalid_duration",
            Self::InvalidPolicy => "invalid_policy",
            Self::UnknownPolicy => "unknown_policy",
            Self::UnknownPool => "unknown_pool",
            Self::InvalidLimit => "invalid_limit",
            Self::EmptyNodeType => "empty_node_type",
            Self::UnknownNodeType => "unknown_node_type",
            Self::TooManyNodes => "too_many_nodes",
            Self::ParamsTooLarge => "params_too_large",
            Self::InvalidRule => "invalid_rule",
            Self::InvalidBreaker => "invalid_breaker",
            Self::InvalidFlaky => "invalid_flaky",
        }
    }
}

impl fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One validation problem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// JSON-pointer-like path of the offending value, e.g.
    /// `/dag_definition/nodes/3/depends_on/0`.
    pub path: String,
    /// What kind of problem.
    pub code: ProblemCode,
    /// A sentence for people.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, code: ProblemCode, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        write!(f, "{path}: {} ({})", self.message, self.code)
    }
}

/// Every problem found in a spec (never empty).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(transparent)]
pub struct ValidationErrors(pub Vec<Problem>);

impl ValidationErrors {
    /// The problems.
    pub fn problems(&self) -> &[Problem] {
        &self.0
    }

    /// Whether any problem has `code`.
    pub fn has(&self, code: ProblemCode) -> bool {
        self.0.iter().any(|p| p.code == code)
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem(s) in job spec", self.0.len())?;
        for p in &self.0 {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// Configurable limits on what a spec may contain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most nodes in one job (default 1,000,000).
    pub max_nodes: usize,
    /// Most edges (`edges` plus `depends_on` entries) in one job
    /// (default 10,000,000).
    pub max_edges: usize,
    /// Largest serialized `params` of one node, in bytes (default 64 KiB).
    pub max_params_bytes: usize,
    /// Longest node id or job name, in bytes (default 256).
    pub max_id_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_nodes: 1_000_000,
            max_edges: 10_000_000,
            max_params_bytes: 64 * 1024,
            max_id_len: 256,
        }
    }
}

/// Validates `spec`, returning every problem at once.
///
/// ```
/// use orchestrator_core::{validate, JobSpec, Limits, NodeSpec, PolicyRegistry, ProblemCode};
///
/// let spec = JobSpec::builder("loop")
///     .node(NodeSpec::new("a", "noop").depends_on(["c"]))
///     .node(NodeSpec::new("b", "noop").depends_on(["a"]))
///     .node(NodeSpec::new("c", "noop").depends_on(["b"]))
///     .build();
/// let errors = validate(&spec, &Limits::default(), &PolicyRegistry::default()).unwrap_err();
/// assert!(errors.has(ProblemCode::Cycle));
/// assert!(errors.to_string().contains("a -> b -> c -> a"));
/// ```
pub fn validate(
    spec: &JobSpec,
    limits: &Limits,
    policies: &PolicyRegistry,
) -> Result<(), ValidationErrors> {
    crate::dag::Dag::compile(spec, limits, policies).map(drop)
}

/// Field-level checks (everything except the graph shape). Returns the map
/// from node id to index for the nodes whose ids are usable (non-empty and
/// unique), which the graph checks then use.
pub(crate) fn check_fields<'a>(
    spec: &'a JobSpec,
    limits: &Limits,
    policies: &PolicyRegistry,
    out: &mut Vec<Problem>,
) -> HashMap<&'a str, u32> {
    if spec.name.trim().is_empty() || spec.name.len() > limits.max_id_len {
        out.push(Problem::new(
            "/name",
            ProblemCode::InvalidName,
            format!(
                "the job name must be non-blank and at most {} bytes",
                limits.max_id_len
            ),
        ));
    }
    let nodes = spec.nodes();
    if nodes.is_empty() {
        out.push(Problem::new(
            "/dag_definition/nodes",
            ProblemCode::EmptyJob,
            "a job needs at least one node",
        ));
    }
    if nodes.len() > limits.max_nodes {
        out.push(Problem::new(
            "/dag_definition/nodes",
            ProblemCode::TooManyNodes,
            format!(
                "{} nodes exceed the limit of {}",
                nodes.len(),
                limits.max_nodes
            ),
        ));
        // Checking each of millions of nodes past the limit only produces noise.
        return HashMap::new();
    }
    let edge_count =
        spec.dag_definition.edges.len() + nodes.iter().map(|n| n.depends_on.len()).sum::<usize>();
    if edge_count > limits.max_edges {
        out.push(Problem::new(
            "/dag_definition/edges",
            ProblemCode::TooManyNodes,
            format!(
                "{edge_count} dependencies exceed the limit of {}",
                limits.max_edges
            ),
        ));
    }
    if let Some(0) = spec.max_concurrency {
        out.push(Problem::new(
            "/max_concurrency",
            ProblemCode::InvalidLimit,
            "max_concurrency must be at least 1",
        ));
    }
    if let Some(t) = spec.timeout {
        if t.as_millis() == 0 {
            out.push(Problem::new(
                "/timeout",
                ProblemCode::InvalidDuration,
                "the job timeout must be positive",
            ));
        }
    }
    for (name, &slots) in &spec.pools {
        if slots == 0 {
            out.push(Problem::new(
                format!("/pools/{}", escape(name)),
                ProblemCode::InvalidLimit,
                format!("pool {name:?} must have at least one slot"),
            ));
        }
    }
    if let Some(retry) = &spec.retry {
        retry.check("/retry", policies, out);
    }
    crate::policy::check_reference(
        spec.policy.as_deref(),
        spec.retry.is_some(),
        "",
        policies,
        out,
    );
    crate::classify::check_rules(&spec.classify, "/classify", out);
    for (name, breaker) in &spec.breakers {
        let at = format!("/breakers/{}", escape(name));
        if name.is_empty() || name.len() > limits.max_id_len {
            out.push(Problem::new(
                &at,
                ProblemCode::InvalidBreaker,
                format!("a dependency name is 1 to {} bytes", limits.max_id_len),
            ));
        }
        breaker.check(&at, out);
    }
    if let Some(flaky) = &spec.flaky {
        crate::flaky::check(flaky, "/flaky", out);
    }

    let mut ids: HashMap<&str, u32> = HashMap::with_capacity(nodes.len());
    let mut duplicates = BTreeSet::new();
    for (i, node) in nodes.iter().enumerate() {
        let at = |field: &str| format!("/dag_definition/nodes/{i}/{field}");
        if node.id.is_empty() {
            out.push(Problem::new(
                at("id"),
                ProblemCode::EmptyNodeId,
                "a node id must not be empty",
            ));
        } else if node.id.len() > limits.max_id_len || node.id.chars().any(char::is_control) {
            ids.insert(node.id.as_str(), AMBIGUOUS);
            out.push(Problem::new(
                at("id"),
                ProblemCode::InvalidNodeId,
                format!(
                    "node ids must be at most {} bytes without control characters",
                    limits.max_id_len
                ),
            ));
        } else if ids.insert(node.id.as_str(), i as u32).is_some() {
            duplicates.insert(node.id.as_str());
            out.push(Problem::new(
                at("id"),
                ProblemCode::DuplicateNodeId,
                format!("node id {:?} is used more than once", node.id),
            ));
        }
        if let Some(flaky) = &node.flaky {
            crate::flaky::check(flaky, &at("flaky"), out);
        }
        if let Some(key) = &node.test_id {
            crate::flaky::check_key(key, &at("test_id"), out);
        }
        if node.kind.trim().is_empty() {
            out.push(Problem::new(
                at("type"),
                ProblemCode::EmptyNodeType,
                "a node type must not be empty",
            ));
        }
        for (field, value) in [
            ("timeout", node.timeout),
            ("heartbeat_timeout", node.heartbeat_timeout),
        ] {
            if value.is_some_and(|d| d.as_millis() == 0) {
                out.push(Problem::new(
                    at(field),
                    ProblemCode::InvalidDuration,
                    format!("{field} must be positive"),
                ));
            }
        }
        if let Some(pool) = &node.pool {
            if !spec.pools.contains_key(pool) {
                out.push(Problem::new(
                    at("pool"),
                    ProblemCode::UnknownPool,
                    format!("pool {pool:?} is not declared in the job's `pools`"),
                ));
            }
        }
        if let Some(retry) = &node.retry {
            retry.check(&at("retry"), policies, out);
        }
        if node.policy.is_some() {
            crate::policy::check_reference(
                node.policy.as_deref(),
                node.retry.is_some(),
                &format!("/dag_definition/nodes/{i}"),
                policies,
                out,
            );
        }
        if let Some(rules) = &node.classify {
            crate::classify::check_rules(rules, &at("classify"), out);
        }
        if let Some(d) = &node.dependency {
            if d.is_empty() || d.len() > limits.max_id_len {
                out.push(Problem::new(
                    at("dependency"),
                    ProblemCode::InvalidBreaker,
                    format!("a dependency name is 1 to {} bytes", limits.max_id_len),
                ));
            }
        }
        if !node.params.is_null() {
            let size = json_size(&node.params);
            if size > limits.max_params_bytes {
                out.push(Problem::new(
                    at("params"),
                    ProblemCode::ParamsTooLarge,
                    format!(
                        "params take {size} bytes, more than the limit of {}",
                        limits.max_params_bytes
                    ),
                ));
            }
        }
        if let Some(c) = &node.compensate {
            if let Some(retry) = &c.retry {
                retry.check(&at("compensate/retry"), policies, out);
            }
            if c.kind.trim().is_empty() {
                out.push(Problem::new(
                    at("compensate/type"),
                    ProblemCode::EmptyNodeType,
                    "a compensation type must not be empty",
                ));
            }
        }
    }
    // A duplicated id is ambiguous as a dependency target: mark it so the graph
    // checks neither guess which node was meant nor report it again.
    for dup in duplicates {
        ids.insert(dup, AMBIGUOUS);
    }
    ids
}

/// Marks an id that is already reported (duplicated, empty or malformed):
/// references to it are skipped rather than reported as unknown.
pub(crate) const AMBIGUOUS: u32 = u32::MAX;

/// Serialized size of a JSON value without allocating the text.
fn json_size(value: &serde_json::Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Counter(0);
    // Writing a `Value` into an infallible sink cannot fail.
    let _ = serde_json::to_writer(&mut c, value);
    c.0
}

/// Escapes a JSON-pointer segment (RFC 6901).
pub(crate) fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}
