//! `process`: runs one command per attempt.
//!
//! The public contract (params, outcomes, stopping) is documented on
//! [`ProcessRunner`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::{pin, Pin};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::time::{sleep_until, timeout, Instant, Interval, MissedTickBehavior};

use super::{Heartbeat, RunContext, Runner, MAX_OUTPUT_BYTES};
use crate::classify::FailureEvidence;
use crate::failure::{Failure, FailureClass};

use group::ProcessGroup;

/// Default for [`ProcessConfig::output_tail_bytes`].
const DEFAULT_TAIL_BYTES: usize = 64 * 1024;

/// Most bytes one stream may take in the output JSON once escaped. Two
/// streams stay well under [`MAX_OUTPUT_BYTES`] with room for the rest.
const STREAM_JSON_BUDGET: usize = MAX_OUTPUT_BYTES * 3 / 8;

/// How much of each stream a failure message quotes. Together with the
/// first line they stay under the 4 KiB a failure message keeps, and
/// stderr, usually the more telling one, gets more.
const MESSAGE_STDERR_TAIL: usize = 2048;
const MESSAGE_STDOUT_TAIL: usize = 1024;

/// How often to look whether a signalled group is gone.
const GROUP_POLL: Duration = Duration::from_millis(20);

/// How long to wait for output after the group is gone. Only a process
/// that left the group (`setsid`) can still hold a pipe open then.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// How long to wait for the child to be reaped after SIGKILL, which only a
/// process stuck in the kernel (uninterruptible I/O) survives.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// The shell for `shell: true`, by absolute path so that `env.PATH` cannot
/// swap it.
#[cfg(unix)]
const SHELL: &str = "/bin/sh";

/// Which environment a command starts from, before the node's `env`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BaseEnv {
    /// The engine's whole environment (the default, like a shell).
    #[default]
    Inherit,
    /// Nothing: only the node's `env` and the `ORCHESTRATOR_*` variables.
    Empty,
    /// Only these of the engine's variables (e.g. `PATH`, `HOME`), so
    /// secrets in the engine's environment do not reach the commands.
    Only(BTreeSet<String>),
}

/// Settings of a [`ProcessRunner`].
///
/// ```
/// use orchestrator_core::runner::{BaseEnv, ProcessConfig, ProcessRunner};
/// use orchestrator_core::FailureClass;
/// use std::time::Duration;
///
/// let mut config = ProcessConfig::default();
/// config.kill_grace = Duration::from_secs(10);
/// // Our harness exits with 3 when its device farm is unreachable.
/// config.exit_codes.insert(3, FailureClass::Infrastructure);
/// config.allowed_commands = Some(["pytest".to_owned()].into());
/// config.base_env = BaseEnv::Only(["PATH".to_owned(), "HOME".to_owned()].into());
/// let runner = ProcessRunner::new(config);
/// assert_eq!(runner.config().exit_codes[&75], FailureClass::Transient);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProcessConfig {
    /// How long the process group has between SIGTERM and SIGKILL (2 s).
    pub kill_grace: Duration,
    /// Failure classes of exit codes, consulted after the node's own
    /// `exit_codes`. Defaults to [`ProcessConfig::default_exit_codes`].
    pub exit_codes: BTreeMap<i32, FailureClass>,
    /// The class of a non-zero exit code neither map lists, and of a crash
    /// on a fault signal (`unknown`: a failing test and a flaky one exit
    /// alike, so the retry policy decides).
    pub unmapped_exit: FailureClass,
    /// If set, only these commands run, matched exactly against `command`
    /// (so list bare names or absolute paths). With an allowlist, `shell:
    /// true` is refused (a script could run anything), and so is an `env`
    /// that sets `PATH`, `LD_*` or `DYLD_*` (they change which code an
    /// allowed command runs). `None` (the default) runs anything.
    pub allowed_commands: Option<BTreeSet<String>>,
    /// The environment commands start from (inherited by default).
    pub base_env: BaseEnv,
    /// How many bytes of the end of stdout and of stderr are kept (64 KiB).
    /// Whatever the setting, each stream is cut further if its JSON form
    /// would pass 3/8 of [`MAX_OUTPUT_BYTES`], so the output always fits.
    pub output_tail_bytes: usize,
    /// How often the attempt's heartbeat beats while the command runs, on
    /// top of a beat whenever output arrives (1 s).
    pub heartbeat_interval: Duration,
}

impl ProcessConfig {
    /// The default exit-code map, from conventions commands already follow:
    ///
    /// | code | class | convention |
    /// | --- | --- | --- |
    /// | 75 | `transient` | `EX_TEMPFAIL` (sysexits.h): temporary failure, try again |
    /// | 124 | `timeout` | `timeout(1)`: the command's own time limit fired |
    /// | 125 | `infrastructure` | `timeout(1)`, `docker run`: the wrapper itself failed |
    /// | 126 | `permanent` | shells: found but not executable |
    /// | 127 | `permanent` | shells: command not found |
    /// | 137 | `infrastructure` | 128 + SIGKILL as a shell or container reports it: usually the OOM killer |
    /// | 143 | `infrastructure` | 128 + SIGTERM: stopped from outside, e.g. a container shutdown |
    ///
    /// Codes such as 1 or 2 mean different things to different tools, so
    /// they are left to [`ProcessConfig::unmapped_exit`] and to per-node
    /// maps.
    pub fn default_exit_codes() -> BTreeMap<i32, FailureClass> {
        BTreeMap::from([
            (75, FailureClass::Transient),
            (124, FailureClass::Timeout),
            (125, FailureClass::Infrastructure),
            (126, FailureClass::Permanent),
            (127, FailureClass::Permanent),
            (137, FailureClass::Infrastructure),
            (143, FailureClass::Infrastructure),
        ])
    }
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            kill_grace: Duration::from_secs(2),
            exit_codes: Self::default_exit_codes(),
            unmapped_exit: FailureClass::Unknown,
            allowed_commands: None,
            base_env: BaseEnv::Inherit,
            output_tail_bytes: DEFAULT_TAIL_BYTES,
            heartbeat_interval: Duration::from_secs(1),
        }
    }
}

/// `process`: runs one command per attempt.
///
/// # Params
///
/// | field | type | meaning |
/// | --- | --- | --- |
/// | `command` | string, required | the program (looked up on `PATH`), or the script when `shell` is true |
/// | `args` | `[string]` | arguments, passed verbatim (no shell parsing) |
/// | `env` | `{name: value}` | variables set on top of the [base environment](BaseEnv) |
/// | `cwd` | string | working directory (default: the engine's) |
/// | `shell` | bool | run `command` with `/bin/sh -c`; `args` become `$1`, `$2`, … |
/// | `exit_codes` | `{"<code>": "<failure class>"}` | classes for non-zero exit codes, ahead of the [runner's map](ProcessConfig::exit_codes) |
///
/// Every attempt also sees `ORCHESTRATOR_JOB_ID`, `ORCHESTRATOR_NODE_ID` and
/// `ORCHESTRATOR_ATTEMPT`, so a harness can, say, keep each attempt's
/// artifacts apart. Unknown fields are rejected: a misspelt `cwd` must not
/// silently run the command somewhere else.
///
/// # Outcome
///
/// Exit code 0 succeeds with
/// `{"exit_code": 0, "stdout": "…", "stderr": "…", "duration_ms": 12, "truncated": {"stdout": 0, "stderr": 0}}`:
/// each stream keeps its last [`ProcessConfig::output_tail_bytes`] bytes
/// (64 KiB by default; `truncated` counts the bytes left out), decoded as
/// lossy UTF-8.
///
/// Everything else is a [`Failure`] whose message carries the tail of stderr
/// and stdout:
///
/// | what happened | class |
/// | --- | --- |
/// | params invalid, or refused by the [allowlist](ProcessConfig::allowed_commands) | `permanent` |
/// | could not start: no such command, cwd or permission | `permanent` |
/// | could not start: the host is out of processes, memory or file descriptors | `infrastructure` |
/// | non-zero exit | the node's `exit_codes`, else [`ProcessConfig::exit_codes`] (see [`default_exit_codes`](ProcessConfig::default_exit_codes)), else [`ProcessConfig::unmapped_exit`] (`unknown`) |
/// | deadline passed | `timeout` |
/// | cancelled | `cancelled` (`timeout` if the deadline had passed too) |
/// | crashed on a fault signal (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP) | [`ProcessConfig::unmapped_exit`]: the program failed on its own, like a non-zero exit |
/// | killed by any other signal the runner did not send (OOM killer, an operator) | `infrastructure` |
///
/// # Stopping
///
/// The command runs in a process group of its own, so whatever it starts can
/// be stopped with it. On timeout or cancellation the whole group gets
/// SIGTERM, then up to [`ProcessConfig::kill_grace`] (2 s) to go, then
/// SIGKILL. The same sequence removes processes the command left behind when
/// it exits on its own: an attempt owns everything it started. If the
/// attempt's future is dropped instead (the executor gives up on it), a drop
/// guard sends SIGKILL to the group at once.
///
/// # Example
///
/// ```
/// # #[cfg(unix)]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::Arc;
/// use orchestrator_core::runner::{ProcessRunner, RunContext, Runner};
/// use orchestrator_core::{JobSpec, NodeSpec};
/// use serde_json::json;
///
/// let spec = JobSpec::builder("demo")
///     .node(NodeSpec::new("hello", "process").params(json!({"command": "echo", "args": ["hi"]})))
///     .build();
/// let ctx = RunContext::new("job-1".parse().unwrap(), Arc::new(spec), 0, 1);
/// let output = ProcessRunner::default().run(ctx).await.unwrap();
/// assert_eq!(output["stdout"], "hi\n");
/// assert_eq!(output["exit_code"], 0);
/// # }
/// # #[cfg(not(unix))]
/// # fn main() {}
/// ```
#[derive(Clone, Debug, Default)]
pub struct ProcessRunner {
    config: Arc<ProcessConfig>,
}

impl ProcessRunner {
    /// A runner with `config`.
    pub fn new(config: ProcessConfig) -> Self {
        Self {
            config: Arc::new(config),
        }
    }

    /// The runner's settings.
    pub fn config(&self) -> &ProcessConfig {
        &self.config
    }
}

/// The node params, as documented in the module docs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessParams {
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    cwd: Option<PathBuf>,
    #[serde(default)]
    shell: bool,
    #[serde(default)]
    exit_codes: BTreeMap<i32, FailureClass>,
}

impl ProcessParams {
    fn parse(params: &Value) -> Result<Self, Failure> {
        let invalid = |why: String| Failure::permanent(format!("invalid `process` params: {why}"));
        if params.is_null() {
            return Err(invalid(
                "params are required, with at least `command`".to_owned(),
            ));
        }
        let parsed: Self =
            serde_path_to_error::deserialize(params).map_err(|e| invalid(e.to_string()))?;
        if parsed.command.is_empty() {
            return Err(invalid("`command` is empty".to_owned()));
        }
        if parsed.exit_codes.contains_key(&0) {
            return Err(invalid(
                "`exit_codes` cannot map 0: exit code 0 always means success".to_owned(),
            ));
        }
        Ok(parsed)
    }

    /// How messages name the command: a script can be long, and must not
    /// crowd the output tails out of a failure message.
    fn display_name(&self) -> String {
        const MAX: usize = 120;
        let mut end = self.command.len().min(MAX);
        while !self.command.is_char_boundary(end) {
            end -= 1;
        }
        let ellipsis = if end < self.command.len() { "…" } else { "" };
        let command = &self.command[..end];
        if self.shell {
            format!("sh -c '{command}{ellipsis}'")
        } else {
            format!("{command}{ellipsis}")
        }
    }
}

/// Why the runner stopped the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Timeout,
    Cancelled,
}

impl Stop {
    /// The reason for a cancellation: the executor may cancel an attempt
    /// because its deadline passed, which is a timeout, not a cancellation.
    fn on_cancel(deadline: Option<Instant>) -> Self {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            Self::Timeout
        } else {
            Self::Cancelled
        }
    }
}

#[async_trait]
impl Runner for ProcessRunner {
    async fn run(&self, ctx: RunContext) -> Result<Value, Failure> {
        let params = ProcessParams::parse(ctx.params())?;
        self.check_allowed(&params)?;
        let mut command = self.command(&params, &ctx)?;
        let name = &params.display_name();

        // Starting work nobody will wait for would only leave it to be killed.
        if ctx.deadline().is_some_and(|d| Instant::now() >= d) {
            return Err(Failure::timeout(format!(
                "`{name}` not started: the attempt's deadline had passed"
            )));
        }
        if ctx.cancel_token().is_cancelled() {
            return Err(Failure::cancelled(format!(
                "`{name}` not started: the attempt was cancelled"
            )));
        }

        let started = Instant::now();
        let mut child = command.spawn().map_err(|e| spawn_failure(&params, &e))?;
        let group = ProcessGroup::new(child.id());
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut out = Tail::new(self.config.output_tail_bytes);
        let mut err = Tail::new(self.config.output_tail_bytes);

        let (stop, status, elapsed) = {
            let heartbeat = ctx.heartbeat();
            let pumps = pin!(async {
                tokio::join!(
                    pump(stdout, &mut out, heartbeat),
                    pump(stderr, &mut err, heartbeat)
                );
            });
            let mut ticker =
                tokio::time::interval(self.config.heartbeat_interval.max(Duration::from_millis(1)));
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut attempt = Attempt {
                group,
                child,
                pumps,
                pumps_done: false,
                ticker,
                heartbeat,
                status: None,
            };
            let stop = attempt.watch(&ctx).await;
            let elapsed = started.elapsed();
            attempt.end_group(self.config.kill_grace).await;
            attempt.drain(name).await;
            (stop, attempt.status.take(), elapsed)
        };

        let (stdout, stdout_cut) = out.render(STREAM_JSON_BUDGET);
        let (stderr, stderr_cut) = err.render(STREAM_JSON_BUDGET);
        if let Some(stop) = stop {
            let evidence = FailureEvidence {
                stdout: stdout.clone(),
                stderr: stderr.clone(),
                ..FailureEvidence::default()
            };
            return Err(stop_failure(name, stop, elapsed, &stdout, &stderr).with_evidence(evidence));
        }
        let status = match status {
            Some(Ok(status)) => status,
            Some(Err(e)) => {
                return Err(Failure::infrastructure(format!(
                    "lost track of `{name}`: waiting for it failed: {e}"
                )));
            }
            None => {
                return Err(Failure::infrastructure(format!(
                    "`{name}` did not exit even after SIGKILL (stuck in the kernel?)"
                )));
            }
        };
        if status.success() {
            return Ok(json!({
                "exit_code": 0,
                "stdout": stdout,
                "stderr": stderr,
                "duration_ms": u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                "truncated": {"stdout": stdout_cut, "stderr": stderr_cut},
            }));
        }
        let (class, what) = self.classify(&params, status);
        let head = format!("`{name}` {what} after {} ms", elapsed.as_millis());
        let message = with_output(head, &stdout, &stderr);
        // What classification rules match on (see `crate::classify`).
        #[cfg(unix)]
        let signal = std::os::unix::process::ExitStatusExt::signal(&status);
        #[cfg(not(unix))]
        let signal = None;
        let evidence = FailureEvidence {
            exit_code: status.code(),
            signal,
            stdout,
            stderr,
        };
        Err(Failure::new(class, message).with_evidence(evidence))
    }
}

impl ProcessRunner {
    /// Applies [`ProcessConfig::allowed_commands`].
    fn check_allowed(&self, params: &ProcessParams) -> Result<(), Failure> {
        let Some(allowed) = &self.config.allowed_commands else {
            return Ok(());
        };
        if params.shell {
            return Err(Failure::permanent(
                "`shell: true` is not allowed: this runner only runs allowlisted commands, and a script could run anything",
            ));
        }
        if !allowed.contains(&params.command) {
            let list: Vec<&str> = allowed.iter().map(String::as_str).collect();
            return Err(Failure::permanent(format!(
                "command `{}` is not allowed; allowed: {}",
                params.command,
                list.join(", ")
            )));
        }
        if let Some(key) = params
            .env
            .keys()
            .find(|k| *k == "PATH" || k.starts_with("LD_") || k.starts_with("DYLD_"))
        {
            return Err(Failure::permanent(format!(
                "env `{key}` cannot be set when commands are allowlisted: it changes which code the command runs"
            )));
        }
        Ok(())
    }

    /// The command to spawn, not yet started.
    fn command(&self, params: &ProcessParams, ctx: &RunContext) -> Result<Command, Failure> {
        let mut command = if params.shell {
            shell_command(params)?
        } else {
            let mut c = Command::new(&params.command);
            c.args(&params.args);
            c
        };
        match &self.config.base_env {
            BaseEnv::Inherit => {}
            BaseEnv::Empty => {
                command.env_clear();
            }
            BaseEnv::Only(names) => {
                command.env_clear();
                for name in names {
                    if let Some(value) = std::env::var_os(name) {
                        command.env(name, value);
                    }
                }
            }
        }
        command
            .env("ORCHESTRATOR_JOB_ID", ctx.job_id().as_str())
            .env("ORCHESTRATOR_NODE_ID", ctx.node_id())
            .env("ORCHESTRATOR_ATTEMPT", ctx.attempt().to_string())
            .envs(&params.env);
        if let Some(cwd) = &params.cwd {
            command.current_dir(cwd);
        }
        // A command reading the engine's stdin would steal it from the
        // engine and block the others.
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        command.process_group(0);
        Ok(command)
    }

    /// The class and description of an unsuccessful exit.
    fn classify(&self, params: &ProcessParams, status: ExitStatus) -> (FailureClass, String) {
        if let Some(code) = status.code() {
            let class = params
                .exit_codes
                .get(&code)
                .or_else(|| self.config.exit_codes.get(&code))
                .copied()
                .unwrap_or(self.config.unmapped_exit);
            return (class, format!("exited with code {code}"));
        }
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            if let Some(signal) = status.signal() {
                let core = if status.core_dumped() {
                    ", core dumped"
                } else {
                    ""
                };
                let what = format!(
                    "was killed by signal {signal} ({}{core})",
                    group::signal_name(signal)
                );
                // Signals the runner sends are handled before this point, so
                // a signal here came from the program itself or from outside.
                let class = if group::is_fault_signal(signal) {
                    self.config.unmapped_exit
                } else {
                    FailureClass::Infrastructure
                };
                return (class, what);
            }
        }
        (self.config.unmapped_exit, format!("ended with {status}"))
    }
}

/// `sh -c SCRIPT sh ARGS…`: the second `sh` becomes `$0`, ARGS `$1`…
#[cfg(unix)]
fn shell_command(params: &ProcessParams) -> Result<Command, Failure> {
    let mut command = Command::new(SHELL);
    command
        .arg("-c")
        .arg(&params.command)
        .arg("sh")
        .args(&params.args);
    Ok(command)
}

#[cfg(not(unix))]
fn shell_command(_params: &ProcessParams) -> Result<Command, Failure> {
    Err(Failure::permanent(
        "`shell: true` is only supported on Unix",
    ))
}

/// The failure of an attempt the runner stopped.
fn stop_failure(name: &str, stop: Stop, elapsed: Duration, stdout: &str, stderr: &str) -> Failure {
    let ms = elapsed.as_millis();
    match stop {
        Stop::Timeout => Failure::timeout(with_output(
            format!("`{name}` timed out after {ms} ms; its process group was stopped"),
            stdout,
            stderr,
        )),
        Stop::Cancelled => Failure::cancelled(with_output(
            format!("`{name}` was cancelled after {ms} ms; its process group was stopped"),
            stdout,
            stderr,
        )),
    }
}

/// A spawn error's failure.
fn spawn_failure(params: &ProcessParams, err: &io::Error) -> Failure {
    let mut message = format!("could not start `{}`", params.display_name());
    if let Some(cwd) = &params.cwd {
        let _ = write!(message, " in `{}`", cwd.display());
    }
    let _ = write!(message, ": {err}");
    // A missing program, a missing cwd or a permission problem fails the
    // same way on every attempt: fix the spec or the machine, don't retry.
    // Running out of processes, memory or descriptors is the host's state
    // at this moment, which a later attempt may not meet.
    if out_of_resources(err) {
        Failure::infrastructure(message)
    } else {
        Failure::permanent(message)
    }
}

#[cfg(unix)]
fn out_of_resources(err: &io::Error) -> bool {
    use rustix::io::Errno;
    Errno::from_io_error(err)
        .is_some_and(|e| [Errno::AGAIN, Errno::NOMEM, Errno::MFILE, Errno::NFILE].contains(&e))
}

#[cfg(not(unix))]
fn out_of_resources(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::OutOfMemory | io::ErrorKind::WouldBlock
    )
}

/// `head`, then the tails of stderr and stdout, each bounded.
fn with_output(head: String, stdout: &str, stderr: &str) -> String {
    let mut message = head;
    if !stderr.is_empty() {
        let _ = write!(
            message,
            "\n--- stderr (tail) ---\n{}",
            tail_str(stderr, MESSAGE_STDERR_TAIL)
        );
    }
    if !stdout.is_empty() {
        let _ = write!(
            message,
            "\n--- stdout (tail) ---\n{}",
            tail_str(stdout, MESSAGE_STDOUT_TAIL)
        );
    }
    message
}

/// The last `max` bytes of `s`, or a little less to start on a character.
fn tail_str(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Completes at `deadline`, or never.
async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Copies a stream into `tail` until it closes, beating on every chunk.
async fn pump<R: AsyncRead + Unpin>(reader: Option<R>, tail: &mut Tail, heartbeat: &Heartbeat) {
    let Some(mut reader) = reader else { return };
    let mut buf = vec![0; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                tail.push(&buf[..n]);
                heartbeat.beat();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A pipe read only fails if the pipe is broken; what was read is
            // kept, and the exit status still decides the outcome.
            Err(e) => {
                tracing::warn!(error = %e, "reading a command's output failed");
                return;
            }
        }
    }
}

/// One running command and what watches it. `group` is declared first so it
/// is dropped first: its guard signals the group while the unreaped child
/// still pins the group id.
struct Attempt<'a, P> {
    group: ProcessGroup,
    child: Child,
    pumps: Pin<&'a mut P>,
    pumps_done: bool,
    ticker: Interval,
    heartbeat: &'a Heartbeat,
    /// Set once the child is reaped.
    status: Option<io::Result<ExitStatus>>,
}

impl<P: Future<Output = ()>> Attempt<'_, P> {
    /// Runs until the child exits (`None`) or the runner must stop it.
    async fn watch(&mut self, ctx: &RunContext) -> Option<Stop> {
        let mut deadline = pin!(sleep_until_opt(ctx.deadline()));
        loop {
            tokio::select! {
                // An exit that is already there wins over a deadline passing
                // at the same moment.
                biased;
                status = self.child.wait() => {
                    self.status = Some(status);
                    return None;
                }
                () = &mut deadline => return Some(Stop::Timeout),
                () = ctx.cancelled() => return Some(Stop::on_cancel(ctx.deadline())),
                // Output must keep flowing, or a chatty child blocks on a
                // full pipe and never exits.
                () = self.pumps.as_mut(), if !self.pumps_done => self.pumps_done = true,
                _ = self.ticker.tick() => self.heartbeat.beat(),
            }
        }
    }

    /// Ends everything in the group: SIGTERM, up to `grace` for the group to
    /// go, then SIGKILL. Returns at once if the child has exited and left
    /// nothing behind.
    async fn end_group(&mut self, grace: Duration) {
        if self.status.is_some() && !self.group.any_alive() {
            self.group.disarm();
            return;
        }
        self.group.terminate(&mut self.child);
        let give_up = Instant::now() + grace;
        loop {
            if self.status.is_some() && !self.group.any_alive() {
                self.group.disarm();
                return;
            }
            let now = Instant::now();
            if now >= give_up {
                break;
            }
            let next_look = (now + GROUP_POLL).min(give_up);
            tokio::select! {
                biased;
                status = self.child.wait(), if self.status.is_none() => self.status = Some(status),
                // A SIGTERM handler that logs must not block on a full pipe.
                () = self.pumps.as_mut(), if !self.pumps_done => self.pumps_done = true,
                _ = self.ticker.tick() => self.heartbeat.beat(),
                () = sleep_until(next_look) => {}
            }
        }
        self.group.kill(&mut self.child);
        if self.status.is_none() {
            match timeout(REAP_TIMEOUT, self.child.wait()).await {
                Ok(status) => self.status = Some(status),
                Err(_) => tracing::warn!("a command survived SIGKILL for {REAP_TIMEOUT:?}"),
            }
        }
        // SIGKILL has been sent to every member; sending it again from the
        // guard later could only reach a group that reused the id.
        self.group.disarm();
    }

    /// Reads the output still buffered in the pipes, for a bounded time.
    async fn drain(&mut self, name: &str) {
        if self.pumps_done {
            return;
        }
        match timeout(DRAIN_TIMEOUT, self.pumps.as_mut()).await {
            Ok(()) => self.pumps_done = true,
            Err(_) => tracing::warn!(
                command = name,
                "a process that left the group holds the output open; output may be incomplete"
            ),
        }
    }
}

/// The last `cap` bytes of a stream, and how many came before them.
#[derive(Debug)]
struct Tail {
    buf: VecDeque<u8>,
    cap: usize,
    dropped: u64,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Self {
            buf: VecDeque::with_capacity(cap.min(DEFAULT_TAIL_BYTES)),
            cap,
            dropped: 0,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        if chunk.len() >= self.cap {
            self.dropped += (self.buf.len() + chunk.len() - self.cap) as u64;
            self.buf.clear();
            self.buf.extend(&chunk[chunk.len() - self.cap..]);
            return;
        }
        let excess = (self.buf.len() + chunk.len()).saturating_sub(self.cap);
        self.buf.drain(..excess);
        self.dropped += excess as u64;
        self.buf.extend(chunk);
    }

    /// The kept bytes as text whose JSON form fits `budget`, and how many
    /// bytes of the stream it leaves out.
    fn render(mut self, budget: usize) -> (String, u64) {
        let bytes = self.buf.make_contiguous();
        let mut start = 0;
        // Cutting the stream may have split a character: its continuation
        // bytes could only show up as U+FFFD.
        if self.dropped > 0 {
            while start < 3 && bytes.get(start).is_some_and(|b| b & 0xC0 == 0x80) {
                start += 1;
            }
        }
        let bytes = &bytes[start..];
        let cut = cut_for_budget(bytes, budget);
        let text = String::from_utf8_lossy(&bytes[cut..]).into_owned();
        (text, self.dropped + (start + cut) as u64)
    }
}

/// Where to cut `bytes` so that the rest, decoded as lossy UTF-8 and escaped
/// as a JSON string, takes at most `budget` bytes. Escaping makes control
/// bytes six times larger (`\u0000`), so binary output is cut further than
/// text.
fn cut_for_budget(bytes: &[u8], budget: usize) -> usize {
    if bytes.len().saturating_mul(6) <= budget {
        return 0;
    }
    // (offset, escaped size) of each character or invalid sequence, exactly
    // as `String::from_utf8_lossy` splits them.
    let mut units = Vec::with_capacity(bytes.len());
    let mut offset = 0;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            units.push((offset, json_escaped_len(c)));
            offset += c.len_utf8();
        }
        if !chunk.invalid().is_empty() {
            units.push((offset, char::REPLACEMENT_CHARACTER.len_utf8()));
            offset += chunk.invalid().len();
        }
    }
    let mut used = 0;
    let mut cut = bytes.len();
    for &(offset, size) in units.iter().rev() {
        if used + size > budget {
            break;
        }
        used += size;
        cut = offset;
    }
    cut
}

/// The size of `c` inside a JSON string as `serde_json` writes it.
fn json_escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if u32::from(c) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

#[cfg(unix)]
mod group {
    //! Signals to the command's process group.

    use rustix::io::Errno;
    use rustix::process::{kill_process_group, test_kill_process_group, Pid, Signal};
    use tokio::process::Child;

    /// The process group a command leads (its id is the command's pid), and
    /// a guard that SIGKILLs it when dropped while armed.
    #[derive(Debug)]
    pub(super) struct ProcessGroup {
        pgid: Option<Pid>,
        armed: bool,
    }

    impl ProcessGroup {
        pub(super) fn new(child_pid: Option<u32>) -> Self {
            // Signalling group 1 would reach every process we may signal;
            // a child never has pid 1, but make that impossible, not unlikely.
            let pgid = child_pid
                .and_then(|pid| i32::try_from(pid).ok())
                .filter(|&pid| pid > 1)
                .and_then(Pid::from_raw);
            Self {
                pgid,
                armed: pgid.is_some(),
            }
        }

        pub(super) fn terminate(&self, _child: &mut Child) {
            self.send(Signal::TERM);
        }

        pub(super) fn kill(&self, _child: &mut Child) {
            self.send(Signal::KILL);
        }

        pub(super) fn disarm(&mut self) {
            self.armed = false;
        }

        fn send(&self, signal: Signal) {
            if let Some(pgid) = self.pgid {
                // ESRCH: nothing left to stop. EPERM: a member changed its
                // credentials (setuid); nothing more can be done about it.
                let _ = kill_process_group(pgid, signal);
            }
        }

        /// Whether any member of the group is still running. Zombies do not
        /// count: where nothing reaps orphans (a container without an init),
        /// they stay in the group forever, yet are already dead.
        pub(super) fn any_alive(&self) -> bool {
            let Some(pgid) = self.pgid else { return false };
            match test_kill_process_group(pgid) {
                Err(e) if e == Errno::SRCH => false,
                _ => has_live_member(pgid.as_raw_pid()),
            }
        }
    }

    impl Drop for ProcessGroup {
        fn drop(&mut self) {
            if self.armed {
                self.send(Signal::KILL);
            }
        }
    }

    /// Looks for a member of group `pgid` that is not a zombie. Only called
    /// while a group is being stopped, a few dozen times at most.
    #[cfg(target_os = "linux")]
    fn has_live_member(pgid: i32) -> bool {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return true; // no procfs: trust kill(2)
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            // Vanished since the listing, or not readable: neither is ours.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            if let Some((state, group)) = parse_stat(&stat) {
                if group == pgid && state != "Z" && state != "X" {
                    return true;
                }
            }
        }
        false
    }

    /// Elsewhere, orphaned zombies are reaped by the system's init at once.
    #[cfg(not(target_os = "linux"))]
    fn has_live_member(_pgid: i32) -> bool {
        true
    }

    /// The state and process group of a `/proc/<pid>/stat` line. The command
    /// name in parentheses may itself contain spaces and parentheses, so
    /// fields are counted from the last `)`.
    #[cfg(any(target_os = "linux", test))]
    pub(super) fn parse_stat(stat: &str) -> Option<(&str, i32)> {
        let (_, rest) = stat.rsplit_once(')')?;
        let mut fields = rest.split_whitespace();
        let state = fields.next()?;
        let _ppid = fields.next()?;
        let pgrp = fields.next()?.parse().ok()?;
        Some((state, pgrp))
    }

    /// Signals a program raises on itself when it crashes.
    pub(super) fn is_fault_signal(signal: i32) -> bool {
        [
            Signal::SEGV,
            Signal::BUS,
            Signal::ILL,
            Signal::FPE,
            Signal::ABORT,
            Signal::TRAP,
        ]
        .iter()
        .any(|s| s.as_raw() == signal)
    }

    /// `SIGKILL`, or `signal 42` for one without a name here.
    pub(super) fn signal_name(signal: i32) -> String {
        const NAMES: [(Signal, &str); 15] = [
            (Signal::HUP, "SIGHUP"),
            (Signal::INT, "SIGINT"),
            (Signal::QUIT, "SIGQUIT"),
            (Signal::ILL, "SIGILL"),
            (Signal::TRAP, "SIGTRAP"),
            (Signal::ABORT, "SIGABRT"),
            (Signal::BUS, "SIGBUS"),
            (Signal::FPE, "SIGFPE"),
            (Signal::KILL, "SIGKILL"),
            (Signal::USR1, "SIGUSR1"),
            (Signal::SEGV, "SIGSEGV"),
            (Signal::USR2, "SIGUSR2"),
            (Signal::PIPE, "SIGPIPE"),
            (Signal::ALARM, "SIGALRM"),
            (Signal::TERM, "SIGTERM"),
        ];
        NAMES
            .iter()
            .find(|(s, _)| s.as_raw() == signal)
            .map_or_else(
                || format!("signal {signal}"),
                |(_, name)| (*name).to_owned(),
            )
    }
}

#[cfg(not(unix))]
mod group {
    //! Without process groups, only the direct child can be stopped.

    use tokio::process::Child;

    #[derive(Debug)]
    pub(super) struct ProcessGroup;

    impl ProcessGroup {
        pub(super) fn new(_child_pid: Option<u32>) -> Self {
            Self
        }

        pub(super) fn terminate(&self, child: &mut Child) {
            let _ = child.start_kill();
        }

        pub(super) fn kill(&self, child: &mut Child) {
            let _ = child.start_kill();
        }

        pub(super) fn disarm(&mut self) {}

        pub(super) fn any_alive(&self) -> bool {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_bytes_and_counts_the_rest() {
        let mut tail = Tail::new(8);
        tail.push(b"abc");
        tail.push(b"defgh");
        assert_eq!(tail.dropped, 0);
        tail.push(b"ij");
        assert_eq!(tail.dropped, 2);
        tail.push(b"0123456789");
        assert_eq!(tail.dropped, 12); // 20 bytes in, 8 kept
        let (text, cut) = tail.render(usize::MAX);
        assert_eq!(text, "23456789");
        assert_eq!(cut, 12);
    }

    #[test]
    fn a_character_split_by_the_cut_is_dropped_whole() {
        let mut tail = Tail::new(4);
        tail.push("aé€".as_bytes()); // 1 + 2 + 3 bytes
        let (text, cut) = tail.render(usize::MAX);
        assert_eq!(text, "€");
        assert_eq!(cut, 3);
    }

    #[test]
    fn escaped_output_stays_within_its_budget() {
        let bytes = [0u8; 1000];
        let cut = cut_for_budget(&bytes, 600);
        assert_eq!(cut, 900);
        let text = String::from_utf8_lossy(&bytes[cut..]);
        assert!(serde_json::to_string(&text).unwrap().len() <= 602);

        let mixed = b"a\"\n\xff\xfeb\x01";
        for budget in 0..40 {
            let cut = cut_for_budget(mixed, budget);
            let text = String::from_utf8_lossy(&mixed[cut..]);
            assert!(
                serde_json::to_string(&text).unwrap().len() - 2 <= budget,
                "budget {budget}"
            );
        }
        assert_eq!(cut_for_budget(mixed, 40), 0);
    }

    #[test]
    fn tail_str_respects_char_boundaries() {
        assert_eq!(tail_str("héllo", 4), "llo");
        assert_eq!(tail_str("abc", 10), "abc");
    }

    #[test]
    fn bad_params_are_permanent_failures() {
        let cases = [
            (Value::Null, "required"),
            (json!({}), "missing field `command`"),
            (json!({"command": ""}), "empty"),
            (json!({"command": "x", "bogus": 1}), "unknown field `bogus`"),
            (json!({"command": "x", "args": "-v"}), "args"),
            (
                json!({"command": "x", "exit_codes": {"abc": "transient"}}),
                "exit_codes",
            ),
            (
                json!({"command": "x", "exit_codes": {"3": "flaky"}}),
                "exit_codes.3",
            ),
            (
                json!({"command": "x", "exit_codes": {"0": "transient"}}),
                "0 always means success",
            ),
        ];
        for (params, needle) in cases {
            let failure = ProcessParams::parse(&params).unwrap_err();
            assert_eq!(failure.class, FailureClass::Permanent, "{params}");
            assert!(
                failure.message.starts_with("invalid `process` params"),
                "{failure}"
            );
            assert!(failure.message.contains(needle), "{params}: {failure}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn proc_stat_lines_parse_around_odd_command_names() {
        let line = "4242 (we ird) (x)) S 1 4240 4240 0 -1 4194560";
        assert_eq!(group::parse_stat(line), Some(("S", 4240)));
        assert_eq!(group::parse_stat("garbage"), None);
    }

    #[cfg(unix)]
    mod unix {
        use std::path::{Path, PathBuf};
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::sync::Arc;
        use std::time::Duration;

        use serde_json::{json, Value};
        use tokio::time::Instant;
        use tokio_util::sync::CancellationToken;

        use super::super::*;
        use crate::runner::Heartbeat;
        use crate::{JobSpec, NodeSpec};

        fn ctx(params: Value) -> RunContext {
            let spec = JobSpec::builder("process tests")
                .node(NodeSpec::new("node-a", "process").params(params))
                .build();
            RunContext::new("job-1".parse().unwrap(), Arc::new(spec), 0, 3)
        }

        fn sh(script: &str) -> Value {
            json!({"command": script, "shell": true})
        }

        async fn run(params: Value) -> Result<Value, Failure> {
            ProcessRunner::default().run(ctx(params)).await
        }

        /// A fresh directory, removed when dropped.
        struct TempDir(PathBuf);

        impl TempDir {
            fn new() -> Self {
                static NEXT: AtomicU32 = AtomicU32::new(0);
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                let path = std::env::temp_dir()
                    .join(format!("orchestrator-process-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&path).unwrap();
                Self(path)
            }

            fn file(&self, name: &str) -> PathBuf {
                self.0.join(name)
            }
        }

        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }

        /// Whether `pid` is a running (not zombie) process.
        fn alive(pid: i32) -> bool {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Ok(stat) => {
                    group::parse_stat(&stat).is_some_and(|(state, _)| state != "Z" && state != "X")
                }
                Err(_) if Path::new("/proc/self/stat").exists() => false,
                Err(_) => {
                    rustix::process::test_kill_process(rustix::process::Pid::from_raw(pid).unwrap())
                        .is_ok()
                }
            }
        }

        /// Polls `check` for up to 5 s (signals are delivered asynchronously).
        async fn eventually(mut check: impl FnMut() -> bool) -> bool {
            let give_up = Instant::now() + Duration::from_secs(5);
            while Instant::now() < give_up {
                if check() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            check()
        }

        /// The pids a script wrote to `file`, once it has written them.
        async fn pids_in(file: &Path) -> Vec<i32> {
            let mut pids = Vec::new();
            let written = eventually(|| {
                let text = std::fs::read_to_string(file).unwrap_or_default();
                if !text.ends_with('\n') {
                    return false;
                }
                pids = text
                    .split_whitespace()
                    .map(|p| p.parse().unwrap())
                    .collect();
                true
            })
            .await;
            assert!(written, "the script never wrote its pids");
            pids
        }

        /// A script that starts a background grandchild, writes its own pid
        /// and the grandchild's to `$PIDS`, and waits.
        fn family(dir: &TempDir, prelude: &str) -> Value {
            json!({
                "command": format!("{prelude} sleep 1000 & echo $$ $! > \"$PIDS.tmp\"; mv \"$PIDS.tmp\" \"$PIDS\"; wait"),
                "shell": true,
                "env": {"PIDS": dir.file("pids")},
            })
        }

        #[tokio::test]
        async fn success_captures_both_streams() {
            let out = run(sh("echo out; echo err >&2")).await.unwrap();
            assert_eq!(out["exit_code"], 0);
            assert_eq!(out["stdout"], "out\n");
            assert_eq!(out["stderr"], "err\n");
            assert_eq!(out["truncated"], json!({"stdout": 0, "stderr": 0}));
            assert!(out["duration_ms"].is_u64());
        }

        #[tokio::test]
        async fn args_are_passed_verbatim_and_become_positional_in_a_shell() {
            let out = run(json!({"command": "printf", "args": ["%s|%s", "a b", "$HOME"]}))
                .await
                .unwrap();
            assert_eq!(out["stdout"], "a b|$HOME");
            let out = run(json!({"command": "printf '%s|%s' \"$1\" \"$2\"", "shell": true, "args": ["x y", "*"]}))
                .await
                .unwrap();
            assert_eq!(out["stdout"], "x y|*");
        }

        #[tokio::test]
        async fn env_cwd_and_attempt_variables_reach_the_command() {
            let dir = TempDir::new();
            let out = run(json!({
                "command": "printf '%s:%s:%s:%s:%s' \"$FOO\" \"$(pwd -P)\" \"$ORCHESTRATOR_JOB_ID\" \"$ORCHESTRATOR_NODE_ID\" \"$ORCHESTRATOR_ATTEMPT\"",
                "shell": true,
                "env": {"FOO": "bar baz"},
                "cwd": dir.0,
            }))
            .await
            .unwrap();
            let cwd = std::fs::canonicalize(&dir.0).unwrap();
            assert_eq!(
                out["stdout"],
                format!("bar baz:{}:job-1:node-a:3", cwd.display())
            );
        }

        #[tokio::test]
        async fn base_env_controls_what_is_inherited() {
            let env_keys = |out: &Value| -> Vec<String> {
                let mut keys: Vec<String> = out["stdout"]
                    .as_str()
                    .unwrap()
                    .lines()
                    .map(|l| l.split('=').next().unwrap().to_owned())
                    .collect();
                keys.sort();
                keys
            };
            let ours = [
                "ORCHESTRATOR_ATTEMPT",
                "ORCHESTRATOR_JOB_ID",
                "ORCHESTRATOR_NODE_ID",
            ];

            let config = ProcessConfig {
                base_env: BaseEnv::Empty,
                ..ProcessConfig::default()
            };
            let params = json!({"command": "/usr/bin/env", "env": {"ONLY": "1"}});
            let out = ProcessRunner::new(config)
                .run(ctx(params.clone()))
                .await
                .unwrap();
            assert_eq!(env_keys(&out), ["ONLY", ours[0], ours[1], ours[2]]);

            let config = ProcessConfig {
                base_env: BaseEnv::Only(
                    ["PATH".to_owned(), "SURELY_NOT_SET_ANYWHERE".to_owned()].into(),
                ),
                ..ProcessConfig::default()
            };
            let out = ProcessRunner::new(config)
                .run(ctx(params.clone()))
                .await
                .unwrap();
            assert_eq!(env_keys(&out), ["ONLY", ours[0], ours[1], ours[2], "PATH"]);

            let out = ProcessRunner::default().run(ctx(params)).await.unwrap();
            assert!(env_keys(&out).len() > 5, "inherits by default: {out}");
        }

        #[tokio::test]
        async fn non_zero_exits_map_node_codes_then_runner_codes_then_unknown() {
            let failure = run(
                json!({"command": "echo boom >&2; echo partial; exit 3", "shell": true,
                "exit_codes": {"3": "transient"}}),
            )
            .await
            .unwrap_err();
            assert_eq!(failure.class, FailureClass::Transient);
            assert!(failure.message.contains("exited with code 3"), "{failure}");
            assert!(
                failure.message.contains("--- stderr (tail) ---\nboom\n"),
                "{failure}"
            );
            assert!(failure.message.contains("partial"), "{failure}");

            assert_eq!(
                run(sh("exit 75")).await.unwrap_err().class,
                FailureClass::Transient
            );
            assert_eq!(
                run(sh("exit 124")).await.unwrap_err().class,
                FailureClass::Timeout
            );
            assert_eq!(
                run(sh("exit 1")).await.unwrap_err().class,
                FailureClass::Unknown
            );
            let overridden =
                json!({"command": "exit 75", "shell": true, "exit_codes": {"75": "permanent"}});
            assert_eq!(
                run(overridden).await.unwrap_err().class,
                FailureClass::Permanent
            );

            let mut config = ProcessConfig {
                unmapped_exit: FailureClass::Permanent,
                ..ProcessConfig::default()
            };
            config.exit_codes.insert(1, FailureClass::Infrastructure);
            let runner = ProcessRunner::new(config);
            assert_eq!(
                runner.run(ctx(sh("exit 1"))).await.unwrap_err().class,
                FailureClass::Infrastructure
            );
            assert_eq!(
                runner.run(ctx(sh("exit 2"))).await.unwrap_err().class,
                FailureClass::Permanent
            );
        }

        #[tokio::test]
        async fn a_long_script_does_not_crowd_the_output_out_of_the_message() {
            let script = format!(": {}; echo boom >&2; exit 1", "x".repeat(5000));
            let failure = run(sh(&script)).await.unwrap_err();
            assert!(failure.message.starts_with("`sh -c ': xxx"), "{failure}");
            assert!(
                failure.message.contains("xxx…'` exited with code 1"),
                "{failure}"
            );
            assert!(
                failure.message.ends_with("--- stderr (tail) ---\nboom\n"),
                "{failure}"
            );
        }

        #[tokio::test]
        async fn death_by_signal_is_infrastructure_unless_the_program_crashed() {
            let failure = run(sh("kill -KILL $$")).await.unwrap_err();
            assert_eq!(failure.class, FailureClass::Infrastructure);
            assert!(failure.message.contains("SIGKILL"), "{failure}");
            let failure = run(sh("kill -SEGV $$")).await.unwrap_err();
            assert_eq!(failure.class, FailureClass::Unknown);
            assert!(failure.message.contains("SIGSEGV"), "{failure}");
        }

        #[tokio::test]
        async fn output_keeps_the_last_64_kib_of_each_stream() {
            // stderr first: a runner that read the streams one after the
            // other would deadlock here on the full stderr pipe.
            let out = run(sh("seq 1 200000 >&2; seq 1 200000")).await.unwrap();
            let total: usize = (1..=200_000).map(|i: u32| i.to_string().len() + 1).sum();
            assert!(total > 1 << 20);
            for stream in ["stdout", "stderr"] {
                let text = out[stream].as_str().unwrap();
                assert_eq!(text.len(), 64 * 1024, "{stream}");
                assert!(text.ends_with("199999\n200000\n"), "{stream}");
                assert_eq!(out["truncated"][stream], total - 64 * 1024, "{stream}");
            }
            assert!(serde_json::to_string(&out).unwrap().len() < MAX_OUTPUT_BYTES);
        }

        #[tokio::test]
        async fn binary_output_stays_well_under_the_output_limit() {
            let out = run(json!({"command": "head", "args": ["-c", "300000", "/dev/zero"]}))
                .await
                .unwrap();
            let kept = out["stdout"].as_str().unwrap();
            assert!(!kept.is_empty() && kept.bytes().all(|b| b == 0));
            assert_eq!(
                kept.len() as u64 + out["truncated"]["stdout"].as_u64().unwrap(),
                300_000
            );
            assert!(serde_json::to_string(&out).unwrap().len() < MAX_OUTPUT_BYTES);

            let out = run(sh(r"printf '\377ok'")).await.unwrap();
            assert_eq!(out["stdout"], "\u{fffd}ok");
        }

        #[tokio::test]
        async fn start_failures_are_permanent() {
            let failure = run(json!({"command": "surely-no-such-command-4242"}))
                .await
                .unwrap_err();
            assert_eq!(failure.class, FailureClass::Permanent);
            assert!(
                failure
                    .message
                    .contains("could not start `surely-no-such-command-4242`"),
                "{failure}"
            );

            let failure = run(json!({"command": "true", "cwd": "/surely/no/such/dir"}))
                .await
                .unwrap_err();
            assert_eq!(failure.class, FailureClass::Permanent);
            assert!(failure.message.contains("/surely/no/such/dir"), "{failure}");
        }

        #[tokio::test]
        async fn the_allowlist_refuses_everything_it_does_not_vouch_for() {
            let config = ProcessConfig {
                allowed_commands: Some(["printf".to_owned()].into()),
                ..ProcessConfig::default()
            };
            let runner = ProcessRunner::new(config);
            let out = runner
                .run(ctx(json!({"command": "printf", "args": ["ok"]})))
                .await
                .unwrap();
            assert_eq!(out["stdout"], "ok");
            let refused = [
                json!({"command": "echo"}),
                json!({"command": "printf", "shell": true}),
                json!({"command": "printf", "env": {"PATH": "/tmp"}}),
                json!({"command": "printf", "env": {"LD_PRELOAD": "x.so"}}),
            ];
            for params in refused {
                let failure = runner.run(ctx(params.clone())).await.unwrap_err();
                assert_eq!(failure.class, FailureClass::Permanent, "{params}");
            }
        }

        #[tokio::test]
        async fn timeout_stops_the_whole_process_group() {
            let dir = TempDir::new();
            let started = Instant::now();
            let ctx =
                ctx(family(&dir, "")).with_deadline(Some(started + Duration::from_millis(500)));
            // A grace period far longer than any plausible scheduling delay, so
            // the bound below proves SIGTERM sufficed without timing the machine.
            let runner = ProcessRunner::new(ProcessConfig {
                kill_grace: Duration::from_secs(60),
                ..ProcessConfig::default()
            });
            let failure = runner.run(ctx).await.unwrap_err();
            assert_eq!(failure.class, FailureClass::Timeout);
            assert!(failure.message.contains("timed out"), "{failure}");
            // SIGTERM sufficed, so the grace period was not waited out.
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{:?}",
                started.elapsed()
            );
            let pids = pids_in(&dir.file("pids")).await;
            assert_eq!(pids.len(), 2);
            for pid in pids {
                assert!(
                    eventually(|| !alive(pid)).await,
                    "pid {pid} survived the timeout"
                );
            }
        }

        #[tokio::test]
        async fn sigterm_ignored_escalates_to_sigkill_after_the_grace_period() {
            let dir = TempDir::new();
            let config = ProcessConfig {
                kill_grace: Duration::from_millis(200),
                ..ProcessConfig::default()
            };
            let started = Instant::now();
            // `trap "" TERM` is inherited by the background sleep too.
            let ctx = ctx(family(&dir, "trap '' TERM;"))
                .with_deadline(Some(started + Duration::from_millis(500)));
            let failure = ProcessRunner::new(config).run(ctx).await.unwrap_err();
            assert_eq!(failure.class, FailureClass::Timeout);
            // 500 ms to the deadline, then the whole 200 ms grace period.
            assert!(
                started.elapsed() >= Duration::from_millis(700),
                "{:?}",
                started.elapsed()
            );
            for pid in pids_in(&dir.file("pids")).await {
                assert!(
                    eventually(|| !alive(pid)).await,
                    "pid {pid} survived SIGKILL"
                );
            }
        }

        #[tokio::test]
        async fn cancellation_stops_the_whole_process_group() {
            let dir = TempDir::new();
            let token = CancellationToken::new();
            let ctx = ctx(family(&dir, "")).with_cancel(token.clone());
            let attempt = tokio::spawn(async move { ProcessRunner::default().run(ctx).await });
            let pids = pids_in(&dir.file("pids")).await;
            assert!(pids.iter().all(|&p| alive(p)));
            token.cancel();
            let failure = attempt.await.unwrap().unwrap_err();
            assert_eq!(failure.class, FailureClass::Cancelled);
            for pid in pids {
                assert!(
                    eventually(|| !alive(pid)).await,
                    "pid {pid} survived cancellation"
                );
            }
        }

        #[tokio::test]
        async fn nothing_starts_once_cancelled_or_past_the_deadline() {
            let dir = TempDir::new();
            let marker = dir.file("ran");
            let params = json!({"command": "touch", "args": [marker]});
            let token = CancellationToken::new();
            token.cancel();
            let failure = ProcessRunner::default()
                .run(ctx(params.clone()).with_cancel(token.clone()))
                .await
                .unwrap_err();
            assert_eq!(failure.class, FailureClass::Cancelled);
            // The executor cancels timed-out attempts too: that is a timeout.
            let past = Instant::now() - Duration::from_millis(1);
            let failure = ProcessRunner::default()
                .run(ctx(params).with_cancel(token).with_deadline(Some(past)))
                .await
                .unwrap_err();
            assert_eq!(failure.class, FailureClass::Timeout);
            assert!(!marker.exists());
        }

        #[tokio::test]
        async fn dropping_the_attempt_kills_the_whole_process_group() {
            let dir = TempDir::new();
            let runner = ProcessRunner::default();
            let mut attempt = Box::pin(runner.run(ctx(family(&dir, "trap '' TERM;"))));
            let pids_file = dir.file("pids");
            let pids = tokio::select! {
                pids = pids_in(&pids_file) => pids,
                result = &mut attempt => panic!("the attempt ended early: {result:?}"),
            };
            assert!(pids.iter().all(|&p| alive(p)));
            drop(attempt);
            for pid in pids {
                assert!(
                    eventually(|| !alive(pid)).await,
                    "pid {pid} outlived its attempt"
                );
            }
        }

        #[tokio::test]
        async fn processes_left_behind_are_stopped_and_do_not_hold_the_output() {
            let dir = TempDir::new();
            let started = Instant::now();
            // The background sleep inherits stdout: waiting for EOF alone
            // would wait for it.
            let params = json!({
                "command": "sleep 1000 & echo $! > \"$PIDS\"; echo done",
                "shell": true,
                "env": {"PIDS": dir.file("pids")},
            });
            let runner = ProcessRunner::new(ProcessConfig {
                kill_grace: Duration::from_secs(60),
                ..ProcessConfig::default()
            });
            let out = runner.run(ctx(params)).await.unwrap();
            assert_eq!(out["stdout"], "done\n");
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{:?}",
                started.elapsed()
            );
            let pid: i32 = std::fs::read_to_string(dir.file("pids"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert!(
                eventually(|| !alive(pid)).await,
                "the left-behind pid {pid} survived"
            );
        }

        #[tokio::test]
        async fn the_heartbeat_beats_while_running_and_on_output() {
            let config = ProcessConfig {
                heartbeat_interval: Duration::from_millis(10),
                ..ProcessConfig::default()
            };
            let heartbeat = Heartbeat::live();
            ProcessRunner::new(config)
                .run(
                    ctx(json!({"command": "sleep", "args": ["0.2"]}))
                        .with_heartbeat(heartbeat.clone()),
                )
                .await
                .unwrap();
            assert!(heartbeat.beats() >= 5, "only {} beats", heartbeat.beats());

            // The ticker fires once at the start and then not for an hour, so
            // any further beat came from output arriving.
            let config = ProcessConfig {
                heartbeat_interval: Duration::from_secs(3600),
                ..ProcessConfig::default()
            };
            let heartbeat = Heartbeat::live();
            ProcessRunner::new(config)
                .run(ctx(sh("echo one; sleep 0.05; echo two")).with_heartbeat(heartbeat.clone()))
                .await
                .unwrap();
            assert!(heartbeat.beats() >= 2, "only {} beats", heartbeat.beats());
        }
    }
}
