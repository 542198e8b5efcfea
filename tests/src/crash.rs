//! The job the crash test runs, shared by the worker (which submits it) and
//! the test (which checks what happened to it).
//!
//! Each execution of a node appends two lines to a side file, one when the
//! attempt starts and one when it ends:
//!
//! ```text
//! <job> <node> <attempt> <pid> start
//! <job> <node> <attempt> <pid> end
//! ```
//!
//! Each line is one `write` on a file opened with `O_APPEND`, so lines of
//! concurrent attempts never interleave, and a line written before a
//! SIGKILL is in the file (the kernel has it; no fsync is needed for a
//! killed process).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use orchestrator_core::retry::Backoff;
use orchestrator_core::{Failure, JobId, JobSpec, NodeSpec, RetrySpec, RunContext, Runner};
use serde_json::Value;

/// The runner kind of the crash job's nodes.
pub const KIND: &str = "side-file";

/// Layers of the crash job.
pub const LAYERS: u32 = 5;
/// Nodes per layer.
pub const WIDTH: u32 = 6;
/// Most attempts a node may take: far more than kills can interrupt, so
/// every interrupted attempt (class `infrastructure`) is retried.
pub const MAX_ATTEMPTS: u32 = 200;
/// Most attempts the worker's executor runs at once.
pub const CONCURRENCY: usize = 4;

/// The id of crash job number `n`.
pub fn job_id(n: u32) -> JobId {
    format!("crash-{n}")
        .parse()
        .unwrap_or_else(|e| unreachable!("a valid literal id: {e}"))
}

/// A small deterministic hash, so the job's shape and timings are fixed
/// per job number without a random generator in the worker.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Crash job number `n`: `LAYERS` layers of `WIDTH` nodes, each depending
/// on two nodes of the layer before, each sleeping 3 to 15 ms (long enough
/// for kills to land mid-attempt), retried up to `MAX_ATTEMPTS` times
/// with a 2 ms fixed delay.
pub fn spec(n: u32) -> JobSpec {
    let mut nodes = Vec::new();
    for layer in 0..LAYERS {
        for j in 0..WIDTH {
            let i = layer * WIDTH + j;
            let h = mix(u64::from(n) << 32 | u64::from(i));
            let mut node = NodeSpec::new(format!("n{i}"), KIND)
                .params(serde_json::json!({ "work_ms": 3 + h % 13 }));
            if layer > 0 {
                let prev = (layer - 1) * WIDTH;
                let a = prev + (h >> 8) as u32 % WIDTH;
                let b = prev + (h >> 16) as u32 % WIDTH;
                let deps: Vec<String> = if a == b {
                    vec![format!("n{a}")]
                } else {
                    vec![format!("n{a}"), format!("n{b}")]
                };
                node = node.depends_on(deps);
            }
            nodes.push(node);
        }
    }
    JobSpec::builder(format!("crash job {n}"))
        .nodes(nodes)
        .retry(
            RetrySpec::new()
                .max_attempts(MAX_ATTEMPTS)
                .backoff(Backoff::Fixed {
                    delay: Duration::from_millis(2).into(),
                }),
        )
        .build()
}

/// The crash job's runner: records the attempt in the side file, works a
/// few milliseconds, records the end.
#[derive(Clone, Debug)]
pub struct SideFileRunner {
    /// The side file.
    pub path: PathBuf,
}

impl SideFileRunner {
    fn line(&self, ctx: &RunContext, what: &str) -> Result<(), Failure> {
        let line = format!(
            "{} {} {} {} {what}\n",
            ctx.job_id(),
            ctx.node_id(),
            ctx.attempt(),
            std::process::id()
        );
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| Failure::infrastructure(format!("side file: {e}")))
    }
}

#[async_trait]
impl Runner for SideFileRunner {
    async fn run(&self, ctx: RunContext) -> Result<Value, Failure> {
        self.line(&ctx, "start")?;
        let ms = ctx.params()["work_ms"].as_u64().unwrap_or(5);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.line(&ctx, "end")?;
        Ok(Value::Null)
    }
}

/// One line of the side file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execution {
    /// The job.
    pub job: String,
    /// The node id.
    pub node: String,
    /// The attempt.
    pub attempt: u32,
    /// The worker process.
    pub pid: u32,
    /// `true` for an `end` line, `false` for a `start` line.
    pub end: bool,
}

/// Parses the side file; a malformed line is an error naming it.
pub fn parse(text: &str) -> Result<Vec<Execution>, String> {
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let f: Vec<&str> = line.split(' ').collect();
            let bad = || format!("side file line {}: {line:?}", i + 1);
            let [job, node, attempt, pid, what] = f[..] else {
                return Err(bad());
            };
            Ok(Execution {
                job: job.to_owned(),
                node: node.to_owned(),
                attempt: attempt.parse().map_err(|_| bad())?,
                pid: pid.parse().map_err(|_| bad())?,
                end: match what {
                    "start" => false,
                    "end" => true,
                    _ => return Err(bad()),
                },
            })
        })
        .collect()
}
