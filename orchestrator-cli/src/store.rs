//! Which store a command uses: [`StoreSpec`], parsed from `--store` or
//! `DATABASE_URL`, opened by [`open_store`] (the one place a backend is
//! chosen).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use orchestrator_core::{MemoryStore, Store};
use orchestrator_mongo::MongoStore;
use orchestrator_sled::SledStore;

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
        StoreSpec::Sled(path) => Ok(Arc::new(SledStore::open(path)?)),
        // Connecting sends nothing; the first command's call reaches the
        // server (and reports it unreachable after the server-selection
        // timeout, 5 s unless the connection string sets
        // `serverSelectionTimeoutMS`).
        StoreSpec::Mongo(uri) => Ok(Arc::new(MongoStore::connect(uri).await?)),
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
    async fn every_kind_opens() {
        let store = open_store(&StoreSpec::Memory).await.unwrap();
        store.ping().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&StoreSpec::Sled(dir.path().join("db")))
            .await
            .unwrap();
        store.ping().await.unwrap();
        // Opening a MongoDB store contacts no server.
        open_store(&StoreSpec::Mongo("mongodb://127.0.0.1:1/jobs".into()))
            .await
            .unwrap();
        let Err(err) = open_store(&StoreSpec::Mongo("mongodb://h:notaport".into())).await else {
            panic!("a malformed connection string opened");
        };
        assert_eq!(err.exit_code(), crate::error::EXIT_INTERNAL);
        assert!(
            err.to_string()
                .contains("invalid MongoDB connection string"),
            "{err}"
        );
    }
}
