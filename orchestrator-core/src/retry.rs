//! Retry policies: whether, and after how long, a failed attempt runs again.
//!
//! # The model
//!
//! When attempt `n` of a node fails (attempts count from 1), the executor
//! asks the node's [`RetryPolicy`] for [`next_delay`](RetryPolicy::next_delay).
//! `Some(delay)` schedules attempt `n + 1` after `delay`; `None` ends the node
//! with that failure. Users write a policy as a [`RetrySpec`] (in a job spec,
//! as JSON or YAML, or built in Rust). [`RetrySpec::check`] reports all of its
//! problems. [`RetrySpec::compile`] turns it into a [`Policy`], a validated
//! value whose `next_delay` is a pure function of its input: no clock, no
//! global random state. So the decision journaled for an attempt is the one a
//! replay of that journal computes again.
//!
//! A [`Policy`] decides in this order. The first rule that says "stop" wins:
//!
//! 1. **Class.** [`FailureClass::Cancelled`] is never retried, whatever the
//!    spec says: a cancelled job must stop. Other classes are retried if they
//!    are in `retry_on` (default [`DEFAULT_RETRY_ON`]: transient, timeout,
//!    infrastructure, unknown) and not in `never_retry_on`. So `permanent`
//!    is not retried unless a spec asks for it.
//! 2. **Attempts.** Attempt `n` is retried only if `n < max_attempts`.
//!    `max_attempts` counts the first attempt, so `max_attempts: 1` means
//!    "never retry" and the default of 3 means "at most two retries".
//! 3. **Backoff.** The base delay for retry `n`:
//!
//!    | `kind` | fields | delay after attempt `n` |
//!    | --- | --- | --- |
//!    | `none` | | never retried |
//!    | `fixed` | `delay` | `delay` |
//!    | `linear` | `initial`, `increment` | `initial + (n-1)·increment` |
//!    | `exponential` | `initial`, `factor` (default 2), `cap` (optional) | `min(cap, initial·factor^(n-1))` |
//!    | `fibonacci` | `unit` | `unit·F(n)`: 1, 1, 2, 3, 5, 8… units |
//!    | `custom` | `name` | what the [registered](PolicyRegistry) policy returns |
//!
//! 4. **Jitter** spreads retries out so that many nodes that failed together
//!    do not all retry at the same instant. For a base delay `d`:
//!    `none` keeps `d`; `full` picks uniformly in `[0, d]`; `equal` picks in
//!    `[d/2, d]`; `decorrelated` is AWS's "decorrelated jitter",
//!    `sleep = min(cap, uniform(base, 3·previous sleep))`. It uses only the
//!    first delay of the backoff (its `base`) and the backoff's ceiling (the
//!    exponential `cap`, else `max_delay`), and grows on its own. Jitter is
//!    not applied to custom policies: they own their shape and their
//!    randomness.
//! 5. **`max_delay`** (default 300 s, from [`RetryDefaults`]) caps every
//!    single delay, after jitter too.
//! 6. **`max_total`** (optional) is a budget for the whole node: a retry is
//!    not scheduled if `elapsed + delay` would exceed it, where `elapsed` is
//!    the time since the node's first attempt started.
//!
//! Delays are whole milliseconds, the unit of spec durations and of the
//! journal, so a journaled delay replays exactly. Arithmetic saturates:
//! huge attempt numbers, factors or durations give the cap, never a panic or
//! an overflow.
//!
//! # Per-class rules
//!
//! `per_class` maps a failure class to an entry that overrides `backoff`,
//! `jitter` and `max_attempts` for failures of that class. Fields an entry
//! omits come from the top level. All classes share one attempt counter and
//! one `max_total` budget. Attempt numbers count every attempt of the node,
//! whatever its class. So `infrastructure: {max_attempts: 4}` means "retry an
//! infrastructure failure only while fewer than 4 attempts have run in all".
//! An entry's `max_attempts` replaces the top-level one for its class (it may
//! be larger). [`RetryPolicy::max_attempts`] then reports the largest limit
//! of any retried class.
//!
//! # Deterministic jitter
//!
//! Jitter randomness is a pure function of `(seed, attempt)`, derived with
//! [`mix64`] (SplitMix64's finalizer). [`seed_for`] makes the seed stable per
//! (job, node). `std`'s hashers and `rand`'s small generators do not promise
//! the same stream across versions, and a journal replayed after an upgrade
//! must compute the same delays. A test pins the exact values.
//!
//! # Why `next_delay` takes a context
//!
//! The design sketch spoke of a `next_delay(attempt, failure)` function. The
//! total-time budget also needs `elapsed`, and jitter needs the seed. Passing
//! one [`RetryContext`] keeps the trait at one method of one argument.
//! Implementations read the fields they need. When a new input is added,
//! existing custom policies keep compiling, and no implementor gets a
//! four-argument signature.
//!
//! # Serde shape
//!
//! Every struct and every backoff kind rejects unknown fields, so a typo fails
//! parsing instead of silently changing the policy. Durations are
//! [`HumanDuration`]s (`"250ms"`, `"30s"`, `"5m"`, or integer milliseconds).
//!
//! ```yaml
//! retry:
//!   max_attempts: 5
//!   backoff: {kind: exponential, initial: 1s, factor: 2.0, cap: 1m}
//!   jitter: full                # none | full | equal | decorrelated
//!   max_delay: 300s
//!   max_total: 10m
//!   retry_on: [transient, timeout, infrastructure]
//!   never_retry_on: [permanent]
//!   per_class:
//!     timeout: {backoff: {kind: linear, initial: 1s, increment: 2s}}
//!     infrastructure: {backoff: {kind: fixed, delay: 0ms}, max_attempts: 4}
//!     permanent: {backoff: {kind: none}}
//! ```
//!
//! `backoff: {kind: custom, name: my_policy}` selects a policy registered in
//! the [`PolicyRegistry`] passed to validation.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use orchestrator_core::{FailureClass, PolicyRegistry, RetryContext, RetryDefaults, RetrySpec};
//!
//! let spec: RetrySpec = serde_json::from_str(r#"{
//!     "max_attempts": 5,
//!     "backoff": {"kind": "exponential", "initial": "1s", "factor": 2.0, "cap": "5s"},
//!     "per_class": {
//!         "timeout": {"backoff": {"kind": "linear", "initial": "1s", "increment": "2s"}}
//!     }
//! }"#)?;
//! let policy = spec.compile(&RetryDefaults::default(), &PolicyRegistry::default())?;
//!
//! // The delay after each failed attempt 1..=5 of one node (seed 7).
//! let delays = |class| -> Vec<Option<u64>> {
//!     (1..=5)
//!         .map(|attempt| {
//!             let ctx = RetryContext::new(attempt, class, 7, Duration::ZERO);
//!             policy.next_delay(&ctx).map(|d| d.as_secs())
//!         })
//!         .collect()
//! };
//! assert_eq!(delays(FailureClass::Transient), [Some(1), Some(2), Some(4), Some(5), None]);
//! assert_eq!(delays(FailureClass::Timeout), [Some(1), Some(3), Some(5), Some(7), None]);
//! assert_eq!(delays(FailureClass::Permanent), [None; 5]); // not retried by default
//! assert_eq!(policy.max_attempts(), 5);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::{HumanDuration, MAX_DURATION};
use crate::failure::FailureClass;
use crate::time::{mix64, stable_hash, JobId};
use crate::validate::{Problem, ProblemCode, ValidationErrors};

/// The classes retried when a spec does not say `retry_on`.
///
/// `permanent` is not among them, because it fails the same way every time,
/// and `cancelled` is never retried at all.
pub const DEFAULT_RETRY_ON: [FailureClass; 4] = [
    FailureClass::Transient,
    FailureClass::Timeout,
    FailureClass::Infrastructure,
    FailureClass::Unknown,
];

/// The inputs of one retry decision.
///
/// See the [module docs](self#why-next_delay-takes-a-context) for why
/// [`RetryPolicy::next_delay`] takes this struct instead of separate
/// arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryContext {
    /// The attempt that just failed, counting from 1. Built-in policies read
    /// 0 as 1.
    pub attempt: u32,
    /// Its failure class.
    pub class: FailureClass,
    /// Stable per (job, node): see [`seed_for`]. The only source of
    /// randomness a policy may use, so that decisions replay exactly.
    pub seed: u64,
    /// Time since the node's first attempt started.
    pub elapsed: Duration,
}

impl RetryContext {
    /// The context of a failed `attempt` of class `class`.
    pub const fn new(attempt: u32, class: FailureClass, seed: u64, elapsed: Duration) -> Self {
        Self {
            attempt,
            class,
            seed,
            elapsed,
        }
    }
}

/// Decides whether, and after how long, a failed attempt is retried.
///
/// Every built-in policy ([`Policy`]) implements it, and so can an
/// application's own policy. Register a custom policy in a [`PolicyRegistry`]
/// and select it with `backoff: {kind: custom, name: …}`.
///
/// # Contract
///
/// - `next_delay` must be **pure**. Its result may depend only on `ctx`
///   (randomness only on `ctx.seed` and `ctx.attempt`), because the executor
///   may compute a decision again when it replays a journal.
/// - It must not panic, on any `ctx`.
/// - When a custom policy is used through a [`RetrySpec`], the spec's class
///   rules, `max_attempts`, `max_delay` and `max_total` still apply on top
///   of it. The spec's jitter does not.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use orchestrator_core::{
///     Backoff, FailureClass, PolicyRegistry, RetryContext, RetryDefaults, RetryPolicy, RetrySpec,
/// };
///
/// /// Retries quickly at first, then every minute.
/// #[derive(Debug)]
/// struct QuickThenSlow;
///
/// impl RetryPolicy for QuickThenSlow {
///     fn next_delay(&self, ctx: &RetryContext) -> Option<Duration> {
///         Some(if ctx.attempt < 3 { Duration::from_millis(100) } else { Duration::from_secs(60) })
///     }
///     fn max_attempts(&self) -> u32 {
///         10
///     }
/// }
///
/// let mut registry = PolicyRegistry::default();
/// registry.register("quick_then_slow", Arc::new(QuickThenSlow));
/// let spec = RetrySpec::new()
///     .backoff(Backoff::custom("quick_then_slow"))
///     .max_delay(Duration::from_secs(30));
/// let policy = spec.compile(&RetryDefaults::default(), &registry)?;
///
/// let ctx = |attempt| RetryContext::new(attempt, FailureClass::Transient, 0, Duration::ZERO);
/// assert_eq!(policy.next_delay(&ctx(1)), Some(Duration::from_millis(100)));
/// assert_eq!(policy.next_delay(&ctx(5)), Some(Duration::from_secs(30))); // max_delay applies
/// assert_eq!(policy.next_delay(&ctx(10)), None); // its own max_attempts applies
/// # Ok::<(), orchestrator_core::ValidationErrors>(())
/// ```
pub trait RetryPolicy: Send + Sync + fmt::Debug {
    /// The delay before the next attempt, or `None` to stop retrying.
    fn next_delay(&self, ctx: &RetryContext) -> Option<Duration>;

    /// The most attempts this policy allows, the first included (at least 1).
    fn max_attempts(&self) -> u32;
}

/// The shape of the delays between attempts: see the table in the
/// [module docs](self#the-model).
///
/// Serialized with a `kind` tag: `{kind: exponential, initial: 1s, factor: 2}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Backoff {
    /// Never retry (`kind: none`).
    ///
    /// An empty struct variant, not a unit variant: serde ignores unknown
    /// fields of unit variants in internally tagged enums even with
    /// `deny_unknown_fields`, and `{kind: none, delay: 1s}` must fail.
    #[serde(rename = "none")]
    Never {},
    /// The same delay before every retry.
    Fixed {
        /// The delay (zero retries at once).
        delay: HumanDuration,
    },
    /// A delay that grows by the same step each time.
    Linear {
        /// The first delay.
        initial: HumanDuration,
        /// Added for each further retry (positive).
        increment: HumanDuration,
    },
    /// A delay that grows by a factor each time, up to an optional cap.
    Exponential {
        /// The first delay (positive).
        initial: HumanDuration,
        /// The growth factor, finite and at least 1 (default 2).
        #[serde(default = "default_factor")]
        factor: f64,
        /// The largest delay (at least `initial`). `max_delay` applies
        /// anyway.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cap: Option<HumanDuration>,
    },
    /// Delays of 1, 1, 2, 3, 5, 8… units: gentler than doubling.
    Fibonacci {
        /// One unit (positive).
        unit: HumanDuration,
    },
    /// A [`RetryPolicy`] registered in the [`PolicyRegistry`] under `name`.
    Custom {
        /// The registered name.
        name: String,
    },
}

fn default_factor() -> f64 {
    2.0
}

impl Backoff {
    /// Never retry.
    pub const fn never() -> Self {
        Self::Never {}
    }

    /// The same `delay` every time.
    pub fn fixed(delay: Duration) -> Self {
        Self::Fixed {
            delay: delay.into(),
        }
    }

    /// `initial`, then `initial + increment`, `initial + 2·increment`…
    pub fn linear(initial: Duration, increment: Duration) -> Self {
        Self::Linear {
            initial: initial.into(),
            increment: increment.into(),
        }
    }

    /// `initial`, then `initial·factor`, `initial·factor²`…, at most `cap`.
    pub fn exponential(initial: Duration, factor: f64, cap: Option<Duration>) -> Self {
        Self::Exponential {
            initial: initial.into(),
            factor,
            cap: cap.map(Into::into),
        }
    }

    /// `unit`, `unit`, `2·unit`, `3·unit`, `5·unit`…
    pub fn fibonacci(unit: Duration) -> Self {
        Self::Fibonacci { unit: unit.into() }
    }

    /// The custom policy registered as `name`.
    pub fn custom(name: impl Into<String>) -> Self {
        Self::Custom { name: name.into() }
    }

    /// Appends the problems of this backoff, which sits at `path`.
    fn check(&self, path: &str, policies: &PolicyRegistry, out: &mut Vec<Problem>) {
        let mut invalid = |field: &str, message: String| {
            out.push(Problem::new(
                format!("{path}/{field}"),
                ProblemCode::InvalidPolicy,
                message,
            ));
        };
        match self {
            Self::Never {} | Self::Fixed { .. } => {}
            Self::Linear { increment, .. } => {
                if increment.get().is_zero() {
                    invalid(
                        "increment",
                        "a linear backoff needs a positive increment \
                         (use kind: fixed for a constant delay)"
                            .to_owned(),
                    );
                }
            }
            Self::Exponential {
                initial,
                factor,
                cap,
            } => {
                if initial.get().is_zero() {
                    invalid(
                        "initial",
                        "an exponential backoff needs a positive initial delay \
                         (zero stays zero whatever the factor)"
                            .to_owned(),
                    );
                }
                if !factor.is_finite() || *factor < 1.0 {
                    invalid(
                        "factor",
                        format!("the factor must be a finite number of at least 1, not {factor}"),
                    );
                }
                if let Some(cap) = cap {
                    if cap < initial {
                        invalid(
                            "cap",
                            format!(
                                "the cap ({cap}) must not be below the initial delay ({initial})"
                            ),
                        );
                    }
                }
            }
            Self::Fibonacci { unit } => {
                if unit.get().is_zero() {
                    invalid(
                        "unit",
                        "a fibonacci backoff needs a positive unit".to_owned(),
                    );
                }
            }
            Self::Custom { name } => {
                if policies.get(name).is_none() {
                    out.push(Problem::new(
                        format!("{path}/name"),
                        ProblemCode::UnknownPolicy,
                        format!(
                            "no custom retry policy named {:?} is registered",
                            truncated(name)
                        ),
                    ));
                }
            }
        }
        for (field, value) in self.durations() {
            check_duration(&format!("{path}/{field}"), field, value, out);
        }
    }

    /// The durations this backoff carries, with their field names.
    fn durations(&self) -> Vec<(&'static str, HumanDuration)> {
        match self {
            Self::Never {} | Self::Custom { .. } => Vec::new(),
            Self::Fixed { delay } => vec![("delay", *delay)],
            Self::Linear { initial, increment } => {
                vec![("initial", *initial), ("increment", *increment)]
            }
            Self::Exponential { initial, cap, .. } => {
                let mut all = vec![("initial", *initial)];
                all.extend(cap.map(|cap| ("cap", cap)));
                all
            }
            Self::Fibonacci { unit } => vec![("unit", *unit)],
        }
    }
}

/// How a base delay is randomized: see the [module docs](self#the-model).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// The base delay as it is.
    #[default]
    None,
    /// Uniform in `[0, d]`: spreads retries the most.
    Full,
    /// Uniform in `[d/2, d]`: spreads retries and keeps at least half the wait.
    Equal,
    /// AWS's decorrelated jitter, `min(cap, uniform(base, 3·previous))`. It is
    /// computed by iterating from attempt 1, so it stays a pure function of
    /// `(seed, attempt)`.
    Decorrelated,
}

/// A `per_class` entry of a [`RetrySpec`]: overrides for one failure class.
/// Omitted fields come from the top level of the spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassRetrySpec {
    /// Most attempts when the failure is of this class, the first included.
    /// The attempt count is shared by all classes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Backoff for this class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Jitter for this class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Jitter>,
}

impl ClassRetrySpec {
    /// An entry that overrides nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the attempt limit for this class.
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Sets the backoff for this class.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Sets the jitter for this class.
    #[must_use]
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = Some(jitter);
        self
    }
}

/// The serde (and builder) form of a retry policy: see the
/// [module docs](self) for the model and the shape. Every field is optional.
/// [`RetrySpec::compile`] fills the gaps from [`RetryDefaults`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Most attempts, the first included (default
    /// [`RetryDefaults::max_attempts`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// The backoff (default [`RetryDefaults::backoff`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// The jitter (default [`RetryDefaults::jitter`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Jitter>,
    /// Cap on any single delay, after jitter too (default
    /// [`RetryDefaults::max_delay`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<HumanDuration>,
    /// Budget for the whole node, counted from the start of its first
    /// attempt. No retry is scheduled past it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_total: Option<HumanDuration>,
    /// Classes to retry (default [`DEFAULT_RETRY_ON`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<FailureClass>>,
    /// Classes never to retry. Wins over `retry_on`. `cancelled` is never
    /// retried even if it is not listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub never_retry_on: Vec<FailureClass>,
    /// Per-class overrides of backoff, jitter and attempts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_class: BTreeMap<FailureClass, ClassRetrySpec>,
}

impl RetrySpec {
    /// A spec that takes everything from [`RetryDefaults`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the most attempts, the first included.
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Sets the backoff.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Sets the jitter.
    #[must_use]
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = Some(jitter);
        self
    }

    /// Caps every single delay.
    #[must_use]
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.max_delay = Some(max.into());
        self
    }

    /// Caps the node's total time, counted from its first attempt.
    #[must_use]
    pub fn max_total(mut self, max: Duration) -> Self {
        self.max_total = Some(max.into());
        self
    }

    /// Sets the classes to retry.
    #[must_use]
    pub fn retry_on(mut self, classes: impl IntoIterator<Item = FailureClass>) -> Self {
        self.retry_on = Some(classes.into_iter().collect());
        self
    }

    /// Adds classes never to retry.
    #[must_use]
    pub fn never_retry_on(mut self, classes: impl IntoIterator<Item = FailureClass>) -> Self {
        self.never_retry_on.extend(classes);
        self
    }

    /// Sets the overrides for failures of `class`.
    #[must_use]
    pub fn per_class(mut self, class: FailureClass, entry: ClassRetrySpec) -> Self {
        self.per_class.insert(class, entry);
        self
    }

    /// The classes this spec retries: `retry_on` (or its default), minus
    /// `never_retry_on`, minus `cancelled`.
    fn retried(&self) -> ClassSet {
        let mut set = match &self.retry_on {
            Some(classes) => ClassSet::of(classes),
            None => ClassSet::of(&DEFAULT_RETRY_ON),
        };
        for &class in &self.never_retry_on {
            set.remove(class);
        }
        set.remove(FailureClass::Cancelled);
        set
    }

    /// Appends every problem of this spec to `out`. `path` is the JSON
    /// pointer of the spec (e.g. `/dag_definition/nodes/3/retry`), and each
    /// problem's path extends it. Never panics, and never stops at the first
    /// problem.
    ///
    /// ```
    /// use orchestrator_core::{Backoff, PolicyRegistry, ProblemCode, RetrySpec};
    /// use std::time::Duration;
    ///
    /// let spec = RetrySpec::new()
    ///     .max_attempts(0)
    ///     .backoff(Backoff::exponential(Duration::from_secs(1), 0.5, None));
    /// let mut problems = Vec::new();
    /// spec.check("/retry", &PolicyRegistry::default(), &mut problems);
    /// let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
    /// assert_eq!(paths, ["/retry/max_attempts", "/retry/backoff/factor"]);
    /// assert!(problems.iter().all(|p| p.code == ProblemCode::InvalidPolicy));
    /// ```
    pub fn check(&self, path: &str, policies: &PolicyRegistry, out: &mut Vec<Problem>) {
        check_attempts(self.max_attempts, &format!("{path}/max_attempts"), out);
        if let Some(backoff) = &self.backoff {
            backoff.check(&format!("{path}/backoff"), policies, out);
        }
        if self.jitter.is_some() && self.top_jitter_is_unused() {
            out.push(Problem::new(
                format!("{path}/jitter"),
                ProblemCode::InvalidPolicy,
                "jitter does not apply to a custom policy, which owns its delays",
            ));
        }
        for (field, value) in [("max_delay", self.max_delay), ("max_total", self.max_total)] {
            let Some(value) = value else { continue };
            let at = format!("{path}/{field}");
            if value.get().is_zero() {
                out.push(Problem::new(
                    at,
                    ProblemCode::InvalidDuration,
                    format!("{field} must be positive"),
                ));
            } else {
                check_duration(&at, field, value, out);
            }
        }

        // Report each bad class once, however often it is listed, so a huge
        // list cannot produce a huge report.
        let never = ClassSet::of(&self.never_retry_on);
        let mut reported = ClassSet::default();
        for (i, &class) in self.retry_on.iter().flatten().enumerate() {
            if reported.contains(class) {
                continue;
            }
            let message = if class == FailureClass::Cancelled {
                "cancelled failures are never retried: a cancelled job must stop".to_owned()
            } else if never.contains(class) {
                format!("{class} is in both retry_on and never_retry_on")
            } else {
                continue;
            };
            reported.insert(class);
            out.push(Problem::new(
                format!("{path}/retry_on/{i}"),
                ProblemCode::InvalidPolicy,
                message,
            ));
        }

        let retried = self.retried();
        for (&class, entry) in &self.per_class {
            let at = format!("{path}/per_class/{class}");
            check_attempts(entry.max_attempts, &format!("{at}/max_attempts"), out);
            if let Some(backoff) = &entry.backoff {
                backoff.check(&format!("{at}/backoff"), policies, out);
            }
            let says_never = matches!(entry.backoff, Some(Backoff::Never {}));
            let backoff = entry.backoff.as_ref().or(self.backoff.as_ref());
            if entry.jitter.is_some() && matches!(backoff, Some(Backoff::Custom { .. })) {
                out.push(Problem::new(
                    format!("{at}/jitter"),
                    ProblemCode::InvalidPolicy,
                    "jitter does not apply to a custom policy, which owns its delays",
                ));
            }
            if says_never && entry.max_attempts.is_some() {
                out.push(Problem::new(
                    format!("{at}/max_attempts"),
                    ProblemCode::InvalidPolicy,
                    "max_attempts has no effect with backoff kind none",
                ));
            }
            // An entry that only restates "do not retry" is fine. Any other
            // entry for a class that is never retried is dead configuration,
            // most likely a mistake (the class is missing from retry_on).
            if !retried.contains(class) && !says_never {
                let message = if class == FailureClass::Cancelled {
                    "cancelled failures are never retried: a cancelled job must stop".to_owned()
                } else {
                    format!(
                        "{class} failures are not retried by this policy (see retry_on and \
                         never_retry_on), so this entry has no effect"
                    )
                };
                out.push(Problem::new(at, ProblemCode::InvalidPolicy, message));
            }
        }
    }

    /// Whether a top-level jitter would be ignored: the top-level backoff is
    /// custom, and no retried class overrides it with a built-in backoff that
    /// would inherit the jitter.
    fn top_jitter_is_unused(&self) -> bool {
        if !matches!(self.backoff, Some(Backoff::Custom { .. })) {
            return false;
        }
        let retried = self.retried();
        !self.per_class.iter().any(|(&class, entry)| {
            retried.contains(class)
                && entry.jitter.is_none()
                && matches!(&entry.backoff, Some(b) if !matches!(b, Backoff::Custom { .. }))
        })
    }

    /// Validates this spec and compiles it into a policy. Gaps are filled
    /// from `defaults`. Custom names are resolved in `policies`.
    ///
    /// The errors are the problems [`check`](Self::check) reports, with paths
    /// relative to the spec (`/backoff/factor`). A problem in the engine's
    /// default backoff is also reported, at `/backoff`, when the spec relies
    /// on it.
    pub fn compile(
        &self,
        defaults: &RetryDefaults,
        policies: &PolicyRegistry,
    ) -> Result<Arc<dyn RetryPolicy>, ValidationErrors> {
        let policy = Policy::new(self, defaults, policies)?;
        Ok(Arc::new(policy))
    }
}

/// The engine's defaults for whatever a [`RetrySpec`] leaves out.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryDefaults {
    /// Most attempts, the first included (default 3; 0 is read as 1).
    pub max_attempts: u32,
    /// Cap on one delay (default 300 s).
    pub max_delay: Duration,
    /// Backoff (default exponential: 1 s, factor 2, capped by `max_delay`).
    pub backoff: Backoff,
    /// Jitter (default none, so a spec's delays are the ones it states).
    pub jitter: Jitter,
}

impl Default for RetryDefaults {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            max_delay: Duration::from_secs(300),
            backoff: Backoff::exponential(Duration::from_secs(1), 2.0, None),
            jitter: Jitter::None,
        }
    }
}

/// Custom retry policies by name, for `backoff: {kind: custom, name: …}`,
/// and the stored policies (`policy: name@version`) a spec may refer to.
///
/// Validation stays pure: the executor fetches the stored policies a spec
/// names from its store and adds them here before validating
/// ([`PolicyRegistry::add_stored`]).
#[derive(Clone, Debug, Default)]
pub struct PolicyRegistry {
    custom: HashMap<String, Arc<dyn RetryPolicy>>,
    stored: BTreeMap<(String, u32), Arc<crate::policy::StoredPolicy>>,
}

impl PolicyRegistry {
    /// Makes a stored policy available to specs (`policy: name@version`,
    /// or `policy: name` for the highest version added).
    pub fn add_stored(&mut self, policy: crate::policy::StoredPolicy) {
        self.stored
            .insert((policy.name.clone(), policy.version), Arc::new(policy));
    }

    /// The stored policy a reference names (the highest version for a
    /// reference without one).
    pub fn stored(
        &self,
        r: &crate::policy::PolicyRef,
    ) -> Option<&Arc<crate::policy::StoredPolicy>> {
        match r.version {
            Some(v) => self.stored.get(&(r.name.clone(), v)),
            None => self
                .stored
                .range((r.name.clone(), 0)..=(r.name.clone(), u32::MAX))
                .next_back()
                .map(|(_, p)| p),
        }
    }

    /// The stored policy a spec's `policy` string names, if it parses and
    /// is known.
    pub fn stored_str(&self, r: &str) -> Option<&Arc<crate::policy::StoredPolicy>> {
        self.stored(&r.parse().ok()?)
    }

    /// Registers `policy` as `name`, replacing any policy of that name.
    pub fn register(&mut self, name: impl Into<String>, policy: Arc<dyn RetryPolicy>) {
        self.custom.insert(name.into(), policy);
    }

    /// The policy registered as `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn RetryPolicy>> {
        self.custom.get(name)
    }
}

/// A compiled, validated retry policy: the [`RetryPolicy`] built from a
/// [`RetrySpec`] by [`RetrySpec::compile`] (or [`Policy::new`]).
///
/// Every decision is O(1), except decorrelated jitter: that one iterates over
/// at most [`DECORRELATED_WINDOW`] attempts.
#[derive(Debug)]
pub struct Policy {
    /// One rule per class, indexed by [`slot`].
    rules: [Rule; 6],
    max_delay_ms: u64,
    max_total: Option<Duration>,
    max_attempts: u32,
}

/// How failures of one class are handled.
#[derive(Debug)]
struct Rule {
    retry: bool,
    max_attempts: u32,
    shape: Shape,
    jitter: Jitter,
}

/// A backoff with durations in milliseconds and the custom policy resolved.
#[derive(Debug)]
enum Shape {
    Never,
    Fixed { delay: u64 },
    Linear { initial: u64, increment: u64 },
    Exponential { initial: u64, factor: f64, cap: u64 },
    Fibonacci { unit: u64 },
    Custom { policy: Arc<dyn RetryPolicy> },
}

/// Decorrelated jitter's chain starts at most this many attempts back.
///
/// Iterating from attempt 1 keeps the chain pure. But a policy allowing
/// billions of attempts must not make one decision cost billions of steps.
/// After a few steps the chain has forgotten its start (each step draws anew
/// from `[base, 3·previous]`, capped). So for attempts beyond the window,
/// restarting it this far back gives the same distribution, and up to the
/// window it is exactly the iteration from attempt 1.
pub const DECORRELATED_WINDOW: u32 = 64;

impl Policy {
    /// Validates `spec` and compiles it (what [`RetrySpec::compile`] does,
    /// without the `Arc`).
    pub fn new(
        spec: &RetrySpec,
        defaults: &RetryDefaults,
        policies: &PolicyRegistry,
    ) -> Result<Self, ValidationErrors> {
        let mut problems = Vec::new();
        spec.check("", policies, &mut problems);
        if spec.backoff.is_none() {
            let start = problems.len();
            defaults.backoff.check("/backoff", policies, &mut problems);
            for problem in &mut problems[start..] {
                problem.message = format!("the engine's default backoff: {}", problem.message);
            }
        }
        if !problems.is_empty() {
            return Err(ValidationErrors(problems));
        }

        let max_delay_ms = millis(
            spec.max_delay
                .map_or(defaults.max_delay, HumanDuration::get),
        );
        let retried = spec.retried();
        let rules = FailureClass::ALL.map(|class| {
            let entry = spec.per_class.get(&class);
            let backoff = entry
                .and_then(|e| e.backoff.as_ref())
                .or(spec.backoff.as_ref())
                .unwrap_or(&defaults.backoff);
            let shape = Shape::new(backoff, policies, max_delay_ms);
            let explicit = entry.and_then(|e| e.max_attempts).or(spec.max_attempts);
            let max_attempts = match &shape {
                Shape::Never => 1,
                // Both the custom policy's own limit and an explicit one in
                // the spec bind; the engine default does not override the
                // custom policy's choice.
                Shape::Custom { policy } => {
                    let own = policy.max_attempts().max(1);
                    explicit.map_or(own, |n| n.min(own))
                }
                _ => explicit.unwrap_or(defaults.max_attempts),
            }
            .max(1);
            Rule {
                retry: retried.contains(class) && !matches!(shape, Shape::Never),
                max_attempts,
                jitter: entry
                    .and_then(|e| e.jitter)
                    .or(spec.jitter)
                    .unwrap_or(defaults.jitter),
                shape,
            }
        });
        let max_attempts = rules
            .iter()
            .filter(|rule| rule.retry)
            .map(|rule| rule.max_attempts)
            .max()
            .unwrap_or(1);
        Ok(Self {
            rules,
            max_delay_ms,
            max_total: spec.max_total.map(HumanDuration::get),
            max_attempts,
        })
    }

    /// Whether failures of `class` are retried at all (given attempts and
    /// budget left).
    pub fn retries(&self, class: FailureClass) -> bool {
        self.rules[slot(class)].retry
    }

    /// The most attempts when the latest failure is of `class`, the first
    /// included (1 if the class is not retried).
    pub fn max_attempts_for(&self, class: FailureClass) -> u32 {
        let rule = &self.rules[slot(class)];
        if rule.retry {
            rule.max_attempts
        } else {
            1
        }
    }

    /// The cap on a single delay.
    pub fn max_delay(&self) -> Duration {
        Duration::from_millis(self.max_delay_ms)
    }

    /// The node's total time budget, if any.
    pub fn max_total(&self) -> Option<Duration> {
        self.max_total
    }
}

impl RetryPolicy for Policy {
    fn next_delay(&self, ctx: &RetryContext) -> Option<Duration> {
        let rule = &self.rules[slot(ctx.class)];
        if !rule.retry || ctx.attempt >= rule.max_attempts {
            return None;
        }
        let attempt = ctx.attempt.max(1);
        let ms = match &rule.shape {
            Shape::Never => return None,
            Shape::Custom { policy } => millis(policy.next_delay(ctx)?),
            shape => jittered(shape, rule.jitter, attempt, ctx.seed, self.max_delay_ms),
        }
        .min(self.max_delay_ms);
        let delay = Duration::from_millis(ms);
        match self.max_total {
            Some(total) if ctx.elapsed.saturating_add(delay) > total => None,
            _ => Some(delay),
        }
    }

    fn max_attempts(&self) -> u32 {
        self.max_attempts
    }
}

impl Shape {
    fn new(backoff: &Backoff, policies: &PolicyRegistry, max_delay_ms: u64) -> Self {
        let ms = |d: &HumanDuration| millis(d.get());
        match backoff {
            Backoff::Never {} => Self::Never,
            Backoff::Fixed { delay } => Self::Fixed { delay: ms(delay) },
            Backoff::Linear { initial, increment } => Self::Linear {
                initial: ms(initial),
                increment: ms(increment),
            },
            Backoff::Exponential {
                initial,
                factor,
                cap,
            } => Self::Exponential {
                initial: ms(initial),
                factor: *factor,
                cap: cap.as_ref().map_or(max_delay_ms, ms).min(max_delay_ms),
            },
            Backoff::Fibonacci { unit } => Self::Fibonacci { unit: ms(unit) },
            // `check` rejected unknown names before compiling, so the lookup
            // cannot fail; if it ever did, never retrying is the safe reading.
            Backoff::Custom { name } => {
                policies
                    .get(name)
                    .map_or(Self::Never, |policy| Self::Custom {
                        policy: Arc::clone(policy),
                    })
            }
        }
    }

    /// The un-jittered delay after attempt `n` (≥ 1), at most `ceiling`.
    fn base(&self, n: u32, ceiling: u64) -> u64 {
        let steps = u64::from(n.saturating_sub(1));
        let ms = match *self {
            Self::Never | Self::Custom { .. } => 0,
            Self::Fixed { delay } => delay,
            Self::Linear { initial, increment } => {
                initial.saturating_add(increment.saturating_mul(steps))
            }
            Self::Exponential {
                initial,
                factor,
                cap,
            } => {
                let cap = cap.min(ceiling);
                // f64 saturates to infinity instead of overflowing, and a
                // NaN compares false: both land on the cap.
                let value = initial as f64 * pow(factor, steps);
                if value < cap as f64 {
                    value as u64
                } else {
                    cap
                }
            }
            Self::Fibonacci { unit } => {
                // F(1) = F(2) = 1. The loop ends once the delay reaches the
                // ceiling or F saturates (F(93) is the last that fits in a
                // u64), so huge attempt numbers cost at most ~93 steps.
                let (mut f, mut next) = (1u64, 1u64);
                for _ in 1..n {
                    if f == u64::MAX || f.saturating_mul(unit) >= ceiling {
                        break;
                    }
                    (f, next) = (next, f.saturating_add(next));
                }
                f.saturating_mul(unit)
            }
        };
        ms.min(ceiling)
    }

    /// The largest delay this shape produces: its own cap if it has one.
    fn ceiling(&self, max_delay_ms: u64) -> u64 {
        match *self {
            Self::Exponential { cap, .. } => cap.min(max_delay_ms),
            _ => max_delay_ms,
        }
    }
}

/// `base^exp` by squaring, at most 64 steps.
///
/// Only IEEE multiplications are used, and each of them is correctly rounded,
/// so every platform computes the same bits. `powf` (and `powi`) call the
/// platform's libm or an LLVM intrinsic whose last bit may differ, and a
/// floored delay can then be off by 1 ms between the process that journaled
/// a decision and the one that replays it.
fn pow(base: f64, mut exp: u64) -> f64 {
    let (mut result, mut square) = (1.0, base);
    while exp > 0 {
        if exp & 1 == 1 {
            result *= square;
        }
        exp >>= 1;
        if exp > 0 {
            square *= square;
        }
    }
    result
}

/// The delay after attempt `n` of a built-in shape, jitter applied.
fn jittered(shape: &Shape, jitter: Jitter, n: u32, seed: u64, max_delay_ms: u64) -> u64 {
    match jitter {
        Jitter::None => shape.base(n, max_delay_ms),
        Jitter::Full => uniform(0, shape.base(n, max_delay_ms), draw(seed, n)),
        Jitter::Equal => {
            let d = shape.base(n, max_delay_ms);
            uniform(d / 2, d, draw(seed, n))
        }
        Jitter::Decorrelated => {
            let base = shape.base(1, max_delay_ms);
            let cap = shape.ceiling(max_delay_ms).max(base);
            let first = n.saturating_sub(DECORRELATED_WINDOW - 1).max(1);
            let mut sleep = base;
            for i in first..=n {
                sleep = uniform(base, sleep.saturating_mul(3), draw(seed, i)).min(cap);
            }
            sleep
        }
    }
}

/// Keeps jitter draws apart from any other use of the same node seed.
const JITTER_DOMAIN: u64 = 0x6A69_7474_6572_0001; // "jitter" + version 1

/// The random word of (`seed`, `attempt`). Never change it: journals replay
/// through it (`tests::jitter_is_pinned` holds it fixed).
fn draw(seed: u64, attempt: u32) -> u64 {
    mix64(seed ^ mix64(JITTER_DOMAIN ^ u64::from(attempt)))
}

/// Uniform in `[lo, hi]` from a random word, by multiply-shift (no modulo
/// bias worth the name, no loop). Returns `lo` if `hi <= lo`.
fn uniform(lo: u64, hi: u64, random: u64) -> u64 {
    if hi <= lo {
        return lo;
    }
    let span = u128::from(hi - lo) + 1;
    // `(random · span) >> 64` is below `span`, so the sum is at most `hi`.
    lo + ((u128::from(random) * span) >> 64) as u64
}

/// Whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The index of `class` in [`Policy::rules`] and [`ClassSet`].
const fn slot(class: FailureClass) -> usize {
    match class {
        FailureClass::Transient => 0,
        FailureClass::Permanent => 1,
        FailureClass::Timeout => 2,
        FailureClass::Infrastructure => 3,
        FailureClass::Cancelled => 4,
        FailureClass::Unknown => 5,
    }
}

/// A set of failure classes, as bits: O(1) membership, however long a spec's
/// lists are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ClassSet(u8);

impl ClassSet {
    fn of(classes: &[FailureClass]) -> Self {
        let mut set = Self::default();
        for &class in classes {
            set.insert(class);
        }
        set
    }

    fn insert(&mut self, class: FailureClass) {
        self.0 |= 1 << slot(class);
    }

    fn remove(&mut self, class: FailureClass) {
        self.0 &= !(1 << slot(class));
    }

    fn contains(self, class: FailureClass) -> bool {
        self.0 & (1 << slot(class)) != 0
    }
}

fn check_attempts(value: Option<u32>, path: &str, out: &mut Vec<Problem>) {
    if value == Some(0) {
        out.push(Problem::new(
            path,
            ProblemCode::InvalidPolicy,
            "max_attempts counts the first attempt, so it must be at least 1",
        ));
    }
}

/// Specs parsed from text cannot exceed [`MAX_DURATION`], but ones built in
/// Rust can.
fn check_duration(path: &str, field: &str, value: HumanDuration, out: &mut Vec<Problem>) {
    if value.get() > MAX_DURATION {
        out.push(Problem::new(
            path,
            ProblemCode::InvalidDuration,
            format!("{field} must be at most 100 years"),
        ));
    }
}

/// At most 80 characters of `s`, for messages that quote user input.
fn truncated(s: &str) -> String {
    s.chars().take(80).collect()
}

/// The jitter seed of node `node` of job `job`.
///
/// It is stable across processes, platforms and versions, so a journal
/// replayed elsewhere computes the same delays. Two nodes of one job, or the
/// same node in two jobs, get different seeds, so their retries spread
/// apart.
pub fn seed_for(job: &JobId, node: u32) -> u64 {
    mix64(stable_hash(job.as_str().as_bytes()) ^ u64::from(node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureClass::{Cancelled, Infrastructure, Permanent, Timeout, Transient, Unknown};

    const MS: fn(u64) -> Duration = Duration::from_millis;
    const SECS: fn(u64) -> Duration = Duration::from_secs;

    fn compile(spec: &RetrySpec) -> Arc<dyn RetryPolicy> {
        spec.compile(&RetryDefaults::default(), &PolicyRegistry::default())
            .unwrap()
    }

    fn ctx(attempt: u32, class: FailureClass) -> RetryContext {
        RetryContext::new(attempt, class, 42, Duration::ZERO)
    }

    /// The delays after attempts 1..=n for `class`, stopping at the first
    /// `None` (which is included).
    fn delays(policy: &dyn RetryPolicy, class: FailureClass, seed: u64) -> Vec<Option<Duration>> {
        let mut out = Vec::new();
        for attempt in 1..=64 {
            let d = policy.next_delay(&RetryContext::new(attempt, class, seed, Duration::ZERO));
            out.push(d);
            if d.is_none() {
                break;
            }
        }
        out
    }

    fn ms_list(values: &[u64]) -> Vec<Option<Duration>> {
        values.iter().map(|&v| Some(MS(v))).chain([None]).collect()
    }

    fn problems(spec: &RetrySpec, policies: &PolicyRegistry) -> Vec<(String, ProblemCode)> {
        let mut out = Vec::new();
        spec.check("/retry", policies, &mut out);
        out.into_iter().map(|p| (p.path, p.code)).collect()
    }

    #[derive(Debug)]
    struct Doubling;

    impl RetryPolicy for Doubling {
        fn next_delay(&self, ctx: &RetryContext) -> Option<Duration> {
            Some(MS(100u64.saturating_mul(1 << ctx.attempt.min(40))))
        }
        fn max_attempts(&self) -> u32 {
            4
        }
    }

    #[derive(Debug)]
    struct Enormous;

    impl RetryPolicy for Enormous {
        fn next_delay(&self, _: &RetryContext) -> Option<Duration> {
            Some(Duration::MAX)
        }
        fn max_attempts(&self) -> u32 {
            u32::MAX
        }
    }

    fn registry() -> PolicyRegistry {
        let mut r = PolicyRegistry::default();
        r.register("doubling", Arc::new(Doubling));
        r.register("enormous", Arc::new(Enormous));
        r
    }

    // ---- backoff kinds, exact delays ----

    #[test]
    fn fixed_backoff() {
        let p = compile(
            &RetrySpec::new()
                .max_attempts(4)
                .backoff(Backoff::fixed(SECS(5))),
        );
        assert_eq!(delays(&*p, Transient, 1), ms_list(&[5000, 5000, 5000]));
        assert_eq!(p.max_attempts(), 4);
    }

    #[test]
    fn fixed_zero_retries_at_once() {
        let p = compile(&RetrySpec::new().backoff(Backoff::fixed(Duration::ZERO)));
        assert_eq!(delays(&*p, Transient, 1), ms_list(&[0, 0]));
    }

    #[test]
    fn linear_backoff() {
        let p = compile(
            &RetrySpec::new()
                .max_attempts(5)
                .backoff(Backoff::linear(SECS(1), SECS(2))),
        );
        assert_eq!(delays(&*p, Timeout, 1), ms_list(&[1000, 3000, 5000, 7000]));
    }

    #[test]
    fn exponential_backoff_with_cap() {
        let p = compile(
            &RetrySpec::new()
                .max_attempts(7)
                .backoff(Backoff::exponential(SECS(1), 2.0, Some(SECS(10)))),
        );
        assert_eq!(
            delays(&*p, Transient, 1),
            ms_list(&[1000, 2000, 4000, 8000, 10_000, 10_000])
        );
    }

    #[test]
    fn exponential_backoff_with_fractional_factor() {
        let p = compile(
            &RetrySpec::new()
                .max_attempts(5)
                .backoff(Backoff::exponential(SECS(1), 1.5, None)),
        );
        assert_eq!(
            delays(&*p, Transient, 1),
            ms_list(&[1000, 1500, 2250, 3375])
        );
    }

    #[test]
    fn fibonacci_backoff() {
        let p = compile(
            &RetrySpec::new()
                .max_attempts(8)
                .backoff(Backoff::fibonacci(MS(100))),
        );
        assert_eq!(
            delays(&*p, Transient, 1),
            ms_list(&[100, 100, 200, 300, 500, 800, 1300])
        );
    }

    #[test]
    fn none_backoff_never_retries() {
        let p = compile(&RetrySpec::new().max_attempts(5).backoff(Backoff::never()));
        for class in FailureClass::ALL {
            assert_eq!(delays(&*p, class, 1), [None], "{class}");
        }
        assert_eq!(p.max_attempts(), 1);
    }

    #[test]
    fn default_backoff_is_exponential_from_one_second() {
        let p = compile(&RetrySpec::new());
        assert_eq!(delays(&*p, Transient, 1), ms_list(&[1000, 2000]));
        assert_eq!(p.max_attempts(), 3);
    }

    #[test]
    fn custom_policy_is_used_and_capped() {
        let spec = RetrySpec::new()
            .backoff(Backoff::custom("doubling"))
            .max_delay(MS(700));
        let p = spec
            .compile(&RetryDefaults::default(), &registry())
            .unwrap();
        // Its own max_attempts (4), not the default (3), limits it; its
        // delays 200, 400, 800 are capped by max_delay.
        assert_eq!(delays(&*p, Transient, 1), ms_list(&[200, 400, 700]));
        assert_eq!(p.max_attempts(), 4);
        // An explicit max_attempts in the spec binds too.
        let p = spec
            .max_attempts(2)
            .compile(&RetryDefaults::default(), &registry())
            .unwrap();
        assert_eq!(delays(&*p, Transient, 1), ms_list(&[200]));
        // The class rules still apply to it.
        assert_eq!(delays(&*p, Permanent, 1), [None]);
        assert_eq!(delays(&*p, Cancelled, 1), [None]);
    }

    #[test]
    fn custom_policy_delays_cannot_escape_the_caps() {
        let spec = RetrySpec::new().backoff(Backoff::custom("enormous"));
        let p = spec
            .compile(&RetryDefaults::default(), &registry())
            .unwrap();
        let d = p.next_delay(&ctx(1, Transient)).unwrap();
        assert_eq!(d, SECS(300)); // the default max_delay
        assert_eq!(p.max_attempts(), u32::MAX);
        // 300 s would blow the 60 s budget: no retry.
        let p = RetrySpec::new()
            .backoff(Backoff::custom("enormous"))
            .max_delay(SECS(30))
            .max_total(SECS(60))
            .compile(&RetryDefaults::default(), &registry())
            .unwrap();
        let at = |elapsed| RetryContext::new(1, Transient, 0, SECS(elapsed));
        assert_eq!(p.next_delay(&at(30)), Some(SECS(30)));
        assert_eq!(p.next_delay(&at(31)), None);
    }

    // ---- jitter ----

    fn jitter_samples(jitter: Jitter, attempt: u32) -> Vec<u64> {
        let p = compile(
            &RetrySpec::new()
                .max_attempts(100)
                .backoff(Backoff::fixed(SECS(10)))
                .jitter(jitter),
        );
        (0..2000u64)
            .map(|seed| {
                let ctx = RetryContext::new(attempt, Transient, mix64(seed), Duration::ZERO);
                millis(p.next_delay(&ctx).unwrap())
            })
            .collect()
    }

    fn spread(samples: &[u64]) -> (u64, u64, u64) {
        let min = samples.iter().copied().min().unwrap();
        let max = samples.iter().copied().max().unwrap();
        let mean = samples.iter().sum::<u64>() / samples.len() as u64;
        (min, max, mean)
    }

    #[test]
    fn full_jitter_is_uniform_in_zero_to_d() {
        let (min, max, mean) = spread(&jitter_samples(Jitter::Full, 3));
        assert!(max <= 10_000);
        assert!(min < 500 && max > 9_500, "{min}..{max}");
        assert!((4_500..5_500).contains(&mean), "mean {mean}");
    }

    #[test]
    fn equal_jitter_keeps_at_least_half() {
        let (min, max, mean) = spread(&jitter_samples(Jitter::Equal, 3));
        assert!(min >= 5_000 && max <= 10_000, "{min}..{max}");
        assert!(min < 5_250 && max > 9_750, "{min}..{max}");
        assert!((7_250..7_750).contains(&mean), "mean {mean}");
    }

    #[test]
    fn no_jitter_is_exact() {
        assert!(jitter_samples(Jitter::None, 3).iter().all(|&d| d == 10_000));
    }

    #[test]
    fn decorrelated_jitter_follows_the_aws_recurrence() {
        // base = first delay (1 s), cap = the exponential cap (20 s).
        let p = compile(
            &RetrySpec::new()
                .max_attempts(u32::MAX)
                .backoff(Backoff::exponential(SECS(1), 2.0, Some(SECS(20))))
                .jitter(Jitter::Decorrelated),
        );
        let mut hit_cap = false;
        for seed in 0..200u64 {
            let d = |attempt| {
                millis(
                    p.next_delay(&RetryContext::new(attempt, Transient, seed, Duration::ZERO))
                        .unwrap(),
                )
            };
            let first = d(1);
            assert!((1_000..=3_000).contains(&first), "{first}");
            let mut prev = first;
            for attempt in 2..=DECORRELATED_WINDOW {
                let next = d(attempt);
                assert!((1_000..=20_000).contains(&next), "{next}");
                // Each step draws from [base, 3·previous], then caps.
                assert!(next <= prev * 3, "{prev} -> {next}");
                hit_cap |= next == 20_000;
                prev = next;
            }
            // Beyond the window: still bounded, cheap, and deterministic.
            for attempt in [DECORRELATED_WINDOW + 1, 1_000_000, u32::MAX - 1] {
                let v = d(attempt);
                assert!((1_000..=20_000).contains(&v));
                assert_eq!(v, d(attempt));
            }
        }
        assert!(hit_cap);
    }

    #[test]
    fn same_seed_same_delays_other_seed_other_delays() {
        let spec = RetrySpec::new()
            .max_attempts(10)
            .backoff(Backoff::exponential(MS(500), 2.0, None))
            .jitter(Jitter::Full);
        let (a, b) = (compile(&spec), compile(&spec));
        assert_eq!(delays(&*a, Transient, 7), delays(&*b, Transient, 7));
        assert_ne!(delays(&*a, Transient, 7), delays(&*a, Transient, 8));
    }

    #[test]
    fn jitter_is_pinned() {
        // These exact values are replayed from journals: if this test fails,
        // the jitter stream changed, and it must not.
        let seed = seed_for(&"job-1".parse().unwrap(), 3);
        assert_eq!(seed, PINNED_SEED);
        let run = |jitter| {
            let p = compile(
                &RetrySpec::new()
                    .max_attempts(5)
                    .backoff(Backoff::exponential(SECS(1), 2.0, None))
                    .jitter(jitter),
            );
            delays(&*p, Transient, seed)
                .into_iter()
                .flatten()
                .map(millis)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(Jitter::Full), PINNED_FULL);
        assert_eq!(run(Jitter::Equal), PINNED_EQUAL);
        assert_eq!(run(Jitter::Decorrelated), PINNED_DECORRELATED);
    }

    // Exponential from 1 s, factor 2: bases 1000, 2000, 4000, 8000 ms.
    const PINNED_SEED: u64 = 12_592_739_853_357_092_095;
    const PINNED_FULL: [u64; 4] = [577, 1757, 3535, 6668];
    const PINNED_EQUAL: [u64; 4] = [789, 1879, 3767, 7334];
    const PINNED_DECORRELATED: [u64; 4] = [2154, 5797, 15483, 38882];

    #[test]
    fn pow_is_exact_where_it_can_be_and_saturates() {
        assert_eq!(pow(2.0, 0), 1.0);
        assert_eq!(pow(2.0, 10), 1024.0);
        assert_eq!(pow(1.5, 3), 3.375);
        assert_eq!(pow(1.0, u64::from(u32::MAX)), 1.0);
        assert_eq!(pow(2.0, 2_000), f64::INFINITY);
        assert!((pow(1.1, 7) - 1.1f64.powi(7)).abs() < 1e-12);
    }

    #[test]
    fn uniform_covers_its_bounds_and_never_overflows() {
        assert_eq!(uniform(3, 3, u64::MAX), 3);
        assert_eq!(uniform(5, 1, 0), 5);
        assert_eq!(uniform(0, 10, 0), 0);
        assert_eq!(uniform(0, 10, u64::MAX), 10);
        assert_eq!(uniform(0, u64::MAX, u64::MAX), u64::MAX);
        assert_eq!(uniform(1, u64::MAX, 0), 1);
    }

    // ---- caps ----

    #[test]
    fn max_delay_caps_every_kind_and_jitter() {
        let kinds = [
            Backoff::fixed(SECS(100)),
            Backoff::linear(SECS(10), SECS(50)),
            Backoff::exponential(SECS(10), 10.0, None),
            Backoff::fibonacci(SECS(20)),
        ];
        for backoff in kinds {
            for jitter in [
                Jitter::None,
                Jitter::Full,
                Jitter::Equal,
                Jitter::Decorrelated,
            ] {
                let p = compile(
                    &RetrySpec::new()
                        .max_attempts(40)
                        .backoff(backoff.clone())
                        .jitter(jitter)
                        .max_delay(SECS(30)),
                );
                for seed in 0..20 {
                    let ds = delays(&*p, Transient, seed);
                    assert_eq!(ds.len(), 40);
                    assert!(
                        ds.iter().flatten().all(|&d| d <= SECS(30)),
                        "{backoff:?} {jitter:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn default_max_delay_is_300_seconds() {
        let p = compile(
            &RetrySpec::new()
                .max_attempts(20)
                .backoff(Backoff::exponential(SECS(1), 2.0, None)),
        );
        assert_eq!(p.next_delay(&ctx(19, Transient)), Some(SECS(300)));
    }

    #[test]
    fn max_total_stops_retries_that_would_exceed_it() {
        let p = compile(
            &RetrySpec::new()
                .max_attempts(10)
                .backoff(Backoff::fixed(SECS(10)))
                .max_total(SECS(60)),
        );
        let at = |elapsed| RetryContext::new(2, Transient, 0, SECS(elapsed));
        assert_eq!(p.next_delay(&at(0)), Some(SECS(10)));
        assert_eq!(p.next_delay(&at(50)), Some(SECS(10))); // lands exactly on the budget
        assert_eq!(p.next_delay(&at(51)), None);
        assert_eq!(p.next_delay(&at(1_000_000)), None);
        let huge = RetryContext::new(2, Transient, 0, Duration::MAX);
        assert_eq!(p.next_delay(&huge), None);
    }

    #[test]
    fn max_attempts_counts_the_first_attempt() {
        let p = compile(&RetrySpec::new().backoff(Backoff::fixed(SECS(1))));
        assert!(p.next_delay(&ctx(1, Transient)).is_some());
        assert!(p.next_delay(&ctx(2, Transient)).is_some());
        assert!(p.next_delay(&ctx(3, Transient)).is_none());
        let once = compile(&RetrySpec::new().max_attempts(1));
        assert_eq!(once.next_delay(&ctx(1, Transient)), None);
        assert_eq!(once.max_attempts(), 1);
    }

    #[test]
    fn attempt_zero_reads_as_one() {
        let p = compile(&RetrySpec::new().backoff(Backoff::linear(SECS(1), SECS(1))));
        assert_eq!(
            p.next_delay(&ctx(0, Transient)),
            p.next_delay(&ctx(1, Transient))
        );
    }

    #[test]
    fn huge_values_saturate_without_panicking() {
        let backoffs = [
            Backoff::fixed(Duration::MAX),
            Backoff::linear(Duration::MAX, Duration::MAX),
            Backoff::exponential(MS(1), f64::MAX, None),
            Backoff::exponential(MS(1), 1.0, None),
            Backoff::fibonacci(MS(1)),
            Backoff::fibonacci(Duration::MAX),
        ];
        for backoff in backoffs {
            for jitter in [
                Jitter::None,
                Jitter::Full,
                Jitter::Equal,
                Jitter::Decorrelated,
            ] {
                let spec = RetrySpec {
                    max_attempts: Some(u32::MAX),
                    backoff: Some(backoff.clone()),
                    jitter: Some(jitter),
                    max_delay: Some(HumanDuration::new(MAX_DURATION)),
                    ..RetrySpec::default()
                };
                // Built in Rust, these durations exceed MAX_DURATION, so
                // they do not validate; compile the shape directly instead.
                let policy = Policy {
                    rules: FailureClass::ALL.map(|_| Rule {
                        retry: true,
                        max_attempts: u32::MAX,
                        shape: Shape::new(&backoff, &PolicyRegistry::default(), u64::MAX),
                        jitter,
                    }),
                    max_delay_ms: u64::MAX,
                    max_total: Some(Duration::MAX),
                    max_attempts: u32::MAX,
                };
                for attempt in [1, 2, 93, 94, 1_000, u32::MAX - 1] {
                    for elapsed in [Duration::ZERO, Duration::MAX] {
                        // Every shape here retries, and the budget is the
                        // largest duration, so a decision is always a delay.
                        let c = RetryContext::new(attempt, Transient, u64::MAX, elapsed);
                        assert!(policy.next_delay(&c).is_some(), "{backoff:?} {attempt}");
                    }
                }
                if let Ok(p) = spec.compile(&RetryDefaults::default(), &PolicyRegistry::default()) {
                    let d = p.next_delay(&ctx(u32::MAX - 1, Transient)).unwrap();
                    assert!(d <= MAX_DURATION);
                }
            }
        }
    }

    // ---- classes ----

    #[test]
    fn default_classes() {
        let p = compile(&RetrySpec::new());
        for class in [Transient, Timeout, Infrastructure, Unknown] {
            assert!(p.next_delay(&ctx(1, class)).is_some(), "{class}");
        }
        for class in [Permanent, Cancelled] {
            assert!(p.next_delay(&ctx(1, class)).is_none(), "{class}");
        }
    }

    #[test]
    fn retry_on_and_never_retry_on() {
        let only_permanent = compile(&RetrySpec::new().retry_on([Permanent]));
        assert!(only_permanent.next_delay(&ctx(1, Permanent)).is_some());
        for class in [Transient, Timeout, Infrastructure, Unknown, Cancelled] {
            assert!(
                only_permanent.next_delay(&ctx(1, class)).is_none(),
                "{class}"
            );
        }
        // never_retry_on takes classes out of the default list.
        let p = compile(&RetrySpec::new().never_retry_on([Transient]));
        for class in [Timeout, Infrastructure, Unknown] {
            assert!(p.next_delay(&ctx(1, class)).is_some(), "{class}");
        }
        for class in [Transient, Permanent, Cancelled] {
            assert!(p.next_delay(&ctx(1, class)).is_none(), "{class}");
        }
        let nothing = compile(&RetrySpec::new().retry_on([]));
        assert!(FailureClass::ALL
            .iter()
            .all(|&c| nothing.next_delay(&ctx(1, c)).is_none()));
        assert_eq!(nothing.max_attempts(), 1);
    }

    #[test]
    fn cancelled_is_never_retried_even_if_asked() {
        // check() rejects this spec; the compiled rule must hold regardless.
        let spec = RetrySpec::new().retry_on(FailureClass::ALL);
        assert!(spec
            .compile(&RetryDefaults::default(), &PolicyRegistry::default())
            .is_err());
        let retried = spec.retried();
        assert!(!retried.contains(Cancelled));
        assert!(FailureClass::ALL
            .iter()
            .filter(|&&c| c != Cancelled)
            .all(|&c| retried.contains(c)));
    }

    // ---- per-class map ----

    #[cfg(feature = "yaml")]
    const EXAMPLE_YAML: &str = "
max_attempts: 5
backoff: {kind: exponential, initial: 1s, factor: 2.0, cap: 1m}
jitter: full
max_delay: 300s
max_total: 10m
retry_on: [transient, timeout, infrastructure]
never_retry_on: [permanent]
per_class:
  timeout: {backoff: {kind: linear, initial: 1s, increment: 2s}, jitter: none}
  infrastructure: {backoff: {kind: fixed, delay: 0ms}, max_attempts: 4}
  permanent: {backoff: {kind: none}}
";

    fn example() -> RetrySpec {
        RetrySpec::new()
            .max_attempts(5)
            .backoff(Backoff::exponential(SECS(1), 2.0, Some(SECS(60))))
            .jitter(Jitter::Full)
            .max_delay(SECS(300))
            .max_total(SECS(600))
            .retry_on([Transient, Timeout, Infrastructure])
            .never_retry_on([Permanent])
            .per_class(
                Timeout,
                ClassRetrySpec::new()
                    .backoff(Backoff::linear(SECS(1), SECS(2)))
                    .jitter(Jitter::None),
            )
            .per_class(
                Infrastructure,
                ClassRetrySpec::new()
                    .backoff(Backoff::fixed(Duration::ZERO))
                    .max_attempts(4),
            )
            .per_class(Permanent, ClassRetrySpec::new().backoff(Backoff::never()))
    }

    #[test]
    fn per_class_entries_override_and_share_budgets() {
        let p = compile(&example());
        // Transient: exponential with full jitter.
        for (attempt, base) in [(1u32, 1000u64), (2, 2000), (3, 4000), (4, 8000)] {
            let d = millis(p.next_delay(&ctx(attempt, Transient)).unwrap());
            assert!(d <= base, "{attempt}: {d}");
        }
        assert_eq!(p.next_delay(&ctx(5, Transient)), None);
        // Timeout: linear, its own jitter (none).
        assert_eq!(delays(&*p, Timeout, 1), ms_list(&[1000, 3000, 5000, 7000]));
        // Infrastructure: fixed zero, at most 4 attempts.
        assert_eq!(delays(&*p, Infrastructure, 1), ms_list(&[0, 0, 0]));
        // Permanent, unknown (not in retry_on) and cancelled: never.
        for class in [Permanent, Unknown, Cancelled] {
            assert_eq!(delays(&*p, class, 1), [None], "{class}");
        }
        // One attempt counter: after 3 transient failures, a 4th attempt
        // failing on infrastructure is the last one its entry allows.
        assert_eq!(p.next_delay(&ctx(4, Infrastructure)), None);
        assert!(p.next_delay(&ctx(3, Infrastructure)).is_some());
        // One time budget.
        assert!(p
            .next_delay(&RetryContext::new(1, Timeout, 0, SECS(599)))
            .is_some());
        let late = RetryContext::new(1, Timeout, 0, MS(599_500));
        assert_eq!(p.next_delay(&late), None);
        assert_eq!(p.max_attempts(), 5);
    }

    #[test]
    fn per_class_max_attempts_may_exceed_the_top_level() {
        let spec = RetrySpec::new()
            .max_attempts(2)
            .backoff(Backoff::fixed(MS(10)))
            .per_class(Infrastructure, ClassRetrySpec::new().max_attempts(6));
        let policy =
            Policy::new(&spec, &RetryDefaults::default(), &PolicyRegistry::default()).unwrap();
        assert_eq!(policy.max_attempts(), 6);
        assert_eq!(policy.max_attempts_for(Infrastructure), 6);
        assert_eq!(policy.max_attempts_for(Transient), 2);
        assert_eq!(policy.max_attempts_for(Permanent), 1);
        assert!(policy.retries(Infrastructure) && !policy.retries(Cancelled));
        assert_eq!(policy.max_delay(), SECS(300));
        assert_eq!(policy.max_total(), None);
        assert_eq!(delays(&policy, Infrastructure, 1), ms_list(&[10; 5]));
        assert_eq!(delays(&policy, Transient, 1), ms_list(&[10]));
    }

    #[test]
    fn defaults_fill_the_gaps() {
        let defaults = RetryDefaults {
            max_attempts: 4,
            max_delay: SECS(3),
            backoff: Backoff::linear(SECS(1), SECS(1)),
            jitter: Jitter::None,
        };
        let p = RetrySpec::new()
            .compile(&defaults, &PolicyRegistry::default())
            .unwrap();
        assert_eq!(delays(&*p, Transient, 1), ms_list(&[1000, 2000, 3000]));
        // 0 is read as 1 rather than producing a policy without a first attempt.
        let zero = RetryDefaults {
            max_attempts: 0,
            ..RetryDefaults::default()
        };
        let p = RetrySpec::new()
            .compile(&zero, &PolicyRegistry::default())
            .unwrap();
        assert_eq!(p.max_attempts(), 1);
        // A broken default backoff is reported when the spec relies on it…
        let broken = RetryDefaults {
            backoff: Backoff::custom("missing"),
            ..RetryDefaults::default()
        };
        let err = RetrySpec::new()
            .compile(&broken, &PolicyRegistry::default())
            .unwrap_err();
        assert_eq!(err.problems()[0].path, "/backoff/name");
        assert!(err.problems()[0]
            .message
            .starts_with("the engine's default backoff"));
        // …and not when it does not.
        assert!(RetrySpec::new()
            .backoff(Backoff::fixed(SECS(1)))
            .compile(&broken, &PolicyRegistry::default())
            .is_ok());
    }

    // ---- serde ----

    #[cfg(feature = "yaml")]
    #[test]
    fn yaml_example_parses_to_the_expected_spec() {
        let spec: RetrySpec = serde_norway::from_str(EXAMPLE_YAML).unwrap();
        assert_eq!(spec, example());
        let again: RetrySpec =
            serde_norway::from_str(&serde_norway::to_string(&spec).unwrap()).unwrap();
        assert_eq!(again, spec);
    }

    #[test]
    fn json_round_trip_is_lossless_and_canonical() {
        let spec = example();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json["backoff"],
            serde_json::json!({"kind": "exponential", "initial": "1s", "factor": 2.0, "cap": "1m"})
        );
        assert_eq!(
            json["per_class"]["permanent"],
            serde_json::json!({"backoff": {"kind": "none"}})
        );
        assert_eq!(json["jitter"], "full");
        assert_eq!(serde_json::from_value::<RetrySpec>(json).unwrap(), spec);
        // Every kind round-trips.
        for backoff in [
            Backoff::never(),
            Backoff::fixed(MS(250)),
            Backoff::linear(SECS(1), MS(1500)),
            Backoff::exponential(SECS(1), 3.5, None),
            Backoff::fibonacci(MS(10)),
            Backoff::custom("x"),
        ] {
            let text = serde_json::to_string(&backoff).unwrap();
            assert_eq!(
                serde_json::from_str::<Backoff>(&text).unwrap(),
                backoff,
                "{text}"
            );
        }
        // An empty spec is an empty object; the factor defaults to 2.
        assert_eq!(serde_json::to_string(&RetrySpec::new()).unwrap(), "{}");
        let b: Backoff = serde_json::from_str(r#"{"kind":"exponential","initial":500}"#).unwrap();
        assert_eq!(b, Backoff::exponential(MS(500), 2.0, None));
    }

    #[test]
    fn unknown_fields_are_rejected_everywhere() {
        let bad = [
            r#"{"max_attempt": 3}"#,
            r#"{"per_class": {"timeout": {"backof": {"kind": "none"}}}}"#,
            r#"{"per_class": {"timeot": {}}}"#,
            r#"{"backoff": {"kind": "none", "delay": "1s"}}"#,
            r#"{"backoff": {"kind": "fixed", "delay": "1s", "cap": "2s"}}"#,
            r#"{"backoff": {"kind": "linear", "initial": "1s", "increment": "1s", "factor": 2}}"#,
            r#"{"backoff": {"kind": "exponential", "initial": "1s", "facter": 2}}"#,
            r#"{"backoff": {"kind": "fibonacci", "unit": "1s", "initial": "1s"}}"#,
            r#"{"backoff": {"kind": "custom", "name": "x", "params": {}}}"#,
            r#"{"backoff": {"kind": "quadratic"}}"#,
            r#"{"backoff": {"delay": "1s"}}"#,
            r#"{"jitter": "partial"}"#,
            r#"{"retry_on": ["flaky"]}"#,
            r#"{"max_delay": "soon"}"#,
            r#"{"max_attempts": -1}"#,
        ];
        for text in bad {
            assert!(
                serde_json::from_str::<RetrySpec>(text).is_err(),
                "{text} parsed"
            );
        }
    }

    #[cfg(feature = "yaml")]
    #[test]
    fn unknown_fields_are_rejected_in_yaml_too() {
        for text in [
            "backoff: {kind: none, delay: 1s}",
            "backoff: {kind: fixed, dealy: 1s}",
            "per_class: {timeout: {jiter: full}}",
        ] {
            assert!(
                serde_norway::from_str::<RetrySpec>(text).is_err(),
                "{text} parsed"
            );
        }
    }

    #[test]
    fn a_typo_in_a_job_spec_names_its_path() {
        let text = r#"{"name": "x", "dag_definition": {"nodes": [{"id": "a", "type": "noop",
            "retry": {"backoff": {"kind": "fixed", "delay": "1s"}, "max_totl": "1m"}}]}}"#;
        let err = crate::JobSpec::from_json(text).unwrap_err();
        assert_eq!(err.code, "unknown_field");
        assert_eq!(err.path, "/dag_definition/nodes/0/retry/max_totl");
        // Inside a tagged backoff serde buffers the map, so the path stops at
        // the backoff; the message still names the field.
        let text = r#"{"name": "x", "dag_definition": {"nodes": [{"id": "a", "type": "noop",
            "retry": {"backoff": {"kind": "fixed", "dealy": "1s"}}}]}}"#;
        let err = crate::JobSpec::from_json(text).unwrap_err();
        assert_eq!(err.code, "unknown_field");
        assert_eq!(err.path, "/dag_definition/nodes/0/retry/backoff");
        assert!(err.message.contains("dealy"), "{}", err.message);
    }

    // ---- validation ----

    #[test]
    fn a_valid_spec_has_no_problems() {
        assert_eq!(problems(&example(), &PolicyRegistry::default()), []);
        assert_eq!(problems(&RetrySpec::new(), &PolicyRegistry::default()), []);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let spec = RetrySpec {
            max_attempts: Some(0),
            backoff: Some(Backoff::exponential(Duration::ZERO, f64::NAN, None)),
            jitter: None,
            max_delay: Some(HumanDuration::from_millis(0)),
            max_total: Some(HumanDuration::from_millis(0)),
            retry_on: Some(vec![Transient, Cancelled, Timeout, Cancelled, Timeout]),
            never_retry_on: vec![Timeout],
            per_class: BTreeMap::from([
                (
                    Transient,
                    ClassRetrySpec::new()
                        .max_attempts(0)
                        .backoff(Backoff::custom("nope"))
                        .jitter(Jitter::Full),
                ),
                (
                    Infrastructure,
                    ClassRetrySpec::new().backoff(Backoff::linear(SECS(1), Duration::ZERO)),
                ),
                (
                    Permanent,
                    ClassRetrySpec::new().backoff(Backoff::fixed(SECS(1))),
                ),
                (
                    Cancelled,
                    ClassRetrySpec::new()
                        .backoff(Backoff::never())
                        .max_attempts(2),
                ),
                (
                    Unknown,
                    ClassRetrySpec::new().backoff(Backoff::exponential(
                        SECS(5),
                        0.5,
                        Some(SECS(1)),
                    )),
                ),
            ]),
        };
        use ProblemCode::{InvalidDuration as D, InvalidPolicy as P, UnknownPolicy as U};
        let expected = [
            ("/retry/max_attempts", P),
            ("/retry/backoff/initial", P),
            ("/retry/backoff/factor", P),
            ("/retry/max_delay", D),
            ("/retry/max_total", D),
            ("/retry/retry_on/1", P),
            ("/retry/retry_on/2", P),
            ("/retry/per_class/transient/max_attempts", P),
            ("/retry/per_class/transient/backoff/name", U),
            ("/retry/per_class/transient/jitter", P),
            ("/retry/per_class/permanent", P),
            ("/retry/per_class/infrastructure", P),
            ("/retry/per_class/infrastructure/backoff/increment", P),
            ("/retry/per_class/cancelled/max_attempts", P),
            ("/retry/per_class/unknown", P),
            ("/retry/per_class/unknown/backoff/factor", P),
            ("/retry/per_class/unknown/backoff/cap", P),
        ];
        let mut expected: Vec<_> = expected.iter().map(|&(p, c)| (p.to_owned(), c)).collect();
        let mut got = problems(&spec, &PolicyRegistry::default());
        expected.sort();
        got.sort();
        assert_eq!(got, expected);
    }

    #[test]
    fn problems_in_order_and_with_messages() {
        let spec = RetrySpec::new()
            .backoff(Backoff::fibonacci(Duration::ZERO))
            .retry_on([Cancelled]);
        let mut out = Vec::new();
        spec.check(
            "/dag_definition/nodes/3/retry",
            &PolicyRegistry::default(),
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].path, "/dag_definition/nodes/3/retry/backoff/unit");
        assert_eq!(out[1].path, "/dag_definition/nodes/3/retry/retry_on/0");
        assert!(out[1].message.contains("cancelled"), "{}", out[1].message);
    }

    #[test]
    fn unknown_custom_policy_is_reported() {
        let spec = RetrySpec::new().backoff(Backoff::custom("my_policy"));
        assert_eq!(
            problems(&spec, &PolicyRegistry::default()),
            [("/retry/backoff/name".to_owned(), ProblemCode::UnknownPolicy)]
        );
        let mut registry = PolicyRegistry::default();
        registry.register("my_policy", Arc::new(Doubling));
        assert_eq!(problems(&spec, &registry), []);
    }

    #[test]
    fn jitter_next_to_a_custom_policy_is_reported_only_when_unused() {
        let r = registry();
        let spec = RetrySpec::new()
            .backoff(Backoff::custom("doubling"))
            .jitter(Jitter::Full);
        assert_eq!(
            problems(&spec, &r),
            [("/retry/jitter".to_owned(), ProblemCode::InvalidPolicy)]
        );
        // A per-class built-in backoff inherits it, so it is used.
        let spec = spec.per_class(
            Timeout,
            ClassRetrySpec::new().backoff(Backoff::fixed(SECS(1))),
        );
        assert_eq!(problems(&spec, &r), []);
    }

    #[test]
    fn durations_too_long_for_a_spec_are_reported() {
        let spec = RetrySpec {
            backoff: Some(Backoff::fixed(Duration::MAX)),
            max_total: Some(HumanDuration::new(Duration::MAX)),
            ..RetrySpec::default()
        };
        assert_eq!(
            problems(&spec, &PolicyRegistry::default()),
            [
                (
                    "/retry/backoff/delay".to_owned(),
                    ProblemCode::InvalidDuration
                ),
                ("/retry/max_total".to_owned(), ProblemCode::InvalidDuration),
            ]
        );
    }

    #[test]
    fn compile_reports_the_same_problems_relative_to_the_spec() {
        let spec = RetrySpec::new()
            .max_attempts(0)
            .backoff(Backoff::custom("nope"));
        let err = spec
            .compile(&RetryDefaults::default(), &PolicyRegistry::default())
            .unwrap_err();
        let got: Vec<_> = err
            .problems()
            .iter()
            .map(|p| (p.path.as_str(), p.code))
            .collect();
        assert_eq!(
            got,
            [
                ("/max_attempts", ProblemCode::InvalidPolicy),
                ("/backoff/name", ProblemCode::UnknownPolicy),
            ]
        );
    }

    #[test]
    fn validation_of_a_job_reaches_node_and_job_policies() {
        let spec = crate::JobSpec::builder("j")
            .retry(RetrySpec::new().max_attempts(0))
            .node(crate::NodeSpec::new("a", "noop"))
            .node(
                crate::NodeSpec::new("b", "noop")
                    .retry(RetrySpec::new().backoff(Backoff::exponential(SECS(1), 0.0, None))),
            )
            .build();
        let err = crate::validate(&spec, &crate::Limits::default(), &PolicyRegistry::default())
            .unwrap_err();
        let paths: Vec<_> = err.problems().iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/retry/max_attempts",
                "/dag_definition/nodes/1/retry/backoff/factor"
            ]
        );
    }

    #[test]
    fn slots_follow_the_declaration_order() {
        // Policy::new builds its rules from FailureClass::ALL and looks them
        // up with slot(): the two orders must agree.
        for (i, class) in FailureClass::ALL.into_iter().enumerate() {
            assert_eq!(slot(class), i);
        }
    }

    #[test]
    fn seed_for_is_stable_and_distinct() {
        let job: JobId = "job-1".parse().unwrap();
        let other: JobId = "job-2".parse().unwrap();
        assert_eq!(seed_for(&job, 3), seed_for(&job, 3));
        assert_ne!(seed_for(&job, 3), seed_for(&job, 4));
        assert_ne!(seed_for(&job, 3), seed_for(&other, 3));
    }
}
