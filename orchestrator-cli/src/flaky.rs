//! `orchestrator flaky`: the flakiness report of a store, most flaky first.
//!
//! The command reads the store's test histories directly (no executor):
//! every test is scored over all its kept runs, whoever owned them — the
//! command line has the store's whole view, like an admin of the API.

use orchestrator_core::flaky::{self, FlakyQuery, FlakyTest, Thresholds};
use orchestrator_core::store::HistoryQuery;

use crate::cli::FlakyArgs;
use crate::error::{CliError, EXIT_OK};
use crate::progress::Sink;
use crate::store::open_store;
use crate::summary::{pad, utc};

/// `orchestrator flaky`.
pub(crate) async fn flaky(args: FlakyArgs) -> Result<u8, CliError> {
    let store_name = args.store.store.to_string();
    let store = open_store(&args.store.store).await?;
    let mut query = FlakyQuery {
        job_name: args.job_name,
        prefix: args.prefix,
        min_score: args.min_score,
        limit: HistoryQuery::MAX_LIMIT,
        ..FlakyQuery::default()
    };
    let thresholds = Thresholds::default();
    let mut tests = Vec::new();
    loop {
        let page = flaky::report(&*store, &query, &thresholds)
            .await
            .map_err(|e| CliError::from_store(e, &store_name))?;
        tests.extend(page.tests);
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => break,
        }
    }
    sort(&mut tests);
    if args.json {
        let body = serde_json::json!({ "tests": tests });
        Sink::Stdout.line(
            &serde_json::to_string_pretty(&body)
                .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string())),
        );
        return Ok(EXIT_OK);
    }
    if tests.is_empty() {
        Sink::Stdout.line(&format!(
            "no test history in store {store_name} (outcomes are recorded when jobs finish)"
        ));
        return Ok(EXIT_OK);
    }
    Sink::Stdout.text(&table(&tests));
    Ok(EXIT_OK)
}

/// Most flaky first, then most failing, then by key.
fn sort(tests: &mut [FlakyTest]) {
    tests.sort_by(|a, b| {
        b.score
            .flip_rate
            .total_cmp(&a.score.flip_rate)
            .then(b.score.fail_rate.total_cmp(&a.score.fail_rate))
            .then_with(|| a.key.cmp(&b.key))
    });
}

/// The report as a table.
fn table(tests: &[FlakyTest]) -> String {
    let w = tests
        .iter()
        .map(|t| t.key.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 60);
    let mut out = format!(
        "{}  CLASS    SCORE  FAILED  RUNS  FLAKY RUNS  QUARANTINED  LAST RUN\n",
        pad("TEST", w)
    );
    for t in tests {
        let s = &t.score;
        let last = format!(
            "{} {} ({})",
            if t.last_run.passed {
                "passed"
            } else {
                "failed"
            },
            utc(t.last_run.at),
            t.last_run.job
        );
        out.push_str(&format!(
            "{}  {:<7}  {:>5.2}  {:>5.0}%  {:>4}  {:>10}  {:>11}  {last}\n",
            pad(&t.key, w),
            s.class.as_str(),
            s.flip_rate,
            s.fail_rate * 100.0,
            s.runs,
            s.flaky_runs,
            t.quarantined_runs,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_core::flaky::{score, RunOutcome};
    use orchestrator_core::Timestamp;

    fn test(key: &str, runs: &str) -> FlakyTest {
        let outcomes: Vec<RunOutcome> = runs
            .chars()
            .enumerate()
            .map(|(i, c)| RunOutcome {
                job: format!("j{i}").parse().unwrap(),
                job_name: "ci".into(),
                owner: "local".into(),
                at: Timestamp(i as u64),
                passed: c != 'F',
                flaky: c == 'f',
                attempts: 1,
                quarantined: false,
            })
            .collect();
        FlakyTest {
            key: key.into(),
            score: score(&outcomes, &Thresholds::default()),
            quarantined_runs: 0,
            last_run: outcomes.last().cloned().unwrap(),
        }
    }

    #[test]
    fn most_flaky_first_in_a_table() {
        let mut tests = vec![
            test("ci/b", "PPPP"),
            test("ci/a", "PFPF"),
            test("ci/c", "FFFF"),
        ];
        sort(&mut tests);
        let keys: Vec<&str> = tests.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["ci/a", "ci/c", "ci/b"]);
        let text = table(&tests);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("TEST  CLASS    SCORE"), "{text}");
        assert!(
            lines[1].starts_with("ci/a  flaky     0.75     50%     4"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("ci/c  failing   0.00    100%     4"),
            "{text}"
        );
    }
}
