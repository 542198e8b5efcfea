//! The database dies mid-run: an executor over `MongoStore` runs jobs on a
//! test server of its own (so killing it disturbs no other test), the
//! server is killed with SIGKILL while attempts run, stays down, and is
//! restarted on the same database files and port. Every job must complete,
//! with every journal complete and consistent: no record lost, no node run
//! twice, no attempt started while its start could not be journaled, and a
//! submission during the outage refused rather than faked.
//!
//! Needs nx-27017 in the project's `.venv/` (`scripts/test.sh` installs
//! it); without it the test skips with one line saying why, except under
//! `CI=true`, where it fails.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use orchestrator_core::retry::Backoff;
use orchestrator_core::{
    Event, Executor, ExecutorConfig, ExecutorError, Failure, JobId, JobSpec, JobState, JobView,
    NodeSpec, Registry, RetrySpec, RunContext, Runner, Store, StoreError, StoreExt,
};
use orchestrator_mongo::{BreakerConfig, MongoOptions, MongoStore};
use serde_json::Value;

const JOBS: u32 = 4;
const LAYERS: u32 = 5;
const WIDTH: u32 = 4;
/// How long the server stays dead.
const OUTAGE: Duration = Duration::from_millis(2500);
/// The whole test's bound.
const LIMIT: Duration = Duration::from_secs(180);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate is in the workspace")
        .to_path_buf()
}

/// Whether nx-27017 is installed; skips (or, in CI, fails) when not.
fn skip() -> bool {
    if root().join(".venv/bin/nx-27017").exists() {
        return false;
    }
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "CI=true but nx-27017 is not installed in .venv/ (scripts/test.sh installs it)"
    );
    support::say(
        "orchestrator-mongo: skipping the outage test: nx-27017 is not installed in .venv/ \
         (scripts/mongo-test-server.sh install, or run scripts/test.sh)",
    );
    true
}

/// One nx-27017 instance of this test, driven through the project's script.
struct Server {
    name: String,
    port: u16,
    uri: String,
}

fn script(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(root().join("scripts/mongo-test-server.sh"))
        .args(args)
        .output()
        .expect("running scripts/mongo-test-server.sh");
    assert!(
        out.status.success(),
        "mongo-test-server.sh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Server {
    fn start(name: &str, port: Option<u16>) -> Self {
        let port_arg = port.map(|p| p.to_string());
        let mut args = vec!["start", "--name", name];
        if let Some(p) = &port_arg {
            args.extend(["--port", p]);
        }
        let uri = script(&args);
        let port = uri
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the script printed no URI: {uri:?}"));
        Self {
            name: name.to_owned(),
            port,
            uri,
        }
    }

    /// SIGKILL; returns when the signal was sent, once the process is gone
    /// (dead, or a zombie its new parent has not reaped yet).
    fn kill(&self) -> Instant {
        let pid = script(&["pid", "--name", &self.name]);
        let sent = Instant::now();
        let status = Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -KILL {pid}");
        let stat = format!("/proc/{pid}/stat");
        let deadline = Instant::now() + Duration::from_secs(10);
        // The state is the field after the parenthesised command name.
        while std::fs::read_to_string(&stat).is_ok_and(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
        }) {
            assert!(Instant::now() < deadline, "server {pid} survived SIGKILL");
            std::thread::sleep(Duration::from_millis(5));
        }
        sent
    }

    /// Starts the server again on the same data files and port.
    fn restart(&self) {
        let again = Self::start(&self.name, Some(self.port));
        assert_eq!(again.uri, self.uri);
        std::mem::forget(again);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("scripts/mongo-test-server.sh"))
            .args(["stop", "--name", &self.name])
            .output();
    }
}

/// One execution of a node, as the runner saw it.
#[derive(Clone, Debug)]
struct Execution {
    job: JobId,
    node: u32,
    attempt: u32,
    started: Instant,
    ended: Option<Instant>,
}

/// Works a few tens of milliseconds per node and remembers every execution.
#[derive(Default)]
struct Recorder {
    runs: Mutex<Vec<Execution>>,
}

impl Recorder {
    fn runs(&self) -> Vec<Execution> {
        self.runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn finished(&self) -> usize {
        self.runs().iter().filter(|r| r.ended.is_some()).count()
    }
}

#[async_trait]
impl Runner for Recorder {
    async fn run(&self, ctx: RunContext) -> Result<Value, Failure> {
        let i = {
            let mut runs = self
                .runs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            runs.push(Execution {
                job: ctx.job_id().clone(),
                node: ctx.node_index(),
                attempt: ctx.attempt(),
                started: Instant::now(),
                ended: None,
            });
            runs.len() - 1
        };
        let ms = ctx.params()["work_ms"].as_u64().unwrap_or(100);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)[i]
            .ended = Some(Instant::now());
        Ok(Value::Null)
    }
}

/// `LAYERS` layers of `WIDTH` nodes, each depending on two of the layer
/// before, working 80 to 230 ms.
fn spec(n: u32) -> JobSpec {
    let mut nodes = Vec::new();
    for layer in 0..LAYERS {
        for j in 0..WIDTH {
            let i = layer * WIDTH + j;
            let mut node = NodeSpec::new(format!("n{i}"), "work")
                .params(serde_json::json!({ "work_ms": 80 + (i * 37 + n * 11) % 150 }));
            if layer > 0 {
                let prev = (layer - 1) * WIDTH;
                node = node.depends_on([
                    format!("n{}", prev + j),
                    format!("n{}", prev + (j + 1) % WIDTH),
                ]);
            }
            nodes.push(node);
        }
    }
    JobSpec::builder(format!("outage job {n}"))
        .nodes(nodes)
        .retry(RetrySpec::new().max_attempts(3).backoff(Backoff::Fixed {
            delay: Duration::from_millis(10).into(),
        }))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_complete_and_journals_stay_whole_across_a_killed_database() {
    if skip() {
        return;
    }
    let test = async {
        let server = Server::start(&format!("outage-{}", std::process::id()), None);
        let options = MongoOptions::new()
            .database("outage")
            .server_selection_timeout(Duration::from_millis(300))
            .connect_timeout(Duration::from_millis(300))
            .operation_timeout(Duration::from_secs(5))
            .breaker(BreakerConfig::new(3, Duration::from_millis(250)));
        let store = Arc::new(
            MongoStore::connect_with(&server.uri, options)
                .await
                .expect("connecting"),
        );
        let recorder = Arc::new(Recorder::default());
        let mut registry = Registry::new();
        registry.register_arc("work", recorder.clone());
        let config = ExecutorConfig {
            max_concurrent_nodes: 6,
            store_retry_initial: Duration::from_millis(20),
            store_retry_max: Duration::from_millis(400),
            ..ExecutorConfig::default()
        };
        let executor = Executor::builder(store.clone())
            .registry(registry)
            .config(config)
            .start()
            .await
            .expect("executor starts");
        let mut ids = Vec::new();
        for n in 0..JOBS {
            ids.push(executor.submit(spec(n), "outage").await.expect("submit"));
        }
        let total = (JOBS * LAYERS * WIDTH) as usize;

        // Kill the server once a fifth of the work is done.
        while recorder.finished() < total / 5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let killed = server.kill();
        let running_at_kill = recorder
            .runs()
            .iter()
            .filter(|r| r.started < killed && r.ended.is_none_or(|e| e > killed))
            .count();

        // A submission now is refused, not faked.
        tokio::time::sleep(Duration::from_millis(300)).await;
        match executor.submit(spec(99), "outage").await {
            Err(ExecutorError::Store(StoreError::Unavailable { .. })) => {}
            other => panic!("a submission during the outage: expected Unavailable, got {other:?}"),
        }
        tokio::time::sleep(OUTAGE.saturating_sub(killed.elapsed())).await;
        let stats = store.stats();
        assert!(
            stats.breaker_opened >= 1,
            "the circuit breaker opened during the outage: {stats:?}"
        );
        let before_restart = Instant::now();
        server.restart();

        for id in &ids {
            let status = executor.wait(id).await.expect("the job finishes");
            assert_eq!(status.state, JobState::Succeeded, "job {id}");
        }
        let runs = recorder.runs();

        // The outage really hit running work.
        let finished_in_outage = runs
            .iter()
            .filter(|r| r.ended.is_some_and(|e| e > killed && e < before_restart))
            .count();
        assert!(
            running_at_kill > 0 && finished_in_outage > 0,
            "attempts were running at the kill ({running_at_kill}) and finished during the outage ({finished_in_outage})"
        );
        // Dispatch paused: nothing started while no start could be journaled
        // (a start whose record landed just before the kill may begin right
        // after it).
        let started_in_outage: Vec<&Execution> = runs
            .iter()
            .filter(|r| {
                r.started > killed + Duration::from_millis(200) && r.started < before_restart
            })
            .collect();
        assert!(
            started_in_outage.is_empty(),
            "attempts started while the database was down: {started_in_outage:?}"
        );

        // Every journal is complete and agrees with its summary; every node
        // ran once and succeeded once.
        let mut executions: HashMap<(JobId, u32), Vec<&Execution>> = HashMap::new();
        for r in &runs {
            executions
                .entry((r.job.clone(), r.node))
                .or_default()
                .push(r);
        }
        for id in &ids {
            let records = store.read_all(id, 0).await.expect("read_all");
            let view = JobView::replay(&records)
                .unwrap_or_else(|e| panic!("journal of {id} does not replay: {e}"));
            let summary = store.summary(id).await.expect("summary");
            assert_eq!(
                view.progress(),
                summary.progress,
                "summary of {id} agrees with its journal"
            );
            assert_eq!(view.state, JobState::Succeeded);
            assert_eq!(view.version, records.len() as u64);
            assert_eq!(store.load_view(id).await.expect("load_view"), view);
            for node in 0..LAYERS * WIDTH {
                let succeeded = records
                    .iter()
                    .filter(
                        |r| matches!(r.event, Event::NodeSucceeded { node: n, .. } if n == node),
                    )
                    .count();
                assert_eq!(succeeded, 1, "job {id} node {node}: succeeded records");
                let ran = executions.get(&(id.clone(), node)).map_or(0, Vec::len);
                assert_eq!(ran, 1, "job {id} node {node}: executions");
                for e in executions.get(&(id.clone(), node)).into_iter().flatten() {
                    let journaled = records.iter().any(|r| {
                        matches!(r.event, Event::NodeStarted { node: n, attempt: a }
                            if n == node && a == e.attempt)
                    });
                    assert!(
                        journaled,
                        "job {id} node {node} attempt {} ran unjournaled",
                        e.attempt
                    );
                }
            }
        }
        assert_eq!(runs.len(), total, "nothing but the submitted work ran");
        // The refused submission left nothing behind.
        let listed = store.list_jobs(&Default::default()).await.expect("list");
        assert_eq!(listed.jobs.len(), JOBS as usize);
        assert!(store
            .unfinished_jobs()
            .await
            .expect("unfinished")
            .is_empty());
        support::say(&format!(
            "outage: {} nodes in {JOBS} jobs; {running_at_kill} attempts running at the kill, \
             {finished_in_outage} finished while the database was down; breaker opened {} times; \
             {} batches helped into events",
            runs.len(),
            stats.breaker_opened,
            store.stats().batches_helped
        ));
        executor.shutdown();
    };
    tokio::time::timeout(LIMIT, test)
        .await
        .unwrap_or_else(|_| panic!("the outage test did not finish within {LIMIT:?}"));
}
