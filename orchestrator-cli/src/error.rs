//! [`CliError`] and the exit codes every command shares.

use std::fmt::Write as _;
use std::path::PathBuf;

use orchestrator_core::spec::ParseError;
use orchestrator_core::{ExecutorError, JobId, JobState, StoreError, ValidationErrors};

/// The job succeeded (or the command did what it was asked).
pub(crate) const EXIT_OK: u8 = 0;
/// The job failed, was cancelled or timed out.
pub(crate) const EXIT_JOB_FAILED: u8 = 1;
/// The plan is invalid, or the command line is (clap uses 2 as well).
pub(crate) const EXIT_INVALID: u8 = 2;
/// The store or the program itself failed.
pub(crate) const EXIT_INTERNAL: u8 = 3;

/// The exit code for a job that ended in `state`.
pub(crate) fn exit_code_for(state: JobState) -> u8 {
    match state {
        JobState::Succeeded => EXIT_OK,
        // A rolled-back job is one that failed (or was undone) first.
        JobState::Failed
        | JobState::Cancelled
        | JobState::TimedOut
        | JobState::RolledBack
        | JobState::RollbackIncomplete => EXIT_JOB_FAILED,
        // Not over: the command stopped following it before it ended.
        _ => EXIT_INTERNAL,
    }
}

/// Everything that makes a command stop early, by what the user should do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// A plan file could not be read.
    #[error("cannot read {}: {source}", file.display())]
    ReadPlan {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A plan file is not a job spec (syntax, a wrong type, an unknown field).
    #[error("{}: {}: {} ({})", file.display(), pointer(&error.path), error.message, error.code)]
    ParsePlan {
        /// The file.
        file: PathBuf,
        /// The first problem.
        error: ParseError,
    },
    /// A plan parses but is not a valid job.
    #[error("{}", invalid_plan(file, errors))]
    InvalidPlan {
        /// The file (or the job it came from).
        file: String,
        /// Every problem.
        errors: ValidationErrors,
    },
    /// A bad argument that clap could not check by itself.
    #[error("{0}")]
    Usage(String),
    /// No such job in the store.
    #[error("job {job} not found in store {store}{}", memory_hint(store))]
    JobNotFound {
        /// The job.
        job: JobId,
        /// The store, as the user named it.
        store: String,
    },
    /// The job is already over.
    #[error("job {job} already finished ({state}); nothing to {action}")]
    AlreadyFinished {
        /// The job.
        job: JobId,
        /// Its final state.
        state: JobState,
        /// What the command would have done.
        action: &'static str,
    },
    /// The store failed.
    #[error("store error: {0}")]
    Store(#[from] StoreError),
    /// The executor failed (other than through an invalid spec).
    #[error("executor error: {0}")]
    Executor(ExecutorError),
    /// A report could not be written.
    #[error("cannot write {}: {source}", file.display())]
    WriteReport {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The program could not set itself up (a runtime, a signal handler).
    #[error("could not {what}: {source}")]
    Internal {
        /// What it tried.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Ctrl-C while a cancellation was already under way: stop at once.
    #[error("interrupted: stopped without waiting for the job to end{}", resume_hint(*persistent))]
    Killed {
        /// Whether the store outlives this process (so `resume` can finish the job).
        persistent: bool,
    },
}

impl CliError {
    /// The process exit code for this error.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::ReadPlan { .. }
            | Self::ParsePlan { .. }
            | Self::InvalidPlan { .. }
            | Self::Usage(_)
            | Self::JobNotFound { .. }
            | Self::AlreadyFinished { .. } => EXIT_INVALID,
            Self::Killed { .. } => EXIT_JOB_FAILED,
            Self::Store(_)
            | Self::Executor(_)
            | Self::WriteReport { .. }
            | Self::Internal { .. } => EXIT_INTERNAL,
        }
    }

    /// Maps an executor error, keeping invalid specs and unknown jobs apart
    /// from failures. `file` names the plan, `store` the store.
    pub(crate) fn from_executor(e: ExecutorError, file: &str, store: &str) -> Self {
        match e {
            ExecutorError::Invalid(errors) => Self::InvalidPlan {
                file: file.to_owned(),
                errors,
            },
            ExecutorError::NotFound(job) => Self::JobNotFound {
                job,
                store: store.to_owned(),
            },
            ExecutorError::Store(e) => Self::Store(e),
            other => Self::Executor(other),
        }
    }

    /// Maps a store error about `job`, keeping "not found" apart.
    pub(crate) fn from_store(e: StoreError, store: &str) -> Self {
        match e {
            StoreError::NotFound { job } => Self::JobNotFound {
                job,
                store: store.to_owned(),
            },
            other => Self::Store(other),
        }
    }
}

/// A problem path as people read it (`/` for the root).
pub(crate) fn pointer(path: &str) -> &str {
    if path.is_empty() {
        "/"
    } else {
        path
    }
}

/// Every problem of an invalid plan, one per line under a heading naming
/// `file`.
pub(crate) fn invalid_plan(file: &str, errors: &ValidationErrors) -> String {
    let n = errors.problems().len();
    let mut out = format!(
        "{file} is not a valid job: {n} problem{}",
        if n == 1 { "" } else { "s" }
    );
    for p in errors.problems() {
        let _ = write!(out, "\n  {}: {} ({})", pointer(&p.path), p.message, p.code);
    }
    out
}

fn memory_hint(store: &str) -> &'static str {
    if store == "memory" {
        " (the memory store starts empty in every process; use a persistent store such as `--store sled:PATH` to keep jobs)"
    } else {
        ""
    }
}

fn resume_hint(persistent: bool) -> &'static str {
    if persistent {
        "; the store keeps it as journaled so far, and `orchestrator resume` finishes it"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_core::{Problem, ProblemCode};

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(exit_code_for(JobState::Succeeded), 0);
        for s in [JobState::Failed, JobState::Cancelled, JobState::TimedOut] {
            assert_eq!(exit_code_for(s), 1);
        }
        assert_eq!(exit_code_for(JobState::Running), 3);
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        assert_eq!(CliError::Killed { persistent: true }.exit_code(), 1);
        assert_eq!(
            CliError::Store(StoreError::Invalid("x".into())).exit_code(),
            3
        );
    }

    #[test]
    fn invalid_plans_list_every_problem_with_path_and_code() {
        let err = CliError::InvalidPlan {
            file: "plan.yaml".into(),
            errors: ValidationErrors(vec![
                Problem::new("", ProblemCode::EmptyJob, "a job needs at least one node"),
                Problem::new(
                    "/dag_definition/nodes/1/depends_on/0",
                    ProblemCode::UnknownDependency,
                    "no node \"x\"",
                ),
            ]),
        };
        let text = err.to_string();
        assert!(text.starts_with("plan.yaml is not a valid job: 2 problems"));
        assert!(text.contains("\n  /: a job needs at least one node (empty_job)"));
        assert!(text
            .contains("/dag_definition/nodes/1/depends_on/0: no node \"x\" (unknown_dependency)"));
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn unknown_jobs_in_memory_explain_why() {
        let job: JobId = "abc".parse().unwrap();
        let memory = CliError::JobNotFound {
            job: job.clone(),
            store: "memory".into(),
        };
        assert!(memory.to_string().contains("starts empty in every process"));
        let sled = CliError::JobNotFound {
            job,
            store: "sled:x".into(),
        };
        assert_eq!(sled.to_string(), "job abc not found in store sled:x");
    }
}
