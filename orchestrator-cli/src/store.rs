//! Which store a command uses: [`StoreSpec`], parsed from `--store` or
//! `DATABASE_URL`, opened by [`open_store`] (the one place a backend is
//! chosen), and [`ScopedStore`], which decides which unfinished jobs an
//! executor of this process takes on.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use orchestrator_core::journal::{JobSummary, Progress, Record, Snapshot};
use orchestrator_core::store::{JobPage, JobQuery};
use orchestrator_core::{JobId, MemoryStore, Store, StoreError};

use crate::error::CliError;

/// The default `--store`: a sled database in the working directory.
pub(crate) const DEFAULT_STORE: &str = "sled:.orchestrator";

/// A store named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StoreSpec {
    /// `memory`: in this process only; gone when it exits.
    Memory,
    /// `sled:PATH` (or `sled://PATH`): an embedded database at `PATH`.
    Sled(PathBuf),
    /// `mongodb://…` or `mongodb+srv://…`: a MongoDB connection string.
    Mongo(String),
}

/// Why a `--store` value was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid store {input:?}: {reason} (expected `memory`, `sled:PATH` or `mongodb://…`)")]
pub(crate) struct ParseStoreError {
    input: String,
    reason: &'static str,
}

impl FromStr for StoreSpec {
    type Err = ParseStoreError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseStoreError {
            input: input.chars().take(200).collect(),
            reason,
        };
        let s = input.trim();
        if s.eq_ignore_ascii_case("memory") {
            return Ok(Self::Memory);
        }
        if s.starts_with("mongodb://") || s.starts_with("mongodb+srv://") {
            return if s.len() > s.find("//").map_or(0, |i| i + 2) {
                Ok(Self::Mongo(s.to_owned()))
            } else {
                Err(err("the connection string names no host"))
            };
        }
        if let Some(rest) = s.strip_prefix("sled:") {
            // `sled:///var/lib/x` is the URL form of the absolute path.
            let path = rest.strip_prefix("//").unwrap_or(rest);
            return if path.is_empty() {
                Err(err("the sled path is empty"))
            } else {
                Ok(Self::Sled(PathBuf::from(path)))
            };
        }
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        Err(err("unknown kind of store"))
    }
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("memory"),
            Self::Sled(path) => write!(f, "sled:{}", path.display()),
            // A connection string may carry a password: show the scheme and
            // host only.
            Self::Mongo(url) => {
                let (scheme, rest) = url.split_once("://").unwrap_or(("mongodb", url));
                let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
                let host = host.split(['/', '?']).next().unwrap_or_default();
                write!(f, "{scheme}://{host}")
            }
        }
    }
}

impl StoreSpec {
    /// Whether jobs outlive this process in this store.
    pub(crate) fn is_persistent(&self) -> bool {
        !matches!(self, Self::Memory)
    }
}

/// Opens the store `spec` names. Every command gets its store here, so a
/// new backend is wired in by one match arm.
pub(crate) async fn open_store(spec: &StoreSpec) -> Result<Arc<dyn Store>, CliError> {
    match spec {
        StoreSpec::Memory => Ok(Arc::new(MemoryStore::new())),
        StoreSpec::Sled(_) => Err(CliError::StoreNotAvailable {
            store: spec.to_string(),
            hint: "the sled store is not available in this build; use `--store memory` for now",
        }),
        StoreSpec::Mongo(_) => Err(CliError::StoreNotAvailable {
            store: spec.to_string(),
            hint: "the MongoDB store is not available in this build; use `--store memory` for now",
        }),
    }
}

/// A store that shows an executor only the unfinished jobs this process
/// means to run.
///
/// An executor resumes every unfinished job its store reports when it
/// starts. That is right for a long-running service, but a command decides
/// for itself: `run` runs its plan and leaves other interrupted jobs to
/// `resume`; `resume ID` continues that job alone; `jobs cancel ID` touches
/// only that job. Everything else passes through unchanged.
pub(crate) struct ScopedStore {
    inner: Arc<dyn Store>,
    recover: BTreeSet<JobId>,
}

impl ScopedStore {
    /// `inner`, reporting as unfinished only those of `recover` that are.
    pub(crate) fn new(inner: Arc<dyn Store>, recover: impl IntoIterator<Item = JobId>) -> Self {
        Self {
            inner,
            recover: recover.into_iter().collect(),
        }
    }
}

#[async_trait]
impl Store for ScopedStore {
    async fn create_job(&self, summary: &JobSummary, records: &[Record]) -> Result<(), StoreError> {
        self.inner.create_job(summary, records).await
    }

    async fn append(
        &self,
        job: &JobId,
        expected: u64,
        records: &[Record],
        progress: &Progress,
    ) -> Result<u64, StoreError> {
        self.inner.append(job, expected, records, progress).await
    }

    async fn read(&self, job: &JobId, after: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.inner.read(job, after, limit).await
    }

    async fn put_snapshot(&self, job: &JobId, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.inner.put_snapshot(job, snapshot).await
    }

    async fn snapshot(&self, job: &JobId) -> Result<Option<Snapshot>, StoreError> {
        self.inner.snapshot(job).await
    }

    async fn summary(&self, job: &JobId) -> Result<JobSummary, StoreError> {
        self.inner.summary(job).await
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage, StoreError> {
        self.inner.list_jobs(query).await
    }

    async fn unfinished_jobs(&self) -> Result<Vec<JobId>, StoreError> {
        let mut ids = self.inner.unfinished_jobs().await?;
        ids.retain(|id| self.recover.contains(id));
        Ok(ids)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<StoreSpec, ParseStoreError> {
        s.parse()
    }

    #[test]
    fn parses_every_kind() {
        assert_eq!(parse("memory"), Ok(StoreSpec::Memory));
        assert_eq!(parse(" MEMORY "), Ok(StoreSpec::Memory));
        assert_eq!(
            parse(DEFAULT_STORE),
            Ok(StoreSpec::Sled(PathBuf::from(".orchestrator")))
        );
        assert_eq!(
            parse("sled:data/jobs"),
            Ok(StoreSpec::Sled(PathBuf::from("data/jobs")))
        );
        assert_eq!(
            parse("sled:///var/lib/orchestrator"),
            Ok(StoreSpec::Sled(PathBuf::from("/var/lib/orchestrator")))
        );
        assert_eq!(
            parse("mongodb://user:pw@db.example:27017/orchestrator"),
            Ok(StoreSpec::Mongo(
                "mongodb://user:pw@db.example:27017/orchestrator".into()
            ))
        );
        assert!(matches!(
            parse("mongodb+srv://cluster.example"),
            Ok(StoreSpec::Mongo(_))
        ));
    }

    #[test]
    fn rejects_what_it_cannot_open() {
        for bad in [
            "",
            "sled:",
            "sled://",
            "mongodb://",
            "postgres://x",
            "./dir",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(
                err.to_string().contains("expected `memory`"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn display_round_trips_and_hides_credentials() {
        for s in ["memory", "sled:.orchestrator", "sled:/abs/path"] {
            assert_eq!(parse(s).unwrap().to_string(), s);
        }
        let mongo = parse("mongodb://user:secret@db.example:27017/jobs?tls=true").unwrap();
        assert_eq!(mongo.to_string(), "mongodb://db.example:27017");
        assert!(!StoreSpec::Memory.is_persistent());
        assert!(mongo.is_persistent());
    }

    #[tokio::test]
    async fn memory_opens_and_the_others_say_why_not() {
        let store = open_store(&StoreSpec::Memory).await.unwrap();
        store.ping().await.unwrap();
        for spec in [
            StoreSpec::Sled(".orchestrator".into()),
            StoreSpec::Mongo("mongodb://localhost".into()),
        ] {
            let Err(err) = open_store(&spec).await else {
                panic!("{spec} opened");
            };
            assert_eq!(err.exit_code(), crate::error::EXIT_INTERNAL);
            assert!(err.to_string().contains("not available in this build"));
        }
    }

    #[tokio::test]
    async fn scoped_store_reports_only_chosen_unfinished_jobs() {
        use orchestrator_core::{Executor, JobSpec, NodeSpec};
        let inner: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let spec = JobSpec::builder("slow")
            .node(NodeSpec::new("wait", "sleep").params(serde_json::json!({"duration": "1h"})))
            .build();
        let executor = Executor::builder(inner.clone()).start().await.unwrap();
        let a = executor.submit(spec.clone(), "test").await.unwrap();
        let b = executor.submit(spec, "test").await.unwrap();
        let mut all = inner.unfinished_jobs().await.unwrap();
        all.sort();
        let mut expected = vec![a.clone(), b];
        expected.sort();
        assert_eq!(all, expected);
        let scoped = ScopedStore::new(inner, [a.clone()]);
        assert_eq!(scoped.unfinished_jobs().await.unwrap(), vec![a]);
        executor.shutdown();
    }
}
