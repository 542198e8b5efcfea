//! `orchestrator dlq …`: the dead-letter queue of a store — list, show,
//! requeue (following the reopened job to its end, like `rerun`) and
//! discard with a reason.

use clap::{Args, Subcommand};
use orchestrator_core::store::dead_letter::{
    DeadLetter, DeadLetterCursor, DeadLetterId, DeadLetterQuery, DeadLetterReason, DeadLetterStatus,
};
use orchestrator_core::{DeadLetterError, ExecutorError, JobId};

use crate::cli::{ExecArgs, OutputArgs, StoreArgs};
use crate::commands::{finish, follow_one, install_interrupts, start_executor, to_json, Display};
use crate::error::{CliError, EXIT_OK};
use crate::progress::Sink;
use crate::store::open_store;
use crate::summary::utc;

const DLQ_EXAMPLES: &str = "\
Examples:
  orchestrator dlq list --status open
  orchestrator dlq show 01J9Z3K4Q8X2M5N7P0R6S1T3V4.2.1
  orchestrator dlq requeue 01J9Z3K4Q8X2M5N7P0R6S1T3V4.2.1
  orchestrator dlq discard 01J9Z3K4Q8X2M5N7P0R6S1T3V4.2.1 --reason 'fixture retired'

A node lands here when it failed for good (retries exhausted, or a failure
class its policy never retries) or its compensation did. Entry ids are
<job>.<node index>.<n>. `requeue` reopens the failed job, runs the node
again with a fresh attempt budget, then the nodes after it; `discard`
keeps the reason in the job's journal.";

/// The user journaled for requeues and discards made from the command line.
const BY: &str = "local";

/// `orchestrator dlq …`.
#[derive(Debug, Subcommand)]
#[command(after_help = DLQ_EXAMPLES)]
pub(crate) enum DlqCommand {
    /// List dead letters, newest first.
    #[command(after_help = DLQ_EXAMPLES)]
    List(DlqListArgs),
    /// Show one dead letter: its node, params, attempts and resolution.
    #[command(after_help = DLQ_EXAMPLES)]
    Show(DlqShowArgs),
    /// Run the node again in its job, then the job's downstream nodes;
    /// follow the job to its end.
    #[command(after_help = DLQ_EXAMPLES)]
    Requeue(DlqRequeueArgs),
    /// Leave a dead letter as it is, with a reason kept in the journal.
    #[command(after_help = DLQ_EXAMPLES)]
    Discard(DlqDiscardArgs),
}

/// `orchestrator dlq list`.
#[derive(Debug, Args)]
pub(crate) struct DlqListArgs {
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Only this job's entries.
    #[arg(long, value_name = "ID")]
    pub(crate) job: Option<JobId>,
    /// Only entries in this status: open, requeued, discarded (repeatable).
    #[arg(long, value_name = "STATUS", value_parser = str::parse::<DeadLetterStatus>)]
    pub(crate) status: Vec<DeadLetterStatus>,
    /// Only entries with this reason: retries_exhausted, non_retryable,
    /// compensation_failed (repeatable).
    #[arg(long, value_name = "REASON", value_parser = str::parse::<DeadLetterReason>)]
    pub(crate) reason: Vec<DeadLetterReason>,
    /// Most entries to list (1 to 1000).
    #[arg(long, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub(crate) limit: u16,
    /// Continue after the last entry of a previous page.
    #[arg(long, value_name = "CURSOR")]
    pub(crate) cursor: Option<String>,
    /// Print the page as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `orchestrator dlq show`.
#[derive(Debug, Args)]
pub(crate) struct DlqShowArgs {
    /// The entry.
    #[arg(value_name = "ID", value_parser = str::parse::<DeadLetterId>)]
    pub(crate) id: DeadLetterId,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Print the entry as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `orchestrator dlq requeue`.
#[derive(Debug, Args)]
pub(crate) struct DlqRequeueArgs {
    /// The entry.
    #[arg(value_name = "ID", value_parser = str::parse::<DeadLetterId>)]
    pub(crate) id: DeadLetterId,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    #[command(flatten)]
    pub(crate) exec: ExecArgs,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// `orchestrator dlq discard`.
#[derive(Debug, Args)]
pub(crate) struct DlqDiscardArgs {
    /// The entry.
    #[arg(value_name = "ID", value_parser = str::parse::<DeadLetterId>)]
    pub(crate) id: DeadLetterId,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Why it is left as it is, kept in the job's journal (required).
    #[arg(long, value_name = "TEXT")]
    pub(crate) reason: String,
}

/// Runs one `dlq` command.
pub(crate) async fn execute(command: DlqCommand) -> Result<u8, CliError> {
    match command {
        DlqCommand::List(args) => list(args).await,
        DlqCommand::Show(args) => show(args).await,
        DlqCommand::Requeue(args) => requeue(args).await,
        DlqCommand::Discard(args) => discard(args).await,
    }
}

/// Dead-letter refusals are the user's to fix (exit 2); the rest as usual.
fn refused(e: ExecutorError, store: &str) -> CliError {
    match e {
        ExecutorError::DeadLetter(DeadLetterError::NotFound(id)) => {
            CliError::Usage(format!("dead letter {id} not found in store {store}"))
        }
        e @ (ExecutorError::DeadLetter(_) | ExecutorError::Busy { .. }) => {
            CliError::Usage(e.to_string())
        }
        other => CliError::from_executor(other, "", store),
    }
}

fn clip(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    if s.chars().count() > n {
        out.push('…');
    }
    out
}

async fn list(args: DlqListArgs) -> Result<u8, CliError> {
    let store_name = args.store.store.to_string();
    let store = open_store(&args.store.store).await?;
    let cursor = args
        .cursor
        .as_deref()
        .map(str::parse::<DeadLetterCursor>)
        .transpose()
        .map_err(|e| CliError::Usage(format!("--cursor: {e}")))?;
    let query = DeadLetterQuery {
        job: args.job,
        statuses: args.status,
        reasons: args.reason,
        limit: usize::from(args.limit),
        cursor,
        ..DeadLetterQuery::default()
    };
    let page = store.list_dead_letters(&query).await?;
    let out = Sink::Stdout;
    if args.json {
        out.line(&to_json(&page));
        return Ok(EXIT_OK);
    }
    if page.dead_letters.is_empty() {
        out.line(&format!("no dead letters in store {store_name}"));
        return Ok(EXIT_OK);
    }
    let idw = page
        .dead_letters
        .iter()
        .map(|d| d.id.to_string().len())
        .max()
        .unwrap_or(2);
    out.line(&format!(
        "{:idw$}  {:9}  {:19}  {:20}  {:20}  LAST ERROR",
        "ID", "STATUS", "REASON", "CREATED", "JOB / NODE"
    ));
    for d in &page.dead_letters {
        out.line(&format!(
            "{:idw$}  {:9}  {:19}  {:20}  {:20}  {}",
            d.id.to_string(),
            d.status.as_str(),
            d.reason.as_str(),
            utc(d.created_at),
            clip(&format!("{} / {}", d.job_name, d.node), 20),
            clip(&format!("{}: {}", d.failure.class, d.failure.message), 60),
        ));
    }
    if let Some(next) = page.next_cursor {
        out.line(&format!("more: --cursor {next}"));
    }
    Ok(EXIT_OK)
}

fn describe(d: &DeadLetter) -> String {
    let mut lines = vec![
        format!("dead letter {} ({})", d.id, d.status),
        format!("  job {} ({}), owner {}", d.job, d.job_name, d.owner),
        format!(
            "  node {} (type {}, index {})",
            d.node, d.node_type, d.node_index
        ),
        format!("  reason {}, at {}", d.reason, utc(d.created_at)),
        format!("  last error {}: {}", d.failure.class, d.failure.message),
    ];
    if !d.params.is_null() {
        lines.push(format!("  params {}", d.params));
    }
    lines.push("  attempts:".into());
    for a in &d.attempts {
        let what = if a.compensation {
            "compensation"
        } else {
            "attempt"
        };
        let failure = a
            .failure
            .as_ref()
            .map(|f| format!(" {}: {}", f.class, clip(&f.message, 80)))
            .unwrap_or_default();
        let retry = a
            .retry_in_ms
            .map(|ms| format!(", retry in {ms} ms"))
            .unwrap_or_default();
        lines.push(format!(
            "    {what} {} started {}: {:?}{retry}{failure}",
            a.attempt,
            utc(a.started_at),
            a.decision
        ));
    }
    if let Some(r) = &d.resolution {
        let why = r
            .reason
            .as_ref()
            .map(|w| format!(": {w}"))
            .unwrap_or_default();
        lines.push(format!("  {} by {} at {}{why}", r.status, r.by, utc(r.at)));
    }
    lines.join("\n")
}

async fn show(args: DlqShowArgs) -> Result<u8, CliError> {
    let store_name = args.store.store.to_string();
    let store = open_store(&args.store.store).await?;
    let entry = store.dead_letter(&args.id).await?.ok_or_else(|| {
        CliError::Usage(format!(
            "dead letter {} not found in store {store_name}",
            args.id
        ))
    })?;
    if args.json {
        Sink::Stdout.line(&to_json(&entry));
    } else {
        Sink::Stdout.line(&describe(&entry));
    }
    Ok(EXIT_OK)
}

async fn requeue(args: DlqRequeueArgs) -> Result<u8, CliError> {
    let display = Display::new(&args.output);
    let store_name = args.store.store.to_string();
    let store = open_store(&args.store.store).await?;
    let before = store
        .summary(&args.id.job)
        .await
        .map_err(|e| CliError::from_store(e, &store_name))?;
    let mut interrupts = install_interrupts()?;
    let executor = start_executor(store.clone(), [], args.exec.config()?, &store_name).await?;
    let job = executor
        .requeue(&args.id, BY)
        .await
        .map_err(|e| refused(e, &store_name))?;
    display.sink.line(&format!(
        "dead letter {} requeued: job {job} ({}) is running again",
        args.id, before.name
    ));
    let view = follow_one(
        &executor,
        &mut interrupts,
        &args.store.store,
        &display,
        &job,
        before.progress.version,
    )
    .await?;
    finish(&executor, &args.output, display.sink, vec![view]).await
}

async fn discard(args: DlqDiscardArgs) -> Result<u8, CliError> {
    let store_name = args.store.store.to_string();
    let store = open_store(&args.store.store).await?;
    let executor = start_executor(
        store.clone(),
        [],
        orchestrator_core::ExecutorConfig::default(),
        &store_name,
    )
    .await?;
    executor
        .discard(&args.id, BY, &args.reason)
        .await
        .map_err(|e| refused(e, &store_name))?;
    let entry = executor
        .dead_letter(&args.id)
        .await
        .map_err(|e| refused(e, &store_name))?;
    Sink::Stdout.line(&format!(
        "dead letter {} {}: {}",
        args.id, entry.status, args.reason
    ));
    Ok(EXIT_OK)
}
