//! What each command does, on top of the engine.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use orchestrator_core::journal::JobView;
use orchestrator_core::store::{Cursor, JobQuery};
use orchestrator_core::{
    Clock, Dag, Executor, ExecutorConfig, ExecutorError, JobId, JobState, JobStatus, Limits,
    MemoryStore, PolicyRegistry, Recovery, Registry, Store, StoreExt, SystemClock,
};

use crate::cli::{
    CancelArgs, Command, GraphArgs, JobsCommand, ListArgs, OutputArgs, RerunArgs, ResumeArgs,
    RollbackArgs, RunArgs, ShowArgs, ValidateArgs,
};
use crate::describe::Description;
use crate::error::{self, exit_code_for, CliError, EXIT_INVALID, EXIT_OK};
use crate::follow::{Follower, Interrupts, Reporter};
use crate::graph::{self, Shown};
use crate::junit;
use crate::plan;
use crate::progress::{event_line, LiveReporter, PlainReporter, Sink};
use crate::store::{open_store, StoreSpec};
use crate::summary::{id_width, jobs_table, node_table, totals_line, utc};

/// The owner journaled for jobs submitted from the command line.
const OWNER: &str = "local";

/// How long the runtime may take to drop what is left (attempts of a job
/// stopped by a second Ctrl-C) before the process exits.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Runs `command` and returns the process exit code.
pub(crate) fn execute(command: Command) -> Result<u8, CliError> {
    // Commands that follow jobs get worker threads of their own, so drawing
    // progress never delays the scheduler. The others run on one thread,
    // which also serves `jobs cancel`: the scheduler task gets to run only
    // once the command awaits its cancellation, so the job's resumption and
    // its cancellation reach the scheduler together, before it dispatches
    // any of the job's nodes.
    let follows = matches!(
        command,
        Command::Run(_)
            | Command::Resume(_)
            | Command::Rerun(_)
            | Command::Rollback(_)
            | Command::Serve(_)
            | Command::Dlq(crate::dlq::DlqCommand::Requeue(_))
    );
    let runtime = if follows {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
    .map_err(|source| CliError::Internal {
        what: "start the async runtime",
        source,
    })?;
    let result = runtime.block_on(async move {
        match command {
            Command::Run(args) => run(args).await,
            Command::Resume(args) => resume(args).await,
            Command::Rerun(args) => rerun(args).await,
            Command::Rollback(args) => rollback(args).await,
            Command::Validate(args) => validate(args).await,
            Command::Graph(args) => graph(args).await,
            Command::Jobs(JobsCommand::List(args)) => list(args).await,
            Command::Jobs(JobsCommand::Show(args)) => show(args).await,
            Command::Jobs(JobsCommand::Cancel(args)) => cancel(args).await,
            Command::Dlq(command) => crate::dlq::execute(command).await,
            Command::Flaky(args) => crate::flaky::flaky(args).await,
            Command::Serve(args) => crate::serve::serve(args).await,
            Command::Token(args) => crate::serve::token(&args),
            Command::Stats(args) => crate::stats::stats(args).await,
            Command::Policy(command) => crate::policy::execute(command).await,
        }
    });
    // Dropping the runtime drops attempts still in flight (after a second
    // Ctrl-C), which kills their process groups.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    result
}

/// Starts an executor over `store` that resumes exactly the jobs of
/// `recover` (among those unfinished).
pub(crate) async fn start_executor(
    store: Arc<dyn Store>,
    recover: impl IntoIterator<Item = JobId>,
    config: ExecutorConfig,
    store_name: &str,
) -> Result<Executor, CliError> {
    // A command decides for itself which interrupted jobs it takes on: `run`
    // runs its plan and leaves others to `resume`; `resume ID` and
    // `jobs cancel ID` touch that job alone.
    Executor::builder(store)
        .recovery(Recovery::Only(recover.into_iter().collect()))
        .registry(Registry::with_builtins())
        .config(config)
        .start()
        .await
        .map_err(|e| CliError::from_executor(e, "", store_name))
}

pub(crate) fn install_interrupts() -> Result<Interrupts, CliError> {
    Interrupts::install().map_err(|source| CliError::Internal {
        what: "catch Ctrl-C",
        source,
    })
}

/// How a followed job is shown.
pub(crate) struct Display {
    /// Where people's text goes.
    pub(crate) sink: Sink,
    /// Live bars instead of event lines.
    live: bool,
}

impl Display {
    pub(crate) fn new(out: &OutputArgs) -> Self {
        let sink = if out.json { Sink::Stderr } else { Sink::Stdout };
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        Self {
            sink,
            live: !out.no_progress && !dumb && sink.is_terminal(),
        }
    }

    fn reporter(&self) -> Box<dyn Reporter> {
        if self.live {
            Box::new(LiveReporter::new(self.sink))
        } else {
            Box::new(PlainReporter::new(self.sink))
        }
    }
}

/// Reports, prints and scores followed jobs once they are over.
pub(crate) async fn finish(
    executor: &Executor,
    out: &OutputArgs,
    sink: Sink,
    views: Vec<JobView>,
) -> Result<u8, CliError> {
    let now = SystemClock.now();
    let statuses: Vec<JobStatus> = views.iter().map(|v| JobStatus::from_view(v, now)).collect();
    if let Some(file) = &out.junit {
        let mut jobs = Vec::with_capacity(statuses.len());
        for s in &statuses {
            let records = executor.store().read_all(&s.id, 0).await?;
            jobs.push((s.clone(), records));
        }
        write_junit(file, &junit::report(&jobs))?;
    }
    for s in &statuses {
        if out.json {
            Sink::Stdout.line(&to_json(s));
        } else {
            sink.line("");
            sink.text(&node_table(s, sink.width()));
            sink.line("");
            sink.line(&totals_line(s));
        }
    }
    if let Some(file) = &out.junit {
        sink.line(&format!("JUnit report written to {}", file.display()));
    }
    Ok(statuses
        .iter()
        .map(|s| exit_code_for(s.state))
        .max()
        .unwrap_or(EXIT_OK))
}

fn write_junit(file: &Path, report: &quick_junit::Report) -> Result<(), CliError> {
    let err = |source| CliError::WriteReport {
        file: file.to_path_buf(),
        source,
    };
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let text = report
        .to_string()
        .map_err(|e| err(std::io::Error::other(e.to_string())))?;
    std::fs::write(file, text).map_err(err)
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Serializing plain data structures into a string cannot fail.
    serde_json::to_string_pretty(value)
        .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
}

/// `orchestrator run`.
async fn run(args: RunArgs) -> Result<u8, CliError> {
    let plan = plan::load(&args.plan)?;
    let display = Display::new(&args.output);
    let store_name = args.store.store.to_string();
    let store = open_store(&args.store.store).await?;
    let mut interrupts = install_interrupts()?;
    let executor = start_executor(store.clone(), [], args.exec.config()?, &store_name).await?;
    let notifications = args.notify.start(executor.subscribe(), store.clone())?;
    // Counted before submitting, so a job that ends at once is not missed.
    let others = if args.store.store.is_persistent() {
        store.unfinished_jobs().await?.len()
    } else {
        0
    };
    let nodes = plan.spec.nodes().len();
    let name = plan.spec.name.clone();
    let id = executor
        .submit(plan.spec, OWNER)
        .await
        .map_err(|e| CliError::from_executor(e, &plan.name, &store_name))?;
    display.sink.line(&format!(
        "job {id} submitted: {name} ({nodes} node{}) to store {store_name}",
        if nodes == 1 { "" } else { "s" }
    ));
    if others > 0 {
        display.sink.line(&format!(
            "note: {others} other unfinished job{} in this store; `orchestrator resume` continues {}",
            if others == 1 { "" } else { "s" },
            if others == 1 { "it" } else { "them" }
        ));
    }
    let view = follow_one(
        &executor,
        &mut interrupts,
        &args.store.store,
        &display,
        &id,
        0,
    )
    .await?;
    let code = finish(&executor, &args.output, display.sink, vec![view]).await;
    crate::notify::close(notifications).await;
    code
}

/// `orchestrator resume`.
async fn resume(args: ResumeArgs) -> Result<u8, CliError> {
    let display = Display::new(&args.output);
    let spec = &args.store.store;
    let store_name = spec.to_string();
    let store = open_store(spec).await?;
    let mut targets = Vec::new();
    match &args.job {
        Some(id) => {
            let summary = store
                .summary(id)
                .await
                .map_err(|e| CliError::from_store(e, &store_name))?;
            if summary.progress.state.is_terminal() {
                return Err(CliError::AlreadyFinished {
                    job: id.clone(),
                    state: summary.progress.state,
                    action: "resume",
                });
            }
            targets.push(summary);
        }
        None => {
            let mut ids = store.unfinished_jobs().await?;
            ids.sort();
            for id in ids {
                targets.push(store.summary(&id).await?);
            }
        }
    }
    if targets.is_empty() {
        let why = if spec.is_persistent() {
            String::new()
        } else {
            " (the memory store starts empty in every process: there is never anything to resume in it)".to_owned()
        };
        display.sink.line(&format!(
            "nothing to resume: no unfinished jobs in store {store_name}{why}"
        ));
        return Ok(EXIT_OK);
    }
    let mut interrupts = install_interrupts()?;
    let executor = start_executor(
        store.clone(),
        targets.iter().map(|s| s.id.clone()),
        args.exec.config()?,
        &store_name,
    )
    .await?;
    let mut views = Vec::with_capacity(targets.len());
    for s in &targets {
        let p = &s.progress;
        display.sink.line(&format!(
            "resuming job {}: {} ({}/{} nodes finished, was {})",
            s.id, s.name, p.nodes_finished, p.nodes_total, p.state
        ));
        views.push(follow_one(&executor, &mut interrupts, spec, &display, &s.id, p.version).await?);
    }
    finish(&executor, &args.output, display.sink, views).await
}

/// `orchestrator rerun`: a new run of a finished job.
async fn rerun(args: RerunArgs) -> Result<u8, CliError> {
    let display = Display::new(&args.output);
    let store_name = args.store.store.to_string();
    let store = open_store(&args.store.store).await?;
    let mut interrupts = install_interrupts()?;
    let executor = start_executor(store.clone(), [], args.exec.config()?, &store_name).await?;
    let id = executor
        .rerun(
            &args.job,
            args.from.as_deref(),
            &std::collections::BTreeMap::new(),
            OWNER,
        )
        .await
        .map_err(|e| not_now(e, "rerun", &store_name))?;
    let summary = store.summary(&id).await?;
    display.sink.line(&format!(
        "job {id} submitted: rerun of {} ({}/{} nodes carried over) to store {store_name}",
        args.job, summary.progress.nodes_finished, summary.progress.nodes_total
    ));
    let view = follow_one(
        &executor,
        &mut interrupts,
        &args.store.store,
        &display,
        &id,
        0,
    )
    .await?;
    finish(&executor, &args.output, display.sink, vec![view]).await
}

/// `orchestrator rollback`: compensate a finished job's succeeded nodes.
async fn rollback(args: RollbackArgs) -> Result<u8, CliError> {
    let display = Display::new(&args.output);
    let store_name = args.store.store.to_string();
    let store = open_store(&args.store.store).await?;
    let before = store
        .summary(&args.job)
        .await
        .map_err(|e| CliError::from_store(e, &store_name))?;
    let mut interrupts = install_interrupts()?;
    let executor = start_executor(store.clone(), [], args.exec.config()?, &store_name).await?;
    executor
        .rollback(&args.job, args.reason.clone())
        .await
        .map_err(|e| not_now(e, "roll back", &store_name))?;
    display.sink.line(&format!(
        "job {} rolling back: {} (was {})",
        args.job, before.name, before.progress.state
    ));
    let view = follow_one(
        &executor,
        &mut interrupts,
        &args.store.store,
        &display,
        &args.job,
        before.progress.version,
    )
    .await?;
    // For this command, a complete rollback is the success.
    let rolled_back = view.state == JobState::RolledBack;
    let code = finish(&executor, &args.output, display.sink, vec![view]).await?;
    Ok(if rolled_back { EXIT_OK } else { code })
}

/// Follows job `id` to its end with a fresh reporter, reporting the records
/// after `show_after`, and returns its final view.
pub(crate) async fn follow_one(
    executor: &Executor,
    interrupts: &mut Interrupts,
    store: &StoreSpec,
    display: &Display,
    id: &JobId,
    show_after: u64,
) -> Result<JobView, CliError> {
    let store_name = store.to_string();
    let mut follower = Follower {
        executor,
        interrupts,
        store_name: &store_name,
        persistent: store.is_persistent(),
    };
    let mut reporter = display.reporter();
    follower.follow(id, show_after, reporter.as_mut()).await
}

/// Maps the executor's "not in this state" answers to usage errors.
fn not_now(e: ExecutorError, action: &'static str, store: &str) -> CliError {
    match e {
        ExecutorError::AlreadyFinished { job, state } => {
            CliError::AlreadyFinished { job, state, action }
        }
        e @ (ExecutorError::Busy { .. } | ExecutorError::UnknownNode { .. }) => {
            CliError::Usage(e.to_string())
        }
        other => CliError::from_executor(other, "", store),
    }
}

/// `orchestrator validate`.
async fn validate(args: ValidateArgs) -> Result<u8, CliError> {
    let plan = match plan::load(&args.plan) {
        Ok(plan) => plan,
        Err(CliError::ParsePlan { file, error }) => {
            if args.json {
                let problem = serde_json::json!([{
                    "path": error.path,
                    "code": error.code,
                    "message": error.message,
                }]);
                Sink::Stdout.line(&to_json(&problem));
            } else {
                Sink::Stdout.line(&format!(
                    "{} is not a valid job: 1 problem\n  {}: {} ({})",
                    file.display(),
                    error::pointer(&error.path),
                    error.message,
                    error.code
                ));
            }
            return Ok(EXIT_INVALID);
        }
        Err(e) => return Err(e),
    };
    // The executor's own validation also checks that every node type has a
    // runner and that the stored policies the plan names exist. It needs a
    // store: the one given when the plan names a policy, else an empty
    // in-memory one (so validating never creates a database).
    let (store, store_name): (Arc<dyn Store>, String) =
        if orchestrator_core::policy::references(&plan.spec).is_empty() {
            (Arc::new(MemoryStore::new()), "memory".to_owned())
        } else {
            (
                open_store(&args.store.store).await?,
                args.store.store.to_string(),
            )
        };
    let executor = start_executor(store, [], ExecutorConfig::default(), &store_name).await?;
    let checked = match executor.check(&plan.spec).await {
        Ok(dag) => Ok(dag),
        Err(ExecutorError::Invalid(errors)) => Err(errors),
        Err(other) => return Err(CliError::from_executor(other, &plan.name, &store_name)),
    };
    match checked {
        Ok(dag) => {
            let d = Description::new(&plan.spec, &dag);
            if args.json {
                Sink::Stdout.line(&to_json(&d));
            } else {
                Sink::Stdout.text(&d.text(&plan.name));
            }
            Ok(EXIT_OK)
        }
        Err(errors) => {
            if args.json {
                Sink::Stdout.line(&to_json(&errors));
            } else {
                Sink::Stdout.line(&error::invalid_plan(&plan.name, &errors));
            }
            Ok(EXIT_INVALID)
        }
    }
}

/// `orchestrator graph`.
async fn graph(args: GraphArgs) -> Result<u8, CliError> {
    let job = match &args.job {
        Some(id) => {
            let store_name = args.store.store.to_string();
            let store = open_store(&args.store.store).await?;
            let view = store
                .load_view(id)
                .await
                .map_err(|e| CliError::from_store(e, &store_name))?;
            Some(view)
        }
        None => None,
    };
    let (spec, source) = match (&args.plan, &job) {
        (Some(path), _) => {
            let plan = plan::load(path)?;
            (plan.spec, plan.name)
        }
        (None, Some(view)) => (view.spec().as_ref().clone(), format!("job {}", view.id())),
        (None, None) => return Err(CliError::Usage("give a PLAN or --job ID".into())),
    };
    let dag =
        Dag::compile(&spec, &Limits::default(), &PolicyRegistry::default()).map_err(|errors| {
            CliError::InvalidPlan {
                file: source.clone(),
                errors,
            }
        })?;
    let states: Option<Vec<Option<Shown>>> = job.as_ref().map(|view| {
        let index: std::collections::HashMap<&str, usize> = view
            .spec()
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.as_str(), i))
            .collect();
        spec.nodes()
            .iter()
            .map(|n| {
                index.get(n.id.as_str()).map(|&i| Shown {
                    state: view.nodes[i].state(),
                    attempts: view.nodes[i].machine.attempts,
                })
            })
            .collect()
    });
    let title = match &job {
        Some(view) => format!("{} (job {}: {})", spec.name, view.id(), view.state),
        None => spec.name.clone(),
    };
    Sink::Stdout.text(&graph::render(
        args.format,
        &spec,
        &dag,
        states.as_deref(),
        &title,
    ));
    Ok(EXIT_OK)
}

/// `orchestrator jobs list`.
async fn list(args: ListArgs) -> Result<u8, CliError> {
    let store_name = args.store.store.to_string();
    let store = open_store(&args.store.store).await?;
    let cursor = args
        .cursor
        .as_deref()
        .map(str::parse::<Cursor>)
        .transpose()
        .map_err(|e| CliError::Usage(format!("--cursor: {e}")))?;
    let query = JobQuery {
        states: args.state,
        name: args.name,
        limit: usize::from(args.limit),
        cursor,
        ..JobQuery::default()
    };
    let page = store.list_jobs(&query).await?;
    if args.json {
        Sink::Stdout.line(&to_json(&page));
        return Ok(EXIT_OK);
    }
    if page.jobs.is_empty() {
        let why = if args.store.store == StoreSpec::Memory {
            " (the memory store starts empty in every process; use a persistent store such as `--store sled:PATH` to keep jobs)"
        } else {
            ""
        };
        Sink::Stdout.line(&format!("no jobs in store {store_name}{why}"));
        return Ok(EXIT_OK);
    }
    Sink::Stdout.text(&jobs_table(&page.jobs));
    if let Some(next) = page.next_cursor {
        Sink::Stdout.line(&format!("more: --cursor {next}"));
    }
    Ok(EXIT_OK)
}

/// `orchestrator jobs show`.
async fn show(args: ShowArgs) -> Result<u8, CliError> {
    let store_name = args.store.store.to_string();
    let store = open_store(&args.store.store).await?;
    let view = store
        .load_view(&args.job)
        .await
        .map_err(|e| CliError::from_store(e, &store_name))?;
    let status = JobStatus::from_view(&view, SystemClock.now());
    if args.json {
        Sink::Stdout.line(&to_json(&status));
        return Ok(EXIT_OK);
    }
    let out = Sink::Stdout;
    out.line(&format!("job {}: {}", status.id, status.name));
    if let Some(d) = &status.description {
        out.line(&format!("  {d}"));
    }
    out.line(&format!(
        "  state {}, owner {}, created {}",
        status.state,
        status.owner,
        utc(status.created_at)
    ));
    if status.state == JobState::Cancelled {
        if let Some(r) = &status.cancel_reason {
            out.line(&format!("  cancelled: {r}"));
        }
    }
    if args.events {
        out.line("");
        let records = store.read_all(&args.job, 0).await?;
        let idw = id_width(view.spec().nodes().iter().map(|n| n.id.as_str()));
        let mut replay: Option<JobView> = None;
        let base = records.first().map(|r| r.at).unwrap_or_default();
        for r in &records {
            let folded = match replay.as_mut() {
                Some(v) => v.apply(r).is_ok(),
                None => match JobView::replay(std::slice::from_ref(r)) {
                    Ok(v) => {
                        replay = Some(v);
                        true
                    }
                    Err(_) => false,
                },
            };
            match (&replay, folded) {
                (Some(v), true) => out.line(&event_line(v, r, base, idw)),
                _ => out.line(&format!("  (record {} could not be folded)", r.seq)),
            }
        }
    }
    out.line("");
    out.text(&node_table(&status, out.width()));
    out.line("");
    out.line(&totals_line(&status));
    Ok(EXIT_OK)
}

/// `orchestrator jobs cancel`.
async fn cancel(args: CancelArgs) -> Result<u8, CliError> {
    let store_name = args.store.store.to_string();
    let store = open_store(&args.store.store).await?;
    let summary = store
        .summary(&args.job)
        .await
        .map_err(|e| CliError::from_store(e, &store_name))?;
    if summary.progress.state.is_terminal() {
        return Err(CliError::AlreadyFinished {
            job: args.job,
            state: summary.progress.state,
            action: "cancel",
        });
    }
    let mut interrupts = install_interrupts()?;
    let reason = args
        .reason
        .unwrap_or_else(|| "cancelled with `orchestrator jobs cancel`".to_owned());
    // The request is stored first: whoever takes the job next — this
    // process, just below — cancels it as it takes it, before an attempt
    // interrupted by a crash could be retried.
    let request = orchestrator_core::store::lease::CancelRequest {
        reason: Some(reason),
    };
    if !store
        .request_cancel(&args.job, &request)
        .await
        .map_err(|e| CliError::from_store(e, &store_name))?
    {
        let summary = store
            .summary(&args.job)
            .await
            .map_err(|e| CliError::from_store(e, &store_name))?;
        return Err(CliError::AlreadyFinished {
            job: args.job,
            state: summary.progress.state,
            action: "cancel",
        });
    }
    // An embedded store is opened by one process at a time, so the job is
    // not running anywhere else: this process takes it over (cancelling
    // it) and waits until the cancellation is journaled to the end.
    let executor = start_executor(
        store,
        [args.job.clone()],
        ExecutorConfig::default(),
        &store_name,
    )
    .await?;
    let status = tokio::select! {
        status = executor.wait(&args.job) => {
            status.map_err(|e| CliError::from_executor(e, "", &store_name))?
        }
        () = interrupts.wait() => {
            return Err(CliError::Killed { persistent: args.store.store.is_persistent() });
        }
    };
    Sink::Stdout.text(&node_table(&status, Sink::Stdout.width()));
    Sink::Stdout.line("");
    Sink::Stdout.line(&totals_line(&status));
    Ok(if status.state == JobState::Cancelled {
        EXIT_OK
    } else {
        exit_code_for(status.state)
    })
}
