//! `orchestrator policy list|show|create`, plans naming stored policies in
//! `validate` and `run`, and breaker transitions in `run`'s progress
//! output. The binary runs as a real process against a sled store in a
//! temp directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn orchestrator() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
    for var in [
        "DATABASE_URL",
        "MAX_CONCURRENT_NODES",
        "DEFAULT_RETRY_ATTEMPTS",
        "MAX_RETRY_DELAY",
        "JOB_TIMEOUT",
        "ORCHESTRATOR_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("NO_COLOR", "1").stdin(Stdio::null());
    cmd
}

fn run(args: &[&str]) -> Output {
    orchestrator().args(args).output().expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/policies")
        .join(name)
        .display()
        .to_string()
}

/// `farm@VERSION` allowing `attempts` attempts, retried at once.
fn policy_yaml(version: u32, attempts: u32) -> String {
    format!(
        "name: farm\nversion: {version}\ndescription: farm v{version}\nretry:\n  max_attempts: {attempts}\n  backoff: {{kind: fixed, delay: 0ms}}\n"
    )
}

#[test]
fn create_list_and_show_policies_with_immutable_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sled:{}", dir.path().join("store").display());
    let s = store.as_str();

    let out = run(&["policy", "list", "--store", s]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("no policies in store"));

    let v1 = write(dir.path(), "v1.yaml", &policy_yaml(1, 4));
    let v1 = v1.to_str().unwrap();
    let out = run(&["policy", "create", v1, "--store", s]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("policy farm@1 stored"));
    // Again, identical: harmless.
    let out = run(&["policy", "create", v1, "--store", s]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("unchanged"),
        "{}",
        text(&out.stdout)
    );
    // Same version, different content: refused, the stored one kept.
    let changed = write(dir.path(), "changed.yaml", &policy_yaml(1, 9));
    let out = run(&["policy", "create", changed.to_str().unwrap(), "--store", s]);
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    // Invalid: every problem with its path and code.
    let bad = write(
        dir.path(),
        "bad.yaml",
        "name: farm\nversion: 0\nretry: {max_attempts: 0}\n",
    );
    let out = run(&["policy", "create", bad.to_str().unwrap(), "--store", s]);
    assert_eq!(code(&out), 2);
    let err = text(&out.stderr);
    assert!(err.contains("is not a valid policy: 2 problems"), "{err}");
    assert!(
        err.contains("/version: ") && err.contains("(invalid_policy)"),
        "{err}"
    );
    assert!(err.contains("/retry/max_attempts: "), "{err}");
    let unknown = write(
        dir.path(),
        "unknown.yaml",
        "name: farm\nversion: 3\ncolour: red\n",
    );
    let out = run(&["policy", "create", unknown.to_str().unwrap(), "--store", s]);
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stderr).contains("colour"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["policy", "create", "/nonexistent/p.yaml", "--store", s]);
    assert_eq!(code(&out), 2);

    // Version 2 as JSON.
    let v2 = write(
        dir.path(),
        "v2.json",
        r#"{"name": "farm", "version": 2, "retry": {"max_attempts": 5}}"#,
    );
    let out = run(&["policy", "create", v2.to_str().unwrap(), "--store", s]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));

    let out = run(&["policy", "list", "--store", s]);
    let listed = text(&out.stdout);
    assert!(listed.starts_with("POLICY"), "{listed}");
    assert!(
        listed.contains("farm@2") && !listed.contains("farm@1"),
        "{listed}"
    );
    let out = run(&["policy", "list", "--all", "--json", "--store", s]);
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    let versions: Vec<u64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(all[0]["retry"]["max_attempts"], 4);

    let out = run(&["policy", "show", "farm", "--json", "--store", s]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["version"], 2);
    let out = run(&["policy", "show", "farm@1", "--store", s]);
    assert_eq!(code(&out), 0);
    assert!(
        text(&out.stdout).contains("version: 1"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&["policy", "show", "farm@7", "--store", s]);
    assert_eq!(code(&out), 2);
    assert!(text(&out.stderr).contains("no policy farm@7"));
    let out = run(&["policy", "show", "farm@0", "--store", s]);
    assert_eq!(code(&out), 2);
}

#[test]
fn plans_naming_stored_policies_validate_and_run_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sled:{}", dir.path().join("store").display());
    let s = store.as_str();
    let v1 = write(dir.path(), "v1.yaml", &policy_yaml(1, 4));
    assert_eq!(
        code(&run(&[
            "policy",
            "create",
            v1.to_str().unwrap(),
            "--store",
            s
        ])),
        0
    );

    // Fails three times, then succeeds: the default policy (3 attempts)
    // would fail the job, farm@1 (4 attempts) passes it.
    let counter = dir.path().join("count");
    let script = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); echo $((n+1)) > {c}; [ \"$n\" -ge 3 ]",
        c = counter.display()
    );
    let plan = write(
        dir.path(),
        "plan.json",
        &serde_json::json!({"name": "farm", "policy": "farm", "dag_definition": {"nodes": [
            {"id": "flaky", "type": "process", "params": {"command": "sh", "args": ["-c", script]}}
        ]}})
        .to_string(),
    );
    let plan = plan.to_str().unwrap();
    let out = run(&["validate", plan, "--store", s]);
    assert_eq!(code(&out), 0, "{}{}", text(&out.stdout), text(&out.stderr));

    let out = run(&["run", plan, "--store", s, "--json", "--no-progress"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], "succeeded");
    assert_eq!(status["nodes"][0]["attempts"], 4);

    // An unknown policy: exit 2 with the problem's path and code, in
    // `validate` and `run` alike.
    let ghost = write(
        dir.path(),
        "ghost.yaml",
        "name: g\npolicy: ghost@2\ndag_definition:\n  nodes:\n    - {id: a, type: noop}\n",
    );
    let ghost = ghost.to_str().unwrap();
    let out = run(&["validate", ghost, "--store", s]);
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stdout).contains("/policy: no stored policy ghost@2 (unknown_policy)"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&["run", ghost, "--store", s]);
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stderr).contains("(unknown_policy)"),
        "{}",
        text(&out.stderr)
    );

    // The example policy file is valid, and so is its plan once it is stored.
    let out = run(&[
        "policy",
        "create",
        &example("farm.yaml"),
        "--store",
        "memory",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let other = format!("sled:{}", dir.path().join("examples").display());
    assert_eq!(
        code(&run(&[
            "policy",
            "create",
            &example("farm.yaml"),
            "--store",
            &other
        ])),
        0
    );
    let out = run(&["validate", &example("plan.yaml"), "--store", &other]);
    assert_eq!(code(&out), 0, "{}{}", text(&out.stdout), text(&out.stderr));
}

#[test]
fn run_shows_breaker_transitions_and_the_nodes_waiting() {
    let dir = tempfile::tempdir().unwrap();
    // n1 and n2 fail and open the breaker; n3 waits for its half-open trial.
    let plan = write(
        dir.path(),
        "breaker.yaml",
        "name: farm
classify: [{name: farm-down, exit_codes: [1], class: infrastructure}]
breakers:
  farm: {failure_rate: 1.0, window: {kind: count, calls: 2}, min_calls: 2, open_for: 200ms, half_open_calls: 1}
dag_definition:
  nodes:
    - {id: n1, type: process, dependency: farm, params: {command: 'false'}, retry: {max_attempts: 1}}
    - {id: n2, type: process, dependency: farm, params: {command: 'false'}, retry: {max_attempts: 1}}
    - {id: n3, type: process, dependency: farm, params: {command: 'true'}, depends_on: [n1, n2], trigger: all_done}
",
    );
    let out = run(&[
        "run",
        plan.to_str().unwrap(),
        "--store",
        "memory",
        "--no-progress",
    ]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{stdout}"))
    };
    let opened = at("farm: 2 of 2 calls failed; its ready nodes wait");
    assert!(lines[opened].contains("breaker.opened"));
    let half = at("farm: trial calls");
    let closed = at("farm: calls go through");
    assert!(opened < half && half < closed, "{stdout}");
}
