//! The command line: every command, flag and environment variable, with the
//! examples `--help` shows.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use orchestrator_core::{ExecutorConfig, HumanDuration, JobId, JobState};

use crate::error::CliError;
use crate::store::{StoreSpec, DEFAULT_STORE};

const MAIN_EXAMPLES: &str = "\
Examples:
  orchestrator validate examples/plans/quickstart.yaml
  orchestrator run examples/plans/quickstart.yaml --junit target/junit.xml
  orchestrator run plan.json --store memory --json > status.json
  orchestrator resume
  orchestrator graph plan.yaml --format mermaid
  orchestrator jobs list
  orchestrator serve --dev

Environment:
  DATABASE_URL            the store, as --store takes it
  JWT_SECRET_KEY          the API's token secret (`serve`, `token`)
  MAX_CONCURRENT_NODES, DEFAULT_RETRY_ATTEMPTS, MAX_RETRY_DELAY, JOB_TIMEOUT
                          executor settings, as the flags of `run` and `resume`
  ORCHESTRATOR_LOG        engine log level on stderr: off, error, warn (default),
                          info, debug, trace
  NO_COLOR                no colours

Exit codes:
  0  the job succeeded (or the command did what it was asked)
  1  the job failed, was cancelled or timed out
  2  invalid plan, unknown job or bad usage
  3  store or internal error";

const RUN_EXAMPLES: &str = "\
Examples:
  # Live progress on a terminal, a summary table at the end:
  orchestrator run examples/plans/quickstart.yaml

  # In CI: plain events, a JUnit report, and the exit code as the verdict:
  orchestrator run plan.yaml --no-progress --junit target/orchestrator-junit.xml

  # Machine-readable final status; nothing kept after the process exits:
  orchestrator run plan.json --store memory --json | jq .state

  # Read the plan from standard input, run at most 4 nodes at once:
  generate-plan | orchestrator run - --max-concurrent-nodes 4

Ctrl-C cancels the job gracefully (running attempts are signalled, the job
ends `cancelled` in the journal); a second Ctrl-C stops at once, and
`orchestrator resume` finishes the job later from a persistent store.";

const RERUN_EXAMPLES: &str = "\
Examples:
  # Re-run what failed (failed, timed-out, cancelled, skipped and
  # upstream-failed nodes), keeping what succeeded:
  orchestrator rerun 01J9Z3K4Q8X2M5N7P0R6S1T3V4

  # Also run `integration` and everything after it again:
  orchestrator rerun 01J9Z3K4Q8X2M5N7P0R6S1T3V4 --from integration

The rerun is a new job (labelled `rerun_of`); succeeded nodes are carried
over with their outputs and never run again.";

const ROLLBACK_EXAMPLES: &str = "\
Examples:
  # Undo a job: each succeeded node's `compensate` step runs, in reverse
  # dependency order, independent ones in parallel:
  orchestrator rollback 01J9Z3K4Q8X2M5N7P0R6S1T3V4 --reason \"release withdrawn\"

Exit code 0 when every compensation succeeded (`rolled_back`), 1 when one
kept failing (`rollback_incomplete`: that node is dead-lettered).";

const RESUME_EXAMPLES: &str = "\
Examples:
  # Continue every unfinished job after a crash or kill:
  orchestrator resume

  # Continue one job, from a store elsewhere, with a JUnit report:
  orchestrator resume 01J9Z3K4Q8X2M5N7P0R6S1T3V4 --store sled:/var/lib/orchestrator --junit junit.xml

Nodes that already succeeded are never run again; attempts that were in
flight when the process died are recorded as interrupted and retried by
their retry policy. With several jobs, each is shown in turn (they all run
at once), and `--json` prints one status per job.";

const VALIDATE_EXAMPLES: &str = "\
Examples:
  orchestrator validate examples/plans/quickstart.yaml
  orchestrator validate examples/plans/cycle.yaml      # lists the cycle, exits 2
  orchestrator validate plan.json --json | jq '.[].code'";

const GRAPH_EXAMPLES: &str = "\
Examples:
  orchestrator graph examples/plans/quickstart.yaml | dot -Tsvg > quickstart.svg
  orchestrator graph plan.yaml --format mermaid > plan.mmd

  # The stored job's own plan, nodes coloured by their state:
  orchestrator graph --job 01J9Z3K4Q8X2M5N7P0R6S1T3V4 --store sled:.orchestrator

The critical path (the longest chain of dependencies) is drawn in bold.";

const SERVE_EXAMPLES: &str = "\
Examples:
  # Try it: a generated secret, an admin token printed, jobs in memory:
  orchestrator serve --dev --store memory

  # In production: a secret from the environment, jobs in sled:
  JWT_SECRET_KEY=$(cat /run/secrets/jwt) orchestrator serve --bind 0.0.0.0:8080 --store sled:/var/lib/orchestrator

  # Tokens from an identity provider (RS256), pytest allowed as a command:
  orchestrator serve --jwt-public-key idp.pem --jwt-algorithm RS256 --jwt-issuer https://idp.example --allow-process-commands pytest

The API is under /api/v1/orchestration (docs at /api/v1/orchestration/docs).
SIGTERM or Ctrl-C stops accepting requests, ends event streams, and exits;
every state change is already journaled, and the next start resumes the
unfinished jobs.";

const TOKEN_EXAMPLES: &str = "\
Examples:
  JWT_SECRET_KEY=... orchestrator token --sub alice --ttl 8h
  orchestrator token --sub ci-bot --role admin --jwt-secret \"$SECRET\"
  curl -H \"Authorization: Bearer $(orchestrator token --sub alice)\" localhost:8080/api/v1/orchestration/jobs";

const STATS_EXAMPLES: &str = "\
Examples:
  orchestrator stats --store sled:.orchestrator
  orchestrator stats --since 7d --json | jq .mean_time_to_recovery_ms
  orchestrator stats --since 2025-01-01T00:00:00Z --until 2025-02-01T00:00:00Z --owner alice

A failure is a node with a failed attempt; it is recovered when the node then
succeeds in the same run. Time to recovery runs from its first failed attempt
to its success.";

const JOBS_EXAMPLES: &str = "\
Examples:
  orchestrator jobs list --state running --state recovering
  orchestrator jobs show 01J9Z3K4Q8X2M5N7P0R6S1T3V4 --events
  orchestrator jobs cancel 01J9Z3K4Q8X2M5N7P0R6S1T3V4 --reason 'superseded'";

/// Runs DAGs of test-execution nodes from plan files: journaled, recoverable,
/// with live progress and JUnit reports.
#[derive(Debug, Parser)]
#[command(name = "orchestrator", version, after_help = MAIN_EXAMPLES)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a plan: print the job id, follow the job, end with a summary.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Continue unfinished jobs of a store after a crash or kill.
    #[command(after_help = RESUME_EXAMPLES)]
    Resume(ResumeArgs),
    /// Run a finished job again, re-executing only what did not succeed.
    #[command(after_help = RERUN_EXAMPLES)]
    Rerun(RerunArgs),
    /// Undo a finished job: run its nodes' compensations in reverse order.
    #[command(after_help = ROLLBACK_EXAMPLES)]
    Rollback(RollbackArgs),
    /// Check a plan: every problem with its path and code, or a short
    /// description of its DAG.
    #[command(after_help = VALIDATE_EXAMPLES)]
    Validate(ValidateArgs),
    /// Print a plan's DAG as Graphviz dot or Mermaid.
    #[command(after_help = GRAPH_EXAMPLES)]
    Graph(GraphArgs),
    /// List, inspect and cancel the jobs of a store.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// The dead-letter queue: list, show, requeue or discard nodes that
    /// failed for good.
    #[command(subcommand)]
    Dlq(crate::dlq::DlqCommand),
    /// Report flaky tests: each test's flakiness score from its recorded
    /// history across jobs, most flaky first.
    #[command(after_help = FLAKY_EXAMPLES)]
    Flaky(FlakyArgs),
    /// Serve the REST API (JWT auth, live events, metrics, OpenAPI docs).
    #[command(after_help = SERVE_EXAMPLES)]
    Serve(ServeArgs),
    /// Mint a JWT for the API from the configured secret.
    #[command(after_help = TOKEN_EXAMPLES)]
    Token(TokenArgs),
    /// Recovery analytics of the stored jobs: mean time to recovery, the
    /// share of failures recovered automatically, retries per node type.
    #[command(after_help = STATS_EXAMPLES)]
    Stats(crate::stats::StatsArgs),
    /// Stored, versioned retry policies: list, show, create.
    #[command(subcommand)]
    Policy(crate::policy::PolicyCommand),
}

/// JWT settings shared by `serve` and `token`.
#[derive(Debug, Args)]
pub(crate) struct JwtArgs {
    /// HS256 secret tokens are signed with (at least 32 bytes).
    #[arg(
        long,
        value_name = "SECRET",
        env = "JWT_SECRET_KEY",
        hide_env_values = true
    )]
    pub(crate) jwt_secret: Option<String>,
    /// Required `iss` claim.
    #[arg(long, value_name = "ISSUER", env = "JWT_ISSUER")]
    pub(crate) jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, value_name = "AUDIENCE", env = "JWT_AUDIENCE")]
    pub(crate) jwt_audience: Option<String>,
}

/// Public-key algorithms `serve` can verify tokens with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum KeyAlgorithm {
    /// RSA with SHA-256.
    #[value(name = "RS256")]
    Rs256,
    /// ECDSA P-256 with SHA-256.
    #[value(name = "ES256")]
    Es256,
}

/// `orchestrator serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(
        long,
        value_name = "ADDR",
        env = "ORCHESTRATOR_BIND",
        default_value = "127.0.0.1:8080"
    )]
    pub(crate) bind: std::net::SocketAddr,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    #[command(flatten)]
    pub(crate) exec: ExecArgs,
    #[command(flatten)]
    pub(crate) jwt: JwtArgs,
    /// Verify tokens with this public key (PEM) instead of a secret.
    #[arg(
        long,
        value_name = "FILE",
        env = "JWT_PUBLIC_KEY_FILE",
        conflicts_with = "jwt_secret",
        requires = "jwt_algorithm"
    )]
    pub(crate) jwt_public_key: Option<PathBuf>,
    /// The algorithm of `--jwt-public-key`.
    #[arg(long, value_enum, value_name = "ALG", env = "JWT_ALGORITHM")]
    pub(crate) jwt_algorithm: Option<KeyAlgorithm>,
    /// Development mode: without a secret, generate one and print an admin
    /// token for it.
    #[arg(long)]
    pub(crate) dev: bool,
    /// Node types jobs may use over HTTP, besides `process` (comma-separated).
    #[arg(
        long,
        value_name = "TYPES",
        value_delimiter = ',',
        default_value = "noop,sleep"
    )]
    pub(crate) allow_node_types: Vec<String>,
    /// Enable `process` nodes for exactly these commands (comma-separated).
    #[arg(
        long,
        value_name = "COMMANDS",
        env = "ALLOW_PROCESS_COMMANDS",
        value_delimiter = ','
    )]
    pub(crate) allow_process_commands: Vec<String>,
    /// Authenticated requests per minute per user; 0 disables the limit.
    #[arg(
        long,
        value_name = "N",
        env = "RATE_LIMIT_PER_MINUTE",
        default_value_t = 100
    )]
    pub(crate) rate_limit: u32,
    /// Largest request body, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=1 << 30))]
    pub(crate) max_body_bytes: u64,
    #[command(flatten)]
    pub(crate) notify: crate::notify::NotifyArgs,
}

/// `orchestrator token`.
#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    /// The user (`sub`): jobs submitted with the token belong to them.
    #[arg(long, value_name = "USER")]
    pub(crate) sub: String,
    /// A role to grant (repeatable); `admin` sees and manages every job.
    #[arg(long = "role", value_name = "ROLE")]
    pub(crate) roles: Vec<String>,
    /// How long the token is valid, e.g. `1h`, `30m`, `7d`.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub(crate) ttl: Duration,
    #[command(flatten)]
    pub(crate) jwt: JwtArgs,
}

/// `--store`, shared by every command that opens one.
#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    /// Where jobs are journaled: `memory` (this process only), `sled:PATH`
    /// or `mongodb://…`.
    #[arg(
        long,
        value_name = "STORE",
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = DEFAULT_STORE
    )]
    pub(crate) store: StoreSpec,
}

/// Executor settings; unset ones keep the engine's defaults.
#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    /// Most node attempts running at once [default: 10].
    #[arg(long, value_name = "N", env = "MAX_CONCURRENT_NODES",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_concurrent_nodes: Option<u32>,
    /// Attempts per node (the first included) when a plan's retry policy
    /// does not say [default: 3].
    #[arg(long, value_name = "N", env = "DEFAULT_RETRY_ATTEMPTS",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) default_retry_attempts: Option<u32>,
    /// Longest single delay between attempts, e.g. `300` (seconds), `90s`,
    /// `5m` [default: 300s].
    #[arg(long, value_name = "DURATION", env = "MAX_RETRY_DELAY", value_parser = parse_duration)]
    pub(crate) max_retry_delay: Option<Duration>,
    /// Timeout of a job whose plan sets none, e.g. `3600` (seconds), `1h`
    /// [default: 1h].
    #[arg(long, value_name = "DURATION", env = "JOB_TIMEOUT", value_parser = parse_duration)]
    pub(crate) job_timeout: Option<Duration>,
    /// How long this process's lease on a job lasts unless renewed; a
    /// crashed process's jobs are taken over between one TTL and one TTL
    /// plus a heartbeat after its last renewal [default: 15s].
    #[arg(long, value_name = "DURATION", env = "LEASE_TTL", value_parser = parse_duration)]
    pub(crate) lease_ttl: Option<Duration>,
    /// How often leases are renewed and queued or orphaned jobs claimed;
    /// below the lease TTL [default: 5s, or a third of --lease-ttl].
    #[arg(long, value_name = "DURATION", env = "HEARTBEAT_INTERVAL", value_parser = parse_duration)]
    pub(crate) heartbeat: Option<Duration>,
    /// Most jobs this process runs at once; more stay queued in the store
    /// for any process with room [default: unlimited].
    #[arg(long, value_name = "N", env = "PROCESS_CAPACITY",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) capacity: Option<u32>,
    /// This process's id in job leases (unique per process) [default: the
    /// process id and random hex].
    #[arg(long, value_name = "ID", env = "INSTANCE_ID")]
    pub(crate) instance_id: Option<String>,
    /// How long the scheduler may go without answering before this process
    /// counts as wedged, reports its jobs stuck and hands them to other
    /// processes; above --heartbeat [default: 60s, or two heartbeats if
    /// longer].
    #[arg(long, value_name = "DURATION", env = "STALL_TIMEOUT", value_parser = parse_duration)]
    pub(crate) stall_timeout: Option<Duration>,
    /// How much longer than it may legitimately wait (its running attempts'
    /// timeouts, its retry timers) a job may go without journaling anything
    /// before it is reported stuck [default: 60s].
    #[arg(long, value_name = "DURATION", env = "STALL_GRACE", value_parser = parse_duration)]
    pub(crate) stall_grace: Option<Duration>,
}

impl ExecArgs {
    /// The executor configuration: the engine's defaults, overridden by
    /// whatever was given.
    pub(crate) fn config(&self) -> Result<ExecutorConfig, CliError> {
        let mut config = ExecutorConfig::default();
        if let Some(n) = self.max_concurrent_nodes {
            config.max_concurrent_nodes = n as usize;
        }
        if let Some(n) = self.default_retry_attempts {
            config.retry.max_attempts = n;
        }
        if let Some(d) = self.max_retry_delay {
            config.retry.max_delay = d;
        }
        if let Some(d) = self.job_timeout {
            config.job_timeout = d;
        }
        let lease = &mut config.lease;
        if let Some(ttl) = self.lease_ttl {
            lease.ttl = ttl;
            lease.heartbeat = ttl / 3;
        }
        if let Some(every) = self.heartbeat {
            lease.heartbeat = every;
        }
        if lease.heartbeat.is_zero() || lease.heartbeat >= lease.ttl {
            return Err(CliError::Usage(format!(
                "--heartbeat ({:?}) must be above zero and below --lease-ttl ({:?})",
                lease.heartbeat, lease.ttl
            )));
        }
        if let Some(n) = self.capacity {
            lease.capacity = n as usize;
        }
        match self.stall_timeout {
            Some(d) if d <= lease.heartbeat => {
                return Err(CliError::Usage(format!(
                    "--stall-timeout ({d:?}) must be above --heartbeat ({:?}): the scheduler is asked once per heartbeat",
                    lease.heartbeat
                )));
            }
            Some(d) => lease.stall_timeout = d,
            // A long heartbeat raises the default.
            None => lease.stall_timeout = lease.stall_timeout.max(lease.heartbeat * 2),
        }
        if let Some(d) = self.stall_grace {
            lease.stall_grace = d;
        }
        if let Some(id) = &self.instance_id {
            if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
                return Err(CliError::Usage(
                    "--instance-id must be 1 to 128 printable characters".into(),
                ));
            }
            lease.owner.clone_from(id);
        }
        Ok(config)
    }
}

/// How a followed job is shown.
#[derive(Debug, Args)]
pub(crate) struct OutputArgs {
    /// Write a JUnit XML report (one testcase per node, flaky nodes marked
    /// as cargo-nextest does) to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) junit: Option<PathBuf>,
    /// Print the final job status as JSON on stdout instead of the table
    /// (progress and events go to stderr).
    #[arg(long)]
    pub(crate) json: bool,
    /// Print plain line-by-line events instead of live progress bars.
    #[arg(long)]
    pub(crate) no_progress: bool,
}

/// `orchestrator run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The plan: a job spec in YAML or JSON (`-` reads standard input).
    #[arg(value_name = "PLAN")]
    pub(crate) plan: PathBuf,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    #[command(flatten)]
    pub(crate) exec: ExecArgs,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
    #[command(flatten)]
    pub(crate) notify: crate::notify::NotifyArgs,
}

/// `orchestrator resume`.
#[derive(Debug, Args)]
pub(crate) struct ResumeArgs {
    /// The job to continue; every unfinished job of the store without it.
    #[arg(value_name = "JOB_ID")]
    pub(crate) job: Option<JobId>,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    #[command(flatten)]
    pub(crate) exec: ExecArgs,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// `orchestrator rerun`.
#[derive(Debug, Args)]
pub(crate) struct RerunArgs {
    /// The finished job to run again.
    #[arg(value_name = "JOB_ID")]
    pub(crate) job: JobId,
    /// Also run this node and everything downstream of it again.
    #[arg(long, value_name = "NODE")]
    pub(crate) from: Option<String>,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    #[command(flatten)]
    pub(crate) exec: ExecArgs,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// `orchestrator rollback`.
#[derive(Debug, Args)]
pub(crate) struct RollbackArgs {
    /// The finished job to undo.
    #[arg(value_name = "JOB_ID")]
    pub(crate) job: JobId,
    /// Why, kept in the journal.
    #[arg(long)]
    pub(crate) reason: Option<String>,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    #[command(flatten)]
    pub(crate) exec: ExecArgs,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// `orchestrator validate`.
#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// The plan: a job spec in YAML or JSON (`-` reads standard input).
    #[arg(value_name = "PLAN")]
    pub(crate) plan: PathBuf,
    /// Print the problems (or the DAG's description) as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Where stored policies the plan names are looked up (opened only
    /// when the plan names one).
    #[command(flatten)]
    pub(crate) store: StoreArgs,
}

/// Graph output formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum GraphFormat {
    /// Graphviz dot (`dot -Tsvg`).
    #[default]
    Dot,
    /// A Mermaid flowchart (Markdown, GitHub, GitLab).
    Mermaid,
}

/// `orchestrator graph`.
#[derive(Debug, Args)]
pub(crate) struct GraphArgs {
    /// The plan to draw; with `--job` alone, the job's own plan is drawn.
    #[arg(value_name = "PLAN", required_unless_present = "job")]
    pub(crate) plan: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub(crate) format: GraphFormat,
    /// Colour the nodes by the state they have in this stored job (matched
    /// by node id when a PLAN is given too).
    #[arg(long, value_name = "ID")]
    pub(crate) job: Option<JobId>,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
}

const FLAKY_EXAMPLES: &str = "\
Examples:
  # Every test with a history, most flaky first:
  orchestrator flaky --store sled:.orchestrator

  # Only the tests of the `nightly` job scoring at least 0.2, as JSON:
  orchestrator flaky --job-name nightly --min-score 0.2 --json

The score is the flip rate of a test's last runs (a run that failed then
passed counts as a flip, as does a result different from the previous
run's); `class` is new, stable, flaky or failing.";

/// `orchestrator flaky`.
#[derive(Debug, Args)]
pub(crate) struct FlakyArgs {
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Only tests run by jobs of exactly this name.
    #[arg(long, value_name = "NAME")]
    pub(crate) job_name: Option<String>,
    /// Only test keys starting with this.
    #[arg(long, value_name = "PREFIX")]
    pub(crate) prefix: Option<String>,
    /// Only tests whose score is at least this (0 to 1).
    #[arg(long, value_name = "SCORE", value_parser = parse_score)]
    pub(crate) min_score: Option<f64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

fn parse_score(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a score from 0 to 1")),
    }
}

/// `orchestrator jobs …`.
#[derive(Debug, Subcommand)]
#[command(after_help = JOBS_EXAMPLES)]
pub(crate) enum JobsCommand {
    /// List jobs, newest first.
    #[command(after_help = JOBS_EXAMPLES)]
    List(ListArgs),
    /// Show one job: its nodes, attempts, durations and errors.
    #[command(after_help = JOBS_EXAMPLES)]
    Show(ShowArgs),
    /// Cancel an unfinished job: nothing new starts, it ends `cancelled`.
    #[command(after_help = JOBS_EXAMPLES)]
    Cancel(CancelArgs),
}

/// `orchestrator jobs list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Only jobs in this state (repeatable).
    #[arg(long, value_name = "STATE", value_parser = parse_job_state)]
    pub(crate) state: Vec<JobState>,
    /// Only jobs whose name contains this text (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    pub(crate) name: Option<String>,
    /// Most jobs to list (1 to 1000).
    #[arg(long, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub(crate) limit: u16,
    /// Continue after the last job of a previous page.
    #[arg(long, value_name = "CURSOR")]
    pub(crate) cursor: Option<String>,
    /// Print the page as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `orchestrator jobs show`.
#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The job.
    #[arg(value_name = "ID")]
    pub(crate) job: JobId,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Print the job's status as JSON.
    #[arg(long, conflicts_with = "events")]
    pub(crate) json: bool,
    /// Print the job's whole journal, one event a line, before the summary.
    #[arg(long)]
    pub(crate) events: bool,
}

/// `orchestrator jobs cancel`.
#[derive(Debug, Args)]
pub(crate) struct CancelArgs {
    /// The job.
    #[arg(value_name = "ID")]
    pub(crate) job: JobId,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Why, for the journal.
    #[arg(long, value_name = "TEXT")]
    pub(crate) reason: Option<String>,
}

/// A duration from a flag or the environment. A bare number is seconds
/// (`JOB_TIMEOUT=3600`, as such variables are usually written); otherwise
/// a human duration such as `90s`, `5m`, `1h` or `250ms`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let d = if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = t
            .parse()
            .map_err(|_| format!("{s:?} is too large a number of seconds"))?;
        format!("{secs}s")
            .parse::<HumanDuration>()
            .map_err(|e| e.to_string())?
    } else {
        t.parse::<HumanDuration>().map_err(|e| e.to_string())?
    };
    if d.get().is_zero() {
        return Err("the duration must be positive".into());
    }
    Ok(d.get())
}

/// A job state by its snake_case name.
pub(crate) fn parse_job_state(s: &str) -> Result<JobState, String> {
    JobState::ALL
        .into_iter()
        .find(|state| state.as_str() == s)
        .ok_or_else(|| {
            let names: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
            format!("unknown job state {s:?}; one of: {}", names.join(", "))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_are_seconds_or_human() {
        assert_eq!(parse_duration("3600"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999999").is_err());
    }

    #[test]
    fn job_states_parse_by_name() {
        assert_eq!(parse_job_state("timed_out"), Ok(JobState::TimedOut));
        assert!(parse_job_state("done").unwrap_err().contains("succeeded"));
    }

    #[test]
    fn documented_defaults_match_the_engine() {
        // The help texts state these; keep them honest.
        let d = ExecutorConfig::default();
        assert_eq!(d.max_concurrent_nodes, 10);
        assert_eq!(d.retry.max_attempts, 3);
        assert_eq!(d.retry.max_delay, Duration::from_secs(300));
        assert_eq!(d.job_timeout, Duration::from_secs(3600));
    }

    #[test]
    fn flags_override_the_engine_defaults() {
        let cli = Cli::try_parse_from([
            "orchestrator",
            "run",
            "plan.yaml",
            "--store",
            "memory",
            "--max-concurrent-nodes",
            "4",
            "--default-retry-attempts",
            "5",
            "--max-retry-delay",
            "30",
            "--job-timeout",
            "10m",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run");
        };
        assert_eq!(run.store.store, StoreSpec::Memory);
        let config = run.exec.config().expect("the defaults are valid");
        assert_eq!(config.max_concurrent_nodes, 4);
        assert_eq!(config.retry.max_attempts, 5);
        assert_eq!(config.retry.max_delay, Duration::from_secs(30));
        assert_eq!(config.job_timeout, Duration::from_secs(600));
    }

    #[test]
    fn lease_flags_set_the_lease_config_and_are_checked() {
        let serve = |extra: &[&str]| {
            let mut args = vec!["orchestrator", "serve", "--store", "memory"];
            args.extend_from_slice(extra);
            let Command::Serve(serve) = Cli::try_parse_from(args).unwrap().command else {
                panic!("not serve");
            };
            serve.exec.config()
        };
        let config = serve(&[
            "--lease-ttl",
            "9s",
            "--capacity",
            "4",
            "--instance-id",
            "node-a",
        ])
        .unwrap();
        assert_eq!(config.lease.ttl, Duration::from_secs(9));
        assert_eq!(
            config.lease.heartbeat,
            Duration::from_secs(3),
            "a third of the TTL"
        );
        assert_eq!(config.lease.capacity, 4);
        assert_eq!(config.lease.owner, "node-a");
        let config = serve(&["--lease-ttl", "9s", "--heartbeat", "1s"]).unwrap();
        assert_eq!(config.lease.heartbeat, Duration::from_secs(1));
        assert_eq!(config.lease.stall_timeout, Duration::from_secs(60));
        assert_eq!(config.lease.stall_grace, Duration::from_secs(60));
        let config = serve(&["--stall-timeout", "2m", "--stall-grace", "30s"]).unwrap();
        assert_eq!(config.lease.stall_timeout, Duration::from_secs(120));
        assert_eq!(config.lease.stall_grace, Duration::from_secs(30));
        let config = serve(&["--lease-ttl", "3m"]).unwrap();
        assert_eq!(
            config.lease.stall_timeout,
            Duration::from_secs(120),
            "two heartbeats"
        );
        for bad in [
            &["--lease-ttl", "9s", "--heartbeat", "9s"][..],
            &["--heartbeat", "1m"][..],
            &["--instance-id", ""][..],
            &["--stall-timeout", "5s"][..],
            &["--lease-ttl", "3m", "--stall-timeout", "1m"][..],
        ] {
            assert!(
                matches!(serve(bad), Err(CliError::Usage(_))),
                "{bad:?} must be a usage error"
            );
        }
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["orchestrator", "run", "p.yaml", "--store", "postgres://x"][..],
            &[
                "orchestrator",
                "run",
                "p.yaml",
                "--max-concurrent-nodes",
                "0",
            ],
            &["orchestrator", "run", "p.yaml", "--job-timeout", "soon"],
            &["orchestrator", "resume", "not a job id"],
            &["orchestrator", "graph"],
            &["orchestrator", "jobs", "list", "--limit", "0"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }
}
