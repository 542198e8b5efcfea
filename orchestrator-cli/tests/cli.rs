//! End-to-end tests of the `orchestrator` binary: exit codes, `--json`,
//! JUnit reports, `validate`, `graph`, `jobs`, Ctrl-C and `resume` after a
//! kill. Plans are small and sleep briefly, so the suite stays fast. The
//! binary runs as a real process, so waits on it are bounded polls.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use quick_junit::{NonSuccessKind, Report, TestCaseStatus};
use serde_json::Value;

/// Generous bound for anything that should take a second or two, so a
/// loaded machine does not make the suite flaky.
const PATIENCE: Duration = Duration::from_secs(60);

fn plan(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/plans")
        .join(name)
}

/// The binary, with none of the configuration variables of the machine
/// running the tests.
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

fn node<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("no node {id} in {status}"))
}

/// A running `orchestrator`, its output read line by line.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    other: std::thread::JoinHandle<String>,
}

impl Running {
    /// Starts `args`, following stdout (`follow_stderr` false) or stderr
    /// line by line; the other stream is collected whole.
    fn start(args: &[&str], follow_stderr: bool) -> Self {
        let mut child = orchestrator()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (followed, mut other): (Box<dyn Read + Send>, Box<dyn Read + Send>) = if follow_stderr {
            (
                Box::new(child.stderr.take().unwrap()),
                Box::new(child.stdout.take().unwrap()),
            )
        } else {
            (
                Box::new(child.stdout.take().unwrap()),
                Box::new(child.stderr.take().unwrap()),
            )
        };
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(followed).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let other = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = other.read_to_string(&mut s);
            s
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
            other,
        }
    }

    /// Waits for a followed line containing `needle` and returns it.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; saw:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }

    /// Waits for the process to end: its exit status, every followed line,
    /// and the other stream.
    fn finish(mut self) -> (std::process::ExitStatus, String, String) {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the process did not end");
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        let other = self.other.join().unwrap();
        (status, self.seen.join("\n"), other)
    }
}

/// The job id from a `job ID submitted: …` line.
fn job_id(line: &str) -> String {
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("job"), "{line}");
    words.next().unwrap().to_owned()
}

const LONG_PLAN: &str = "
name: long
dag_definition:
  nodes:
    - {id: quick, type: process, params: {command: 'true'}}
    - id: slow
      type: process
      depends_on: [quick]
      params: {shell: true, command: 'echo started; sleep 30'}
    - {id: after, type: noop, depends_on: [slow]}
";

#[test]
fn quickstart_succeeds_with_a_flaky_node_in_json_and_junit() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("reports/junit.xml");
    let out = run(&[
        "run",
        plan("quickstart.yaml").to_str().unwrap(),
        "--store",
        "memory",
        "--json",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(code(&out), 0, "{stderr}");

    // stdout is the final status, and only that.
    let status: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(status["state"], "succeeded");
    assert_eq!(status["nodes_total"], 7);
    assert_eq!(status["nodes_finished"], 7);
    assert_eq!(node(&status, "unit-network")["attempts"], 2);
    assert_eq!(node(&status, "lint")["attempts"], 1);
    assert_eq!(node(&status, "report")["state"], "succeeded");
    // Events went to stderr, one per line, the job id first.
    let id = status["id"].as_str().unwrap();
    assert!(
        stderr.starts_with(&format!("job {id} submitted: quickstart")),
        "{stderr}"
    );
    assert!(
        stderr.contains("node.retry_scheduled  unit-network  attempt 1"),
        "{stderr}"
    );
    assert!(stderr.contains("execution.completed"), "{stderr}");

    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("<flakyFailure"), "{xml}");
    let report = Report::deserialize_from_str(&xml).expect("valid JUnit XML");
    assert_eq!(report.test_suites.len(), 1);
    let suite = &report.test_suites[0];
    assert_eq!(suite.name.as_str(), "quickstart");
    assert_eq!(suite.test_cases.len(), 7);
    assert_eq!((suite.failures, suite.errors, suite.skipped), (0, 0, 0));
    for case in &suite.test_cases {
        assert_eq!(case.classname.as_ref().unwrap().as_str(), "quickstart");
        assert!(case.time.is_some(), "{case:?}");
        let TestCaseStatus::Success { flaky_runs } = &case.status else {
            panic!("{} did not pass: {:?}", case.name.as_str(), case.status);
        };
        if case.name.as_str() == "unit-network" {
            assert_eq!(flaky_runs.len(), 1, "{case:?}");
            let run = &flaky_runs[0];
            assert_eq!(run.kind, NonSuccessKind::Failure);
            assert_eq!(run.ty.as_ref().unwrap().as_str(), "unknown");
            assert!(run
                .message
                .as_ref()
                .unwrap()
                .as_str()
                .starts_with("attempt 1: "));
            assert!(run
                .system_err
                .as_ref()
                .unwrap()
                .as_str()
                .contains("connection reset by peer"));
            assert!(case
                .system_out
                .as_ref()
                .unwrap()
                .as_str()
                .contains("attempt 2"));
        } else {
            assert!(flaky_runs.is_empty(), "{case:?}");
        }
    }
}

#[test]
fn a_failing_plan_exits_1_with_upstream_failed_and_skipped_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let out = run(&[
        "run",
        plan("failing.yaml").to_str().unwrap(),
        "--store",
        "memory",
        "--no-progress",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(code(&out), 1, "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("node.failed           unit"), "{stdout}");
    assert!(
        stdout.contains("stderr | assertion failed: expected 200, got 500"),
        "{stdout}"
    );
    assert!(stdout.contains("node.upstream_failed  e2e"), "{stdout}");
    assert!(
        stdout.contains("node.skipped          rollback"),
        "{stdout}"
    );
    assert!(stdout.contains("execution.failed"), "{stdout}");
    // The summary table and totals line.
    let table: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("NODE "))
        .collect();
    assert!(
        table[0].contains("STATUS") && table[0].contains("LAST ERROR"),
        "{stdout}"
    );
    let row = |id: &str| {
        *table
            .iter()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("no row for {id}"))
    };
    assert!(row("unit").contains(" failed "), "{stdout}");
    assert!(row("e2e").contains("upstream_failed"), "{stdout}");
    assert!(
        row("deploy-preview").contains("upstream_failed"),
        "{stdout}"
    );
    assert!(row("rollback").contains("skipped"), "{stdout}");
    assert!(row("cleanup").contains("succeeded"), "{stdout}");
    let totals = table.iter().find(|l| l.starts_with("job ")).unwrap();
    assert!(totals.contains(" failed in "), "{totals}");
    assert!(
        totals.contains("7 nodes, 3 succeeded, 1 failed, 1 skipped, 2 upstream_failed; 4 attempts"),
        "{totals}"
    );

    let report = Report::deserialize_from_str(&std::fs::read_to_string(&junit).unwrap()).unwrap();
    let suite = &report.test_suites[0];
    assert_eq!((suite.failures, suite.skipped), (1, 3));
    let unit = suite
        .test_cases
        .iter()
        .find(|c| c.name.as_str() == "unit")
        .unwrap();
    let TestCaseStatus::NonSuccess { kind, ty, .. } = &unit.status else {
        panic!("unit did not fail: {unit:?}");
    };
    assert_eq!(*kind, NonSuccessKind::Failure);
    assert_eq!(ty.as_ref().unwrap().as_str(), "unknown");
    assert!(unit
        .system_err
        .as_ref()
        .unwrap()
        .as_str()
        .contains("assertion failed"));
    let e2e = suite
        .test_cases
        .iter()
        .find(|c| c.name.as_str() == "e2e")
        .unwrap();
    assert!(
        matches!(e2e.status, TestCaseStatus::Skipped { .. }),
        "{e2e:?}"
    );
}

#[test]
fn invalid_plans_and_usage_exit_2() {
    let dir = tempfile::tempdir().unwrap();

    let out = run(&[
        "run",
        plan("cycle.yaml").to_str().unwrap(),
        "--store",
        "memory",
    ]);
    assert_eq!(code(&out), 2);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("dependency cycle") && stderr.contains("(cycle)"),
        "{stderr}"
    );

    let typo = write(
        dir.path(),
        "typo.json",
        r#"{"name": "x", "dag_definition": {"nodes": [{"id": "a", "type": "noop", "depnds_on": []}]}}"#,
    );
    let out = run(&["run", typo.to_str().unwrap(), "--store", "memory"]);
    assert_eq!(code(&out), 2);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("/dag_definition/nodes/0/depnds_on") && stderr.contains("(unknown_field)"),
        "{stderr}"
    );

    let unknown_type = write(
        dir.path(),
        "unknown.yaml",
        "name: x\ndag_definition:\n  nodes:\n    - {id: a, type: selenium}\n",
    );
    let out = run(&["run", unknown_type.to_str().unwrap(), "--store", "memory"]);
    assert_eq!(code(&out), 2);
    assert!(text(&out.stderr).contains("(unknown_node_type)"));

    let missing = dir.path().join("missing.yaml");
    assert_eq!(
        code(&run(&[
            "run",
            missing.to_str().unwrap(),
            "--store",
            "memory"
        ])),
        2
    );
    assert_eq!(code(&run(&["run"])), 2);
    assert_eq!(code(&run(&["run", "x.yaml", "--bogus"])), 2);
    assert_eq!(code(&run(&["frobnicate"])), 2);
    let out = run(&["run", "x.yaml", "--store", "postgres://db"]);
    assert_eq!(code(&out), 2);
    assert!(text(&out.stderr).contains("expected `memory`, `sled:PATH` or `mongodb://…`"));
    let out = orchestrator()
        .args(["run", "x.yaml", "--store", "memory"])
        .env("MAX_CONCURRENT_NODES", "none")
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", text(&out.stderr));
}

#[test]
fn an_unreachable_mongodb_is_reported_and_its_password_never_shows() {
    let quick = plan("quickstart.yaml");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("mongodb://user:secret@127.0.0.1:{port}/jobs?serverSelectionTimeoutMS=300");
    let out = run(&["run", quick.to_str().unwrap(), "--store", &url]);
    assert_eq!(code(&out), 3);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("unavailable"), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");
}

/// `MONGODB_URI` with its database replaced by `db`.
fn with_database(uri: &str, db: &str) -> String {
    let (base, query) = uri
        .split_once('?')
        .map_or((uri, None), |(b, q)| (b, Some(q)));
    let (scheme, rest) = base.split_once("://").unwrap_or(("mongodb", base));
    let hosts = rest.split('/').next().unwrap_or(rest);
    match query {
        Some(q) => format!("{scheme}://{hosts}/{db}?{q}"),
        None => format!("{scheme}://{hosts}/{db}"),
    }
}

#[test]
fn mongodb_runs_a_plan_and_lists_it() {
    // The MongoDB crate's tests say when and why they skip; this one
    // follows them quietly.
    let Some(uri) = std::env::var("MONGODB_URI").ok().filter(|u| !u.is_empty()) else {
        return;
    };
    let url = with_database(&uri, &format!("orchcli_{}", std::process::id()));
    let quick = plan("quickstart.yaml");
    let out = run(&["run", quick.to_str().unwrap(), "--store", &url, "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let out = run(&["jobs", "list", "--store", &url]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("quickstart"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn the_default_store_is_sled_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = orchestrator()
        .args(["jobs", "list"])
        .env_remove("DATABASE_URL")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(dir.path().join(".orchestrator").is_dir());
}

#[test]
fn the_environment_configures_the_store_and_the_executor() {
    let dir = tempfile::tempdir().unwrap();
    // DATABASE_URL picks the store when --store is not given.
    let quick = write(
        dir.path(),
        "quick.json",
        r#"{"name": "quick", "dag_definition": {"nodes": [{"id": "a", "type": "noop"}]}}"#,
    );
    let out = orchestrator()
        .args(["run", quick.to_str().unwrap(), "--json"])
        .env("DATABASE_URL", "memory")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));

    // JOB_TIMEOUT (seconds) applies to a plan that sets no timeout.
    let slow = write(
        dir.path(),
        "slow.yaml",
        "name: slow\ndag_definition:\n  nodes:\n    - {id: nap, type: sleep, params: {duration: 30s}}\n",
    );
    let started = Instant::now();
    let out = orchestrator()
        .args(["run", slow.to_str().unwrap(), "--store", "memory", "--json"])
        .env("JOB_TIMEOUT", "1")
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], "timed_out");
    assert!(started.elapsed() < Duration::from_secs(25));
}

#[test]
fn plans_can_come_from_standard_input() {
    let mut child = orchestrator()
        .args(["run", "-", "--store", "memory", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        br#"{"name": "piped", "dag_definition": {"nodes": [{"id": "a", "type": "process", "params": {"command": "echo", "args": ["hi"]}}]}}"#,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(node(&status, "a")["output"]["stdout"], "hi\n");
}

#[test]
fn validate_reports_the_cycle_path_and_code() {
    let out = run(&["validate", plan("cycle.yaml").to_str().unwrap()]);
    assert_eq!(code(&out), 2);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("is not a valid job: 1 problem"), "{stdout}");
    let problem = stdout.lines().nth(1).unwrap();
    assert!(problem.starts_with("  /dag_definition/nodes/"), "{problem}");
    assert!(problem.ends_with("(cycle)"), "{problem}");
    for id in ["integration", "deploy", "smoke"] {
        assert!(problem.contains(id), "{problem}");
    }
    assert!(problem.contains(" -> "), "{problem}");

    let out = run(&["validate", plan("cycle.yaml").to_str().unwrap(), "--json"]);
    assert_eq!(code(&out), 2);
    let problems: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(problems[0]["code"], "cycle");
    assert!(problems[0]["path"]
        .as_str()
        .unwrap()
        .starts_with("/dag_definition/nodes/"));
}

#[test]
fn validate_describes_a_valid_dag() {
    let out = run(&["validate", plan("quickstart.yaml").to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("valid job \"quickstart\""), "{stdout}");
    assert!(
        stdout.contains("  nodes          7 (process: 7)"),
        "{stdout}"
    );
    assert!(stdout.contains("  edges          9"), "{stdout}");
    assert!(
        stdout.contains("  depth          4 levels (widest: 4 nodes)"),
        "{stdout}"
    );
    let critical = stdout
        .lines()
        .find(|l| l.contains("critical path"))
        .unwrap();
    assert!(critical.contains("lint -> unit-"), "{critical}");
    assert!(
        critical.ends_with("-> integration -> report (4 nodes)"),
        "{critical}"
    );

    let out = run(&[
        "validate",
        plan("quickstart.yaml").to_str().unwrap(),
        "--json",
    ]);
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            d["nodes"].as_u64(),
            d["edges"].as_u64(),
            d["depth"].as_u64()
        ),
        (Some(7), Some(9), Some(4))
    );
    assert_eq!(d["critical_path"].as_array().unwrap().len(), 4);

    // Parse errors are problems too, with their path and code.
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.yaml",
        "name: x\ndag_definition:\n  nodes: 3\n",
    );
    let out = run(&["validate", bad.to_str().unwrap()]);
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stdout).contains("/dag_definition/nodes: "),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("(invalid_type)"));
}

#[test]
fn graph_prints_dot_and_mermaid() {
    let quick = plan("quickstart.yaml");
    let out = run(&["graph", quick.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let dot = text(&out.stdout);
    assert!(dot.starts_with("digraph \"quickstart\" {"), "{dot}");
    assert_eq!(dot.matches(" [label=").count(), 7, "{dot}");
    assert_eq!(dot.matches(" -> ").count(), 9, "{dot}");
    assert!(dot.contains("n0 [label=\"lint\\nprocess\"];"), "{dot}");
    assert!(dot.contains("penwidth"), "the critical path is bold: {dot}");
    assert!(dot.trim_end().ends_with('}'));

    let out = run(&["graph", quick.to_str().unwrap(), "--format", "mermaid"]);
    assert_eq!(code(&out), 0);
    let mermaid = text(&out.stdout);
    assert!(mermaid.contains("flowchart LR\n"), "{mermaid}");
    assert_eq!(mermaid.matches(" --> ").count(), 9, "{mermaid}");
    assert!(
        mermaid.contains("  n0[\"lint<br/><small>process</small>\"]"),
        "{mermaid}"
    );

    assert_eq!(
        code(&run(&["graph", quick.to_str().unwrap(), "--format", "png"])),
        2
    );
    assert_eq!(
        code(&run(&["graph", plan("cycle.yaml").to_str().unwrap()])),
        2
    );
    // A job the store does not have.
    let out = run(&["graph", "--job", "01JNOSUCHJOB", "--store", "memory"]);
    assert_eq!(code(&out), 2);
    assert!(text(&out.stderr).contains("not found"));
}

#[test]
fn jobs_commands_on_the_memory_store_explain_it_is_empty() {
    let out = run(&["jobs", "list", "--store", "memory"]);
    assert_eq!(code(&out), 0);
    assert!(text(&out.stdout).contains("no jobs in store memory"));
    let out = run(&["jobs", "list", "--store", "memory", "--json"]);
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["jobs"], serde_json::json!([]));
    for cmd in ["show", "cancel"] {
        let out = run(&["jobs", cmd, "01JNOSUCHJOB", "--store", "memory"]);
        assert_eq!(code(&out), 2, "{cmd}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("job 01JNOSUCHJOB not found in store memory"),
            "{stderr}"
        );
        assert!(stderr.contains("starts empty in every process"), "{stderr}");
    }
    let out = run(&["resume", "--store", "memory"]);
    assert_eq!(code(&out), 0);
    assert!(text(&out.stdout).contains("nothing to resume"));
    assert_eq!(
        code(&run(&["resume", "01JNOSUCHJOB", "--store", "memory"])),
        2
    );
    assert_eq!(
        code(&run(&[
            "jobs", "list", "--store", "memory", "--state", "done"
        ])),
        2
    );
}

#[test]
fn every_command_has_help_with_examples() {
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["resume", "--help"],
        &["validate", "--help"],
        &["graph", "--help"],
        &["jobs", "--help"],
        &["jobs", "list", "--help"],
        &["jobs", "show", "--help"],
        &["jobs", "cancel", "--help"],
        &["serve", "--help"],
        &["token", "--help"],
    ] {
        let out = run(args);
        assert_eq!(code(&out), 0, "{args:?}");
        let help = text(&out.stdout);
        assert!(help.contains("Examples:"), "{args:?}:\n{help}");
        assert!(help.contains("orchestrator "), "{args:?}");
    }
    let help = text(&run(&["run", "--help"]).stdout);
    for flag in [
        "--store",
        "--junit",
        "--json",
        "--no-progress",
        "MAX_CONCURRENT_NODES",
        "DEFAULT_RETRY_ATTEMPTS",
        "MAX_RETRY_DELAY",
        "JOB_TIMEOUT",
        "DATABASE_URL",
    ] {
        assert!(help.contains(flag), "run --help lacks {flag}:\n{help}");
    }
}

#[test]
fn ctrl_c_cancels_the_job_and_journals_it() {
    let dir = tempfile::tempdir().unwrap();
    let long = write(dir.path(), "long.yaml", LONG_PLAN);
    // Events on stderr, the final status as JSON on stdout.
    let mut run = Running::start(
        &["run", long.to_str().unwrap(), "--store", "memory", "--json"],
        true,
    );
    let id = job_id(&run.wait_for("submitted"));
    run.wait_for("node.started          slow");
    let started = Instant::now();
    run.signal("-INT");
    let (status, events, stdout) = run.finish();
    assert_eq!(status.code(), Some(1), "{events}");
    // SIGTERM ends `sleep` at once: no need to wait for the kill grace.
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        events.contains("execution.cancelling  interrupted (Ctrl-C)"),
        "{events}"
    );
    assert!(events.contains("execution.cancelled"), "{events}");
    let status: Value = serde_json::from_str(&stdout).expect("final status on stdout");
    assert_eq!(status["id"], id.as_str());
    assert_eq!(status["state"], "cancelled");
    assert_eq!(status["cancel_reason"], "interrupted (Ctrl-C)");
    assert_eq!(node(&status, "quick")["state"], "succeeded");
    assert_eq!(node(&status, "slow")["state"], "cancelled");
    assert_eq!(node(&status, "slow")["last_error"]["class"], "cancelled");
    assert_eq!(node(&status, "after")["state"], "cancelled");
    assert!(status["finished_at"].is_u64());
}

#[test]
fn a_second_ctrl_c_stops_at_once_and_kills_running_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    // The node ignores SIGTERM, so a graceful stop takes the process
    // runner's whole kill grace.
    let stubborn = write(
        dir.path(),
        "stubborn.yaml",
        &format!(
            "name: stubborn\ndag_definition:\n  nodes:\n    - id: stubborn\n      type: process\n      params:\n        shell: true\n        command: \"trap '' TERM; echo $$ > {}; echo started; sleep 30\"\n",
            pid_file.display()
        ),
    );
    let mut run = Running::start(
        &[
            "run",
            stubborn.to_str().unwrap(),
            "--store",
            "memory",
            "--no-progress",
        ],
        false,
    );
    run.wait_for("node.started");
    let deadline = Instant::now() + PATIENCE;
    while !pid_file.exists()
        || std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .is_empty()
    {
        assert!(Instant::now() < deadline, "the node never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    run.signal("-INT");
    run.wait_for("execution.cancelling");
    run.signal("-INT");
    let (status, stdout, stderr) = run.finish();
    assert_eq!(status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("stopped without waiting"), "{stderr}");
    assert!(!stdout.contains("execution.cancelled"), "{stdout}");
    // The attempt's process group went with it.
    let deadline = Instant::now() + PATIENCE;
    while process_alive(&pid) {
        assert!(Instant::now() < deadline, "the node's shell {pid} survived");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether process `pid` still runs (a zombie waiting to be reaped does not).
fn process_alive(pid: &str) -> bool {
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        return stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'));
    }
    if Path::new("/proc/self/stat").exists() {
        return false;
    }
    Command::new("kill")
        .args(["-0", pid])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Runs `orchestrator … --store sled:DIR`.
fn sled(dir: &Path) -> String {
    format!("sled:{}", dir.join("store").display())
}

#[test]
fn resume_after_sigkill_does_not_rerun_succeeded_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let store = sled(dir.path());
    let runs = dir.path().join("first-runs");
    let slow_pid = dir.path().join("slow-pid");
    let plan = write(
        dir.path(),
        "resumable.yaml",
        &format!(
            "name: resumable
dag_definition:
  nodes:
    - id: first
      type: process
      params: {{shell: true, command: 'echo ran >> {runs}'}}
    - id: slow
      type: process
      depends_on: [first]
      params:
        shell: true
        command: 'echo $$ > {pid}; if [ \"$ORCHESTRATOR_ATTEMPT\" = 1 ]; then sleep 30; fi; echo done'
    - {{id: last, type: noop, depends_on: [slow]}}
",
            runs = runs.display(),
            pid = slow_pid.display()
        ),
    );
    let mut run = Running::start(
        &[
            "run",
            plan.to_str().unwrap(),
            "--store",
            &store,
            "--no-progress",
        ],
        false,
    );
    let id = job_id(&run.wait_for("submitted"));
    run.wait_for("node.started          slow");
    run.signal("-KILL");
    let (status, _, _) = run.finish();
    assert_eq!(status.code(), None, "killed by a signal");
    // The orphaned attempt is the crash's leftover, not the test's subject.
    if let Ok(pid) = std::fs::read_to_string(&slow_pid) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", pid.trim())])
            .status();
    }

    let out = run_with_store(&["jobs", "list"], &store);
    assert_eq!(code(&out), 0);
    assert!(text(&out.stdout).contains(&id), "{}", text(&out.stdout));

    let junit = dir.path().join("junit.xml");
    let out = run_with_store(
        &["resume", "--json", "--junit", junit.to_str().unwrap()],
        &store,
    );
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("resuming job {id}")), "{stderr}");
    assert!(stderr.contains("recovery.initiated"), "{stderr}");
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], "succeeded");
    assert_eq!(
        node(&status, "first")["attempts"],
        1,
        "succeeded nodes never run again"
    );
    assert_eq!(
        node(&status, "slow")["attempts"],
        2,
        "the interrupted attempt is retried"
    );
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "ran\n");
    let report = Report::deserialize_from_str(&std::fs::read_to_string(&junit).unwrap()).unwrap();
    assert_eq!(report.test_suites[0].test_cases.len(), 3);

    // Nothing is left to resume, and the store says how the job ended.
    let out = run_with_store(&["resume"], &store);
    assert_eq!(code(&out), 0);
    assert!(text(&out.stdout).contains("nothing to resume"));
    let out = run_with_store(&["jobs", "show", &id, "--json"], &store);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["state"], "succeeded");
    let out = run_with_store(&["resume", &id], &store);
    assert_eq!(code(&out), 2, "an already finished job");
}

fn run_with_store(args: &[&str], store: &str) -> Output {
    let mut all = args.to_vec();
    all.extend(["--store", store]);
    run(&all)
}

#[test]
fn ctrl_c_leaves_a_cancelled_job_in_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let store = sled(dir.path());
    let long = write(dir.path(), "long.yaml", LONG_PLAN);
    let mut run = Running::start(
        &[
            "run",
            long.to_str().unwrap(),
            "--store",
            &store,
            "--no-progress",
        ],
        false,
    );
    let id = job_id(&run.wait_for("submitted"));
    run.wait_for("node.started          slow");
    run.signal("-INT");
    let (status, _, _) = run.finish();
    assert_eq!(status.code(), Some(1));

    let out = run_with_store(&["jobs", "show", &id, "--events"], &store);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("execution.cancelling  interrupted (Ctrl-C)"),
        "{shown}"
    );
    assert!(shown.contains("execution.cancelled"), "{shown}");
    assert!(shown.contains("state cancelled"), "{shown}");
    let out = run_with_store(&["graph", "--job", &id, "--format", "mermaid"], &store);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let graph = text(&out.stdout);
    assert!(
        graph.contains("succeeded · 1 attempt\"]:::succeeded"),
        "{graph}"
    );
    assert!(graph.contains("classDef cancelled"), "{graph}");
    let out = run_with_store(&["jobs", "cancel", &id], &store);
    assert_eq!(code(&out), 2, "already finished");
}

#[test]
fn jobs_cancel_ends_an_interrupted_job_without_running_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = sled(dir.path());
    let long = write(dir.path(), "long.yaml", LONG_PLAN);
    let mut run = Running::start(
        &[
            "run",
            long.to_str().unwrap(),
            "--store",
            &store,
            "--no-progress",
        ],
        false,
    );
    let id = job_id(&run.wait_for("submitted"));
    run.wait_for("node.started          slow");
    run.signal("-KILL");
    run.finish();

    let out = run_with_store(&["jobs", "list", "--state", "running"], &store);
    assert!(text(&out.stdout).contains(&id), "{}", text(&out.stdout));
    let out = run_with_store(&["jobs", "cancel", &id, "--reason", "superseded"], &store);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("cancelled (superseded)"),
        "{}",
        text(&out.stdout)
    );
    let out = run_with_store(&["jobs", "show", &id, "--json"], &store);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["state"], "cancelled");
    assert_eq!(node(&shown, "slow")["attempts"], 1, "nothing ran again");
    assert_eq!(node(&shown, "quick")["state"], "succeeded");
    let out = run_with_store(&["resume"], &store);
    assert!(text(&out.stdout).contains("nothing to resume"));
}

/// One HTTP/1.1 request over a fresh connection: `(status, body)`.
fn http(addr: &str, method: &str, path: &str, token: &str, body: Option<&str>) -> (u16, String) {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (_, body) = response.split_once("\r\n\r\n").unwrap_or(("", ""));
    (status, body.to_owned())
}

/// The `host:port` of a `listening on http://…` line.
fn listening_addr(line: &str) -> String {
    let url = line.split_whitespace().nth(2).unwrap();
    url.trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn serve_refuses_to_start_without_a_secret_and_token_mints_one() {
    let out = orchestrator()
        .env_remove("JWT_SECRET_KEY")
        .args(["serve", "--store", "memory", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stderr).contains("JWT_SECRET_KEY"),
        "{}",
        text(&out.stderr)
    );
    let out = orchestrator()
        .env("JWT_SECRET_KEY", "short")
        .args(["serve", "--store", "memory"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(text(&out.stderr).contains("at least 32 bytes"));

    let out = orchestrator()
        .env_remove("JWT_SECRET_KEY")
        .args(["token", "--sub", "alice"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    let out = orchestrator()
        .env("JWT_SECRET_KEY", "cli-test-secret-0123456789abcdef-0123")
        .args(["token", "--sub", "alice", "--role", "admin", "--ttl", "5m"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let token = text(&out.stdout);
    assert_eq!(token.trim().split('.').count(), 3, "{token}");
}

#[test]
fn serve_drains_on_sigterm_and_the_next_start_resumes_the_job() {
    const SECRET: &str = "cli-test-secret-0123456789abcdef-0123";
    let dir = tempfile::tempdir().unwrap();
    let store = sled(dir.path());
    let token = {
        let out = orchestrator()
            .env("JWT_SECRET_KEY", SECRET)
            .args(["token", "--sub", "alice"])
            .output()
            .unwrap();
        text(&out.stdout).trim().to_owned()
    };
    let args = [
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--store",
        &store,
        "--jwt-secret",
        SECRET,
    ];
    let mut server = Running::start(&args, false);
    let addr = listening_addr(&server.wait_for("listening on"));
    let body = r#"{"name": "long", "dag_definition": {"nodes": [
        {"id": "first", "type": "noop"},
        {"id": "slow", "type": "sleep", "params": {"duration": "1500ms"}, "depends_on": ["first"]}
    ]}}"#;
    let (status, reply) = http(
        &addr,
        "POST",
        "/api/v1/orchestration/job",
        &token,
        Some(body),
    );
    assert_eq!(status, 202, "{reply}");
    let job: Value = serde_json::from_str(&reply).unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    // Wait until `slow` runs, then stop the server.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, reply) = http(
            &addr,
            "GET",
            &format!("/api/v1/orchestration/job/{id}"),
            &token,
            None,
        );
        let status: Value = serde_json::from_str(&reply).unwrap();
        if node(&status, "slow")["state"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "slow never ran: {status}");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.signal("-TERM");
    let (exit, stdout, _) = server.finish();
    assert!(exit.success(), "{exit:?}");
    assert!(
        stdout.contains("stopped; 1 unfinished job journaled"),
        "{stdout}"
    );

    // The next start resumes it; `first` is not run again.
    let mut server = Running::start(&args, false);
    let addr = listening_addr(&server.wait_for("listening on"));
    server.wait_for("resumed 1 unfinished job");
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        let (_, reply) = http(
            &addr,
            "GET",
            &format!("/api/v1/orchestration/job/{id}"),
            &token,
            None,
        );
        let status: Value = serde_json::from_str(&reply).unwrap();
        if status["state"] == "succeeded" {
            break status;
        }
        assert!(Instant::now() < deadline, "not resumed: {status}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(node(&status, "first")["attempts"], 1);
    assert_eq!(
        node(&status, "slow")["attempts"],
        2,
        "the interrupted attempt is retried"
    );
    server.signal("-TERM");
    assert!(server.finish().0.success());
}

/// The job id a `run`/`rerun` printed first ("job ID submitted: …").
fn submitted_id(out: &Output) -> String {
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    all.lines()
        .find_map(|l| {
            l.strip_prefix("job ")
                .and_then(|r| r.split_whitespace().next())
        })
        .unwrap_or_else(|| panic!("no job id in {all}"))
        .to_owned()
}

#[test]
fn rerun_reexecutes_only_what_failed_and_rollback_undoes_in_reverse() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let plan = write(
        dir.path(),
        "deploy.yaml",
        &format!(
            r#"
name: deploy
retry: {{max_attempts: 1}}
dag_definition:
  nodes:
    - id: build
      type: process
      params: {{command: "echo build >> {d}/log", shell: true}}
      compensate: {{type: process, params: {{command: "echo undo-build >> {d}/log", shell: true}}}}
    - id: migrate
      type: process
      depends_on: [build]
      params: {{command: "echo migrate >> {d}/log; test -f {d}/fixed", shell: true}}
      compensate: {{type: process, params: {{command: "echo undo-migrate >> {d}/log", shell: true}}}}
"#
        ),
    );
    let store = format!("sled:{d}/db");
    let log = || std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    let out = run(&[
        "run",
        plan.to_str().unwrap(),
        "--store",
        &store,
        "--no-progress",
    ]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let first = submitted_id(&out);
    assert_eq!(log(), "build\nmigrate\n");

    std::fs::write(dir.path().join("fixed"), "").unwrap();
    let out = run(&["rerun", &first, "--store", &store, "--no-progress"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let second = submitted_id(&out);
    assert_ne!(first, second);
    assert_eq!(
        log(),
        "build\nmigrate\nmigrate\n",
        "build was carried over, not re-run"
    );

    let out = run(&[
        "rollback",
        &second,
        "--store",
        &store,
        "--no-progress",
        "--reason",
        "withdrawn",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("rolled_back") || text(&out.stderr).contains("rolled_back"));
    // migrate ran after build, so it is undone first; build was carried
    // over into this run and is undone here too.
    assert_eq!(log(), "build\nmigrate\nmigrate\nundo-migrate\nundo-build\n");
    let out = run(&["rollback", &second, "--store", &store]);
    assert_eq!(code(&out), 2, "a job is rolled back once");
}

#[test]
fn dlq_list_show_requeue_and_discard() {
    let dir = tempfile::tempdir().unwrap();
    let store = sled(dir.path());
    let fixed = dir.path().join("fixed");
    let plan = write(
        dir.path(),
        "dlq.yaml",
        &format!(
            "name: dlq
dag_definition:
  nodes:
    - {{id: build, type: noop}}
    - id: flaky
      type: process
      depends_on: [build]
      retry: {{max_attempts: 1}}
      params: {{shell: true, command: 'test -f {fixed}'}}
    - {{id: report, type: noop, depends_on: [flaky]}}
    - id: other
      type: process
      retry: {{max_attempts: 1}}
      params: {{shell: true, command: 'exit 3'}}
",
            fixed = fixed.display()
        ),
    );
    let out = run(&["run", plan.to_str().unwrap(), "--store", &store, "--json"]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let job = serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Two entries: `flaky` (node 1) and `other` (node 3).
    let out = run(&["dlq", "list", "--store", &store, "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = page["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    let flaky = format!("{job}.1.1");
    let other = format!("{job}.3.1");
    assert_eq!(ids.len(), 2);
    assert!(
        ids.contains(&flaky.as_str()) && ids.contains(&other.as_str()),
        "{ids:?}"
    );
    let out = run(&["dlq", "list", "--store", &store]);
    let table = text(&out.stdout);
    assert!(table.contains(&flaky) && table.contains("open"), "{table}");

    let out = run(&["dlq", "show", &flaky, "--store", &store]);
    assert_eq!(code(&out), 0);
    let shown = text(&out.stdout);
    assert!(shown.contains("node flaky (type process"), "{shown}");
    assert!(shown.contains("attempt 1"), "{shown}");
    let out = run(&["dlq", "show", &flaky, "--store", &store, "--json"]);
    let entry: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(entry["reason"], "retries_exhausted");
    assert_eq!(entry["status"], "open");

    // Discard `other` with a reason; a second discard is refused.
    let out = run(&[
        "dlq",
        "discard",
        &other,
        "--store",
        &store,
        "--reason",
        "exits 3 on purpose",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("discarded"));
    let out = run(&[
        "dlq", "discard", &other, "--store", &store, "--reason", "again",
    ]);
    assert_eq!(code(&out), 2);
    assert!(
        text(&out.stderr).contains("already discarded"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&[
        "dlq",
        "list",
        "--store",
        &store,
        "--status",
        "discarded",
        "--json",
    ]);
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        page["dead_letters"][0]["resolution"]["reason"],
        "exits 3 on purpose"
    );

    // Fix the cause and requeue `flaky`: it runs again, `report` after it;
    // `other` is still failed, so the job still fails.
    std::fs::write(&fixed, "").unwrap();
    let out = run(&[
        "dlq",
        "requeue",
        &flaky,
        "--store",
        &store,
        "--json",
        "--no-progress",
    ]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let state_of = |id: &str| {
        status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .map(|n| n["state"].as_str().unwrap().to_owned())
    };
    assert_eq!(state_of("flaky").as_deref(), Some("succeeded"));
    assert_eq!(state_of("report").as_deref(), Some("succeeded"));
    assert_eq!(state_of("other").as_deref(), Some("failed"));
    assert_eq!(status["state"], "failed");
    let out = run(&["dlq", "show", &flaky, "--store", &store, "--json"]);
    let entry: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(entry["status"], "requeued");

    // Refusals are usage errors.
    for args in [
        vec!["dlq", "requeue", flaky.as_str(), "--store", store.as_str()],
        vec!["dlq", "show", "nope", "--store", store.as_str()],
        vec!["dlq", "discard", other.as_str(), "--store", store.as_str()],
    ] {
        assert_eq!(code(&run(&args)), 2, "{args:?}");
    }
    let missing = format!("{job}.1.7");
    let out = run(&["dlq", "show", &missing, "--store", &store]);
    assert_eq!(code(&out), 2);
    assert!(text(&out.stderr).contains("not found"));
}
