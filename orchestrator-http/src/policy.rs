//! [`NodePolicy`]: which node types (and which commands) a job submitted
//! over HTTP may use.
//!
//! Whoever can reach the API must not be able to run arbitrary programs on
//! the server, so the default allows only harmless built-ins (`noop`,
//! `sleep`). `process` is enabled only together with an allowlist of
//! commands; submissions are checked here, and the server's process runner
//! should be configured with the same list (as `orchestrator serve` does),
//! so a job recovered from the store is held to it too.

use std::collections::BTreeSet;

use orchestrator_core::JobSpec;
use serde_json::Value;

use crate::error::FieldProblem;

/// The node type that runs commands.
pub const PROCESS: &str = "process";

/// Node types and commands allowed over HTTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePolicy {
    types: BTreeSet<String>,
    commands: BTreeSet<String>,
}

impl Default for NodePolicy {
    /// `noop` and `sleep` only.
    fn default() -> Self {
        Self {
            types: ["noop", "sleep"].map(String::from).into(),
            commands: BTreeSet::new(),
        }
    }
}

impl NodePolicy {
    /// Allows nothing (add types with [`NodePolicy::allow_type`]).
    pub fn empty() -> Self {
        Self {
            types: BTreeSet::new(),
            commands: BTreeSet::new(),
        }
    }

    /// Also allows node type `kind` (e.g. a runner the application
    /// registered). Use [`NodePolicy::allow_process`] for `process`.
    #[must_use]
    pub fn allow_type(mut self, kind: impl Into<String>) -> Self {
        let kind = kind.into();
        if kind != PROCESS {
            self.types.insert(kind);
        }
        self
    }

    /// Enables `process` for exactly these commands (matched against
    /// `params.command`; `shell: true` and `env` entries that change which
    /// code runs — `PATH`, `LD_*`, `DYLD_*` — are refused). An empty list
    /// leaves `process` disabled.
    #[must_use]
    pub fn allow_process<I, S>(mut self, commands: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.commands.extend(commands.into_iter().map(Into::into));
        if !self.commands.is_empty() {
            self.types.insert(PROCESS.to_owned());
        }
        self
    }

    /// The allowed node types, sorted.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.types.iter().map(String::as_str)
    }

    /// The allowed commands of `process` nodes (empty: `process` is off).
    pub fn commands(&self) -> &BTreeSet<String> {
        &self.commands
    }

    /// Every problem of `spec` under this policy (empty when allowed).
    pub fn check(&self, spec: &JobSpec) -> Vec<FieldProblem> {
        let mut problems = Vec::new();
        for (i, node) in spec.nodes().iter().enumerate() {
            let base = format!("/dag_definition/nodes/{i}");
            self.check_step(&node.kind, &node.params, &base, &mut problems);
            if let Some(c) = &node.compensate {
                self.check_step(
                    &c.kind,
                    &c.params,
                    &format!("{base}/compensate"),
                    &mut problems,
                );
            }
            if problems.len() > 1000 {
                break;
            }
        }
        problems
    }

    fn check_step(&self, kind: &str, params: &Value, base: &str, out: &mut Vec<FieldProblem>) {
        if kind.is_empty() {
            // Core validation reports empty types.
            return;
        }
        if !self.types.contains(kind) {
            let allowed: Vec<&str> = self.types().collect();
            out.push(FieldProblem::new(
                format!("{base}/type"),
                "node_type_not_allowed",
                format!(
                    "node type {kind:?} is not available over HTTP; allowed: {}",
                    if allowed.is_empty() {
                        "none".to_owned()
                    } else {
                        allowed.join(", ")
                    }
                ),
            ));
            return;
        }
        if kind != PROCESS {
            return;
        }
        let refuse = |out: &mut Vec<FieldProblem>, field: &str, message: String| {
            out.push(FieldProblem::new(
                format!("{base}/params{field}"),
                "command_not_allowed",
                message,
            ));
        };
        match params.get("command").and_then(Value::as_str) {
            Some(c) if self.commands.contains(c) => {}
            Some(c) => refuse(
                out,
                "/command",
                format!(
                    "command {c:?} is not allowed; allowed: {}",
                    self.commands
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            None => refuse(
                out,
                "/command",
                "a process node needs a string `command`".to_owned(),
            ),
        }
        if params.get("shell").and_then(Value::as_bool) == Some(true) {
            refuse(
                out,
                "/shell",
                "`shell: true` is not allowed: a script could run any command".to_owned(),
            );
        }
        if let Some(env) = params.get("env").and_then(Value::as_object) {
            for key in env.keys() {
                if key == "PATH" || key.starts_with("LD_") || key.starts_with("DYLD_") {
                    refuse(
                        out,
                        &format!("/env/{}", key.replace('~', "~0").replace('/', "~1")),
                        format!(
                            "env `{key}` cannot be set: it changes which code the command runs"
                        ),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_core::NodeSpec;
    use serde_json::json;

    fn spec(nodes: Vec<NodeSpec>) -> JobSpec {
        JobSpec::builder("t").nodes(nodes).build()
    }

    #[test]
    fn defaults_allow_only_harmless_builtins() {
        let policy = NodePolicy::default();
        assert!(policy
            .check(&spec(vec![
                NodeSpec::new("a", "noop"),
                NodeSpec::new("b", "sleep")
            ]))
            .is_empty());
        let problems = policy.check(&spec(vec![
            NodeSpec::new("a", "process").params(json!({"command": "rm"})),
            NodeSpec::new("b", "mystery").compensate("process", json!({})),
        ]));
        let got: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.path.as_str(), p.code.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("/dag_definition/nodes/0/type", "node_type_not_allowed"),
                ("/dag_definition/nodes/1/type", "node_type_not_allowed"),
                (
                    "/dag_definition/nodes/1/compensate/type",
                    "node_type_not_allowed"
                ),
            ]
        );
    }

    #[test]
    fn process_needs_an_allowlisted_command() {
        let policy = NodePolicy::default()
            .allow_process(["pytest"])
            .allow_type("process");
        assert!(policy
            .check(&spec(vec![
                NodeSpec::new("a", "process").params(json!({"command": "pytest", "args": ["-x"]}))
            ]))
            .is_empty());
        let problems = policy.check(&spec(vec![
            NodeSpec::new("a", "process").params(json!({"command": "bash"})),
            NodeSpec::new("b", "process").params(json!({"command": "pytest", "shell": true, "env": {"PATH": "/tmp", "LD_PRELOAD": "x", "HOME": "/"}})),
            NodeSpec::new("c", "process"),
        ]));
        let got: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            got,
            [
                "/dag_definition/nodes/0/params/command",
                "/dag_definition/nodes/1/params/shell",
                "/dag_definition/nodes/1/params/env/LD_PRELOAD",
                "/dag_definition/nodes/1/params/env/PATH",
                "/dag_definition/nodes/2/params/command",
            ]
        );
        assert!(problems.iter().all(|p| p.code == "command_not_allowed"));
        // An empty command list keeps process off.
        assert!(!NodePolicy::default()
            .allow_process(Vec::<String>::new())
            .types()
            .any(|t| t == PROCESS));
    }
}
