//! What the crate's integration tests share: where the test server is,
//! whether to skip, and a fresh database per test.
//!
//! The server is the one `MONGODB_URI` names — `scripts/test.sh` starts the
//! nx-27017 test server and sets it; set it yourself to test against a real
//! MongoDB or replica set. Without it the tests skip, printing one line
//! saying why, except under `CI=true`, where they fail.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use orchestrator_mongo::{BreakerConfig, MongoOptions, MongoStore};

/// Databases the tests create start with this; a test binary drops those
/// older than an hour when it starts (leftovers of aborted runs against a
/// long-lived server).
pub(crate) const DB_PREFIX: &str = "orchtest_";

/// Writes one line straight to stderr, past libtest's output capture, so a
/// skip is visible in a plain `cargo test`.
pub(crate) fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `MONGODB_URI`, or `None` after printing (once per test binary) why the
/// MongoDB tests skip. Under `CI=true` a missing server is a failure.
pub(crate) fn server_uri() -> Option<String> {
    if let Some(uri) = std::env::var("MONGODB_URI").ok().filter(|u| !u.is_empty()) {
        return Some(uri);
    }
    assert!(
        !in_ci(),
        "CI=true but MONGODB_URI is not set: the MongoDB tests must run in CI \
         (scripts/test.sh starts the nx-27017 test server and sets it)"
    );
    static SKIP: Once = Once::new();
    SKIP.call_once(|| {
        say(&format!(
            "orchestrator-mongo: skipping the MongoDB tests of {}: MONGODB_URI is not set \
             (scripts/test.sh starts a test server; or point it at a MongoDB)",
            std::env::args()
                .next()
                .and_then(|p| {
                    let name = PathBuf::from(p).file_name()?.to_string_lossy().into_owned();
                    // `conformance-<hash>` is the test file `conformance.rs`.
                    Some(name.split('-').next().unwrap_or_default().to_owned())
                })
                .unwrap_or_default()
        ));
    });
    None
}

/// Whether the MongoDB tests skip (see [`server_uri`]).
pub(crate) fn skip() -> bool {
    server_uri().is_none()
}

/// A database name no other test (of this run or another) uses:
/// `orchtest_<unix seconds>_<pid>_<counter>`.
pub(crate) fn database_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{DB_PREFIX}{secs}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Options for tests: short timeouts so a broken server fails a test
/// quickly instead of hanging it.
pub(crate) fn test_options(database: &str) -> MongoOptions {
    MongoOptions::new()
        .database(database)
        .server_selection_timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(30))
        .breaker(BreakerConfig::disabled())
}

/// A store on a fresh database of the test server.
///
/// # Panics
///
/// When there is no server (callers skip first) or connecting fails.
pub(crate) async fn fresh_store() -> MongoStore {
    let uri = server_uri().expect("callers skip when there is no server");
    drop_stale_databases(&uri).await;
    MongoStore::connect_with(&uri, test_options(&database_name()))
        .await
        .unwrap_or_else(|e| panic!("connecting to the test server: {e}"))
}

/// Drops this suite's databases older than an hour, once per test binary,
/// best effort.
async fn drop_stale_databases(uri: &str) {
    static STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if STARTED.swap(true, Ordering::AcqRel) {
        return;
    }
    let Ok(client) = mongodb::Client::with_uri_str(uri).await else {
        return;
    };
    let cutoff = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .saturating_sub(3600);
    let names = tokio::time::timeout(Duration::from_secs(10), client.list_database_names()).await;
    for name in names.ok().and_then(Result::ok).unwrap_or_default() {
        let stale = name
            .strip_prefix(DB_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok())
            .is_some_and(|secs| secs < cutoff);
        if stale {
            let _ =
                tokio::time::timeout(Duration::from_secs(10), client.database(&name).drop()).await;
        }
    }
}
