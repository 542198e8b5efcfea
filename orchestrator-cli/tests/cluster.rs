//! Several `orchestrator serve` processes on one MongoDB: each job runs in
//! exactly one process at a time, a killed process's jobs are taken over,
//! a paused one is fenced off when it wakes up.
//!
//! Three servers share a fresh database of the test server `MONGODB_URI`
//! names (`scripts/test.sh` starts one; without it the test skips, except
//! under `CI=true`). Fifty three-node jobs are submitted through all three.
//! Every node is a `process` that appends `<server pid> <job> <node>
//! <attempt> start|end <ns>` to a side file. Once the first server runs
//! nodes it is killed with SIGKILL; then the second is stopped with SIGSTOP
//! for longer than its leases last, and continued. The test then checks:
//!
//! 1. every job succeeded;
//! 2. no node ran in two processes at once;
//! 3. a node never ran again after the attempt the journal says succeeded,
//!    and no attempt ran twice;
//! 4. the killed server's jobs were taken over within the lease TTL plus
//!    one heartbeat (and a margin for the machine);
//! 5. the paused server, once continued, was refused by the fencing token
//!    (its log says so) instead of writing into journals it no longer owns.
//!
//! It prints the takeover time and how long a node's success took to show
//! through another server (`--nocapture`).

#![allow(clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

const SECRET: &str = "cluster-test-secret-0123456789abcdef";
const TTL: Duration = Duration::from_secs(3);
const HEARTBEAT: Duration = Duration::from_secs(1);
const JOBS: usize = 50;
const NODES: [&str; 3] = ["fetch", "test", "report"];
/// How long the whole run may take before the test calls it hung.
const PATIENCE: Duration = Duration::from_secs(180);

fn mongo_uri() -> Option<String> {
    if let Some(uri) = std::env::var("MONGODB_URI").ok().filter(|u| !u.is_empty()) {
        return Some(uri);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but MONGODB_URI is not set (scripts/test.sh starts the test server)"
    );
    eprintln!("cluster: skipping: MONGODB_URI is not set (scripts/test.sh starts a test server)");
    None
}

/// `uri` with its database replaced by a fresh one.
fn with_fresh_database(uri: &str) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let db = format!("orchtest_{secs}_{}_cluster", std::process::id());
    let (base, query) = uri.split_once('?').map_or((uri, ""), |(b, q)| (b, q));
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|j| start + j))
        .unwrap_or(base.len());
    let mut out = format!("{}/{db}", &base[..authority_end]);
    if !query.is_empty() {
        out.push('?');
        out.push_str(query);
    }
    out
}

fn orchestrator() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
    for var in ["DATABASE_URL", "ORCHESTRATOR_LOG", "JWT_SECRET_KEY"] {
        cmd.env_remove(var);
    }
    cmd.env("NO_COLOR", "1").stdin(Stdio::null());
    cmd
}

struct Server {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Server {
    fn start(n: usize, store: &str, dir: &Path) -> Self {
        let log = dir.join(format!("server-{n}.log"));
        let mut child = orchestrator()
            .args([
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--store",
                store,
                "--jwt-secret",
                SECRET,
                "--instance-id",
                &format!("server-{n}"),
                "--lease-ttl",
                "3s",
                "--heartbeat",
                "1s",
                "--allow-process-commands",
                "sh",
                "--rate-limit",
                "0",
            ])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("orchestrator serve starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("server {n} did not start: {}", read(&log)));
        let url = line.split_whitespace().nth(2).unwrap();
        let addr = url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        Self { child, addr, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// One HTTP/1.1 request over a fresh connection: `(status, body)`.
fn http(addr: &str, method: &str, path: &str, token: &str, body: Option<&str>) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} /api/v1/orchestration{path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = reply
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

fn job_body(n: usize, side: &Path) -> String {
    let script = r#"line() { echo "$PPID $ORCHESTRATOR_JOB_ID $ORCHESTRATOR_NODE_ID $ORCHESTRATOR_ATTEMPT $1 $(date +%s%N)" >> "$0"; }; line start; sleep 0.3; line end"#;
    let node = |id: &str, after: Option<&str>| {
        let mut node = json!({
            "id": id,
            "type": "process",
            "params": {"command": "sh", "args": ["-c", script, side.to_str().unwrap()]},
        });
        if let Some(after) = after {
            node["depends_on"] = json!([after]);
        }
        node
    };
    json!({
        "name": format!("cluster job {n}"),
        "retry": {"max_attempts": 6, "backoff": {"kind": "fixed", "delay": "100ms"}},
        "dag_definition": {"nodes": [
            node(NODES[0], None),
            node(NODES[1], Some(NODES[0])),
            node(NODES[2], Some(NODES[1])),
        ]},
    })
    .to_string()
}

/// One line of the side file.
#[derive(Debug, Clone)]
struct Line {
    pid: u32,
    job: String,
    node: String,
    attempt: u32,
    start: bool,
    ns: u128,
}

fn lines(side: &Path) -> Vec<Line> {
    read(side)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(Line {
                pid: f.first()?.parse().ok()?,
                job: (*f.get(1)?).to_owned(),
                node: (*f.get(2)?).to_owned(),
                attempt: f.get(3)?.parse().ok()?,
                start: *f.get(4)? == "start",
                ns: f.get(5)?.parse().ok()?,
            })
        })
        .collect()
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Waits until `pred` holds on the side file's lines.
fn wait_lines(side: &Path, what: &str, pred: impl Fn(&[Line]) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !pred(&lines(side)) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One execution of a node: where it ran and when.
#[derive(Debug)]
struct Execution {
    pid: u32,
    attempt: u32,
    start: u128,
    end: Option<u128>,
}

#[test]
fn three_servers_share_one_database_and_take_over_each_others_jobs() {
    let Some(uri) = mongo_uri() else {
        return;
    };
    let store = with_fresh_database(&uri);
    let dir = tempfile::tempdir().unwrap();
    let side = dir.path().join("executions.log");
    std::fs::write(&side, "").unwrap();
    let token = {
        let out = orchestrator()
            .env("JWT_SECRET_KEY", SECRET)
            .args(["token", "--sub", "alice", "--role", "admin"])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let servers: Vec<Server> = (0..3)
        .map(|n| Server::start(n, &store, dir.path()))
        .collect();
    let pids: Vec<u32> = servers.iter().map(Server::pid).collect();

    let mut ids = Vec::new();
    for n in 0..JOBS {
        let server = &servers[n % 3];
        let (status, reply) = http(
            &server.addr,
            "POST",
            "/job",
            &token,
            Some(&job_body(n, &side)),
        );
        assert_eq!(status, 202, "{reply}");
        let job: Value = serde_json::from_str(&reply).unwrap();
        ids.push(job["id"].as_str().unwrap().to_owned());
    }

    // Kill the first server while it runs nodes.
    wait_lines(&side, "server 0 to run nodes", |l| {
        l.iter().filter(|l| l.pid == pids[0] && l.start).count() >= 3
    });
    let killed_at = now_ns();
    servers[0].signal("-KILL");

    // Watch when the nodes of a few jobs show as succeeded through the
    // third server, while the others are killed and paused.
    let watched: Vec<String> = ids.iter().rev().step_by(16).cloned().collect();
    let watcher = watch(servers[2].addr.clone(), token.clone(), watched);

    // Pause the second server past its leases while it runs nodes.
    wait_lines(&side, "server 1 to run a node after the kill", |l| {
        l.iter()
            .any(|l| l.pid == pids[1] && l.start && l.ns > killed_at)
    });
    servers[1].signal("-STOP");
    std::thread::sleep(TTL + 2 * HEARTBEAT);
    servers[1].signal("-CONT");

    // Every job ends, as seen through the third server.
    let deadline = Instant::now() + PATIENCE;
    let mut finals = BTreeMap::new();
    for id in &ids {
        loop {
            let (status, body) = http(&servers[2].addr, "GET", &format!("/job/{id}"), &token, None);
            assert_eq!(status, 200, "{body}");
            let job: Value = serde_json::from_str(&body).unwrap();
            let state = job["state"].as_str().unwrap().to_owned();
            if ["succeeded", "failed", "cancelled", "timed_out"].contains(&state.as_str()) {
                finals.insert(id.clone(), job);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} did not finish: {body}\n--- server 2 log:\n{}",
                read(&servers[2].log)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let (seen, poll) = watcher.join().unwrap();
    // And once more on a quiet cluster: one job run by the second server,
    // watched through the third.
    let (status, reply) = http(
        &servers[1].addr,
        "POST",
        "/job",
        &token,
        Some(&job_body(JOBS, &side)),
    );
    assert_eq!(status, 202, "{reply}");
    let quiet_id = serde_json::from_str::<Value>(&reply).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (quiet_seen, quiet_poll) = watch(
        servers[2].addr.clone(),
        token.clone(),
        vec![quiet_id.clone()],
    )
    .join()
    .unwrap();
    if quiet_seen.len() < NODES.len() {
        let (_, status) = http(
            &servers[2].addr,
            "GET",
            &format!("/job/{quiet_id}"),
            &token,
            None,
        );
        panic!(
            "the job submitted on the quiet cluster did not finish: {status}\n--- server 1 log:\n{}\n--- server 2 log:\n{}",
            read(&servers[1].log),
            read(&servers[2].log)
        );
    }

    // 1. Every job succeeded.
    for (id, job) in &finals {
        assert_eq!(job["state"], "succeeded", "job {id}: {job}");
    }

    // Executions per (job, node), in start order.
    let all = lines(&side);
    let mut runs: BTreeMap<(String, String), Vec<Execution>> = BTreeMap::new();
    for l in all.iter().filter(|l| l.start) {
        runs.entry((l.job.clone(), l.node.clone()))
            .or_default()
            .push(Execution {
                pid: l.pid,
                attempt: l.attempt,
                start: l.ns,
                end: all
                    .iter()
                    .find(|e| {
                        !e.start && e.job == l.job && e.node == l.node && e.attempt == l.attempt
                    })
                    .map(|e| e.ns),
            });
    }
    for list in runs.values_mut() {
        list.sort_by_key(|e| e.start);
    }
    let mut reruns = 0;
    for (id, job) in &finals {
        for node in job["nodes"].as_array().unwrap() {
            let name = node["id"].as_str().unwrap();
            let key = (id.clone(), name.to_owned());
            let list = runs
                .get(&key)
                .unwrap_or_else(|| panic!("{key:?} never ran"));
            // 2. Never in two processes at once.
            for pair in list.windows(2) {
                let end = pair[0].end.unwrap_or(u128::MAX);
                assert!(
                    end <= pair[1].start,
                    "{key:?}: attempt {} (pid {}) overlaps attempt {} (pid {})",
                    pair[0].attempt,
                    pair[0].pid,
                    pair[1].attempt,
                    pair[1].pid
                );
            }
            // 3. Each attempt ran at most once, in order (one journaled as
            // started may never have run: its process died in between),
            // and the last to run is the one the journal says succeeded.
            let attempts: Vec<u32> = list.iter().map(|e| e.attempt).collect();
            let counted = node["attempts"].as_u64().unwrap() as u32;
            assert!(
                attempts.windows(2).all(|w| w[0] < w[1]) && attempts.last() == Some(&counted),
                "{key:?}: executions by attempt {attempts:?}, journaled attempts {counted}: {list:?}\nstatus: {node}"
            );
            reruns += list.len() - 1;
        }
    }

    // 4. The killed server's interrupted jobs were taken over in time.
    let orphaned: BTreeSet<&str> = all
        .iter()
        .filter(|l| l.pid == pids[0] && l.start)
        .map(|l| l.job.as_str())
        .collect();
    let resumed = all
        .iter()
        .filter(|l| {
            l.start && l.pid != pids[0] && l.ns > killed_at && orphaned.contains(l.job.as_str())
        })
        .map(|l| l.ns)
        .min()
        .expect("another server ran the killed server's jobs");
    let takeover = Duration::from_nanos((resumed - killed_at) as u64);
    let bound = TTL + 2 * HEARTBEAT + Duration::from_secs(3);
    assert!(
        takeover <= bound,
        "the killed server's jobs resumed {takeover:?} after the kill (bound {bound:?})"
    );

    // 5. The paused server found itself fenced off.
    let paused_log = read(&servers[1].log);
    assert!(
        paused_log.contains("taken over by another executor") || paused_log.contains("lease lost"),
        "the paused server's log shows no fencing:\n{paused_log}"
    );

    let all = lines(&side);
    let latencies = |seen: &Seen| {
        let mut ms: Vec<i128> = seen
            .iter()
            .filter_map(|((job, node), at)| {
                let end = all
                    .iter()
                    .filter(|l| !l.start && &l.job == job && &l.node == node)
                    .map(|l| l.ns)
                    .max()?;
                Some((*at as i128 - end as i128) / 1_000_000)
            })
            .collect();
        ms.sort_unstable();
        ms
    };
    let busy = latencies(&seen);
    let quiet = latencies(&quiet_seen);
    eprintln!(
        "cluster: {} jobs, {} re-runs after kill/pause; takeover {:?} after SIGKILL (TTL {TTL:?}, heartbeat {HEARTBEAT:?}); \
         node end → success visible through another server: during the kill and pause median {} ms, \
         max {} ms over {} nodes (status round trip {:?}); on a quiet cluster {:?} ms (round trip {:?})",
        finals.len(),
        reruns,
        takeover,
        busy.get(busy.len() / 2).copied().unwrap_or(-1),
        busy.last().copied().unwrap_or(-1),
        busy.len(),
        poll,
        quiet,
        quiet_poll
    );
}

/// When each (job, node) was first seen succeeded, in ns since the epoch.
type Seen = BTreeMap<(String, String), u128>;

/// Polls the status of `jobs` through `addr` until each of their nodes shows
/// as succeeded: when each did, and the median status round trip (the
/// resolution of those times).
fn watch(
    addr: String,
    token: String,
    jobs: Vec<String>,
) -> std::thread::JoinHandle<(Seen, Duration)> {
    std::thread::spawn(move || {
        let mut seen = Seen::new();
        let mut polls = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        while seen.len() < jobs.len() * NODES.len() && Instant::now() < deadline {
            for id in &jobs {
                let asked = Instant::now();
                let (status, body) = http(&addr, "GET", &format!("/job/{id}"), &token, None);
                polls.push(asked.elapsed());
                if status != 200 {
                    continue;
                }
                let at = now_ns();
                let job: Value = serde_json::from_str(&body).unwrap_or_default();
                for node in job["nodes"].as_array().into_iter().flatten() {
                    if node["state"] == "succeeded" {
                        let key = (id.clone(), node["id"].as_str().unwrap_or("").to_owned());
                        seen.entry(key).or_insert(at);
                    }
                }
            }
        }
        polls.sort_unstable();
        (
            seen,
            polls.get(polls.len() / 2).copied().unwrap_or_default(),
        )
    })
}
