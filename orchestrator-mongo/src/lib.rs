//! **orchestrator-mongo**: the MongoDB [`Store`] of orchestrator, for teams
//! whose jobs outgrow one process or one machine — several orchestrator
//! processes share one MongoDB replica set.
//!
//! ```no_run
//! use std::sync::Arc;
//! use orchestrator_core::{Executor, JobSpec, JobState, NodeSpec};
//! use orchestrator_mongo::MongoStore;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The database is the one the connection string names.
//! let store = MongoStore::connect("mongodb://db1,db2,db3/orchestrator?replicaSet=rs0").await?;
//! let executor = Executor::builder(Arc::new(store)).start().await?;
//! let spec = JobSpec::builder("smoke").node(NodeSpec::new("build", "noop")).build();
//! let id = executor.submit(spec, "alice").await?;
//! assert_eq!(executor.wait(&id).await?.state, JobState::Succeeded);
//! # Ok(()) }
//! ```
//!
//! The `orchestrator` command uses it for `--store mongodb://…` (or
//! `DATABASE_URL`). It is written with the official driver (`mongodb` 3.x)
//! and passes the core conformance suite unchanged, the 16-writer race
//! included.
//!
//! # Guarantees
//!
//! - **Compare-and-set appends without transactions.** Every decision is one
//!   single-document atomic operation (`find_one_and_update` with the
//!   expected version in its filter); see [the append
//!   protocol](#the-append-protocol) for why that is enough. Multi-document
//!   transactions are never used, so the store works on a standalone server
//!   as well as on a replica set or a sharded cluster.
//! - **Idempotent replays.** An append whose records are already stored,
//!   identical and committed, at those positions returns `Ok` — also after
//!   the server committed it and the reply was lost.
//! - **Readers never see uncommitted records**: a journal is read up to the
//!   job's version, never beyond.
//! - **Durability.** Writes use write concern `majority` unless the
//!   connection string sets `w`: an append that returned `Ok` survives a
//!   failover of the replica set (and, as MongoDB journals majority writes by
//!   default, a crash of every member).
//! - **Outages are retryable, and short.** Network, server-selection and
//!   timeout failures are [`StoreError::Unavailable`], which the executor
//!   retries with backoff; server selection gives up after 5 s and a whole
//!   call after 30 s (both [`MongoOptions`]), so a dead server surfaces
//!   quickly instead of hanging. A [circuit breaker](#circuit-breaker) stops
//!   the store hammering a dead server.
//! - **Bad data stays local.** Every document is read through a typed serde
//!   struct; one that fails to decode is [`StoreError::Corrupt`] naming the
//!   job and the document (`jobs/<id>`, `events/<id>/<seq>`), and listing
//!   skips (and logs) a summary it cannot decode.
//!
//! # Collections and indexes
//!
//! All in the connection string's database (default [`DEFAULT_DATABASE`]),
//! each name prefixed with [`MongoOptions::collection_prefix`] (empty by
//! default). The first call of a [`MongoStore`] creates the indexes (and with
//! them the collections); `createIndexes` of an existing index is a no-op,
//! so processes starting together need no coordination. No index is
//! referred to by name, and none is partial or TTL.
//!
//! | collection | `_id` | other fields | indexes |
//! | --- | --- | --- | --- |
//! | `jobs` | job id | summary: `name`, `name_lc`, `owner`, `labels` (JSON `[k, v]` strings), `priority`, `created_at` (ms); progress: `state`, `version`, `updated_at`, `nodes_total`, `nodes_finished`, `nodes_failed`, `nodes_running`; the latest batch: `batch` (id), `pending` (its records); the lease: `lease_owner`, `lease_token` (the fencing token every append's filter compares), `lease_expires` (ms, 0 when released), `cancel_requested` (0/1), `cancel_reason`; `layout` (1) | `{created_at: -1}` (listing), `{state: 1, created_at: -1}` (recovery, state filters), `{owner: 1, created_at: -1}` |
//! | `events` | `<job>/<seq>` | `job`, `seq`, `at` (ms), `event` (the event's JSON) | **unique** `{job: 1, seq: 1}`: a journal position is written once |
//! | `snapshots` | job id | `version`, `snapshot` (the snapshot's JSON) | — |
//! | `dead_letters` | entry id `<job>.<node index>.<n>` | `job`, `owner`, `node_type`, `status`, `reason`, `created_at` (ms), `rev` (compare-and-set token), `entry` (the entry's JSON) | `{created_at: -1}`, `{job: 1}` |
//! | `test_history` | test key | `rev` (compare-and-set counter), `job_names` (names of the jobs of the kept runs), `outcomes` (JSON text of the kept runs, oldest first); see `history` | — |
//!
//! Reserved for the features that come next, with the same rules (string
//! ids, integer milliseconds, single-document compare-and-set):
//!
//! | collection | for | shape |
//! | --- | --- | --- |
//! | `leases` | job ownership across processes | `_id` job id, `owner` (process id), `token` (fencing, incremented by each takeover), `expires_at` (ms); takeover is `find_one_and_update` filtered on `expires_at < now` or `token`; index `{expires_at: 1}` |
//! | `policies` | stored retry policies | `_id` policy name, `version`, the policy as JSON |
//!
//! Appends stamp the fencing token into the job document's filter once
//! leases exist, so a stale owner's compare-and-set misses.
//!
//! # The append protocol
//!
//! MongoDB updates one document atomically; a batch of records is many
//! documents. The store therefore makes **the job document the commit
//! point** and treats `events` as a copy that may lag by one batch:
//!
//! 1. **Commit.** `find_one_and_update({_id: job, version: expected, batch:
//!    B_prev}, {$set: {version: expected + n, <progress>, batch: B_new,
//!    pending: [records]}})`. The records travel *inside* the job document,
//!    so the version, the progress and the records change in one atomic
//!    step. Exactly one of any number of racing writers at `expected`
//!    matches; the others miss and read the job to report a conflict (or an
//!    idempotent replay).
//! 2. **Copy.** `insert_many` of the records into `events` (unordered). A
//!    duplicate key there is success: a committed position holds exactly
//!    one record, forever, so whoever wrote it wrote the same thing.
//!
//! The filter's `batch: B_prev` is what makes step 2 safe to lose: a writer
//! may replace the job's pending batch only once that batch is known to be
//! in `events`. The store remembers, per job, the last batch it copied
//! itself, so an executor appending to its own job pays one round trip per
//! step. Otherwise (another process wrote last, or a writer died between
//! the steps) the compare-and-set misses, the writer reads the job, copies
//! its pending batch into `events` (helping the writer before it), and tries
//! again with that batch's id.
//!
//! Why this is race-free:
//!
//! - **One winner per version.** The compare-and-set is a single-document
//!   atomic operation whose filter names the version; after it the version
//!   is different, so no second writer at the same version can match.
//! - **Nothing uncommitted is ever visible.** Records enter `events` only
//!   after the commit that contains them, so `events` never holds a record
//!   beyond a job's version — there are no losers' leftovers to clean up
//!   or overwrite.
//! - **Nothing committed is lost.** A batch leaves the job document only
//!   when a later commit replaces it, and that commit's filter requires the
//!   batch to have been copied. A writer that crashes after step 1 leaves a
//!   batch that readers serve from the job document and the next writer
//!   copies.
//! - **Reads are consistent.** [`Store::read`] reads the job document first
//!   (version `V`, pending batch covering `V - p + 1 ..= V`), then `events`
//!   below the pending batch — all copied before this job document was
//!   written — and the pending records from the document it holds. A read
//!   never returns a record beyond the version it saw, and the version it
//!   saw is never ahead of the summary a later read sees.
//!
//! A crash between the steps costs the next writer one read and one
//! `insert_many`; [`MongoStats::batches_helped`] counts them. An empty
//! append (progress only) is a compare-and-set on the version alone.
//!
//! `create_job` is the same protocol's first step: `insert_one` of the job
//! document with all the records pending (a duplicate `_id` is compared with
//! the stored records: identical is an idempotent repeat, anything else
//! [`StoreError::AlreadyExists`]), then the copy into `events`.
//!
//! # Circuit breaker
//!
//! After [`BreakerConfig::threshold`] consecutive calls end
//! [`StoreError::Unavailable`] (default 3), the store fails every call at
//! once with `Unavailable` for [`BreakerConfig::cooldown`] (default 2 s)
//! instead of letting each wait out the server-selection timeout. Then one
//! call goes through as a probe: if the server answers, the breaker closes;
//! if not, it stays open for another cool-down. The executor's own backoff
//! paces the retries; the breaker keeps a stalled executor with many jobs
//! from sending the dead server a request per job per retry.
//! [`MongoStore::stats`] reports how often it opened.
//!
//! # Portability
//!
//! The same code runs on MongoDB (4.4 and later) and on wire-compatible
//! servers such as the SQLite-backed `nx-27017` the tests use. It relies
//! only on: single-document updates with `$set`; `insert_one`/`insert_many`;
//! `find` with `$gte`/`$lt`/`$in`/`$all`/`$or`/`$regex` (on a literal,
//! escaped, lower-cased name), sorting and limits; unique compound indexes
//! (not involving `_id`); and duplicate key (error code 11000), the only
//! code it matches. Times are `int64` milliseconds, ids strings; no
//! null-versus-missing queries, no change streams, no pipeline updates, no
//! transactions.
//!
//! # Limits
//!
//! A document holds at most 16 MiB, so one record's JSON, one batch's
//! records together (they are also the job document's pending batch) and
//! one snapshot's JSON must each fit in 15 MiB; larger ones are
//! [`StoreError::Invalid`]. Jobs are never deleted: a job id is never
//! reused, which is what lets a duplicate key in `events` mean "the same
//! record".
//!
//! # Module map
//!
//! | module | what it holds |
//! | --- | --- |
//! | `store` | [`MongoStore`], [`MongoOptions`], [`MongoStats`] and the [`Store`] implementation: the append protocol, reads, listing, snapshots |
//! | `schema` | the typed documents, collection names, indexes, and conversions to and from the core's types |
//! | `breaker` | the circuit breaker ([`BreakerConfig`]) |
//! | `dead_letter` | the dead-letter queue: single-document compare-and-set on a `rev` field, no transactions |
//! | `history` | the `TestHistoryStore` implementation: per-key compare-and-set on `rev` |
//! | `error` | the one conversion of driver errors into [`StoreError`] |
//!
//! [`Store`]: orchestrator_core::Store
//! [`Store::read`]: orchestrator_core::Store::read
//! [`StoreError`]: orchestrator_core::StoreError
//! [`StoreError::Unavailable`]: orchestrator_core::StoreError::Unavailable
//! [`StoreError::Corrupt`]: orchestrator_core::StoreError::Corrupt
//! [`StoreError::Invalid`]: orchestrator_core::StoreError::Invalid
//! [`StoreError::AlreadyExists`]: orchestrator_core::StoreError::AlreadyExists

mod breaker;
mod dead_letter;
mod error;
mod history;
mod policy;
mod schema;
mod store;

pub use breaker::BreakerConfig;
pub use store::{MongoOptions, MongoStats, MongoStore, DEFAULT_DATABASE};
