//! Property tests of retry policies: the invariants documented in
//! `orchestrator_core::retry` hold for generated specs, seeds and failure
//! sequences, and validation never panics on any spec.
//!
//! Case counts are kept modest so the suite runs in a few seconds in debug.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use orchestrator_core::time::mix64;
use orchestrator_core::{
    Backoff, ClassRetrySpec, FailureClass, HumanDuration, Jitter, PolicyRegistry, RetryContext,
    RetryDefaults, RetryPolicy, RetrySpec,
};
use proptest::prelude::*;

/// Classes a spec may choose to retry (all but `cancelled`).
const RETRYABLE: [FailureClass; 5] = [
    FailureClass::Transient,
    FailureClass::Permanent,
    FailureClass::Timeout,
    FailureClass::Infrastructure,
    FailureClass::Unknown,
];

/// Most attempts a simulated node runs: far above every limit generated here,
/// so reaching it means a policy failed to stop.
const RUNAWAY: u32 = 500;

/// A custom policy with erratic but pure delays: sometimes none, sometimes
/// far beyond any cap.
#[derive(Debug)]
struct Wild;

impl RetryPolicy for Wild {
    fn next_delay(&self, ctx: &RetryContext) -> Option<Duration> {
        let r = mix64(ctx.seed ^ u64::from(ctx.attempt));
        match r % 8 {
            0 => None,
            1 => Some(Duration::MAX),
            _ => Some(Duration::from_millis(r % 1_000_000)),
        }
    }

    fn max_attempts(&self) -> u32 {
        50
    }
}

fn registry() -> PolicyRegistry {
    let mut registry = PolicyRegistry::default();
    registry.register("wild", Arc::new(Wild));
    registry
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn class() -> impl Strategy<Value = FailureClass> {
    prop::sample::select(FailureClass::ALL.to_vec())
}

fn jitter() -> impl Strategy<Value = Jitter> {
    prop::sample::select(vec![
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ])
}

/// Backoffs that pass validation.
fn valid_backoff() -> impl Strategy<Value = Backoff> {
    prop_oneof![
        Just(Backoff::never()),
        (0..5_000u64).prop_map(|d| Backoff::fixed(ms(d))),
        (0..5_000u64, 1..5_000u64).prop_map(|(i, inc)| Backoff::linear(ms(i), ms(inc))),
        // Factors with two decimals, as people write them: serde_json's
        // default float parsing is only exact for short decimals (see
        // `the_same_seed_gives_the_same_delays`).
        (1..5_000u64, 100..800u32, prop::option::of(0..100_000u64)).prop_map(|(i, f, extra)| {
            Backoff::exponential(ms(i), f64::from(f) / 100.0, extra.map(|e| ms(i + e)))
        }),
        (1..5_000u64).prop_map(|u| Backoff::fibonacci(ms(u))),
        Just(Backoff::custom("wild")),
    ]
}

type Entry = (Option<u32>, Option<Backoff>, Option<Jitter>);

/// Specs that pass validation, covering every field: each retryable class is
/// independently absent, in `retry_on` or in `never_retry_on`, and retried
/// classes may get a `per_class` entry.
fn valid_spec() -> impl Strategy<Value = RetrySpec> {
    (
        (
            prop::option::of(1..12u32),
            prop::option::of(valid_backoff()),
            prop::option::of(jitter()),
            prop::option::of(1..200_000u64),
            prop::option::of(1..600_000u64),
        ),
        any::<bool>(),
        prop::collection::vec(0..3u8, RETRYABLE.len()),
        prop::collection::vec(
            prop::option::of((
                prop::option::of(1..12u32),
                prop::option::of(valid_backoff()),
                prop::option::of(jitter()),
            )),
            RETRYABLE.len(),
        ),
    )
        .prop_map(|(top, explicit, choices, entries)| build_valid(top, explicit, &choices, entries))
}

type Top = (
    Option<u32>,
    Option<Backoff>,
    Option<Jitter>,
    Option<u64>,
    Option<u64>,
);

fn build_valid(top: Top, explicit: bool, choices: &[u8], entries: Vec<Option<Entry>>) -> RetrySpec {
    let (max_attempts, backoff, jitter, max_delay, max_total) = top;
    let pick = |want: u8| -> Vec<FailureClass> {
        RETRYABLE
            .iter()
            .zip(choices)
            .filter(|&(_, &c)| c == want)
            .map(|(&class, _)| class)
            .collect()
    };
    let retry_on = explicit.then(|| pick(1));
    let never_retry_on = pick(2);
    let retried = |class: FailureClass| {
        let listed = match &retry_on {
            Some(list) => list.contains(&class),
            None => !matches!(class, FailureClass::Permanent),
        };
        listed && !never_retry_on.contains(&class)
    };
    let top_is_custom = matches!(backoff, Some(Backoff::Custom { .. }));
    let mut per_class = BTreeMap::new();
    for (&class, entry) in RETRYABLE.iter().zip(entries) {
        let Some((attempts, entry_backoff, entry_jitter)) = entry else {
            continue;
        };
        if !retried(class) {
            continue;
        }
        let is_never = matches!(entry_backoff, Some(Backoff::Never {}));
        let is_custom = match &entry_backoff {
            Some(b) => matches!(b, Backoff::Custom { .. }),
            None => top_is_custom,
        };
        per_class.insert(
            class,
            ClassRetrySpec {
                max_attempts: if is_never { None } else { attempts },
                backoff: entry_backoff,
                jitter: if is_custom { None } else { entry_jitter },
            },
        );
    }
    RetrySpec {
        max_attempts,
        // Jitter next to a custom backoff is a validation error.
        jitter: if top_is_custom { None } else { jitter },
        backoff,
        max_delay: max_delay.map(HumanDuration::from_millis),
        max_total: max_total.map(HumanDuration::from_millis),
        retry_on,
        never_retry_on,
        per_class,
    }
}

/// Any spec at all, including nonsense: zero attempts, NaN factors, huge
/// durations, contradictory and repeated class lists, unknown custom names.
fn wild_spec() -> impl Strategy<Value = RetrySpec> {
    let duration = || {
        prop_oneof![
            (0..10_000u64).prop_map(HumanDuration::from_millis),
            any::<u64>().prop_map(HumanDuration::from_millis),
        ]
    };
    let backoff = prop_oneof![
        Just(Backoff::never()),
        duration().prop_map(|delay| Backoff::Fixed { delay }),
        (duration(), duration())
            .prop_map(|(initial, increment)| Backoff::Linear { initial, increment }),
        (
            duration(),
            prop_oneof![
                any::<f64>(),
                -4.0..8.0f64,
                Just(f64::NAN),
                Just(f64::INFINITY)
            ],
            prop::option::of(duration())
        )
            .prop_map(|(initial, factor, cap)| Backoff::Exponential {
                initial,
                factor,
                cap
            }),
        duration().prop_map(|unit| Backoff::Fibonacci { unit }),
        prop::sample::select(vec!["wild", "missing", ""])
            .prop_map(|name| Backoff::Custom { name: name.into() }),
    ];
    let attempts = prop_oneof![0..5u32, any::<u32>()];
    let entry = (
        prop::option::of(attempts.clone()),
        prop::option::of(backoff.clone()),
        prop::option::of(jitter()),
    )
        .prop_map(|(max_attempts, backoff, jitter)| ClassRetrySpec {
            max_attempts,
            backoff,
            jitter,
        });
    (
        (
            prop::option::of(attempts),
            prop::option::of(backoff),
            prop::option::of(jitter()),
            prop::option::of(duration()),
            prop::option::of(duration()),
        ),
        prop::option::of(prop::collection::vec(class(), 0..8)),
        prop::collection::vec(class(), 0..4),
        prop::collection::btree_map(class(), entry, 0..4),
    )
        .prop_map(
            |(
                (max_attempts, backoff, jitter, max_delay, max_total),
                retry_on,
                never,
                per_class,
            )| {
                RetrySpec {
                    max_attempts,
                    backoff,
                    jitter,
                    max_delay,
                    max_total,
                    retry_on,
                    never_retry_on: never,
                    per_class,
                }
            },
        )
}

/// One decision of a simulated node.
#[derive(Debug, PartialEq)]
struct Step {
    attempt: u32,
    class: FailureClass,
    elapsed: Duration,
    delay: Option<Duration>,
}

/// Runs a node whose attempts fail with `classes` in turn and take
/// `run_ms` in turn, until the policy stops retrying.
fn simulate(
    policy: &dyn RetryPolicy,
    seed: u64,
    classes: &[FailureClass],
    run_ms: &[u64],
) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut elapsed = Duration::ZERO;
    for attempt in 1..=RUNAWAY {
        let i = attempt as usize;
        let class = classes[i % classes.len()];
        elapsed += ms(run_ms[i % run_ms.len()]);
        let delay = policy.next_delay(&RetryContext::new(attempt, class, seed, elapsed));
        steps.push(Step {
            attempt,
            class,
            elapsed,
            delay,
        });
        match delay {
            Some(d) => elapsed += d,
            None => break,
        }
    }
    steps
}

/// The classes `spec` retries, computed from its fields independently of the
/// implementation.
fn retried_by(spec: &RetrySpec, class: FailureClass) -> bool {
    let listed = match &spec.retry_on {
        Some(list) => list.contains(&class),
        None => [
            FailureClass::Transient,
            FailureClass::Timeout,
            FailureClass::Infrastructure,
            FailureClass::Unknown,
        ]
        .contains(&class),
    };
    class != FailureClass::Cancelled && listed && !spec.never_retry_on.contains(&class)
}

fn failure_run() -> impl Strategy<Value = (u64, Vec<FailureClass>, Vec<u64>)> {
    (
        any::<u64>(),
        prop::collection::vec(class(), 1..6),
        prop::collection::vec(0..20_000u64, 1..4),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn generated_valid_specs_compile(spec in valid_spec()) {
        let mut problems = Vec::new();
        spec.check("/retry", &registry(), &mut problems);
        prop_assert!(problems.is_empty(), "{problems:?}");
        prop_assert!(spec.compile(&RetryDefaults::default(), &registry()).is_ok());
    }

    #[test]
    fn delays_never_exceed_max_delay(spec in valid_spec(), (seed, classes, run) in failure_run()) {
        let policy = spec.compile(&RetryDefaults::default(), &registry()).unwrap();
        let cap = spec.max_delay.map_or(Duration::from_secs(300), HumanDuration::get);
        for step in simulate(&*policy, seed, &classes, &run) {
            if let Some(d) = step.delay {
                prop_assert!(d <= cap, "{d:?} > {cap:?} at {step:?}");
            }
        }
    }

    #[test]
    fn the_total_budget_is_respected(spec in valid_spec(), (seed, classes, run) in failure_run()) {
        let policy = spec.compile(&RetryDefaults::default(), &registry()).unwrap();
        let Some(total) = spec.max_total.map(HumanDuration::get) else {
            return Ok(());
        };
        for step in simulate(&*policy, seed, &classes, &run) {
            if let Some(d) = step.delay {
                prop_assert!(step.elapsed + d <= total, "{step:?} exceeds {total:?}");
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_delays(
        spec in valid_spec(),
        (seed, classes, run) in failure_run(),
    ) {
        // Compiled twice, the second time from the spec's JSON form, as after
        // a restart that reloads the job from the store. (The reload is
        // lossless for the factors people write. For arbitrary 17-digit
        // factors, serde_json without its `float_roundtrip` feature may parse
        // back a value one ulp off.)
        let first = spec.compile(&RetryDefaults::default(), &registry()).unwrap();
        let reloaded: RetrySpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        prop_assert_eq!(&reloaded, &spec);
        let second = reloaded.compile(&RetryDefaults::default(), &registry()).unwrap();
        prop_assert_eq!(
            simulate(&*first, seed, &classes, &run),
            simulate(&*second, seed, &classes, &run)
        );
    }

    #[test]
    fn non_retryable_classes_never_retry(
        spec in valid_spec(),
        seed in any::<u64>(),
        attempt in 0..20u32,
        elapsed in 0..1_000_000u64,
    ) {
        let policy = spec.compile(&RetryDefaults::default(), &registry()).unwrap();
        for class in FailureClass::ALL {
            let entry_says_never = spec
                .per_class
                .get(&class)
                .is_some_and(|e| matches!(e.backoff, Some(Backoff::Never {})));
            if !retried_by(&spec, class) || entry_says_never {
                let ctx = RetryContext::new(attempt, class, seed, ms(elapsed));
                prop_assert_eq!(policy.next_delay(&ctx), None, "{}", class);
            }
        }
    }

    #[test]
    fn attempts_never_exceed_max_attempts(
        spec in valid_spec(),
        (seed, classes, run) in failure_run(),
    ) {
        let policy = spec.compile(&RetryDefaults::default(), &registry()).unwrap();
        let steps = simulate(&*policy, seed, &classes, &run);
        let last = steps.last().unwrap();
        prop_assert!(last.delay.is_none(), "the policy never stopped");
        prop_assert!(last.attempt <= policy.max_attempts());
        // And the policy's own bound is no larger than a limit the spec (or
        // the defaults, or the custom policy) states.
        let stated = spec
            .per_class
            .values()
            .filter_map(|e| e.max_attempts)
            .chain(spec.max_attempts)
            .chain([RetryDefaults::default().max_attempts, Wild.max_attempts()])
            .max()
            .unwrap();
        prop_assert!(policy.max_attempts() <= stated);
        // Without per-class entries, an explicit top-level limit binds every
        // class (a custom policy's own limit can only lower it).
        if let (Some(limit), true) = (spec.max_attempts, spec.per_class.is_empty()) {
            prop_assert!(last.attempt <= limit);
        }
    }

    #[test]
    fn check_never_panics_and_agrees_with_compile(
        spec in wild_spec(),
        contexts in prop::collection::vec((any::<u32>(), class(), any::<u64>(), any::<u64>()), 8),
    ) {
        let mut problems = Vec::new();
        spec.check("/dag_definition/nodes/3/retry", &registry(), &mut problems);
        for p in &problems {
            prop_assert!(p.path.starts_with("/dag_definition/nodes/3/retry/"), "{}", p.path);
        }
        match spec.compile(&RetryDefaults::default(), &registry()) {
            Ok(policy) => {
                prop_assert!(problems.is_empty(), "compiled despite {problems:?}");
                let cap = spec.max_delay.map_or(Duration::from_secs(300), HumanDuration::get);
                for (attempt, class, seed, elapsed) in contexts {
                    let ctx = RetryContext::new(attempt, class, seed, ms(elapsed));
                    let delay = policy.next_delay(&ctx);
                    prop_assert!(delay.is_none_or(|d| d <= cap));
                    if class == FailureClass::Cancelled {
                        prop_assert_eq!(delay, None);
                    }
                }
            }
            Err(errors) => {
                // The same problems, relative to the spec.
                let relative: Vec<_> = problems
                    .iter()
                    .map(|p| p.path.trim_start_matches("/dag_definition/nodes/3/retry").to_owned())
                    .collect();
                let got: Vec<_> = errors.problems().iter().map(|p| p.path.clone()).collect();
                prop_assert!(!got.is_empty());
                prop_assert_eq!(got, relative);
            }
        }
    }
}
