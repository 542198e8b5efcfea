//! Classification rules: turning a runner's verdict into the failure class
//! the retry policy acts on.
//!
//! A runner classifies what it can see (the `process` runner maps exit codes
//! and signals), but only the people who own a test suite know that *their*
//! exit code 3 means "the device farm is down" or that `Connection reset by
//! peer` in stderr means "try again". A [`ClassifyRule`] says so in the spec
//! (job level as the default, node level as an override) or in a stored
//! policy, and the executor applies the rules to every failed attempt
//! *before* the retry decision. The journal keeps the runner's class and the
//! rule that matched ([`Failure::classified_by`]).
//!
//! # Matching
//!
//! Rules are tried in order; the first rule whose conditions all hold wins,
//! and a failure no rule matches keeps the runner's class. A rule has at
//! least one condition:
//!
//! | field | holds when |
//! | --- | --- |
//! | `exit_codes: [3, 4]` | the process exited with one of these codes |
//! | `signals: [9]` | the process was killed by one of these signal numbers |
//! | `timeout: true` / `false` | the attempt did / did not run out of time |
//! | `pattern: "regex"` | the regex matches the captured output (`stream`: `stderr`, `stdout`, or `any`, the default, which also searches the failure message) |
//! | `from: [unknown]` | the runner's class is one of these |
//!
//! Runners other than `process` have no exit code or output: for them a
//! pattern searches the failure message. Cancelled attempts are never
//! reclassified (a cancelled job must stop), and no rule may yield
//! `cancelled`.
//!
//! Regexes are compiled once per job (and checked at validation), with a
//! bounded pattern length and compiled size, so a spec cannot make the
//! engine build a huge automaton; the `regex` crate matches in linear time.
//!
//! ```
//! use orchestrator_core::classify::{ClassifyRule, CompiledRules, FailureEvidence};
//! use orchestrator_core::{Failure, FailureClass};
//!
//! let rules: Vec<ClassifyRule> = serde_json::from_str(r#"[
//!     {"name": "farm-down", "exit_codes": [3], "class": "infrastructure"},
//!     {"pattern": "Connection reset", "class": "transient"}
//! ]"#)?;
//! let rules = CompiledRules::compile(&rules, "job")?;
//! let failure = Failure::new(FailureClass::Unknown, "exit 3").with_evidence(FailureEvidence {
//!     exit_code: Some(3),
//!     ..FailureEvidence::default()
//! });
//! let refined = rules.apply(failure);
//! assert_eq!(refined.class, FailureClass::Infrastructure);
//! assert_eq!(refined.classified_by.unwrap().rule, "farm-down");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::Arc;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::failure::{Classified, Failure, FailureClass};
use crate::validate::{Problem, ProblemCode, ValidationErrors};

/// Most rules in one list.
pub const MAX_RULES: usize = 64;
/// Longest regex pattern, in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;
/// Most exit codes or signals one rule lists.
pub const MAX_CODES: usize = 256;
/// Cap on a compiled regex's size (the `regex` crate's `size_limit`).
pub const MAX_REGEX_SIZE: usize = 256 * 1024;

/// Which captured output a `pattern` searches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// stderr, stdout and the failure message.
    #[default]
    Any,
    /// Only stderr.
    Stderr,
    /// Only stdout.
    Stdout,
}

/// One classification rule: conditions (all must hold) and the class it
/// yields. See the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClassifyRule {
    /// A name for the journal; without one the rule is named by its position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Exit codes that match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_codes: Vec<i32>,
    /// Signal numbers (9 for SIGKILL…) that match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signals: Vec<i32>,
    /// Whether the attempt ran out of time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<bool>,
    /// A regex searched in the captured output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Which output `pattern` searches (default: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<Stream>,
    /// The runner's classes this rule applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<FailureClass>,
    /// The class a matching failure gets.
    pub class: FailureClass,
}

impl ClassifyRule {
    /// A rule yielding `class`, with no condition yet.
    pub fn new(class: FailureClass) -> Self {
        Self {
            name: None,
            exit_codes: Vec::new(),
            signals: Vec::new(),
            timeout: None,
            pattern: None,
            stream: None,
            from: Vec::new(),
            class,
        }
    }

    /// Names the rule.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Matches these exit codes.
    #[must_use]
    pub fn exit_codes(mut self, codes: impl IntoIterator<Item = i32>) -> Self {
        self.exit_codes = codes.into_iter().collect();
        self
    }

    /// Matches these signals.
    #[must_use]
    pub fn signals(mut self, signals: impl IntoIterator<Item = i32>) -> Self {
        self.signals = signals.into_iter().collect();
        self
    }

    /// Matches attempts that did (`true`) or did not time out.
    #[must_use]
    pub fn timeout(mut self, timed_out: bool) -> Self {
        self.timeout = Some(timed_out);
        self
    }

    /// Matches output against `regex`.
    #[must_use]
    pub fn pattern(mut self, regex: impl Into<String>) -> Self {
        self.pattern = Some(regex.into());
        self
    }

    /// Restricts `pattern` to one stream.
    #[must_use]
    pub fn stream(mut self, stream: Stream) -> Self {
        self.stream = Some(stream);
        self
    }

    /// Applies only to failures the runner classed as one of `classes`.
    #[must_use]
    pub fn from_classes(mut self, classes: impl IntoIterator<Item = FailureClass>) -> Self {
        self.from = classes.into_iter().collect();
        self
    }

    fn has_condition(&self) -> bool {
        !self.exit_codes.is_empty()
            || !self.signals.is_empty()
            || self.timeout.is_some()
            || self.pattern.is_some()
            || !self.from.is_empty()
    }
}

/// What a runner saw of a failed attempt, beyond its message: the inputs of
/// exit-code, signal and pattern rules. Never journaled (output can be
/// large); the executor drops it once the rules have run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailureEvidence {
    /// The exit code, if the process exited.
    pub exit_code: Option<i32>,
    /// The signal that killed the process, if one did.
    pub signal: Option<i32>,
    /// The captured end of stdout.
    pub stdout: String,
    /// The captured end of stderr.
    pub stderr: String,
}

/// Checks a list of rules at `path` (e.g. `/classify`), appending every
/// problem.
pub fn check_rules(rules: &[ClassifyRule], path: &str, out: &mut Vec<Problem>) {
    if rules.len() > MAX_RULES {
        out.push(Problem::new(
            path,
            ProblemCode::InvalidRule,
            format!("{} rules exceed the limit of {MAX_RULES}", rules.len()),
        ));
        return;
    }
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("{path}/{i}");
        if !rule.has_condition() {
            out.push(Problem::new(
                &at,
                ProblemCode::InvalidRule,
                "a rule needs at least one condition (exit_codes, signals, timeout, pattern or from)",
            ));
        }
        if rule.class == FailureClass::Cancelled {
            out.push(Problem::new(
                format!("{at}/class"),
                ProblemCode::InvalidRule,
                "no rule may yield cancelled: only cancelling a job does",
            ));
        }
        if rule.exit_codes.len() > MAX_CODES || rule.signals.len() > MAX_CODES {
            out.push(Problem::new(
                &at,
                ProblemCode::InvalidRule,
                format!("a rule lists at most {MAX_CODES} exit codes and {MAX_CODES} signals"),
            ));
        }
        if let Some(j) = rule.exit_codes.iter().position(|&c| c == 0) {
            out.push(Problem::new(
                format!("{at}/exit_codes/{j}"),
                ProblemCode::InvalidRule,
                "exit code 0 means success and never reaches a rule",
            ));
        }
        if let Some(j) = rule.signals.iter().position(|&s| !(1..=128).contains(&s)) {
            out.push(Problem::new(
                format!("{at}/signals/{j}"),
                ProblemCode::InvalidRule,
                "signal numbers are between 1 and 128",
            ));
        }
        if rule
            .name
            .as_ref()
            .is_some_and(|n| n.is_empty() || n.len() > 128)
        {
            out.push(Problem::new(
                format!("{at}/name"),
                ProblemCode::InvalidRule,
                "a rule name is 1 to 128 bytes",
            ));
        }
        if rule.stream.is_some() && rule.pattern.is_none() {
            out.push(Problem::new(
                format!("{at}/stream"),
                ProblemCode::InvalidRule,
                "stream only applies with a pattern",
            ));
        }
        if let Some(pattern) = &rule.pattern {
            if let Err(message) = compile_regex(pattern) {
                out.push(Problem::new(
                    format!("{at}/pattern"),
                    ProblemCode::InvalidRule,
                    message,
                ));
            }
        }
    }
}

fn compile_regex(pattern: &str) -> Result<Regex, String> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(format!(
            "a pattern is at most {MAX_PATTERN_LEN} bytes, this one has {}",
            pattern.len()
        ));
    }
    RegexBuilder::new(pattern)
        .size_limit(MAX_REGEX_SIZE)
        .dfa_size_limit(MAX_REGEX_SIZE)
        .build()
        .map_err(|e| {
            // The regex crate's messages are multi-line drawings; keep them
            // but bound their size.
            let mut text = format!("invalid regex: {e}");
            text.truncate(512);
            text
        })
}

#[derive(Debug)]
struct Compiled {
    id: String,
    rule: ClassifyRule,
    regex: Option<Regex>,
}

/// A validated, compiled list of rules, ready to apply.
#[derive(Debug, Default)]
pub struct CompiledRules {
    rules: Vec<Compiled>,
}

impl CompiledRules {
    /// Checks and compiles `rules`. `source` names where they come from in
    /// the journal when a rule has no name (`job`, `node`,
    /// `policy:name@3`): the rule is called `{source}/classify/{index}`.
    pub fn compile(rules: &[ClassifyRule], source: &str) -> Result<Arc<Self>, ValidationErrors> {
        let mut problems = Vec::new();
        check_rules(rules, "/classify", &mut problems);
        if !problems.is_empty() {
            return Err(ValidationErrors(problems));
        }
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, rule)| Compiled {
                id: rule
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{source}/classify/{i}")),
                regex: rule.pattern.as_deref().and_then(|p| compile_regex(p).ok()),
                rule: rule.clone(),
            })
            .collect();
        Ok(Arc::new(Self { rules }))
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Refines `failure`'s class by the first matching rule (recording the
    /// rule and the runner's class in [`Failure::classified_by`]), and drops
    /// its evidence. Cancelled failures are left as they are.
    pub fn apply(&self, mut failure: Failure) -> Failure {
        let evidence = failure.evidence.take();
        if failure.class == FailureClass::Cancelled {
            return failure;
        }
        let evidence = evidence.as_deref();
        let hit = self.rules.iter().find(|c| matches(c, &failure, evidence));
        if let Some(c) = hit {
            failure.classified_by = Some(Classified {
                rule: c.id.clone(),
                runner_class: failure.class,
            });
            failure.class = c.rule.class;
        }
        failure
    }
}

fn matches(c: &Compiled, failure: &Failure, evidence: Option<&FailureEvidence>) -> bool {
    let rule = &c.rule;
    if !rule.from.is_empty() && !rule.from.contains(&failure.class) {
        return false;
    }
    if let Some(timed_out) = rule.timeout {
        if (failure.class == FailureClass::Timeout) != timed_out {
            return false;
        }
    }
    if !rule.exit_codes.is_empty()
        && !evidence
            .and_then(|e| e.exit_code)
            .is_some_and(|code| rule.exit_codes.contains(&code))
    {
        return false;
    }
    if !rule.signals.is_empty()
        && !evidence
            .and_then(|e| e.signal)
            .is_some_and(|s| rule.signals.contains(&s))
    {
        return false;
    }
    if let Some(regex) = &c.regex {
        let (stdout, stderr) =
            evidence.map_or(("", ""), |e| (e.stdout.as_str(), e.stderr.as_str()));
        let found = match rule.stream.unwrap_or_default() {
            Stream::Stderr => regex.is_match(stderr),
            Stream::Stdout => regex.is_match(stdout),
            Stream::Any => {
                regex.is_match(stderr) || regex.is_match(stdout) || regex.is_match(&failure.message)
            }
        };
        if !found {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureClass::*;

    fn evidence(code: Option<i32>, signal: Option<i32>, stderr: &str) -> FailureEvidence {
        FailureEvidence {
            exit_code: code,
            signal,
            stdout: String::new(),
            stderr: stderr.to_owned(),
        }
    }

    fn apply(rules: &[ClassifyRule], failure: Failure) -> Failure {
        CompiledRules::compile(rules, "job").unwrap().apply(failure)
    }

    #[test]
    fn first_matching_rule_wins_and_is_recorded() {
        let rules = [
            ClassifyRule::new(Permanent).exit_codes([1]).named("assert"),
            ClassifyRule::new(Transient).exit_codes([1, 2]),
        ];
        let f = apply(
            &rules,
            Failure::new(Unknown, "x").with_evidence(evidence(Some(2), None, "")),
        );
        assert_eq!(f.class, Transient);
        let by = f.classified_by.unwrap();
        assert_eq!(by.rule, "job/classify/1");
        assert_eq!(by.runner_class, Unknown);
        assert!(f.evidence.is_none());

        let f = apply(
            &rules,
            Failure::new(Unknown, "x").with_evidence(evidence(Some(1), None, "")),
        );
        assert_eq!(
            (f.class, f.classified_by.unwrap().rule.as_str()),
            (Permanent, "assert")
        );
    }

    #[test]
    fn no_match_keeps_the_runner_class() {
        let rules = [ClassifyRule::new(Transient).exit_codes([3])];
        let f = apply(
            &rules,
            Failure::new(Unknown, "x").with_evidence(evidence(Some(1), None, "")),
        );
        assert_eq!(f.class, Unknown);
        assert!(f.classified_by.is_none());
        // No evidence at all: exit-code rules cannot match.
        assert_eq!(apply(&rules, Failure::new(Unknown, "x")).class, Unknown);
    }

    #[test]
    fn conditions_combine_with_and() {
        let rules = [ClassifyRule::new(Infrastructure)
            .exit_codes([1])
            .pattern("device farm")
            .stream(Stream::Stderr)];
        let hit = Failure::new(Unknown, "x").with_evidence(evidence(
            Some(1),
            None,
            "the device farm is gone",
        ));
        assert_eq!(apply(&rules, hit).class, Infrastructure);
        let wrong_code = Failure::new(Unknown, "x").with_evidence(evidence(
            Some(2),
            None,
            "the device farm is gone",
        ));
        assert_eq!(apply(&rules, wrong_code).class, Unknown);
        // The pattern is only searched in stderr here.
        let in_stdout = Failure::new(Unknown, "device farm").with_evidence(FailureEvidence {
            exit_code: Some(1),
            stdout: "device farm".into(),
            ..FailureEvidence::default()
        });
        assert_eq!(apply(&rules, in_stdout).class, Unknown);
    }

    #[test]
    fn signals_timeouts_and_runner_classes() {
        let rules = [
            ClassifyRule::new(Transient).signals([9]),
            ClassifyRule::new(Infrastructure).timeout(true),
            ClassifyRule::new(Permanent).from_classes([Unknown]),
        ];
        let killed = Failure::new(Infrastructure, "k").with_evidence(evidence(None, Some(9), ""));
        assert_eq!(apply(&rules, killed).class, Transient);
        assert_eq!(
            apply(&rules, Failure::timeout("slow")).class,
            Infrastructure
        );
        assert_eq!(apply(&rules, Failure::new(Unknown, "?")).class, Permanent);
        assert_eq!(apply(&rules, Failure::transient("t")).class, Transient);
    }

    #[test]
    fn pattern_searches_the_message_without_evidence() {
        let rules = [ClassifyRule::new(Transient).pattern(r"(?i)connection reset")];
        assert_eq!(
            apply(&rules, Failure::permanent("Connection reset by peer")).class,
            Transient
        );
    }

    #[test]
    fn cancelled_failures_are_never_reclassified() {
        let rules = [ClassifyRule::new(Transient).from_classes([Cancelled])];
        // Validation refuses nothing here (from: [cancelled] is harmless),
        // but applying leaves the class alone.
        assert_eq!(apply(&rules, Failure::cancelled("stop")).class, Cancelled);
    }

    #[test]
    fn bad_rules_are_problems_with_paths() {
        let rules = vec![
            ClassifyRule::new(Transient),
            ClassifyRule::new(Cancelled).exit_codes([0]),
            ClassifyRule::new(Transient).pattern("(unclosed"),
            ClassifyRule::new(Transient).pattern("x".repeat(MAX_PATTERN_LEN + 1)),
            ClassifyRule::new(Transient)
                .signals([0])
                .stream(Stream::Stdout),
            ClassifyRule::new(Transient).pattern(r"\w{1000}\w{1000}\w{1000}"),
        ];
        let mut out = Vec::new();
        check_rules(&rules, "/classify", &mut out);
        let paths: Vec<_> = out.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/classify/0",
                "/classify/1/class",
                "/classify/1/exit_codes/0",
                "/classify/2/pattern",
                "/classify/3/pattern",
                "/classify/4/signals/0",
                "/classify/4/stream",
                "/classify/5/pattern",
            ]
        );
        assert!(out.iter().all(|p| p.code == ProblemCode::InvalidRule));
        let too_many = vec![ClassifyRule::new(Transient).timeout(true); MAX_RULES + 1];
        let mut out = Vec::new();
        check_rules(&too_many, "/x/classify", &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].path, "/x/classify");
    }

    #[test]
    fn rules_round_trip_and_reject_unknown_fields() {
        let rule: ClassifyRule = serde_json::from_str(
            r#"{"exit_codes": [3], "pattern": "x", "stream": "stderr", "class": "transient"}"#,
        )
        .unwrap();
        assert_eq!(rule.stream, Some(Stream::Stderr));
        let back: ClassifyRule =
            serde_json::from_value(serde_json::to_value(&rule).unwrap()).unwrap();
        assert_eq!(back, rule);
        assert!(
            serde_json::from_str::<ClassifyRule>(r#"{"exit_code": 3, "class": "transient"}"#)
                .is_err()
        );
    }
}
