//! Flakiness: per-test history across jobs, a score over it, and the
//! adaptive decisions (extra or fewer attempts, quarantine) a job can opt
//! into.
//!
//! A *test* is identified by its **key**: the node's `test_id`, or
//! `<job name>/<node id>` when it has none ([`test_key`]), so the same test
//! in successive runs of a job shares one history. When a job finishes, the
//! executor records one [`RunOutcome`] per node that ran to a result, in the
//! store ([`TestHistoryStore`](crate::store::TestHistoryStore)), which keeps
//! the newest [`FlakyConfig::keep`] per key.
//!
//! # The score
//!
//! [`score`] is a pure function of the last N outcomes, oldest first. A run
//! counts as a **flip** when it is *flaky in itself* (it failed, then
//! passed on a retry) or when its result (passed or failed) differs from the
//! previous run's. With `n` runs:
//!
//! - `flip_rate = flips / n` — the **flakiness score**, in `[0, 1]`. It is
//!   order-sensitive: `P P F F` has one flip (0.25), `P F P F` three (0.75).
//! - `fail_rate = failed runs / n`, in `[0, 1]`.
//!
//! The [`Classification`], with [`Thresholds`] (defaults in parentheses):
//!
//! 1. fewer than `min_runs` (3) runs: [`Classification::New`] — too little
//!    history to act on;
//! 2. `fail_rate >= failing_at` (0.8): [`Classification::Failing`] — a test
//!    that fails four runs in five is broken, not flaky;
//! 3. `flip_rate >= flaky_at` (0.2): [`Classification::Flaky`];
//! 4. otherwise [`Classification::Stable`].
//!
//! # Adaptive retries and quarantine
//!
//! A job (or one node) opts in with a [`FlakySpec`]:
//!
//! ```yaml
//! flaky:
//!   adaptive: true        # flaky tests get extra attempts, failing ones fewer
//!   extra_attempts: 2     # on top of the retry policy's, without delay
//!   failing_attempts: 1   # the most a consistently failing test gets (>= 1)
//!   quarantine:
//!     score_above: 0.3    # quarantine tests whose score is above this
//!     tests: [checkout/e2e-payment]   # and these keys, whatever their score
//! ```
//!
//! The decisions are taken once, at submission, from the history as it is
//! then, and journaled ([`Event::FlakyDecision`](crate::journal::Event)) with
//! the score that drove them, so a resumed job decides exactly the same.
//!
//! A **quarantined** test runs as usual, but its failure (`failed` or
//! `timed_out`) neither fails the job nor blocks downstream nodes:
//! downstream trigger rules see it as **succeeded** — quarantine means "this
//! result does not count", so what depends on the test runs as it would had
//! the test passed. Status, the CLI summary and JUnit reports mark it.

use serde::{Deserialize, Serialize};

use crate::spec::NodeSpec;
use crate::store::{HistoryQuery, Store, StoreError};
use crate::time::{JobId, Timestamp};
use crate::validate::{Problem, ProblemCode};

/// The history key of `node` in a job called `job_name`: its `test_id`, or
/// `<job name>/<node id>`.
pub fn test_key(job_name: &str, node: &NodeSpec) -> String {
    match &node.test_id {
        Some(id) => id.clone(),
        None => format!("{job_name}/{}", node.id),
    }
}

/// One run of a test: the outcome of one node in one job run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunOutcome {
    /// The job run.
    pub job: JobId,
    /// The job's name.
    pub job_name: String,
    /// The job's owner (reports are scoped by it).
    pub owner: String,
    /// When the node finished.
    pub at: Timestamp,
    /// Whether it finally passed.
    pub passed: bool,
    /// Whether it failed and then passed in this run.
    #[serde(default)]
    pub flaky: bool,
    /// Attempts it took.
    pub attempts: u32,
    /// Whether it was quarantined in this run.
    #[serde(default)]
    pub quarantined: bool,
}

/// A [`RunOutcome`] with the key it is recorded under.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestOutcome {
    /// The test's key ([`test_key`]).
    pub key: String,
    /// The run.
    pub outcome: RunOutcome,
}

/// Where a test stands, from its history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Classification {
    /// Fewer runs than [`Thresholds::min_runs`].
    #[default]
    New,
    /// Neither flaky nor failing.
    Stable,
    /// Its result flips often.
    Flaky,
    /// It fails (almost) every run.
    Failing,
}

impl Classification {
    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Stable => "stable",
            Self::Flaky => "flaky",
            Self::Failing => "failing",
        }
    }
}

impl std::fmt::Display for Classification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The limits of the [`Classification`] (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// A flip rate at or above this is flaky.
    pub flaky_at: f64,
    /// A fail rate at or above this is failing.
    pub failing_at: f64,
    /// Fewer runs than this classify as new.
    pub min_runs: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            flaky_at: 0.2,
            failing_at: 0.8,
            min_runs: 3,
        }
    }
}

/// Flakiness settings of an executor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlakyConfig {
    /// Outcomes kept per test key (the N of "the last N runs"); 0 turns
    /// history recording off.
    pub keep: usize,
    /// How scores classify.
    pub thresholds: Thresholds,
}

impl Default for FlakyConfig {
    fn default() -> Self {
        Self {
            keep: 50,
            thresholds: Thresholds::default(),
        }
    }
}

/// The score of a history (see the [module docs](self) for the formula).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Score {
    /// Runs scored.
    pub runs: u32,
    /// Runs that failed.
    pub failures: u32,
    /// Runs that failed then passed in themselves.
    pub flaky_runs: u32,
    /// Flips (flaky runs plus result changes between consecutive runs).
    pub flips: u32,
    /// `flips / runs`: the flakiness score, in `[0, 1]`.
    pub flip_rate: f64,
    /// `failures / runs`, in `[0, 1]`.
    pub fail_rate: f64,
    /// What the rates make of the test.
    pub class: Classification,
}

/// Scores `history` (oldest first). An empty history scores 0 and is new.
pub fn score(history: &[RunOutcome], thresholds: &Thresholds) -> Score {
    let runs = history.len() as u32;
    let mut s = Score {
        runs,
        ..Score::default()
    };
    let mut previous: Option<bool> = None;
    for o in history {
        if !o.passed {
            s.failures += 1;
        }
        if o.flaky {
            s.flaky_runs += 1;
        }
        if o.flaky || previous.is_some_and(|p| p != o.passed) {
            s.flips += 1;
        }
        previous = Some(o.passed);
    }
    if runs > 0 {
        s.flip_rate = f64::from(s.flips) / f64::from(runs);
        s.fail_rate = f64::from(s.failures) / f64::from(runs);
    }
    s.class = if runs < thresholds.min_runs.max(1) {
        Classification::New
    } else if s.fail_rate >= thresholds.failing_at {
        Classification::Failing
    } else if s.flip_rate >= thresholds.flaky_at {
        Classification::Flaky
    } else {
        Classification::Stable
    };
    s
}

/// A job's or node's opt-in to adaptive retries and quarantine (see the
/// [module docs](self)). A node's `flaky` replaces its job's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FlakySpec {
    /// Adjust attempts by classification: flaky tests get
    /// `extra_attempts` more, failing ones at most `failing_attempts`.
    #[serde(default)]
    pub adaptive: bool,
    /// Attempts added for a flaky test, run without delay (1 to 10).
    #[serde(default = "default_extra")]
    pub extra_attempts: u32,
    /// The most attempts a failing test gets (1 or more).
    #[serde(default = "default_failing")]
    pub failing_attempts: u32,
    /// Which tests run quarantined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<QuarantineSpec>,
}

fn default_extra() -> u32 {
    2
}

fn default_failing() -> u32 {
    1
}

/// Which tests are quarantined: by score, by key, or both.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QuarantineSpec {
    /// Quarantine a test whose flakiness score is above this (0 to 1), once
    /// it has at least `min_runs` runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_above: Option<f64>,
    /// Quarantine these test keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<String>,
}

/// How many attempts a node gets, as adaptive retries decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptBudget {
    /// This many attempts more than the retry policy allows, the extra ones
    /// without delay (a flaky test).
    Extra(u32),
    /// At most this many attempts (a failing test), never below 1.
    AtMost(u32),
}

/// Why a test is quarantined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuarantineReason {
    /// Its key is listed.
    Listed,
    /// Its score is above the threshold.
    Score,
}

/// What [`decide`] makes of one node.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The attempt budget, if adjusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<AttemptBudget>,
    /// Whether (and why) the node runs quarantined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<QuarantineReason>,
}

/// The decision for test `key` with score `score` under `spec`; `None`
/// when nothing changes.
pub fn decide(
    spec: &FlakySpec,
    key: &str,
    score: &Score,
    thresholds: &Thresholds,
) -> Option<Decision> {
    let attempts = if spec.adaptive {
        match score.class {
            Classification::Flaky if spec.extra_attempts > 0 => {
                Some(AttemptBudget::Extra(spec.extra_attempts))
            }
            Classification::Failing => Some(AttemptBudget::AtMost(spec.failing_attempts.max(1))),
            _ => None,
        }
    } else {
        None
    };
    let quarantine = spec.quarantine.as_ref().and_then(|q| {
        if q.tests.iter().any(|t| t == key) {
            Some(QuarantineReason::Listed)
        } else if q
            .score_above
            .is_some_and(|t| score.runs >= thresholds.min_runs.max(1) && score.flip_rate > t)
        {
            Some(QuarantineReason::Score)
        } else {
            None
        }
    });
    (attempts.is_some() || quarantine.is_some()).then_some(Decision {
        attempts,
        quarantine,
    })
}

/// What [`report`] lists.
#[derive(Clone, Debug, PartialEq)]
pub struct FlakyQuery {
    /// Count only runs of this owner's jobs (a user's view); `None`: all
    /// runs (an admin's view).
    pub owner: Option<String>,
    /// Only tests with a kept run of a job of exactly this name.
    pub job_name: Option<String>,
    /// Only keys starting with this.
    pub prefix: Option<String>,
    /// Only tests whose score (flip rate) is at least this.
    pub min_score: Option<f64>,
    /// Only tests of this class.
    pub class: Option<Classification>,
    /// Page size, 1 to [`HistoryQuery::MAX_LIMIT`].
    pub limit: usize,
    /// Continue after this key (from [`FlakyReport::next_cursor`]).
    pub cursor: Option<String>,
}

impl Default for FlakyQuery {
    fn default() -> Self {
        Self {
            owner: None,
            job_name: None,
            prefix: None,
            min_score: None,
            class: None,
            limit: 100,
            cursor: None,
        }
    }
}

/// One test of a [`FlakyReport`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FlakyTest {
    /// The test key.
    pub key: String,
    /// The score of its (visible) kept runs.
    pub score: Score,
    /// Runs in which it was quarantined.
    pub quarantined_runs: u32,
    /// Its newest run.
    pub last_run: RunOutcome,
}

/// A page of [`report`], in key order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FlakyReport {
    /// The tests.
    pub tests: Vec<FlakyTest>,
    /// Where the next page starts, `None` on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The flakiness report: every test's score from its kept history, filtered
/// and paginated in key order. With `owner` set, only that owner's runs
/// count (a test none of whose kept runs are the owner's is not listed), so
/// a user never sees other users' results. Filters on the score are applied
/// here, after the store's key-order listing, so one call may read several
/// store pages.
pub async fn report(
    store: &dyn Store,
    query: &FlakyQuery,
    thresholds: &Thresholds,
) -> Result<FlakyReport, StoreError> {
    let mut page = HistoryQuery {
        prefix: query.prefix.clone(),
        job_name: query.job_name.clone(),
        limit: query.limit,
        cursor: query.cursor.clone(),
    };
    page.check()?;
    if query.min_score.is_some_and(|m| !(0.0..=1.0).contains(&m)) {
        return Err(StoreError::Invalid(
            "min_score must be between 0 and 1".into(),
        ));
    }
    page.limit = HistoryQuery::MAX_LIMIT;
    let mut tests = Vec::new();
    loop {
        let got = store.list_test_histories(&page).await?;
        for h in got.tests {
            let runs: Vec<RunOutcome> = h
                .outcomes
                .into_iter()
                .filter(|o| query.owner.as_ref().is_none_or(|w| o.owner == *w))
                .filter(|o| query.job_name.as_ref().is_none_or(|n| o.job_name == *n))
                .collect();
            let Some(last_run) = runs.last().cloned() else {
                continue;
            };
            let score = score(&runs, thresholds);
            if query.min_score.is_some_and(|m| score.flip_rate < m)
                || query.class.is_some_and(|c| score.class != c)
            {
                continue;
            }
            if tests.len() == query.limit {
                let next_cursor = tests.last().map(|t: &FlakyTest| t.key.clone());
                return Ok(FlakyReport { tests, next_cursor });
            }
            tests.push(FlakyTest {
                key: h.key,
                score,
                quarantined_runs: runs.iter().filter(|o| o.quarantined).count() as u32,
                last_run,
            });
        }
        match got.next_cursor {
            Some(c) => page.cursor = Some(c),
            None => {
                return Ok(FlakyReport {
                    tests,
                    next_cursor: None,
                })
            }
        }
    }
}

/// Longest test key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Checks a test key: non-blank, at most [`MAX_KEY_LEN`] bytes, no control
/// characters.
pub(crate) fn check_key(key: &str, path: &str, out: &mut Vec<Problem>) {
    if key.trim().is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
        out.push(Problem::new(
            path,
            ProblemCode::InvalidFlaky,
            format!("a test id must be non-blank, at most {MAX_KEY_LEN} bytes, without control characters"),
        ));
    }
}

/// Checks a [`FlakySpec`] found at `path`.
pub(crate) fn check(spec: &FlakySpec, path: &str, out: &mut Vec<Problem>) {
    if !(1..=10).contains(&spec.extra_attempts) {
        out.push(Problem::new(
            format!("{path}/extra_attempts"),
            ProblemCode::InvalidFlaky,
            "extra_attempts must be between 1 and 10",
        ));
    }
    if spec.failing_attempts == 0 {
        out.push(Problem::new(
            format!("{path}/failing_attempts"),
            ProblemCode::InvalidFlaky,
            "failing_attempts must be at least 1",
        ));
    }
    if let Some(q) = &spec.quarantine {
        if let Some(t) = q.score_above {
            if !(0.0..=1.0).contains(&t) {
                out.push(Problem::new(
                    format!("{path}/quarantine/score_above"),
                    ProblemCode::InvalidFlaky,
                    "score_above must be between 0 and 1",
                ));
            }
        }
        for (i, key) in q.tests.iter().enumerate() {
            check_key(key, &format!("{path}/quarantine/tests/{i}"), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(passed: bool, flaky: bool) -> RunOutcome {
        RunOutcome {
            job: "job-1".parse().expect("valid id"),
            job_name: "ci".into(),
            owner: "alice".into(),
            at: Timestamp(0),
            passed,
            flaky,
            attempts: if flaky { 2 } else { 1 },
            quarantined: false,
        }
    }

    /// `P` passed, `F` failed, `f` failed then passed (flaky in the run).
    fn history(s: &str) -> Vec<RunOutcome> {
        s.chars()
            .map(|c| match c {
                'P' => run(true, false),
                'F' => run(false, false),
                'f' => run(true, true),
                other => panic!("bad history letter {other:?}"),
            })
            .collect()
    }

    fn scored(s: &str) -> Score {
        score(&history(s), &Thresholds::default())
    }

    #[test]
    fn scripted_histories_score_exactly() {
        let s = scored("");
        assert_eq!(
            (s.runs, s.flips, s.flip_rate, s.class),
            (0, 0, 0.0, Classification::New)
        );
        let s = scored("PPPPPPPPPP");
        assert_eq!((s.flips, s.flip_rate, s.fail_rate), (0, 0.0, 0.0));
        assert_eq!(s.class, Classification::Stable);
        let s = scored("PPFF");
        assert_eq!((s.flips, s.flip_rate, s.fail_rate), (1, 0.25, 0.5));
        assert_eq!(s.class, Classification::Flaky);
        let s = scored("PFPF");
        assert_eq!((s.flips, s.flip_rate), (3, 0.75));
        let s = scored("PPPPfPPPPP");
        assert_eq!((s.flips, s.flaky_runs, s.flip_rate), (1, 1, 0.1));
        assert_eq!(s.class, Classification::Stable);
        let s = scored("PPfPPfPPPP");
        assert_eq!((s.flips, s.flip_rate), (2, 0.2));
        assert_eq!(s.class, Classification::Flaky);
        let s = scored("FFFFFFFFFF");
        assert_eq!((s.flips, s.fail_rate), (0, 1.0));
        assert_eq!(s.class, Classification::Failing);
        // Four failures in five: failing wins over the flips it has.
        let s = scored("FFPFF");
        assert_eq!((s.flips, s.flip_rate, s.fail_rate), (2, 0.4, 0.8));
        assert_eq!(s.class, Classification::Failing);
        // A flaky run after a failure is one flip, not two.
        let s = scored("Ff");
        assert_eq!(s.flips, 1);
        assert_eq!(s.class, Classification::New);
    }

    #[test]
    fn keys_default_to_job_name_and_node_id() {
        let node = NodeSpec::new("unit", "noop");
        assert_eq!(test_key("ci", &node), "ci/unit");
        assert_eq!(test_key("ci", &node.test_id("suite::unit")), "suite::unit");
    }

    #[test]
    fn decisions_follow_the_spec() {
        let t = Thresholds::default();
        let spec = FlakySpec {
            adaptive: true,
            extra_attempts: 2,
            failing_attempts: 0,
            quarantine: Some(QuarantineSpec {
                score_above: Some(0.3),
                tests: vec!["listed".into()],
            }),
        };
        let flaky = scored("PPFF");
        assert_eq!(
            decide(&spec, "k", &flaky, &t),
            Some(Decision {
                attempts: Some(AttemptBudget::Extra(2)),
                quarantine: None
            })
        );
        // Failing: fewer attempts, never below one.
        let failing = scored("FFFFF");
        assert_eq!(
            decide(&spec, "k", &failing, &t).and_then(|d| d.attempts),
            Some(AttemptBudget::AtMost(1))
        );
        assert_eq!(decide(&spec, "k", &scored("PPPPP"), &t), None);
        // Quarantine by score (strictly above) and by list.
        assert_eq!(
            decide(&spec, "k", &scored("PFPF"), &t).and_then(|d| d.quarantine),
            Some(QuarantineReason::Score)
        );
        assert_eq!(
            decide(&spec, "listed", &scored(""), &t).and_then(|d| d.quarantine),
            Some(QuarantineReason::Listed)
        );
        // Too little history: no score-based decision.
        assert_eq!(decide(&spec, "k", &scored("PF"), &t), None);
        // Not adaptive: attempts untouched.
        let plain = FlakySpec {
            adaptive: false,
            ..spec
        };
        assert_eq!(decide(&plain, "k", &flaky, &t), None);
    }

    fn letters() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(vec!['P', 'F', 'f']), 0..60)
            .prop_map(|v| v.into_iter().collect())
    }

    use proptest::prelude::*;

    proptest! {
        /// Rates stay in [0, 1], flips never exceed runs, and the class
        /// follows the documented order of thresholds.
        #[test]
        fn score_is_bounded_and_classified(h in letters()) {
            let s = scored(&h);
            prop_assert_eq!(s.runs as usize, h.len());
            prop_assert!(s.flips <= s.runs && s.failures <= s.runs);
            prop_assert!((0.0..=1.0).contains(&s.flip_rate));
            prop_assert!((0.0..=1.0).contains(&s.fail_rate));
            let t = Thresholds::default();
            let expected = if s.runs < t.min_runs {
                Classification::New
            } else if s.fail_rate >= t.failing_at {
                Classification::Failing
            } else if s.flip_rate >= t.flaky_at {
                Classification::Flaky
            } else {
                Classification::Stable
            };
            prop_assert_eq!(s.class, expected);
        }

        /// Order matters for flips but not for the fail rate: a reordering
        /// keeps the fail rate and the flaky runs; every order has at least
        /// one flip per flaky run (and one if results differ at all); with
        /// passes first and failures last, exactly that plus one.
        #[test]
        fn score_is_order_sensitive_in_flips_only(h in letters(), seed in any::<u64>()) {
            let s = scored(&h);
            let mut shuffled: Vec<char> = h.chars().collect();
            // A deterministic shuffle from the seed (xorshift).
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let shuffled: String = shuffled.into_iter().collect();
            let t = scored(&shuffled);
            prop_assert_eq!(s.fail_rate, t.fail_rate);
            prop_assert_eq!(s.flaky_runs, t.flaky_runs);
            let mixed = u32::from(h.contains('F') && h.contains(['P', 'f']));
            prop_assert!(s.flips >= s.flaky_runs.max(mixed));
            let mut sorted: Vec<char> = h.chars().collect();
            sorted.sort_by_key(|c| *c == 'F');
            let sorted: String = sorted.into_iter().collect();
            prop_assert_eq!(scored(&sorted).flips, s.flaky_runs + mixed);
        }
    }
}
