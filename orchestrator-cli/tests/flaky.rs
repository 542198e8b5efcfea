//! `orchestrator flaky` end to end: runs of a plan with a flaky, a broken
//! and a quarantined step are recorded in a sled store, and the report
//! scores them; the run's summary and JUnit report mark the quarantined
//! step.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn orchestrator(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
    for var in ["DATABASE_URL", "ORCHESTRATOR_LOG"] {
        cmd.env_remove(var);
    }
    cmd.env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A plan whose `wobbly` step fails on every other attempt (a marker file
/// flips), `broken` always fails, and `known-bad` always fails but is
/// quarantined.
fn plan(dir: &Path) -> std::path::PathBuf {
    let marker = dir.join("marker");
    let plan = format!(
        r#"name: suite
retry: {{max_attempts: 2, backoff: {{kind: fixed, delay: 0s}}}}
flaky: {{quarantine: {{tests: [suite/known-bad]}}}}
dag_definition:
  nodes:
    - id: wobbly
      type: process
      params: {{command: sh, args: ["-c", "if [ -e '{m}' ]; then rm '{m}'; else touch '{m}'; exit 1; fi"]}}
    - id: broken
      type: process
      params: {{command: sh, args: ["-c", "exit 3"]}}
      retry: {{max_attempts: 1}}
    - id: known-bad
      type: process
      params: {{command: sh, args: ["-c", "exit 4"]}}
      retry: {{max_attempts: 1}}
"#,
        m = marker.display()
    );
    let path = dir.join("plan.yaml");
    std::fs::write(&path, plan).unwrap();
    path
}

#[test]
fn flaky_report_scores_recorded_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sled:{}", dir.path().join("db").display());
    let plan = plan(dir.path());
    let junit = dir.path().join("junit.xml");
    for i in 0..3 {
        let mut args = vec![
            "run",
            plan.to_str().unwrap(),
            "--store",
            &store,
            "--no-progress",
        ];
        let junit_arg = junit.to_str().unwrap().to_owned();
        if i == 0 {
            args.extend(["--junit", &junit_arg]);
        }
        let out = orchestrator(&args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "broken fails the job: {}",
            text(&out.stderr)
        );
        if i == 0 {
            let stdout = text(&out.stdout);
            assert!(stdout.contains("failed (quarantined)"), "{stdout}");
            assert!(stdout.contains("(1 flaky)"), "{stdout}");
        }
    }
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains(r#"type="quarantined""#), "{xml}");
    assert!(
        xml.contains(r#"<property name="quarantined" value="true"/>"#),
        "{xml}"
    );

    let out = orchestrator(&["flaky", "--store", &store, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tests = report["tests"].as_array().unwrap();
    let row = |key: &str| {
        tests
            .iter()
            .find(|t| t["key"] == key)
            .unwrap_or_else(|| panic!("no {key} in {report}"))
    };
    // Every run of `wobbly` failed then passed: three flips in three runs.
    assert_eq!(row("suite/wobbly")["score"]["flips"], 3);
    assert_eq!(row("suite/wobbly")["score"]["flip_rate"], 1.0);
    assert_eq!(row("suite/wobbly")["score"]["class"], "flaky");
    assert_eq!(row("suite/broken")["score"]["class"], "failing");
    assert_eq!(row("suite/known-bad")["quarantined_runs"], 3);
    // Most flaky first.
    assert_eq!(tests[0]["key"], "suite/wobbly");

    let out = orchestrator(&["flaky", "--store", &store, "--min-score", "0.5"]);
    let table = text(&out.stdout);
    assert!(table.starts_with("TEST"), "{table}");
    assert!(
        table.contains("suite/wobbly") && !table.contains("suite/broken"),
        "{table}"
    );
    let out = orchestrator(&["flaky", "--store", &store, "--min-score", "2"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}
