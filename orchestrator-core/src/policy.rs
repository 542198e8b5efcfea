//! Stored, versioned policies: a retry policy and classification rules under
//! a name, kept in the store so that many specs (and many teams) share one
//! definition of "how we retry the device farm".
//!
//! A policy is written once per version, `name@version`, and never changes
//! afterwards ([`crate::store::PolicyStore`]): a job that ran under
//! `farm@3` can always be explained, and resumed, with exactly `farm@3`.
//!
//! # Referring to a policy
//!
//! A job or a node says `policy: "farm@3"` (that version) or `policy:
//! "farm"` (the latest version **at submission**). The executor resolves
//! the references when a job is submitted and journals the spec with every
//! reference pinned (`farm` becomes `farm@3` in the `Submitted` record), so
//! a job resumed after a crash, or rerun, uses the very policy it started
//! with even if `farm@4` appeared meanwhile. An unknown policy is a
//! validation problem (`unknown_policy`) at the reference's path.
//!
//! A policy supplies what its level leaves out: a node's own `retry` and
//! `classify` win over its `policy`, which wins over the job's `retry` and
//! `classify`, which win over the job's `policy`. Setting both `retry` and
//! `policy` at one level is a validation problem (one of them would be
//! dead).
//!
//! ```yaml
//! # orchestrator policy create farm.yaml
//! name: farm
//! version: 3
//! description: device-farm tests
//! retry:
//!   max_attempts: 6
//!   backoff: {kind: exponential, initial: 1s, cap: 1m}
//!   jitter: full
//!   per_class:
//!     timeout: {backoff: {kind: linear, initial: 5s, increment: 5s}}
//!     infrastructure: {backoff: {kind: fixed, delay: 0ms}, max_attempts: 2}
//! classify:
//!   - {name: farm-down, exit_codes: [3], class: infrastructure}
//!   - {pattern: "Connection reset", class: transient}
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::classify::{check_rules, ClassifyRule};
use crate::retry::{PolicyRegistry, RetrySpec};
use crate::spec::JobSpec;
use crate::validate::{Problem, ProblemCode, ValidationErrors};

/// Longest policy name, in bytes.
pub const MAX_POLICY_NAME: usize = 64;

/// A named, versioned policy as stored. Immutable once written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StoredPolicy {
    /// The name: 1 to 64 of `A-Z a-z 0-9 _ - .`.
    pub name: String,
    /// The version, from 1.
    pub version: u32,
    /// What it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The retry policy (per failure class, with one shared budget).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub retry: RetrySpec,
    /// Classification rules applied before the retry decision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classify: Vec<ClassifyRule>,
}

impl StoredPolicy {
    /// A policy `name@version` with the default retry spec and no rules.
    pub fn new(name: impl Into<String>, version: u32) -> Self {
        Self {
            name: name.into(),
            version,
            description: None,
            retry: RetrySpec::default(),
            classify: Vec::new(),
        }
    }

    /// `name@version`.
    pub fn key(&self) -> PolicyRef {
        PolicyRef {
            name: self.name.clone(),
            version: Some(self.version),
        }
    }

    /// Every problem of this policy (paths relative to the document:
    /// `/name`, `/retry/backoff/factor`, `/classify/0/pattern`…).
    pub fn check(&self, custom: &PolicyRegistry) -> Result<(), ValidationErrors> {
        let mut out = Vec::new();
        if let Err(message) = check_name(&self.name) {
            out.push(Problem::new("/name", ProblemCode::InvalidPolicy, message));
        }
        if self.version == 0 {
            out.push(Problem::new(
                "/version",
                ProblemCode::InvalidPolicy,
                "versions count from 1",
            ));
        }
        if self.description.as_ref().is_some_and(|d| d.len() > 4096) {
            out.push(Problem::new(
                "/description",
                ProblemCode::InvalidPolicy,
                "a description is at most 4096 bytes",
            ));
        }
        self.retry.check("/retry", custom, &mut out);
        check_rules(&self.classify, "/classify", &mut out);
        if out.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(out))
        }
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > MAX_POLICY_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(format!(
            "a policy name is 1 to {MAX_POLICY_NAME} of A-Z a-z 0-9 _ - ., got {:?}",
            name.chars().take(80).collect::<String>()
        ));
    }
    Ok(())
}

/// A reference to a stored policy: `name` (the latest version) or
/// `name@version`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyRef {
    /// The policy's name.
    pub name: String,
    /// The version, or `None` for the latest.
    pub version: Option<u32>,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Some(v) => write!(f, "{}@{v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl FromStr for PolicyRef {
    type Err = String;

    /// Parses `name` or `name@version` (version ≥ 1).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, version) = match s.split_once('@') {
            Some((name, v)) => {
                let version = v
                    .parse::<u32>()
                    .ok()
                    .filter(|&v| v >= 1)
                    .ok_or_else(|| format!("a policy version is a number from 1, got {v:?}"))?;
                (name, Some(version))
            }
            None => (s, None),
        };
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            version,
        })
    }
}

/// Checks a `policy` reference at `{base}/policy`: it parses, it is known
/// to `registry`, and its level does not also set `retry`.
pub(crate) fn check_reference(
    reference: Option<&str>,
    has_retry: bool,
    base: &str,
    registry: &PolicyRegistry,
    out: &mut Vec<Problem>,
) {
    let Some(reference) = reference else { return };
    let at = format!("{base}/policy");
    match reference.parse::<PolicyRef>() {
        Err(message) => out.push(Problem::new(&at, ProblemCode::InvalidPolicy, message)),
        Ok(r) if registry.stored(&r).is_none() => out.push(Problem::new(
            &at,
            ProblemCode::UnknownPolicy,
            format!("no stored policy {r}"),
        )),
        Ok(_) => {}
    }
    if has_retry {
        out.push(Problem::new(
            &at,
            ProblemCode::InvalidPolicy,
            "set either retry or policy at one level, not both",
        ));
    }
}

/// The references a spec makes (job level first, then nodes in order),
/// deduplicated. References that do not parse are left to validation.
pub fn references(spec: &JobSpec) -> Vec<PolicyRef> {
    let mut out: Vec<PolicyRef> = Vec::new();
    let all = spec
        .policy
        .iter()
        .chain(spec.nodes().iter().filter_map(|n| n.policy.as_ref()));
    for r in all {
        if let Ok(r) = r.parse::<PolicyRef>() {
            if !out.contains(&r) {
                out.push(r);
            }
        }
    }
    out
}

/// Rewrites every reference of `spec` to the version `registry` resolves it
/// to (`farm` → `farm@3`), so the journaled spec names exactly the
/// policies the job runs with. Unknown references are left as they are.
pub fn pin(spec: &mut JobSpec, registry: &PolicyRegistry) {
    let pin_one = |r: &mut Option<String>| {
        if let Some(text) = r {
            if let Some(p) = registry.stored_str(text) {
                *text = p.key().to_string();
            }
        }
    };
    pin_one(&mut spec.policy);
    for node in &mut spec.dag_definition.nodes {
        pin_one(&mut node.policy);
    }
}

/// The retry spec and classification rules (with their source, for rule
/// names in the journal) that apply to node `i`: the node's own, else its
/// policy's, else the job's, else the job policy's.
pub(crate) fn effective<'a>(
    spec: &'a JobSpec,
    i: usize,
    registry: &'a PolicyRegistry,
) -> (Option<&'a RetrySpec>, Option<(&'a [ClassifyRule], String)>) {
    let node = &spec.nodes()[i];
    let node_policy = node.policy.as_deref().and_then(|r| registry.stored_str(r));
    let job_policy = spec.policy.as_deref().and_then(|r| registry.stored_str(r));
    let retry = node
        .retry
        .as_ref()
        .or(node_policy.map(|p| &p.retry))
        .or(spec.retry.as_ref())
        .or(job_policy.map(|p| &p.retry));
    let source = |p: &StoredPolicy| format!("policy:{}", p.key());
    let rules = match (&node.classify, node_policy) {
        (Some(rules), _) => Some((rules.as_slice(), "node".to_owned())),
        (None, Some(p)) if !p.classify.is_empty() => Some((p.classify.as_slice(), source(p))),
        _ if !spec.classify.is_empty() => Some((spec.classify.as_slice(), "job".to_owned())),
        _ => job_policy
            .filter(|p| !p.classify.is_empty())
            .map(|p| (p.classify.as_slice(), source(p))),
    };
    (retry, rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_and_print() {
        let r: PolicyRef = "farm@3".parse().unwrap();
        assert_eq!((r.name.as_str(), r.version), ("farm", Some(3)));
        assert_eq!(r.to_string(), "farm@3");
        let r: PolicyRef = "farm".parse().unwrap();
        assert_eq!(r.version, None);
        for bad in ["", "farm@", "farm@0", "farm@x", "fa rm", "@3", "a@1@2"] {
            assert!(bad.parse::<PolicyRef>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn policies_report_every_problem() {
        let mut p = StoredPolicy::new("bad name", 0);
        p.retry = RetrySpec::new().max_attempts(0);
        p.classify = vec![ClassifyRule::new(crate::FailureClass::Transient).pattern("(")];
        let err = p.check(&PolicyRegistry::default()).unwrap_err();
        let paths: Vec<_> = err.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/name",
                "/version",
                "/retry/max_attempts",
                "/classify/0/pattern"
            ]
        );
        assert!(StoredPolicy::new("ok", 1)
            .check(&PolicyRegistry::default())
            .is_ok());
    }
}
