//! The one place sled's errors become [`StoreError`]s.

use std::path::Path;

use orchestrator_core::StoreError;
use sled::transaction::TransactionError;

/// Converts a sled error met while `doing` something.
///
/// I/O errors are [`StoreError::Unavailable`] (a full or failing disk may
/// recover; the executor retries with backoff); corruption sled detects in
/// its own log is [`StoreError::Corrupt`] without a job (it is below the
/// level of jobs); everything else is [`StoreError::Backend`].
pub(crate) fn from_sled(e: sled::Error, doing: &str) -> StoreError {
    match e {
        sled::Error::Io(io) => StoreError::Unavailable {
            message: format!("sled I/O error while {doing}: {io}"),
            source: Some(Box::new(io)),
        },
        sled::Error::Corruption { at, .. } => StoreError::Corrupt {
            job: None,
            key: format!("sled log at {at:?}"),
            message: format!("sled found its own log corrupt while {doing}"),
        },
        other => StoreError::Backend {
            message: format!("sled failed while {doing}: {other}"),
            source: Some(Box::new(other)),
        },
    }
}

/// The outcome of a transaction whose closure aborts with a [`StoreError`].
pub(crate) fn from_tx(e: TransactionError<StoreError>, doing: &str) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => from_sled(e, doing),
    }
}

/// Whether `e` is sled's report of a directory locked by someone else.
pub(crate) fn is_lock(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Converts an error of opening the directory at `path`. sled takes an
/// exclusive `flock` on `<path>/db` and reports a held lock as a generic
/// I/O error whose text says so; that case gets a message a person can act
/// on.
pub(crate) fn from_open(e: sled::Error, path: &Path) -> StoreError {
    if is_lock(&e) {
        return StoreError::Unavailable {
            message: format!(
                "the sled directory {} is locked: another process (or another SledStore in this \
                 process) has it open, and sled allows one process per directory",
                path.display()
            ),
            source: Some(Box::new(e)),
        };
    }
    from_sled(e, &format!("opening {}", path.display()))
}
