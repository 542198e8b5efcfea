//! **orchestrator-sled**: the embedded default [`Store`] of orchestrator, on
//! [sled](https://docs.rs/sled/0.34) 0.34 — what a user gets without
//! configuring anything.
//!
//! ```
//! use std::sync::Arc;
//! use orchestrator_core::{Executor, JobSpec, JobState, NodeSpec};
//! use orchestrator_sled::SledStore;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("orchestrator-sled-doc-{}", std::process::id()));
//! let store = SledStore::open(&dir)?;
//! let executor = Executor::builder(Arc::new(store)).start().await?;
//! let spec = JobSpec::builder("smoke").node(NodeSpec::new("build", "noop")).build();
//! let id = executor.submit(spec, "alice").await?;
//! assert_eq!(executor.wait(&id).await?.state, JobState::Succeeded);
//! # drop(executor);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! - **Atomic appends.** Each [`Store::append`] checks the expected version
//!   and writes the records, the job's summary and its index entries in one
//!   sled transaction. sled 0.34 runs every transaction under a
//!   process-wide exclusive lock, so concurrent appends to one job are
//!   serialised: exactly one of two racing appends at the same version
//!   lands, the other gets [`StoreError::Conflict`]. sled recovers after a
//!   crash either all of a transaction or none of it, and writes in order,
//!   so a summary never disagrees with its journal.
//! - **Durability** ([`Durability`]), by default [`Durability::Durable`]:
//!   `append`, `create_job` and `put_snapshot` return only after a flush
//!   that started after their write has completed (replays too: the write
//!   they repeat may not be flushed yet). Concurrent callers share one
//!   flush (group commit, see below).
//! - **One process per directory.** sled locks `<dir>/db` with `flock`;
//!   opening a directory another process (or another `SledStore` in this
//!   process) holds is [`StoreError::Unavailable`] naming the directory,
//!   after half a second of waiting for the lock (a store just dropped in
//!   this process takes a moment to release it).
//! - **Bad data stays local.** Every value starts with a format-version
//!   byte; a value that fails to decode is [`StoreError::Corrupt`] naming the
//!   job and key (e.g. `records/job-1/42`), never a panic, and other jobs
//!   keep working. Listing skips (and logs) a summary it cannot decode
//!   rather than failing every listing.
//!
//! ## What "flushed" means, exactly
//!
//! On Linux, sled 0.34's `Db::flush` writes its IO buffers with `pwrite`
//! and then calls `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)` on the
//! written range — not `fsync`/`fdatasync`. (An strace of a flush loop shows
//! one `pwrite64` and one `sync_file_range` per flush, and no `fsync`.) That
//! puts the bytes in the kernel and starts their write-back, which is what a
//! **killed process** needs: the data is outside the process, and the next
//! open recovers it. It does **not** flush file metadata (the log's size
//! when it grows) or the drive's volatile write cache, so after a **power
//! loss or kernel crash** recently acknowledged appends may be missing.
//! sled's own background thread additionally `fsync`s the log every 500 ms,
//! which narrows that window in practice but is no per-append promise.
//! Values too large for the log (sled "blobs", e.g. a snapshot of a huge
//! job) are written to `<dir>/blobs/` with no sync at all.
//!
//! | [`Durability`] | `append` returns after | survives a killed process | survives power loss / kernel crash |
//! | --- | --- | --- | --- |
//! | [`Durable`](Durability::Durable) (default) | a group flush: `pwrite` + `sync_file_range` | yes | not guaranteed |
//! | [`Synced`](Durability::Synced) | the flush, then `fdatasync` of the log and `fsync` of new blob files and their directory | yes | yes, if the device honours flushes |
//! | [`Relaxed`](Durability::Relaxed) | the in-memory write only; sled flushes and `fsync`s every `every` | **no**: up to `every` of acknowledged appends are lost | no |
//!
//! `Relaxed` breaks the engine's promise that nothing is acted on before it
//! is durable: after a crash the journal is a consistent *prefix* (summaries
//! still agree with it), but nodes whose success was among the lost records
//! run again, and whatever runners did after a lost record is repeated. Use
//! it for throwaway runs, tests and benchmarks of other parts.
//!
//! ## Group commit
//!
//! A dedicated flusher thread numbers its flushes. A caller whose write has
//! returned asks for the *next* flush to start (the one running may have
//! begun before its write) and waits for it; every caller arriving while a
//! flush runs asks for that same next one. The executor appends for all
//! its jobs concurrently once per scheduling round, so a round costs about
//! one flush whatever the number of jobs. The waiting caller yields once
//! before asking, so the appends of one round (polled together by
//! `join_all`) all land before the flush they share starts.
//! [`SledStore::stats`] counts writes, waits and flushes; the crate's tests
//! check that a round of 64 appends takes at most a handful of flushes
//! (typically one or two) and 64 independent tasks far fewer than 64.
//!
//! ## Leases
//!
//! Appends check the writer's fencing token against the `leases` tree in
//! the same transaction as the version, so a stale writer can never land a
//! record. The store is [exclusive](orchestrator_core::store::LeaseStore::exclusive)
//! (one process per directory), so an executor starting on it takes every
//! unfinished job over at once. Claims, renewals and releases are not
//! flushed on their own: a lease only matters while its process lives, and
//! a restarted process takes every job over regardless.
//!
//! ## Snapshots
//!
//! [`Store::put_snapshot`] keeps the newest snapshot per job; recovery
//! (`StoreExt::load_view`) folds the snapshot plus the records after it, so
//! the executor's periodic snapshots bound how much journal a restart
//! replays.
//!
//! # Storage layout
//!
//! One sled database per directory, with these trees (integers big-endian,
//! so byte order is numeric order; job ids never contain `0x00`):
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `records` | `id 0x00 seq:u64` | `0x01` + JSON [`Record`] |
//! | `summaries` | `id` | `0x01` + JSON [`JobSummary`] |
//! | `snapshots` | `id` | `0x01` + `version:u64` + JSON [`Snapshot`] |
//! | `by_created` | `created_at:u64 id` | empty: the listing index, newest first by reverse scan |
//! | `unfinished` | `id` | empty: jobs not in a terminal state, for recovery at start |
//! | `leases` | `id` | `0x01` + JSON `LeaseRecord`: owner, fencing token, expiry, pending cancel; absent until the job is first claimed |
//! | `test_history` | test key (UTF-8) | `0x01` + JSON of its kept run outcomes, oldest first (see `history`) |
//! | default | `orchestrator-sled/layout` | `0x01`: the layout version of the directory |
//! | `dead_letters`, `dead_letters_by_created` | see `dead_letter` | the dead-letter queue |
//!
//! A prefix scan of `records` reads one job's journal in order;
//! [`Store::list_jobs`] walks `by_created` backwards from the cursor (or the
//! `created_before` bound) and reads only summaries, never journals. The
//! leading `0x01` of each value is its format version (see `codec`); the
//! snapshot's version sits in a fixed header so that keeping the newest
//! snapshot never decodes the stored one. Values are JSON: records are an
//! internally tagged, flattened enum with free-form JSON outputs, which
//! compact non-self-describing formats cannot decode, and serde_json is
//! already a dependency.
//!
//! # Module map
//!
//! | module | what it holds |
//! | --- | --- |
//! | this file | [`SledStore`], [`SledOptions`], [`Durability`], [`SledStats`] and the [`Store`] implementation |
//! | `keys` | the key layout of every tree |
//! | `codec` | value encoding: format byte + JSON, decoding to [`StoreError::Corrupt`] |
//! | `commit` | the group-commit flusher thread and the `Synced` file syncs |
//! | `error` | the one conversion of sled errors into [`StoreError`] |
//! | `lease` | the [`LeaseStore`](orchestrator_core::store::LeaseStore) implementation |
//! | `dead_letter` | the dead-letter queue (`DeadLetterStore`): its two trees, merge and compare-and-set in transactions |
//! | `history` | the `TestHistoryStore` implementation (flakiness history) |

mod codec;
mod commit;
mod dead_letter;
mod error;
mod history;
mod keys;
mod lease;
mod policy;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use orchestrator_core::journal::{Progress, Snapshot};
use orchestrator_core::store::{check_sequence, Cursor, JobPage, JobQuery};
use orchestrator_core::{JobId, JobSummary, Record, Store, StoreError};
use sled::transaction::{abort, ConflictableTransactionError, TransactionalTree};
use sled::Transactional;

use crate::commit::{Committer, Sync, SyncedFiles};
use crate::error::{from_open, from_sled, from_tx};
use crate::keys::{BY_CREATED, LEASES, RECORDS, SNAPSHOTS, SUMMARIES, UNFINISHED};

/// The value of index entries, whose keys say everything.
const EMPTY: &[u8] = &[];

/// How long opening waits for a directory lock to be released.
const LOCK_GRACE: Duration = Duration::from_millis(500);

/// The directory layout this build reads and writes (see the crate docs).
const LAYOUT: u8 = 1;

/// When a write counts as done. See the crate docs for what each level
/// survives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// Writes return after a group flush (`pwrite` + `sync_file_range` on
    /// Linux): they survive the process being killed. The default.
    #[default]
    Durable,
    /// Like `Durable`, and each group flush is followed by `fdatasync` of
    /// sled's log and `fsync` of new blob files: writes also survive power
    /// loss, as far as the device honours flushes. Costs a device flush per
    /// group.
    Synced,
    /// Writes return at once; sled flushes (and fsyncs) every `every` in the
    /// background. A crash loses up to `every` of acknowledged writes, so
    /// the executor may repeat work it had journaled; the journal stays a
    /// consistent prefix.
    Relaxed {
        /// Interval of the background flush (at least 1 ms).
        every: Duration,
    },
}

/// Options of [`SledStore::open_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SledOptions {
    /// When a write counts as done.
    pub durability: Durability,
    /// Size of sled's page cache in bytes (`None`: sled's default, 1 GiB).
    pub cache_capacity: Option<u64>,
}

impl SledOptions {
    /// The defaults: [`Durability::Durable`], sled's cache size.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the durability.
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets the page cache size in bytes.
    #[must_use]
    pub fn cache_capacity(mut self, bytes: u64) -> Self {
        self.cache_capacity = Some(bytes);
        self
    }
}

/// Counters of a [`SledStore`] since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SledStats {
    /// Transactions that wrote a job's records (creates and appends;
    /// idempotent replays and conflicts write nothing).
    pub writes: u64,
    /// Records written by them.
    pub records: u64,
    /// Calls that waited for durability (every write call in `Durable` and
    /// `Synced` mode, replays included).
    pub durable_waits: u64,
    /// Flushes the group committer performed. With concurrent writers this
    /// is far below `durable_waits`.
    pub flushes: u64,
}

/// A [`Store`] on a sled database in one directory. See the crate docs for
/// the layout and the guarantees.
///
/// sled calls are short and never wait on the disk except in flushes, which
/// run on the store's own flusher thread; the async methods therefore call
/// sled directly and only `.await` durability.
pub struct SledStore {
    db: sled::Db,
    records: sled::Tree,
    summaries: sled::Tree,
    snapshots: sled::Tree,
    by_created: sled::Tree,
    unfinished: sled::Tree,
    leases: sled::Tree,
    committer: Committer,
    durability: Durability,
    path: PathBuf,
    writes: AtomicU64,
    written_records: AtomicU64,
    /// Last, so it runs after the database is closed.
    _remove: Option<RemoveOnDrop>,
}

/// Removes a temporary store's directory.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), error = %e, "could not remove a temporary store");
        }
    }
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens (creating if needed) the store in directory `path`, durable by
    /// default. A directory another process holds is
    /// [`StoreError::Unavailable`] saying so, after waiting half a second
    /// for the lock (a store just dropped in this process takes a moment to
    /// release it).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SledOptions::default())
    }

    /// Opens the store in `path` with `options`.
    pub fn open_with(path: impl AsRef<Path>, options: SledOptions) -> Result<Self, StoreError> {
        let path = path.as_ref();
        // sled releases its directory lock only once its background threads
        // and deferred frees let go of the file, a moment after the last
        // handle is dropped: a store closed and reopened in one process may
        // find its own lock still held. Such a lock goes away by itself
        // within milliseconds; another process's does not, and is reported
        // after the grace period.
        let deadline = std::time::Instant::now() + LOCK_GRACE;
        let db = loop {
            match config(&options).path(path).open() {
                Ok(db) => break db,
                Err(e) if error::is_lock(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(from_open(e, path)),
            }
        };
        Self::from_db(db, path.to_path_buf(), &options)
    }

    /// A durable store in a fresh directory under the system's temporary
    /// directory, removed when the store is dropped: for tests and
    /// benchmarks. It behaves exactly like one from [`SledStore::open`]
    /// (sled's own "temporary" mode would skip `sync_file_range`).
    pub fn temporary() -> Result<Self, StoreError> {
        Self::temporary_with(SledOptions::default())
    }

    /// [`SledStore::temporary`] with `options`.
    pub fn temporary_with(options: SledOptions) -> Result<Self, StoreError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "orchestrator-sled-{}-{nanos}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut store = Self::open_with(&dir, options)?;
        store._remove = Some(RemoveOnDrop(dir));
        Ok(store)
    }

    fn from_db(db: sled::Db, path: PathBuf, options: &SledOptions) -> Result<Self, StoreError> {
        let tree = |name: &str| {
            db.open_tree(name)
                .map_err(|e| from_sled(e, &format!("opening tree {name}")))
        };
        let (records, summaries, snapshots, by_created, unfinished, leases) = (
            tree(RECORDS)?,
            tree(SUMMARIES)?,
            tree(SNAPSHOTS)?,
            tree(BY_CREATED)?,
            tree(UNFINISHED)?,
            tree(LEASES)?,
        );
        match db
            .get(keys::LAYOUT_KEY)
            .map_err(|e| from_sled(e, "reading the layout version"))?
        {
            None => {
                db.insert(keys::LAYOUT_KEY, &[LAYOUT])
                    .map_err(|e| from_sled(e, "writing the layout version"))?;
            }
            Some(v) if *v == [LAYOUT] => {}
            Some(v) => {
                return Err(StoreError::Corrupt {
                    job: None,
                    key: String::from_utf8_lossy(keys::LAYOUT_KEY).into_owned(),
                    message: format!(
                        "the directory holds layout {:?}; this build reads layout {LAYOUT}",
                        &v[..]
                    ),
                })
            }
        }
        let sync = match options.durability {
            Durability::Synced => {
                let dir = &path;
                let files = SyncedFiles::open(dir).map_err(|e| io_error(e, "opening the log"))?;
                // The files sled just created are durable once the
                // directory that names them is.
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io_error(e, "syncing the directory"))?;
                Sync::Files(files)
            }
            Durability::Durable | Durability::Relaxed { .. } => Sync::Sled,
        };
        let committer = Committer::start(db.clone(), sync)?;
        Ok(Self {
            db,
            records,
            summaries,
            snapshots,
            by_created,
            unfinished,
            leases,
            committer,
            durability: options.durability,
            path,
            writes: AtomicU64::new(0),
            written_records: AtomicU64::new(0),
            _remove: None,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The durability this store was opened with.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Counters since the store was opened.
    pub fn stats(&self) -> SledStats {
        SledStats {
            writes: self.writes.load(Ordering::Relaxed),
            records: self.written_records.load(Ordering::Relaxed),
            durable_waits: self.committer.waits(),
            flushes: self.committer.flushes(),
        }
    }

    /// Makes everything written so far durable (as a `Durable` write would
    /// be), whatever the configured durability; rides the group commit.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.committer.durable().await
    }

    /// Waits for durability as configured.
    async fn committed(&self) -> Result<(), StoreError> {
        match self.durability {
            Durability::Durable | Durability::Synced => self.committer.durable().await,
            Durability::Relaxed { .. } => Ok(()),
        }
    }

    fn count_write(&self, records: usize) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.written_records
            .fetch_add(records as u64, Ordering::Relaxed);
    }

    /// The job's summary, or `NotFound`.
    fn load_summary(&self, job: &JobId) -> Result<JobSummary, StoreError> {
        let raw = self
            .summaries
            .get(keys::job(job))
            .map_err(|e| from_sled(e, "reading a summary"))?
            .ok_or_else(|| StoreError::NotFound { job: job.clone() })?;
        codec::decode(&raw, Some(job), || keys::describe(SUMMARIES, job))
    }

    fn ensure_exists(&self, job: &JobId) -> Result<(), StoreError> {
        let exists = self
            .summaries
            .contains_key(keys::job(job))
            .map_err(|e| from_sled(e, "reading a summary"))?;
        if exists {
            Ok(())
        } else {
            Err(StoreError::NotFound { job: job.clone() })
        }
    }
}

impl Drop for SledStore {
    /// Flushes what a `Relaxed` store has not flushed yet (for the other
    /// modes there is nothing left). Errors cannot be reported from here.
    fn drop(&mut self) {
        if let Durability::Relaxed { .. } = self.durability {
            if let Err(e) = self.db.flush() {
                tracing::error!(error = %e, "flushing the sled store on drop failed");
            }
        }
    }
}

fn config(options: &SledOptions) -> sled::Config {
    let mut config = sled::Config::new().mode(sled::Mode::HighThroughput);
    if let Some(bytes) = options.cache_capacity {
        config = config.cache_capacity(bytes);
    }
    if let Durability::Relaxed { every } = options.durability {
        let ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1);
        config = config.flush_every_ms(Some(ms));
    }
    config
}

fn io_error(e: std::io::Error, doing: &str) -> StoreError {
    from_sled(sled::Error::Io(e), doing)
}

/// Aborts a transaction with `e`.
fn fail<T>(e: StoreError) -> Result<T, ConflictableTransactionError<StoreError>> {
    abort(e)
}

/// Reads and decodes a summary inside a transaction.
fn tx_summary(
    summaries: &TransactionalTree,
    job: &JobId,
) -> Result<Option<JobSummary>, ConflictableTransactionError<StoreError>> {
    match summaries.get(keys::job(job))? {
        None => Ok(None),
        Some(raw) => codec::decode(&raw, Some(job), || keys::describe(SUMMARIES, job))
            .map(Some)
            .or_else(fail),
    }
}

/// Whether `records` are stored, identical, at their positions (read inside
/// a transaction). A missing record below the job's version is corruption.
fn tx_stored_identically(
    stored: &TransactionalTree,
    job: &JobId,
    records: &[Record],
) -> Result<bool, ConflictableTransactionError<StoreError>> {
    for r in records {
        let key = || keys::describe_record(job, r.seq);
        let Some(raw) = stored.get(keys::record(job, r.seq))? else {
            return fail(codec::corrupt(
                Some(job),
                key(),
                "record missing below the job's version".into(),
            ));
        };
        let have: Record = codec::decode(&raw, Some(job), key).or_else(fail)?;
        if have != *r {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Encoded `(key, value)` pairs.
type Encoded = Vec<(Vec<u8>, Vec<u8>)>;

/// The records of `job` encoded as `(key, value)` pairs.
fn encode_records(job: &JobId, records: &[Record]) -> Result<Encoded, StoreError> {
    records
        .iter()
        .map(|r| Ok((keys::record(job, r.seq), codec::encode(r)?)))
        .collect()
}

#[async_trait]
impl Store for SledStore {
    async fn create_job(&self, summary: &JobSummary, records: &[Record]) -> Result<(), StoreError> {
        let job = &summary.id;
        check_sequence(job, 0, records)?;
        if records.is_empty() {
            return Err(StoreError::Invalid(
                "a job is created with at least one record".into(),
            ));
        }
        let n = records.len() as u64;
        let encoded = encode_records(job, records)?;
        let mut stored = summary.clone();
        stored.progress.version = n;
        let summary_value = codec::encode(&stored)?;
        let created_key = keys::created(stored.created_at, job);
        let unfinished = !stored.progress.state.is_terminal();

        let wrote = (
            &self.records,
            &self.summaries,
            &self.by_created,
            &self.unfinished,
        )
            .transaction(|(rt, st, ct, ut)| {
                if let Some(existing) = tx_summary(st, job)? {
                    // An identical repeat of a create that landed succeeds.
                    if existing.progress.version >= n && tx_stored_identically(rt, job, records)? {
                        return Ok(false);
                    }
                    return fail(StoreError::AlreadyExists { job: job.clone() });
                }
                for (k, v) in &encoded {
                    rt.insert(k.as_slice(), v.as_slice())?;
                }
                st.insert(keys::job(job), summary_value.as_slice())?;
                ct.insert(created_key.as_slice(), EMPTY)?;
                if unfinished {
                    ut.insert(keys::job(job), EMPTY)?;
                }
                Ok(true)
            })
            .map_err(|e| from_tx(e, "creating a job"))?;
        if wrote {
            self.count_write(records.len());
        }
        // A repeat waits too: the create it repeats may not be flushed yet.
        self.committed().await
    }

    async fn append(
        &self,
        job: &JobId,
        expected: u64,
        records: &[Record],
        progress: &Progress,
        fence: u64,
    ) -> Result<u64, StoreError> {
        check_sequence(job, expected, records)?;
        let n = records.len() as u64;
        // `check_sequence` guarantees `expected + n` does not overflow.
        let end = expected + n;
        let encoded = encode_records(job, records)?;

        let (version, wrote) = (
            &self.records,
            &self.summaries,
            &self.unfinished,
            &self.leases,
        )
            .transaction(|(rt, st, ut, lt)| {
                let Some(mut summary) = tx_summary(st, job)? else {
                    return fail(StoreError::NotFound { job: job.clone() });
                };
                let mut lease = lease::tx_lease(lt, job)?;
                lease.check(job, fence).or_else(fail)?;
                let actual = summary.progress.version;
                if actual != expected {
                    // Idempotent replay: these records are already stored,
                    // identical, at these positions. Nothing is written,
                    // not even the summary (it may have moved on).
                    if actual > expected
                        && actual - expected >= n
                        && tx_stored_identically(rt, job, records)?
                    {
                        return Ok((end, false));
                    }
                    return fail(StoreError::Conflict {
                        job: job.clone(),
                        expected,
                        actual,
                    });
                }
                for (k, v) in &encoded {
                    rt.insert(k.as_slice(), v.as_slice())?;
                }
                let was_terminal = summary.progress.state.is_terminal();
                summary.progress = *progress;
                summary.progress.version = end;
                let value = codec::encode(&summary).or_else(fail)?;
                st.insert(keys::job(job), value)?;
                let terminal = summary.progress.state.is_terminal();
                if terminal && !was_terminal {
                    ut.remove(keys::job(job))?;
                    if lease.token > 0 {
                        lease.finish();
                        lt.insert(keys::job(job), codec::encode(&lease).or_else(fail)?)?;
                    }
                } else if !terminal && was_terminal {
                    ut.insert(keys::job(job), EMPTY)?;
                }
                Ok((end, true))
            })
            .map_err(|e| from_tx(e, "appending"))?;
        if wrote {
            self.count_write(records.len());
        }
        self.committed().await?;
        Ok(version)
    }

    async fn read(&self, job: &JobId, after: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.ensure_exists(job)?;
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let start = keys::record(job, first);
        let mut end = keys::record_prefix(job);
        // The byte after the 0x00 separator: just past every key of the job.
        if let Some(last) = end.last_mut() {
            *last = 1;
        }
        let mut out = Vec::new();
        for item in self.records.range(start..end) {
            let (k, v) = item.map_err(|e| from_sled(e, "reading records"))?;
            let Some(seq) = keys::seq_of(&k) else {
                return Err(codec::corrupt(
                    Some(job),
                    keys::describe_raw(RECORDS, &k),
                    "malformed record key".into(),
                ));
            };
            let key = keys::describe_record(job, seq);
            let record: Record = codec::decode(&v, Some(job), || key.clone())?;
            if record.seq != seq {
                return Err(codec::corrupt(
                    Some(job),
                    key,
                    format!("record stored under seq {seq} says seq {}", record.seq),
                ));
            }
            out.push(record);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    async fn put_snapshot(&self, job: &JobId, snapshot: &Snapshot) -> Result<(), StoreError> {
        let version = snapshot.view.version;
        let value = codec::encode_with_prefix(&version.to_be_bytes(), snapshot)?;
        let wrote = (&self.summaries, &self.snapshots)
            .transaction(|(st, snt)| {
                let Some(summary) = tx_summary(st, job)? else {
                    return fail(StoreError::NotFound { job: job.clone() });
                };
                if snapshot.view.header.id != *job {
                    return fail(StoreError::Invalid(format!(
                        "snapshot of job {} stored under {job}",
                        snapshot.view.header.id
                    )));
                }
                if version > summary.progress.version {
                    return fail(StoreError::Invalid(format!(
                        "snapshot at version {version} is ahead of job {job} at version {}",
                        summary.progress.version
                    )));
                }
                if let Some(old) = snt.get(keys::job(job))? {
                    let key = || keys::describe(SNAPSHOTS, job);
                    match codec::split_header::<8>(&old, Some(job), key) {
                        Ok((h, _, _)) if u64::from_be_bytes(h) >= version => return Ok(false),
                        Ok(_) => {}
                        // An unreadable snapshot is only an optimisation
                        // lost: a good one replaces it.
                        Err(e) => tracing::warn!(error = %e, "replacing an unreadable snapshot"),
                    }
                }
                snt.insert(keys::job(job), value.as_slice())?;
                Ok(true)
            })
            .map_err(|e| from_tx(e, "storing a snapshot"))?;
        if wrote {
            self.committed().await?;
        }
        Ok(())
    }

    async fn snapshot(&self, job: &JobId) -> Result<Option<Snapshot>, StoreError> {
        self.ensure_exists(job)?;
        let Some(raw) = self
            .snapshots
            .get(keys::job(job))
            .map_err(|e| from_sled(e, "reading a snapshot"))?
        else {
            return Ok(None);
        };
        let (h, json, key) =
            codec::split_header::<8>(&raw, Some(job), || keys::describe(SNAPSHOTS, job))?;
        let snapshot: Snapshot = codec::decode_json(json, Some(job), key.clone())?;
        let version = u64::from_be_bytes(h);
        if snapshot.view.version != version || snapshot.view.header.id != *job {
            return Err(codec::corrupt(
                Some(job),
                key,
                format!(
                    "snapshot header says job {job} version {version}, its view job {} version {}",
                    snapshot.view.header.id, snapshot.view.version
                ),
            ));
        }
        Ok(Some(snapshot))
    }

    async fn summary(&self, job: &JobId) -> Result<JobSummary, StoreError> {
        self.load_summary(job)
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage, StoreError> {
        query.check()?;
        // Both upper limits are exclusive: the cursor's own position, and
        // the first key of the `created_before` millisecond.
        let cursor = query
            .cursor
            .as_ref()
            .map(|c| keys::created(c.created_at, &c.id));
        let before = query.created_before.map(|t| t.0.to_be_bytes().to_vec());
        let upper = match (cursor, before) {
            (Some(a), Some(b)) => Bound::Excluded(a.min(b)),
            (Some(k), None) | (None, Some(k)) => Bound::Excluded(k),
            (None, None) => Bound::Unbounded,
        };
        let lower = match query.created_after {
            Some(t) => Bound::Included(t.0.to_be_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let mut hits: Vec<JobSummary> = Vec::new();
        let mut more = false;
        for item in self.by_created.range::<Vec<u8>, _>((lower, upper)).rev() {
            let (k, _) = item.map_err(|e| from_sled(e, "listing jobs"))?;
            let Some(id) = keys::job_of_created(&k) else {
                tracing::error!(key = %keys::describe_raw(BY_CREATED, &k), "malformed listing key; skipped");
                continue;
            };
            let summary = match self.load_summary(&id) {
                Ok(s) => s,
                Err(e) => {
                    // One bad job must not take listing down for all.
                    tracing::error!(job = %id, error = %e, "job left out of a listing");
                    continue;
                }
            };
            if !(query.matches(&summary) && query.after_cursor(&summary)) {
                continue;
            }
            if hits.len() == query.limit {
                more = true;
                break;
            }
            hits.push(summary);
        }
        let next_cursor = if more {
            hits.last().map(|s| Cursor::after(s).to_string())
        } else {
            None
        };
        Ok(JobPage {
            jobs: hits,
            next_cursor,
        })
    }

    async fn unfinished_jobs(&self) -> Result<Vec<JobId>, StoreError> {
        let mut ids = Vec::new();
        for item in &self.unfinished {
            let (k, _) = item.map_err(|e| from_sled(e, "listing unfinished jobs"))?;
            match std::str::from_utf8(&k).ok().and_then(|s| s.parse().ok()) {
                Some(id) => ids.push(id),
                None => tracing::error!(
                    key = %keys::describe_raw(UNFINISHED, &k),
                    "malformed unfinished-job key; skipped"
                ),
            }
        }
        // Tree order is byte order, which is `JobId` order: already sorted.
        Ok(ids)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db
            .get(keys::LAYOUT_KEY)
            .map_err(|e| from_sled(e, "pinging"))?;
        match self.committer.last_error() {
            None => Ok(()),
            Some(e) => Err(StoreError::Unavailable {
                message: format!("the latest flush failed: {e}"),
                source: None,
            }),
        }
    }
}
