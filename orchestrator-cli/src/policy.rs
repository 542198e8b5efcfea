//! `orchestrator policy …`: the stored, versioned retry policies of a store
//! — list, show, create from a YAML or JSON file.
//!
//! Circuit breakers have no command of their own: they live in the
//! executor process (every process starts with its breakers closed), so a
//! separate command opening an embedded store would always report none.
//! `run` shows their transitions in its progress output, and `serve`
//! reports the server's at `GET /breakers` and in `/metrics`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use orchestrator_core::policy::{PolicyRef, StoredPolicy};
use orchestrator_core::{PolicyRegistry, StoreError};

use crate::cli::StoreArgs;
use crate::commands::to_json;
use crate::error::{pointer, CliError, EXIT_OK};
use crate::progress::Sink;
use crate::store::open_store;

const POLICY_EXAMPLES: &str = "\
Examples:
  orchestrator policy create examples/policies/farm.yaml --store sled:.orchestrator
  orchestrator policy list
  orchestrator policy list --all --json | jq '.[].version'
  orchestrator policy show farm          # the latest version
  orchestrator policy show farm@1 --json

A plan names a policy with `policy: farm` (the latest version when the job
is submitted; the journal keeps the version it used) or `policy: farm@1`.
Versions are immutable: creating an existing version again with the same
content changes nothing, with different content is refused (exit 2).";

/// `orchestrator policy …`.
#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// List stored policies: the latest version of each, or every version.
    #[command(after_help = POLICY_EXAMPLES)]
    List(PolicyListArgs),
    /// Show one policy: NAME (its latest version) or NAME@VERSION.
    #[command(after_help = POLICY_EXAMPLES)]
    Show(PolicyShowArgs),
    /// Store a policy version from a YAML or JSON file.
    #[command(after_help = POLICY_EXAMPLES)]
    Create(PolicyCreateArgs),
}

/// `orchestrator policy list`.
#[derive(Debug, Args)]
pub(crate) struct PolicyListArgs {
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Every version of every policy, not only the latest.
    #[arg(long)]
    pub(crate) all: bool,
    /// Print the policies as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `orchestrator policy show`.
#[derive(Debug, Args)]
pub(crate) struct PolicyShowArgs {
    /// NAME or NAME@VERSION.
    #[arg(value_name = "NAME[@VERSION]", value_parser = str::parse::<PolicyRef>)]
    pub(crate) policy: PolicyRef,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Print the policy as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `orchestrator policy create`.
#[derive(Debug, Args)]
pub(crate) struct PolicyCreateArgs {
    /// The policy: YAML or JSON with `name`, `version`, and optionally
    /// `description`, `retry`, `classify` (`-` reads standard input).
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
}

/// Runs one `policy` command.
pub(crate) async fn execute(command: PolicyCommand) -> Result<u8, CliError> {
    match command {
        PolicyCommand::List(args) => list(args).await,
        PolicyCommand::Show(args) => show(args).await,
        PolicyCommand::Create(args) => create(args).await,
    }
}

async fn list(args: PolicyListArgs) -> Result<u8, CliError> {
    let store_name = args.store.store.to_string();
    let store = open_store(&args.store.store).await?;
    let latest = store.list_policies().await?;
    let policies = if args.all {
        let mut every = Vec::new();
        for p in &latest {
            every.extend(store.policy_versions(&p.name).await?);
        }
        every
    } else {
        latest
    };
    let out = Sink::Stdout;
    if args.json {
        out.line(&to_json(&policies));
        return Ok(EXIT_OK);
    }
    if policies.is_empty() {
        out.line(&format!("no policies in store {store_name}"));
        return Ok(EXIT_OK);
    }
    let w = policies
        .iter()
        .map(|p| p.key().to_string().len())
        .max()
        .unwrap_or(6)
        .max(6);
    out.line(&format!(
        "{:w$}  {:>8}  {:>5}  DESCRIPTION",
        "POLICY", "ATTEMPTS", "RULES"
    ));
    for p in &policies {
        let attempts = p
            .retry
            .max_attempts
            .map_or_else(|| "default".to_owned(), |n| n.to_string());
        out.line(&format!(
            "{:w$}  {attempts:>8}  {:>5}  {}",
            p.key().to_string(),
            p.classify.len(),
            p.description.as_deref().unwrap_or("")
        ));
    }
    Ok(EXIT_OK)
}

async fn show(args: PolicyShowArgs) -> Result<u8, CliError> {
    let store_name = args.store.store.to_string();
    let store = open_store(&args.store.store).await?;
    let r = &args.policy;
    let Some(policy) = store.get_policy(&r.name, r.version).await? else {
        return Err(CliError::Usage(format!(
            "no policy {r} in store {store_name}"
        )));
    };
    if args.json {
        Sink::Stdout.line(&to_json(&policy));
    } else {
        // Serializing a plain data structure cannot fail.
        let yaml = serde_norway::to_string(&policy).unwrap_or_else(|e| e.to_string());
        Sink::Stdout.text(&yaml);
    }
    Ok(EXIT_OK)
}

/// Parses a policy file: JSON by extension or first character, else YAML.
fn parse(path: &Path, text: &str) -> Result<StoredPolicy, String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let json = match ext.as_deref() {
        Some("json") => true,
        Some("yaml" | "yml") => false,
        _ => text.trim_start().starts_with('{'),
    };
    if json {
        serde_json::from_str(text).map_err(|e| e.to_string())
    } else {
        serde_norway::from_str(text).map_err(|e| e.to_string())
    }
}

async fn create(args: PolicyCreateArgs) -> Result<u8, CliError> {
    let file = args.file.display().to_string();
    let text = if args.file == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map(|_| text)
    } else {
        std::fs::read_to_string(&args.file)
    }
    .map_err(|source| CliError::ReadPlan {
        file: args.file.clone(),
        source,
    })?;
    let policy = parse(&args.file, &text)
        .map_err(|e| CliError::Usage(format!("{file} is not a policy: {e}")))?;
    // The same checks as `Executor::create_policy` (the command line's
    // executors have no custom retry policies).
    if let Err(errors) = policy.check(&PolicyRegistry::default()) {
        let n = errors.problems().len();
        let mut message = format!(
            "{file} is not a valid policy: {n} problem{}",
            if n == 1 { "" } else { "s" }
        );
        for p in errors.problems() {
            message.push_str(&format!(
                "\n  {}: {} ({})",
                pointer(&p.path),
                p.message,
                p.code
            ));
        }
        return Err(CliError::Usage(message));
    }
    let store_name = args.store.store.to_string();
    let store = open_store(&args.store.store).await?;
    let key = policy.key();
    let existed = store.get_policy(&policy.name, Some(policy.version)).await?;
    match store.put_policy(&policy).await {
        Ok(()) if existed.is_some() => Sink::Stdout.line(&format!(
            "policy {key} is already stored in {store_name} with this content: unchanged"
        )),
        Ok(()) => Sink::Stdout.line(&format!("policy {key} stored in {store_name}")),
        Err(StoreError::PolicyConflict { .. }) => {
            return Err(CliError::Usage(format!(
                "policy {key} already exists in store {store_name} with different content; versions are immutable: store it as a new version"
            )))
        }
        Err(e) => return Err(e.into()),
    }
    Ok(EXIT_OK)
}
