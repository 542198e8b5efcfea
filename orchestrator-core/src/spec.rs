//! The submitted definition of a job: [`JobSpec`] and [`NodeSpec`].
//!
//! The serde shape is the public contract (HTTP bodies, plan files, the
//! journal), so it accepts the request body of the original API design and
//! rejects unknown fields with their path: a typo such as `depnds_on` must not
//! silently drop a dependency. The builder methods produce the same values
//! from Rust.
//!
//! ```
//! use orchestrator_core::{JobSpec, NodeSpec, TriggerRule};
//!
//! let from_json = JobSpec::from_json(r#"{
//!     "name": "Test Suite Execution",
//!     "description": "Execute comprehensive test suite",
//!     "dag_definition": {"nodes": [{"id": "test1", "type": "test_case"}], "edges": []}
//! }"#).unwrap();
//!
//! let built = JobSpec::builder("Test Suite Execution")
//!     .description("Execute comprehensive test suite")
//!     .node(NodeSpec::new("test1", "test_case"))
//!     .build();
//! assert_eq!(from_json, built);
//!
//! let report = NodeSpec::new("report", "noop").depends_on(["test1"]).trigger(TriggerRule::AllDone);
//! assert_eq!(report.trigger, TriggerRule::AllDone);
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::breaker::BreakerSpec;
use crate::classify::ClassifyRule;
use crate::duration::HumanDuration;
use crate::flaky::FlakySpec;
use crate::retry::RetrySpec;

/// A job: a named DAG of nodes plus the policies that govern its run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Human-readable name (not unique).
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The nodes and edges.
    pub dag_definition: DagDefinition,
    /// Higher runs first when nodes of several jobs compete for slots.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
    /// Free-form labels, filterable when listing jobs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Wall-clock limit for the whole job (the executor's default applies
    /// when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// At most this many of the job's nodes run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// The default retry policy of the job's nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub retry: Option<RetrySpec>,
    /// A stored policy (`name@version`, or `name` for the latest at
    /// submission) supplying the retry policy and classification rules this
    /// level leaves out (see [`crate::policy`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Default failure classification rules of the job's nodes (see
    /// [`crate::classify`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classify: Vec<ClassifyRule>,
    /// Circuit breakers by dependency name (see [`crate::breaker`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub breakers: BTreeMap<String, BreakerSpec>,
    /// Named resource limits: a node naming `pool: browser` runs only while
    /// fewer than `pools["browser"]` of the job's nodes in that pool run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pools: BTreeMap<String, u32>,
    /// What to do with a failed run.
    #[serde(default, skip_serializing_if = "OnFailure::is_default")]
    pub on_failure: OnFailure,
    /// Adaptive retries and quarantine from flakiness history, for every
    /// node (see [`crate::flaky`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flaky: Option<FlakySpec>,
}

/// The graph part of a [`JobSpec`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DagDefinition {
    /// The nodes, in the order given; the order fixes each node's index.
    pub nodes: Vec<NodeSpec>,
    /// Extra dependencies: `to` runs after `from`. Combined with each node's
    /// `depends_on`.
    #[serde(default)]
    pub edges: Vec<Edge>,
}

/// A dependency edge: `to` runs after `from`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Edge {
    /// The upstream node id.
    pub from: String,
    /// The downstream node id.
    pub to: String,
}

/// One node of a job: usually one test execution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Unique within the job.
    pub id: String,
    /// Selects the runner (`process`, `noop`, `sleep`, or one you register).
    #[serde(rename = "type")]
    pub kind: String,
    /// Runner-specific parameters.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub params: Value,
    /// Ids of nodes this one runs after.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Overrides the job's retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub retry: Option<RetrySpec>,
    /// A stored policy overriding the job's (see [`crate::policy`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Classification rules overriding the job's (see [`crate::classify`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classify: Option<Vec<ClassifyRule>>,
    /// The dependency whose circuit breaker gates this node (default: its
    /// `type`; see [`crate::breaker`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependency: Option<String>,
    /// Limit for one attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// A running attempt that sends no heartbeat for this long is lost
    /// (failure class `infrastructure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout: Option<HumanDuration>,
    /// When the node runs, given its upstream outcomes.
    #[serde(default, skip_serializing_if = "TriggerRule::is_default")]
    pub trigger: TriggerRule,
    /// Higher runs first among the job's ready nodes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
    /// The job pool this node draws a slot from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The undo step run when the job is rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensate: Option<CompensateSpec>,
    /// Stable key for flakiness history; defaults to `<job name>/<node id>`
    /// (see [`crate::flaky::test_key`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_id: Option<String>,
    /// Replaces the job's `flaky` settings for this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flaky: Option<FlakySpec>,
}

/// A compensation (undo) step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CompensateSpec {
    /// Selects the runner.
    #[serde(rename = "type")]
    pub kind: String,
    /// Runner-specific parameters.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub params: Value,
    /// Retry policy of the compensation (default: the job's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub retry: Option<RetrySpec>,
}

/// What happens when a job fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Leave succeeded nodes as they are.
    #[default]
    Leave,
    /// Run the compensations of succeeded nodes in reverse order.
    Rollback,
}

impl OnFailure {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// When a node runs, given the outcomes of its upstream nodes (Airflow's
/// vocabulary and semantics). "Failed" below includes `timed_out`,
/// `dead_lettered`, `cancelled` and `upstream_failed` upstreams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TriggerRule {
    /// Every upstream succeeded. A failed upstream makes the node
    /// `upstream_failed`; a skipped one makes it `skipped`.
    #[default]
    AllSuccess,
    /// Every upstream failed; otherwise skipped.
    AllFailed,
    /// Every upstream finished, whatever the outcome.
    AllDone,
    /// At least one upstream succeeded (runs as soon as one does).
    OneSuccess,
    /// At least one upstream failed (runs as soon as one does).
    OneFailed,
    /// No upstream failed (skipped ones are fine).
    NoneFailed,
    /// No upstream failed and at least one succeeded.
    NoneFailedMinOneSuccess,
    /// No upstream was skipped.
    NoneSkipped,
    /// Runs as soon as the job starts, ignoring upstream outcomes.
    Always,
}

impl TriggerRule {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The snake_case name used in specs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AllSuccess => "all_success",
            Self::AllFailed => "all_failed",
            Self::AllDone => "all_done",
            Self::OneSuccess => "one_success",
            Self::OneFailed => "one_failed",
            Self::NoneFailed => "none_failed",
            Self::NoneFailedMinOneSuccess => "none_failed_min_one_success",
            Self::NoneSkipped => "none_skipped",
            Self::Always => "always",
        }
    }
}

impl fmt::Display for TriggerRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

/// A spec that could not be parsed at all (syntax, a wrong type, an unknown
/// field). Parsing stops at the first such problem; semantic problems are
/// all reported at once by [validation](crate::validate()).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ParseError {
    /// JSON-pointer-like path of the offending value (`""` for the root).
    pub path: String,
    /// Machine-readable code: `syntax`, `unknown_field`, `unknown_variant`,
    /// `missing_field`, `invalid_type` or `invalid_value`.
    pub code: &'static str,
    /// What was wrong.
    pub message: String,
}

impl ParseError {
    fn from_path_error<E: fmt::Display>(path: &serde_path_to_error::Path, inner: &E) -> Self {
        let message = inner.to_string();
        // YAML errors prefix the message with the dotted path, which the
        // pointer below already carries; keep only the reason.
        let message = match message.split_once(": ") {
            Some((prefix, rest)) if !prefix.contains(' ') && !prefix.is_empty() => rest.to_owned(),
            _ => message,
        };
        let code = if message.starts_with("unknown field") {
            "unknown_field"
        } else if message.starts_with("unknown variant") {
            "unknown_variant"
        } else if message.starts_with("missing field") {
            "missing_field"
        } else if message.starts_with("invalid type") || message.starts_with("invalid length") {
            "invalid_type"
        } else {
            "invalid_value"
        };
        let mut pointer = String::new();
        for segment in path {
            use serde_path_to_error::Segment;
            pointer.push('/');
            match segment {
                Segment::Seq { index } => pointer.push_str(&index.to_string()),
                Segment::Map { key } | Segment::Enum { variant: key } => {
                    pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                }
                Segment::Unknown => pointer.push('?'),
            }
        }
        Self {
            path: pointer,
            code,
            message,
        }
    }
}

impl JobSpec {
    /// Starts a builder for a job called `name`.
    pub fn builder(name: impl Into<String>) -> JobSpecBuilder {
        JobSpecBuilder(JobSpec {
            name: name.into(),
            description: None,
            dag_definition: DagDefinition::default(),
            priority: 0,
            labels: BTreeMap::new(),
            timeout: None,
            max_concurrency: None,
            retry: None,
            policy: None,
            classify: Vec::new(),
            breakers: BTreeMap::new(),
            pools: BTreeMap::new(),
            on_failure: OnFailure::Leave,
            flaky: None,
        })
    }

    /// Parses a JSON spec; errors carry the path of the offending value.
    pub fn from_json(text: &str) -> Result<Self, ParseError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let spec = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
            if e.inner().is_syntax() || e.inner().is_eof() {
                ParseError {
                    path: String::new(),
                    code: "syntax",
                    message: e.inner().to_string(),
                }
            } else {
                ParseError::from_path_error(e.path(), e.inner())
            }
        })?;
        // Trailing text after the spec is a mistake, not something to ignore.
        de.end().map_err(|e| ParseError {
            path: String::new(),
            code: "syntax",
            message: e.to_string(),
        })?;
        Ok(spec)
    }

    /// Parses a YAML spec (the same schema as JSON).
    #[cfg(feature = "yaml")]
    pub fn from_yaml(text: &str) -> Result<Self, ParseError> {
        let de = serde_norway::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let mut err = ParseError::from_path_error(e.path(), e.inner());
            if e.path().iter().next().is_none() && err.code == "invalid_value" {
                err.code = "syntax";
            }
            err
        })
    }

    /// The nodes in index order.
    pub fn nodes(&self) -> &[NodeSpec] {
        &self.dag_definition.nodes
    }
}

/// Builds a [`JobSpec`] in Rust.
#[derive(Clone, Debug)]
#[must_use]
pub struct JobSpecBuilder(JobSpec);

impl JobSpecBuilder {
    /// Sets the description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.0.description = Some(text.into());
        self
    }

    /// Adds a node.
    pub fn node(mut self, node: NodeSpec) -> Self {
        self.0.dag_definition.nodes.push(node);
        self
    }

    /// Adds nodes.
    pub fn nodes(mut self, nodes: impl IntoIterator<Item = NodeSpec>) -> Self {
        self.0.dag_definition.nodes.extend(nodes);
        self
    }

    /// Adds an edge: `to` runs after `from`.
    pub fn edge(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.0.dag_definition.edges.push(Edge {
            from: from.into(),
            to: to.into(),
        });
        self
    }

    /// Sets the job priority (higher first).
    pub fn priority(mut self, priority: i32) -> Self {
        self.0.priority = priority;
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.labels.insert(key.into(), value.into());
        self
    }

    /// Sets the job timeout.
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.0.timeout = Some(timeout.into());
        self
    }

    /// Limits how many of the job's nodes run at once.
    pub fn max_concurrency(mut self, limit: u32) -> Self {
        self.0.max_concurrency = Some(limit);
        self
    }

    /// Uses a stored policy (`name@version` or `name`) by default.
    pub fn policy(mut self, policy: impl Into<String>) -> Self {
        self.0.policy = Some(policy.into());
        self
    }

    /// Sets the default classification rules.
    pub fn classify(mut self, rules: impl IntoIterator<Item = ClassifyRule>) -> Self {
        self.0.classify = rules.into_iter().collect();
        self
    }

    /// Configures the circuit breaker of `dependency`.
    pub fn breaker(mut self, dependency: impl Into<String>, spec: BreakerSpec) -> Self {
        self.0.breakers.insert(dependency.into(), spec);
        self
    }

    /// Sets the default retry policy.
    pub fn retry(mut self, retry: RetrySpec) -> Self {
        self.0.retry = Some(retry);
        self
    }

    /// Declares a named pool of `slots` slots.
    pub fn pool(mut self, name: impl Into<String>, slots: u32) -> Self {
        self.0.pools.insert(name.into(), slots);
        self
    }

    /// Sets what happens on failure.
    pub fn on_failure(mut self, on_failure: OnFailure) -> Self {
        self.0.on_failure = on_failure;
        self
    }

    /// Sets the flakiness settings of every node.
    pub fn flaky(mut self, flaky: FlakySpec) -> Self {
        self.0.flaky = Some(flaky);
        self
    }

    /// Finishes the spec (validate it before running it).
    pub fn build(self) -> JobSpec {
        self.0
    }
}

impl NodeSpec {
    /// A node `id` run by the runner registered for `kind`.
    pub fn new(id: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            kind: kind.into(),
            params: Value::Null,
            depends_on: Vec::new(),
            retry: None,
            policy: None,
            classify: None,
            dependency: None,
            timeout: None,
            heartbeat_timeout: None,
            trigger: TriggerRule::AllSuccess,
            priority: 0,
            pool: None,
            compensate: None,
            test_id: None,
            flaky: None,
        }
    }

    /// Sets the runner parameters.
    #[must_use]
    pub fn params(mut self, params: Value) -> Self {
        self.params = params;
        self
    }

    /// Adds upstream dependencies.
    #[must_use]
    pub fn depends_on<S: Into<String>>(mut self, ids: impl IntoIterator<Item = S>) -> Self {
        self.depends_on.extend(ids.into_iter().map(Into::into));
        self
    }

    /// Uses a stored policy (`name@version` or `name`).
    #[must_use]
    pub fn policy(mut self, policy: impl Into<String>) -> Self {
        self.policy = Some(policy.into());
        self
    }

    /// Overrides the job's classification rules.
    #[must_use]
    pub fn classify(mut self, rules: impl IntoIterator<Item = ClassifyRule>) -> Self {
        self.classify = Some(rules.into_iter().collect());
        self
    }

    /// Names the dependency whose circuit breaker gates this node.
    #[must_use]
    pub fn dependency(mut self, dependency: impl Into<String>) -> Self {
        self.dependency = Some(dependency.into());
        self
    }

    /// The dependency whose breaker gates this node: `dependency`, else
    /// its type.
    pub fn dependency_name(&self) -> &str {
        self.dependency.as_deref().unwrap_or(&self.kind)
    }

    /// Overrides the retry policy.
    #[must_use]
    pub fn retry(mut self, retry: RetrySpec) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Sets the per-attempt timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = Some(timeout.into());
        self
    }

    /// Sets the heartbeat timeout.
    #[must_use]
    pub fn heartbeat_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.heartbeat_timeout = Some(timeout.into());
        self
    }

    /// Sets the trigger rule.
    #[must_use]
    pub fn trigger(mut self, trigger: TriggerRule) -> Self {
        self.trigger = trigger;
        self
    }

    /// Sets the node priority.
    #[must_use]
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Draws a slot from the job pool `name`.
    #[must_use]
    pub fn pool(mut self, name: impl Into<String>) -> Self {
        self.pool = Some(name.into());
        self
    }

    /// Sets the compensation step.
    #[must_use]
    pub fn compensate(mut self, kind: impl Into<String>, params: Value) -> Self {
        self.compensate = Some(CompensateSpec {
            kind: kind.into(),
            params,
            retry: None,
        });
        self
    }

    /// Sets the flakiness-history key.
    #[must_use]
    pub fn test_id(mut self, key: impl Into<String>) -> Self {
        self.test_id = Some(key.into());
        self
    }

    /// Replaces the job's flakiness settings for this node.
    #[must_use]
    pub fn flaky(mut self, flaky: FlakySpec) -> Self {
        self.flaky = Some(flaky);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"{"name": "Test Suite Execution", "description": "Execute comprehensive test suite",
        "dag_definition": {"nodes": [{"id": "test1", "type": "test_case"}], "edges": []}}"#;

    #[test]
    fn seed_request_parses() {
        let spec = JobSpec::from_json(SEED).unwrap();
        assert_eq!(spec.name, "Test Suite Execution");
        assert_eq!(spec.nodes()[0].kind, "test_case");
        assert_eq!(spec.nodes()[0].trigger, TriggerRule::AllSuccess);
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_path() {
        let text = r#"{"name": "x", "dag_definition": {"nodes": [{"id": "a", "type": "noop"},
            {"id": "b", "type": "noop", "depnds_on": ["a"]}]}}"#;
        let err = JobSpec::from_json(text).unwrap_err();
        assert_eq!(err.code, "unknown_field");
        assert_eq!(err.path, "/dag_definition/nodes/1/depnds_on");
    }

    #[test]
    fn bad_values_name_their_path() {
        let text = r#"{"name": "x", "dag_definition": {"nodes": [{"id": "a", "type": "noop", "timeout": "soon"}]}}"#;
        let err = JobSpec::from_json(text).unwrap_err();
        assert_eq!(err.path, "/dag_definition/nodes/0/timeout");
        let text = r#"{"name": "x", "dag_definition": {"nodes": [{"id": "a", "type": "noop", "trigger": "sometimes"}]}}"#;
        let err = JobSpec::from_json(text).unwrap_err();
        assert_eq!(err.code, "unknown_variant");
        assert_eq!(err.path, "/dag_definition/nodes/0/trigger");
        assert_eq!(JobSpec::from_json("{").unwrap_err().code, "syntax");
        assert_eq!(JobSpec::from_json("42").unwrap_err().code, "invalid_type");
    }

    #[test]
    fn every_optional_field_round_trips() {
        let text = r#"{
          "name": "full", "priority": 5, "labels": {"team": "qa"}, "timeout": "1h",
          "max_concurrency": 4, "pools": {"browser": 2}, "on_failure": "rollback",
          "dag_definition": {
            "nodes": [
              {"id": "a", "type": "process", "params": {"command": "true"}, "timeout": "30s",
               "heartbeat_timeout": 5000, "priority": 2, "pool": "browser",
               "compensate": {"type": "noop"}, "test_id": "suite::a"},
              {"id": "b", "type": "noop", "depends_on": ["a"], "trigger": "all_done"}
            ],
            "edges": [{"from": "a", "to": "b"}]
          }
        }"#;
        let spec = JobSpec::from_json(text).unwrap();
        assert_eq!(
            spec.nodes()[0].heartbeat_timeout,
            Some(HumanDuration::from_secs(5))
        );
        let again = JobSpec::from_json(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(spec, again);
    }

    #[cfg(feature = "yaml")]
    #[test]
    fn yaml_matches_json() {
        let yaml = "
name: Test Suite Execution
description: Execute comprehensive test suite
dag_definition:
  nodes:
    - id: test1
      type: test_case
  edges: []
";
        assert_eq!(
            JobSpec::from_yaml(yaml).unwrap(),
            JobSpec::from_json(SEED).unwrap()
        );
        let err =
            JobSpec::from_yaml("name: x\ndag_definition:\n  nodes: []\n  edgez: []\n").unwrap_err();
        assert_eq!(err.code, "unknown_field");
        assert_eq!(err.path, "/dag_definition/edgez");
    }
}
