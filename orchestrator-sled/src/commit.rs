//! Group commit: one flush makes every write that finished before it
//! started durable, so concurrent writers share flushes.
//!
//! A dedicated thread (sled's flush blocks, and the store may be shared by
//! several tokio runtimes) runs flushes numbered 1, 2, 3, … A writer, once
//! its sled write has returned, locks the state and asks for generation
//! `started + 1`: the first flush that *starts* after that moment. Flush
//! `started` may be running already and may or may not include the write, so
//! it does not count. Taking the lock after the write and before the flusher
//! bumps `started` (also under the lock) orders the write before that
//! flush's `sled::Db::flush` call. Every writer that arrives while a flush
//! runs asks for the same next generation, so N concurrent writers cost one
//! or two flushes, not N.
//!
//! Completions are published on a `watch` channel as the latest completed
//! generation and its outcome. A writer waiting for generation `g` may see a
//! later one first; since every flush covers everything written before it,
//! a successful later flush covers it too, and a failed one fails it.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use orchestrator_core::StoreError;
use tokio::sync::watch;

use crate::error::from_sled;

/// What a flush does beyond sled's own `flush`.
pub(crate) enum Sync {
    /// Nothing: sled's flush (`pwrite` + `sync_file_range` on Linux).
    Sled,
    /// Then `fdatasync` the log file and `fsync` new blob files and the
    /// blob directory.
    Files(SyncedFiles),
}

/// The files [`Sync::Files`] forces to stable storage.
pub(crate) struct SyncedFiles {
    /// sled's log, `<dir>/db`.
    log: File,
    /// `<dir>/blobs`, where sled puts values too large for the log.
    blobs: PathBuf,
    /// Blob files already synced (pruned to those that still exist).
    synced_blobs: HashSet<std::ffi::OsString>,
}

impl SyncedFiles {
    /// Opens the log of the sled directory at `dir`.
    pub(crate) fn open(dir: &Path) -> std::io::Result<Self> {
        Ok(Self {
            log: File::open(dir.join("db"))?,
            blobs: dir.join("blobs"),
            synced_blobs: HashSet::new(),
        })
    }

    /// fsync works on any descriptor of a file, whichever one wrote the
    /// data, so a read-only handle of sled's log is enough.
    fn sync(&mut self) -> std::io::Result<()> {
        self.log.sync_data()?;
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut present = HashSet::new();
        let mut new = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !self.synced_blobs.contains(&name) {
                match File::open(entry.path()) {
                    Ok(f) => f.sync_all()?,
                    // Garbage-collected by sled meanwhile: nothing to keep.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                new = true;
            }
            present.insert(name);
        }
        if new {
            // A new file's directory entry is only durable once its
            // directory is synced.
            File::open(&self.blobs)?.sync_all()?;
        }
        self.synced_blobs = present;
        Ok(())
    }
}

#[derive(Default)]
struct State {
    /// Highest generation anyone waits for.
    requested: u64,
    /// Highest generation started.
    started: u64,
    shutdown: bool,
}

#[derive(Clone, Debug, Default)]
struct Completed {
    generation: u64,
    error: Option<Arc<str>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    done: watch::Sender<Completed>,
    flushes: AtomicU64,
    waits: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is three counters updated in single assignments: a
        // panic elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The group-commit flusher of one sled database.
pub(crate) struct Committer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts the flusher thread for `db`.
    pub(crate) fn start(db: sled::Db, mut sync: Sync) -> Result<Self, StoreError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            done: watch::channel(Completed::default()).0,
            flushes: AtomicU64::new(0),
            waits: AtomicU64::new(0),
        });
        let thread = std::thread::Builder::new()
            .name("orchestrator-sled-flush".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || flusher(&shared, &db, &mut sync)
            })
            .map_err(|e| StoreError::Backend {
                message: format!("cannot start the flusher thread: {e}"),
                source: Some(Box::new(e)),
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Returns once a flush that started after this call has completed:
    /// everything the caller wrote before calling is then durable.
    pub(crate) async fn durable(&self) -> Result<(), StoreError> {
        // Yield once before asking: writes issued together (the executor's
        // `join_all` over its jobs' appends, or other tasks queued on this
        // worker) then all land before the flush they will share starts,
        // instead of the first one starting a flush the rest just missed.
        tokio::task::yield_now().await;
        let mut rx = self.shared.done.subscribe();
        let target = {
            let mut s = self.shared.lock();
            let target = s.started + 1;
            if s.requested < target {
                s.requested = target;
                self.shared.wake.notify_one();
            }
            target
        };
        self.shared.waits.fetch_add(1, Ordering::Relaxed);
        let completed = rx
            .wait_for(|c| c.generation >= target)
            .await
            .map_err(|_| StoreError::Unavailable {
                message: "the sled flusher thread has stopped".into(),
                source: None,
            })?
            .clone();
        match completed.error {
            None => Ok(()),
            Some(message) => Err(StoreError::Unavailable {
                message: format!("flushing the journal failed: {message}"),
                source: None,
            }),
        }
    }

    /// The error of the latest flush, if it failed.
    pub(crate) fn last_error(&self) -> Option<Arc<str>> {
        self.shared.done.borrow().error.clone()
    }

    /// Flushes performed so far.
    pub(crate) fn flushes(&self) -> u64 {
        self.shared.flushes.load(Ordering::Relaxed)
    }

    /// Calls of [`Committer::durable`] so far.
    pub(crate) fn waits(&self) -> u64 {
        self.shared.waits.load(Ordering::Relaxed)
    }
}

impl Drop for Committer {
    /// Finishes the flushes already asked for, then stops the thread (which
    /// holds a handle on the database, and so its directory lock).
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn flusher(shared: &Shared, db: &sled::Db, sync: &mut Sync) {
    loop {
        let generation = {
            let mut s = shared.lock();
            while s.requested <= s.started && !s.shutdown {
                s = shared.wake.wait(s).unwrap_or_else(PoisonError::into_inner);
            }
            if s.requested <= s.started {
                return;
            }
            s.started += 1;
            s.started
        };
        let result = db
            .flush()
            .map_err(|e| from_sled(e, "flushing").to_string())
            .and_then(|_| match sync {
                Sync::Sled => Ok(()),
                Sync::Files(files) => files
                    .sync()
                    .map_err(|e| format!("syncing the sled files: {e}")),
            });
        shared.flushes.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &result {
            tracing::error!(error = %e, "sled flush failed; waiting appends report it");
        }
        shared.done.send_replace(Completed {
            generation,
            error: result.err().map(Arc::from),
        });
    }
}
