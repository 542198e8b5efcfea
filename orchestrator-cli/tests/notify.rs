//! `run` with notification sinks (flags and a config file) and `stats`
//! over what it journaled, against a local webhook receiver.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
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
        "ORCHESTRATOR_NOTIFY_WEBHOOK",
        "ORCHESTRATOR_NOTIFY_EVENTS",
        "ORCHESTRATOR_NOTIFY_SECRET",
        "ORCHESTRATOR_NOTIFY_DEAD_LETTER",
        "ORCHESTRATOR_NOTIFY_CONFIG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("NO_COLOR", "1").stdin(Stdio::null());
    cmd
}

/// Runs the binary off the async runtime (the receiver keeps serving).
async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || orchestrator().args(&args).output().expect("runs"))
        .await
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

type Seen = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn receiver() -> (SocketAddr, Seen) {
    async fn hook(State(seen): State<Seen>, headers: HeaderMap, body: Bytes) -> StatusCode {
        seen.lock().unwrap().push((headers, body));
        StatusCode::OK
    }
    let seen: Seen = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

/// A one-node plan whose node fails its first attempt with exit code 125
/// (an infrastructure failure) and passes the second.
fn plan(dir: &Path) -> PathBuf {
    let marker = dir.join("attempted");
    let path = dir.join("plan.yaml");
    std::fs::write(
        &path,
        format!(
            r#"name: healing
retry: {{max_attempts: 3, backoff: {{kind: fixed, delay: 0}}}}
dag_definition:
  nodes:
    - id: flaky
      type: process
      params:
        shell: true
        command: 'test -f "{m}" || {{ touch "{m}"; exit 125; }}'
"#,
            m = marker.display()
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_posts_filtered_signed_events_and_stats_reads_the_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, seen) = receiver().await;
    let store = format!("sled:{}", dir.path().join("db").display());
    let out = run(vec![
        "run".into(),
        plan(dir.path()).display().to_string(),
        "--store".into(),
        store.clone(),
        "--no-progress".into(),
        "--notify-webhook".into(),
        format!("http://{addr}/hook"),
        "--notify-events".into(),
        "recovery.*,execution.completed".into(),
        "--notify-secret".into(),
        "s3cret".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let seen = seen.lock().unwrap().clone();
    let types: Vec<String> = seen
        .iter()
        .map(|(_, b)| {
            let v: Value = serde_json::from_slice(b).unwrap();
            v["type"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        types,
        [
            "recovery.initiated",
            "recovery.completed",
            "execution.completed"
        ],
        "everything before the process exits, filtered, in order"
    );
    for (headers, _) in &seen {
        let sig = headers["x-orchestrator-signature"].to_str().unwrap();
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64, "{sig}");
    }
    let first: Value = serde_json::from_slice(&seen[0].1).unwrap();
    assert_eq!(first["node"], "flaky");
    assert_eq!(first["details"]["kind"], "infrastructure_retry");

    let out = run(vec![
        "stats".into(),
        "--store".into(),
        store.clone(),
        "--json".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["jobs"], 1);
    assert_eq!(stats["failures"], 1);
    assert_eq!(stats["recovered"], 1);
    assert_eq!(stats["recovered_share"], 1.0);
    assert_eq!(stats["node_types"]["process"]["retries"], 1);
    assert_eq!(stats["failed_attempts_by_class"]["infrastructure"], 1);

    let out = run(vec!["stats".into(), "--store".into(), store.clone()]).await;
    let human = text(&out.stdout);
    assert!(human.contains("recovered automatically"), "{human}");
    assert!(human.contains("100.0%"), "{human}");
    assert!(human.contains("infrastructure_retry"), "{human}");

    // A range that excludes the job.
    let out = run(vec![
        "stats".into(),
        "--store".into(),
        store,
        "--until".into(),
        "2000-01-01T00:00:00Z".into(),
        "--json".into(),
    ])
    .await;
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["jobs"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_sink_dead_letters_what_it_cannot_deliver() {
    let dir = tempfile::tempdir().unwrap();
    // Nobody listens there any more.
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead = dir.path().join("dead.jsonl");
    let config = dir.path().join("notify.yaml");
    std::fs::write(
        &config,
        format!(
            "sinks:\n  - type: webhook\n    url: http://127.0.0.1:{dead_port}/hook\n    events: 'execution.*'\n    max_attempts: 2\n    initial_backoff: 1ms\n    dead_letter: {}\n  - type: log\n    events: 'escalation.*'\n",
            dead.display()
        ),
    )
    .unwrap();
    let out = run(vec![
        "run".into(),
        plan(dir.path()).display().to_string(),
        "--store".into(),
        "memory".into(),
        "--no-progress".into(),
        "--notify-config".into(),
        config.display().to_string(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<Value> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = lines
        .iter()
        .map(|l| l["envelope"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "execution.submitted",
            "execution.queued",
            "execution.started",
            "execution.completed"
        ]
    );
    assert!(lines.iter().all(|l| l["attempts"] == 2));
}

#[tokio::test]
async fn bad_notification_settings_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(dir.path()).display().to_string();
    for (flag, value, expected) in [
        ("--notify-webhook", "https://hooks.example/x", "https"),
        ("--notify-events", "Node.Failed!", "invalid event pattern"),
    ] {
        let mut args = vec![
            "run".to_owned(),
            plan.clone(),
            "--store".into(),
            "memory".into(),
            flag.into(),
            value.into(),
        ];
        if flag == "--notify-events" {
            args.push("--notify-log".into());
        }
        let out = run(args).await;
        assert_eq!(out.status.code(), Some(2), "{flag}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(expected),
            "{}",
            text(&out.stderr)
        );
        assert!(
            !dir.path().join("attempted").exists(),
            "nothing ran before the settings were checked"
        );
    }
    let config = dir.path().join("bad.yaml");
    std::fs::write(&config, "sinks:\n  - type: pager\n").unwrap();
    let out = run(vec![
        "run".into(),
        plan,
        "--store".into(),
        "memory".into(),
        "--notify-config".into(),
        config.display().to_string(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("pager"), "{}", text(&out.stderr));
}
