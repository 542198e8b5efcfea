//! The `mongo` scenario: journal appends and job status reads through
//! `MongoStore`, against the plain driver doing the least that stores the
//! same bytes (`insert_one`) or reads them (`find_one` by `_id`), on the
//! same server in the same run.
//!
//! The server is the one `MONGODB_URI` names; without it the scenario
//! starts the nx-27017 test server through `scripts/mongo-test-server.sh`
//! (and stops it afterwards), and when that fails it is skipped with the
//! reason.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use mongodb::options::{CollectionOptions, WriteConcern};
use orchestrator_core::journal::{Event, JobHeader, JobView, Record};
use orchestrator_core::{JobSpec, NodeSpec, Store, Timestamp};
use orchestrator_mongo::{MongoOptions, MongoStore};

use crate::report::{peak_rss, reset_peak, Line};
use crate::scenarios::Size;

/// Records per append: a node's start, or its end and the next node's
/// readiness and start — what the executor's batches typically carry.
const PER_APPEND: usize = 3;

/// A server for the scenario, stopped on drop when the scenario started it.
struct Server {
    uri: String,
    started: Option<String>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

impl Server {
    fn find() -> Result<Self, String> {
        if let Some(uri) = std::env::var("MONGODB_URI").ok().filter(|u| !u.is_empty()) {
            return Ok(Self { uri, started: None });
        }
        let name = format!("bench-{}", std::process::id());
        let out = Command::new("bash")
            .arg(root().join("scripts/mongo-test-server.sh"))
            .args(["start", "--name", &name])
            .output()
            .map_err(|e| format!("cannot run scripts/mongo-test-server.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "MONGODB_URI is not set and the test server did not start: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self {
            uri: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            started: Some(name),
        })
    }

    fn is_emulator(&self) -> bool {
        self.started.is_some()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(name) = &self.started {
            let _ = Command::new("bash")
                .arg(root().join("scripts/mongo-test-server.sh"))
                .args(["stop", "--name", name])
                .output();
        }
    }
}

/// Runs the scenario, or says why it could not.
pub fn mongo(size: Size) -> Result<Vec<Line>, String> {
    let server = Server::find()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("a tokio runtime: {e}"))?;
    let appends = (size.durable_nodes / 50).clamp(20, 2_000);
    let reads = appends;
    reset_peak();
    let figures = rt.block_on(measure(&server.uri, appends, reads, size.runs.max(1)))?;
    let server_kind = if server.is_emulator() {
        "nx-27017 test server (SQLite)"
    } else {
        "the server in MONGODB_URI"
    };
    Ok(vec![
        Line {
            scenario: "mongo/append".into(),
            ours: figures.append.as_secs_f64() * 1e6,
            baseline: figures.insert.as_secs_f64() * 1e6,
            unit: "us/append",
            peak_rss: peak_rss(),
            note: format!(
                "{appends} sequential appends of {PER_APPEND} records ({} B of JSON) through \
                 MongoStore (compare-and-set of the job document + insert_many into events); \
                 baseline: insert_one of one document with the same bytes; both w:majority, on {server_kind}",
                figures.batch_bytes
            ),
        },
        Line {
            scenario: "mongo/status".into(),
            ours: figures.status.as_secs_f64() * 1e6,
            baseline: figures.find.as_secs_f64() * 1e6,
            unit: "us/read",
            peak_rss: peak_rss(),
            note: format!(
                "{reads} MongoStore::summary calls (find_one with a projection, decoded into a \
                 JobSummary); baseline: find_one by _id of a {} B document; on {server_kind}",
                figures.summary_bytes
            ),
        },
    ])
}

/// Mean time per operation, median over runs.
struct Figures {
    append: Duration,
    insert: Duration,
    status: Duration,
    find: Duration,
    batch_bytes: usize,
    summary_bytes: usize,
}

async fn measure(uri: &str, appends: usize, reads: usize, runs: usize) -> Result<Figures, String> {
    let db = format!("orchbench_{}", std::process::id());
    let store = Arc::new(
        MongoStore::connect_with(uri, MongoOptions::new().database(&db))
            .await
            .map_err(|e| e.to_string())?,
    );
    let client = mongodb::Client::with_uri_str(uri)
        .await
        .map_err(|e| e.to_string())?;
    let plain = client.database(&db).collection_with_options::<Document>(
        "baseline",
        CollectionOptions::builder()
            .write_concern(WriteConcern::majority())
            .build(),
    );

    let mut ours_append = Vec::new();
    let mut base_insert = Vec::new();
    let mut ours_status = Vec::new();
    let mut base_find = Vec::new();
    let mut batch_bytes = 0;
    let mut summary_bytes = 0;
    for run in 0..runs {
        // One job per run, appended to like the executor does: sequentially,
        // at the version the previous append returned.
        let (mut view, first) = job(run, appends * PER_APPEND);
        store
            .create_job(&view.summary(), std::slice::from_ref(&first))
            .await
            .map_err(|e| e.to_string())?;
        let batches = batches(&mut view, appends);
        // The mean JSON size of a batch's events.
        batch_bytes = batches
            .iter()
            .flat_map(|b| &b.1)
            .map(|r| serde_json::to_string(&r.event).map_or(0, |s| s.len()))
            .sum::<usize>()
            / appends;
        let start = Instant::now();
        for (expected, records, progress) in &batches {
            store
                .append(view.id(), *expected, records, progress, 0)
                .await
                .map_err(|e| e.to_string())?;
        }
        ours_append.push(start.elapsed() / appends as u32);

        let payload = "x".repeat(batch_bytes);
        let start = Instant::now();
        for i in 0..appends {
            plain
                .insert_one(doc! { "_id": format!("{run}/{i}"), "job": "bench", "seq": i as i64, "payload": &payload })
                .await
                .map_err(|e| e.to_string())?;
        }
        base_insert.push(start.elapsed() / appends as u32);

        let id = view.id().clone();
        let start = Instant::now();
        for _ in 0..reads {
            store.summary(&id).await.map_err(|e| e.to_string())?;
        }
        ours_status.push(start.elapsed() / reads as u32);

        // A document of the summary's size, read back whole.
        let summary = serde_json::to_string(&view.summary()).map_or(0, |s| s.len());
        summary_bytes = summary;
        let key = format!("summary-{run}");
        plain
            .insert_one(doc! { "_id": &key, "payload": "s".repeat(summary) })
            .await
            .map_err(|e| e.to_string())?;
        let start = Instant::now();
        for _ in 0..reads {
            plain
                .find_one(doc! { "_id": &key })
                .await
                .map_err(|e| e.to_string())?;
        }
        base_find.push(start.elapsed() / reads as u32);
    }
    let _ = client.database(&db).drop().await;
    Ok(Figures {
        append: median(ours_append),
        insert: median(base_insert),
        status: median(ours_status),
        find: median(base_find),
        batch_bytes,
        summary_bytes,
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// A job with enough nodes for `records` journal records after its start.
fn job(run: usize, records: usize) -> (JobView, Record) {
    let nodes = (records / 3 + 1) as u32;
    let spec = JobSpec::builder(format!("mongo bench {run}"))
        .label("team", "bench")
        .nodes((0..nodes).map(|i| NodeSpec::new(format!("test-{i:05}"), "noop")))
        .build();
    let at = Timestamp(1_704_067_200_000);
    let header = Arc::new(JobHeader {
        id: format!("bench-{run}")
            .parse()
            .unwrap_or_else(|e| unreachable!("a valid literal id: {e}")),
        owner: "bench".into(),
        created_at: at,
        spec: Arc::new(spec),
    });
    let first = Record {
        seq: 1,
        at,
        event: Event::Submitted {
            header: header.clone(),
        },
    };
    (JobView::new(header), first)
}

type Batch = (u64, Vec<Record>, orchestrator_core::journal::Progress);

/// `n` batches of `PER_APPEND` legal records each, folded into `view`.
fn batches(view: &mut JobView, n: usize) -> Vec<Batch> {
    let mut events = vec![Event::Queued, Event::Started];
    let mut node = 0;
    while events.len() < n * PER_APPEND {
        events.extend([
            Event::NodeReady { node },
            Event::NodeStarted { node, attempt: 1 },
            Event::NodeSucceeded {
                node,
                attempt: 1,
                output: serde_json::json!({ "passed": 12, "duration_ms": 1234 }),
            },
        ]);
        node += 1;
    }
    events.truncate(n * PER_APPEND);
    events
        .chunks(PER_APPEND)
        .map(|chunk| {
            let expected = view.version;
            let records: Vec<Record> = chunk
                .iter()
                .map(|event| {
                    let r = Record {
                        seq: view.version + 1,
                        at: Timestamp(view.updated_at.0 + 1),
                        event: event.clone(),
                    };
                    view.apply(&r)
                        .unwrap_or_else(|e| unreachable!("the bench journal is legal: {e}"));
                    r
                })
                .collect();
            (expected, records, view.progress())
        })
        .collect()
}
