//! [`MongoStore`] and its [`Store`] implementation: the append protocol,
//! reads that never show uncommitted records, listing, snapshots.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use foldhash::HashMap;
use mongodb::bson::{doc, Document, RawDocumentBuf};
use mongodb::options::{ClientOptions, ReturnDocument, WriteConcern};
use mongodb::{Client, Collection, Database};
use orchestrator_core::journal::{JobSummary, Progress, Record, Snapshot};
use orchestrator_core::store::{check_sequence, Cursor, JobPage, JobQuery};
use orchestrator_core::{JobId, Store, StoreError};
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;
use tokio::time::Instant;

mod lease;

use crate::breaker::{Admit, Breaker, BreakerConfig};
use crate::error::{corrupt, from_driver, is_duplicate_key, timed_out};
use crate::schema::{
    self, BatchDoc, EventDoc, HeadDoc, IdDoc, JobDoc, Names, RecordDoc, SnapshotDoc, SummaryDoc,
    VersionDoc,
};

/// The database used when neither the connection string nor
/// [`MongoOptions::database`] names one.
pub const DEFAULT_DATABASE: &str = "orchestrator";

/// How [`MongoStore::connect_with`] connects. Settings the connection
/// string gives explicitly (`serverSelectionTimeoutMS`, `connectTimeoutMS`,
/// `w`) win over these defaults.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MongoOptions {
    /// The database; `None`: the one the connection string names, else
    /// [`DEFAULT_DATABASE`].
    pub database: Option<String>,
    /// Prepended to every collection name (letters, digits, underscores;
    /// at most 32 characters), so several stores can share a database.
    pub collection_prefix: String,
    /// How long an operation waits for a usable server before failing as
    /// [`StoreError::Unavailable`] (the driver's default is 30 s).
    pub server_selection_timeout: Duration,
    /// How long opening one connection may take.
    pub connect_timeout: Duration,
    /// The most one store call may take, retries and all, before it fails as
    /// [`StoreError::Unavailable`]: a partitioned network can otherwise hang
    /// a call on a half-open socket.
    pub operation_timeout: Duration,
    /// The circuit breaker (see the crate docs).
    pub breaker: BreakerConfig,
}

impl Default for MongoOptions {
    fn default() -> Self {
        Self {
            database: None,
            collection_prefix: String::new(),
            server_selection_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            operation_timeout: Duration::from_secs(30),
            breaker: BreakerConfig::default(),
        }
    }
}

impl MongoOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses this database instead of the connection string's.
    pub fn database(mut self, name: impl Into<String>) -> Self {
        self.database = Some(name.into());
        self
    }

    /// Prefixes every collection name.
    pub fn collection_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.collection_prefix = prefix.into();
        self
    }

    /// Sets the server-selection timeout.
    pub fn server_selection_timeout(mut self, timeout: Duration) -> Self {
        self.server_selection_timeout = timeout;
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the per-call timeout.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Sets the circuit breaker.
    pub fn breaker(mut self, breaker: BreakerConfig) -> Self {
        self.breaker = breaker;
        self
    }
}

/// Counters of one store, for diagnostics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MongoStats {
    /// How many times the circuit breaker opened.
    pub breaker_opened: u64,
    /// Whether it is open now (calls fail fast).
    pub breaker_open: bool,
    /// Batches this store found committed but not yet copied to `events`
    /// and copied itself (after a writer crashed or lost its connection
    /// between the two steps of an append).
    pub batches_helped: u64,
}

/// The MongoDB [`Store`]. See the [crate docs](crate) for the layout and
/// the append protocol. Cheap to share (`Arc` it); every method takes
/// `&self`.
pub struct MongoStore {
    client: Client,
    pub(crate) db: Database,
    jobs: Collection<JobDoc>,
    events: Collection<EventDoc>,
    snapshots: Collection<SnapshotDoc>,
    pub(crate) names: Names,
    schema: OnceCell<()>,
    breaker: Breaker,
    operation_timeout: Duration,
    /// Per job, the newest committed batch this store knows to be in
    /// `events` (version, batch id): the next append may replace it without
    /// reading the job first.
    settled: Mutex<HashMap<JobId, (u64, String)>>,
    helped: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoStore")
            .field("database", &self.db.name())
            .field("jobs", &self.names.jobs)
            .finish_non_exhaustive()
    }
}

/// Most jobs whose settled batch is remembered; past it the memory is
/// cleared (the next append of each job then reads its document first).
const SETTLED_CAP: usize = 65_536;

/// Page size of cursors over events and jobs.
const BATCH_SIZE: u32 = 1_000;

impl MongoStore {
    /// Connects with the default [`MongoOptions`]. The database is the one
    /// the connection string names (`mongodb://host/DB`), else
    /// [`DEFAULT_DATABASE`].
    ///
    /// Nothing is sent to the server yet (a `mongodb+srv://` string is
    /// resolved in DNS, though): collections and indexes are created by the
    /// first call that needs them, so a store can be built while the
    /// database is down.
    pub async fn connect(uri: &str) -> Result<Self, StoreError> {
        Self::connect_with(uri, MongoOptions::default()).await
    }

    /// Connects with explicit options.
    pub async fn connect_with(uri: &str, options: MongoOptions) -> Result<Self, StoreError> {
        if !schema::valid_prefix(&options.collection_prefix) {
            return Err(StoreError::Invalid(format!(
                "collection prefix {:?} must be at most 32 letters, digits or underscores",
                options.collection_prefix
            )));
        }
        let mut client_options = ClientOptions::parse(uri).await.map_err(|e| {
            if matches!(*e.kind, mongodb::error::ErrorKind::InvalidArgument { .. }) {
                StoreError::Invalid(format!("invalid MongoDB connection string: {}", e.kind))
            } else {
                from_driver(e, "parsing the connection string", None)
            }
        })?;
        client_options
            .server_selection_timeout
            .get_or_insert(options.server_selection_timeout);
        client_options
            .connect_timeout
            .get_or_insert(options.connect_timeout);
        // Acknowledged by a majority: an append that returned Ok survives a
        // failover of the replica set (a standalone server treats it as w:1).
        client_options
            .write_concern
            .get_or_insert_with(WriteConcern::majority);
        client_options
            .app_name
            .get_or_insert_with(|| "orchestrator".into());
        let database = options
            .database
            .clone()
            .or_else(|| client_options.default_database.clone())
            .unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
        let client = Client::with_options(client_options)
            .map_err(|e| from_driver(e, "creating the client", None))?;
        let db = client.database(&database);
        let names = Names::new(&options.collection_prefix);
        Ok(Self {
            jobs: db.collection(&names.jobs),
            events: db.collection(&names.events),
            snapshots: db.collection(&names.snapshots),
            db,
            client,
            names,
            schema: OnceCell::new(),
            breaker: Breaker::new(options.breaker),
            operation_timeout: options.operation_timeout,
            settled: Mutex::new(HashMap::default()),
            helped: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The database this store uses.
    pub fn database_name(&self) -> &str {
        self.db.name()
    }

    /// The driver's client (shared by clones of it; for running other
    /// commands on the same connection pool).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Counters: circuit-breaker openings, batches helped.
    pub fn stats(&self) -> MongoStats {
        let now = Instant::now();
        MongoStats {
            breaker_opened: self.breaker.times_opened(),
            breaker_open: self.breaker.is_open(now),
            batches_helped: self.helped.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The database (for the stored-policy collection).
    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    /// The stored-policy collection's name, with the collection prefix.
    pub(crate) fn policy_collection(&self) -> String {
        let prefix = self.names.jobs.strip_suffix("jobs").unwrap_or_default();
        format!("{prefix}policies")
    }

    /// Runs one store call: through the circuit breaker, within the
    /// operation timeout, after making sure the collections and indexes
    /// exist.
    pub(crate) async fn call<T, F>(&self, doing: &str, f: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        if let Admit::No { retry_in } = self.breaker.admit(Instant::now()) {
            return Err(Breaker::refused(retry_in, doing));
        }
        let result = tokio::time::timeout(self.operation_timeout, async {
            self.ensure_schema().await?;
            f.await
        })
        .await
        .unwrap_or_else(|_| Err(timed_out(doing, self.operation_timeout)));
        self.breaker.record(
            Instant::now(),
            matches!(result, Err(StoreError::Unavailable { .. })),
        );
        result
    }

    /// Creates the indexes (and with them the collections) once per store.
    /// `createIndexes` of an existing index is a no-op, so several processes
    /// starting at once need no coordination.
    async fn ensure_schema(&self) -> Result<(), StoreError> {
        self.schema
            .get_or_try_init(|| async {
                self.jobs
                    .create_indexes(schema::job_indexes())
                    .await
                    .map_err(|e| from_driver(e, "creating the jobs indexes", None))?;
                self.events
                    .create_indexes(schema::event_indexes())
                    .await
                    .map_err(|e| from_driver(e, "creating the events index", None))?;
                self.db
                    .collection::<Document>(&self.names.dead_letters)
                    .create_indexes(crate::dead_letter::indexes())
                    .await
                    .map_err(|e| from_driver(e, "creating the dead_letters indexes", None))?;
                Ok::<(), StoreError>(())
            })
            .await
            .map(|_| ())
    }

    /// One document of `coll`, decoded as `T`.
    async fn find_one<T: DeserializeOwned>(
        &self,
        coll: &str,
        filter: Document,
        projection: Document,
        job: &JobId,
    ) -> Result<Option<T>, StoreError> {
        let raw: Option<RawDocumentBuf> = self
            .db
            .collection::<RawDocumentBuf>(coll)
            .find_one(filter)
            .projection(projection)
            .await
            .map_err(|e| from_driver(e, &format!("reading {coll}/{job}"), Some(job)))?;
        raw.map(|raw| decode(raw.as_bytes(), Some(job), || format!("{coll}/{job}")))
            .transpose()
    }

    /// The job's version and latest batch.
    async fn head(&self, job: &JobId) -> Result<Option<HeadDoc>, StoreError> {
        self.find_one(
            &self.names.jobs,
            doc! { "_id": job.as_str() },
            schema::head_projection(),
            job,
        )
        .await
    }

    /// Copies committed records into `events`. A record already there is
    /// the same record (a committed position is written by nobody else and
    /// never changes), so duplicate-key refusals are success.
    /// Returns how many records it wrote.
    async fn materialise(&self, job: &JobId, records: &[RecordDoc]) -> Result<usize, StoreError> {
        if records.is_empty() {
            return Ok(0);
        }
        let docs: Vec<EventDoc> = records.iter().map(|r| EventDoc::new(job, r)).collect();
        match self.events.insert_many(&docs).ordered(false).await {
            Ok(_) => Ok(docs.len()),
            Err(e) if is_duplicate_key(&e) => {
                let refused = match e.kind.as_ref() {
                    mongodb::error::ErrorKind::InsertMany(m) => {
                        m.write_errors.as_ref().map_or(0, Vec::len)
                    }
                    _ => docs.len(),
                };
                Ok(docs.len().saturating_sub(refused))
            }
            Err(e) => Err(from_driver(
                e,
                &format!("writing the records of {job}"),
                Some(job),
            )),
        }
    }

    /// Remembers that the batch ending at `version` is in `events`.
    fn settle(&self, job: &JobId, version: u64, batch: String, terminal: bool) {
        let mut settled = self
            .settled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if terminal {
            // A finished job is appended to rarely, if ever.
            settled.remove(job);
            return;
        }
        if settled.len() >= SETTLED_CAP {
            settled.clear();
        }
        match settled.get_mut(job) {
            Some(known) if known.0 >= version => {}
            Some(known) => *known = (version, batch),
            None => {
                settled.insert(job.clone(), (version, batch));
            }
        }
    }

    /// The batch known to be in `events` if it ends at `version`.
    fn settled_at(&self, job: &JobId, version: u64) -> Option<String> {
        let settled = self
            .settled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        settled
            .get(job)
            .filter(|(v, _)| *v == version)
            .map(|(_, b)| b.clone())
    }

    /// Records `lo..=hi` (clipped to the job's version) as of `head`:
    /// positions up to the start of the pending batch from `events`, the
    /// rest from the batch itself.
    async fn read_range(
        &self,
        job: &JobId,
        head: &HeadDoc,
        lo: u64,
        hi: u64,
    ) -> Result<Vec<Record>, StoreError> {
        let key = || format!("{}/{job}", self.names.jobs);
        let version = schema::uint(head.version, Some(job), &key())?;
        let pending = &head.batch.pending;
        let first_pending = (version + 1)
            .checked_sub(pending.len() as u64)
            .filter(|&p| p >= 1)
            .ok_or_else(|| corrupt(Some(job), key(), "pending batch longer than the journal"))?;
        let hi = hi.min(version);
        if lo > hi {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(usize::try_from(hi - lo + 1).unwrap_or(0).min(1 << 16));
        let stored_hi = hi.min(first_pending - 1);
        if lo <= stored_hi {
            let filter = doc! {
                "job": job.as_str(),
                "seq": { "$gte": schema::int(lo, "seq")?, "$lte": schema::int(stored_hi, "seq")? },
            };
            let coll = self.events.clone_with_type::<RawDocumentBuf>();
            let mut cursor = coll
                .find(filter)
                .sort(doc! { "seq": 1 })
                .batch_size(BATCH_SIZE)
                .await
                .map_err(|e| from_driver(e, &format!("reading the journal of {job}"), Some(job)))?;
            let mut want = lo;
            while cursor
                .advance()
                .await
                .map_err(|e| from_driver(e, &format!("reading the journal of {job}"), Some(job)))?
            {
                let ev: EventDoc = decode(cursor.current().as_bytes(), Some(job), || {
                    format!("{}/{job}/{want}", self.names.events)
                })?;
                if ev.seq != schema::int(want, "seq")? || ev.job != job.as_str() {
                    break;
                }
                out.push(schema::record(job, &ev.record())?);
                want += 1;
            }
            if want <= stored_hi {
                return Err(corrupt(
                    Some(job),
                    format!("{}/{job}/{want}", self.names.events),
                    format!("record {want} is missing although the job is at version {version}"),
                ));
            }
        }
        for (i, r) in pending.iter().enumerate() {
            let seq = first_pending + i as u64;
            if r.seq != schema::int(seq, "seq")? {
                return Err(corrupt(
                    Some(job),
                    key(),
                    format!("pending record {i} has seq {} instead of {seq}", r.seq),
                ));
            }
            if (lo..=hi).contains(&seq) {
                out.push(schema::record(job, r)?);
            }
        }
        Ok(out)
    }

    /// After an append at `expected` found the job at another version: an
    /// idempotent replay (the records are stored, identical, at those
    /// positions) returns the version they end at; anything else conflicts.
    async fn replay_or_conflict(
        &self,
        job: &JobId,
        expected: u64,
        records: &[Record],
        head: &HeadDoc,
    ) -> Result<u64, StoreError> {
        let actual = schema::uint(head.version, Some(job), "version")?;
        let end = expected + records.len() as u64;
        if actual > expected && end <= actual {
            let stored = if records.is_empty() {
                Vec::new()
            } else {
                self.read_range(job, head, expected + 1, end).await?
            };
            if stored == records {
                return Ok(end);
            }
        }
        Err(StoreError::Conflict {
            job: job.clone(),
            expected,
            actual,
        })
    }

    async fn append_inner(
        &self,
        job: &JobId,
        expected: u64,
        records: &[Record],
        progress: &Progress,
        fence: u64,
    ) -> Result<u64, StoreError> {
        let new = expected + records.len() as u64;
        let expected_i = schema::int(expected, "version")?;
        let fence_i = schema::int(fence, "fencing token")?;
        let finished = progress.state.is_terminal();
        let progress_doc = schema::progress_doc(progress, new)?;
        let id = job.as_str();
        if records.is_empty() {
            // Only the progress moves; the pending batch stays as it is.
            let update = schema::append_update(&progress_doc, finished, None)?;
            let hit = self
                .jobs
                .clone_with_type::<IdDoc>()
                .find_one_and_update(
                    doc! { "_id": id, "version": expected_i, "lease_token": { "$lte": fence_i } },
                    update,
                )
                .projection(doc! { "_id": 1 })
                .await
                .map_err(|e| from_driver(e, &format!("updating job {job}"), Some(job)))?;
            if hit.is_some() {
                return Ok(expected);
            }
            let head = self.head(job).await?.ok_or_else(|| not_found(job))?;
            check_fence(job, &head, fence)?;
            return self.replay_or_conflict(job, expected, records, &head).await;
        }

        let docs = schema::record_docs(records)?;
        let batch = BatchDoc {
            batch: token(),
            pending: docs,
        };
        let update = schema::append_update(&progress_doc, finished, Some(&batch))?;
        let mut settled = self.settled_at(job, expected);
        // At most: a compare-and-set with a stale memory, a read, helping
        // the previous batch into `events`, the compare-and-set again, and
        // the read that reports the conflict.
        for _ in 0..3 {
            if let Some(prev) = settled.take() {
                let hit = self
                    .jobs
                    .clone_with_type::<IdDoc>()
                    .find_one_and_update(
                        doc! { "_id": id, "version": expected_i, "batch": prev, "lease_token": { "$lte": fence_i } },
                        update.clone(),
                    )
                    .projection(doc! { "_id": 1 })
                    .return_document(ReturnDocument::Before)
                    .await
                    .map_err(|e| from_driver(e, &format!("appending to job {job}"), Some(job)))?;
                if hit.is_some() {
                    // Committed. Copying the batch into `events` is an
                    // optimisation from here on: if it fails, the batch stays
                    // readable from the job document and the next writer
                    // copies it before replacing it.
                    match self.materialise(job, &batch.pending).await {
                        Ok(_) => {
                            self.settle(job, new, batch.batch, progress.state.is_terminal());
                        }
                        Err(e) => {
                            tracing::warn!(%job, version = new, error = %e,
                                "append committed; copying its records into events failed, the next append will");
                        }
                    }
                    return Ok(new);
                }
            }
            let head = self.head(job).await?.ok_or_else(|| not_found(job))?;
            check_fence(job, &head, fence)?;
            if head.version != expected_i {
                return self.replay_or_conflict(job, expected, records, &head).await;
            }
            // The job is at the expected version, but its latest batch may
            // not be in `events` yet (its writer is between the two steps,
            // or died there): copy it before replacing it.
            if self.materialise(job, &head.batch.pending).await? > 0 {
                self.helped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            settled = Some(head.batch.batch);
        }
        let head = self.head(job).await?.ok_or_else(|| not_found(job))?;
        check_fence(job, &head, fence)?;
        if head.version != expected_i {
            return self.replay_or_conflict(job, expected, records, &head).await;
        }
        Err(StoreError::Backend {
            message: format!(
                "the append to job {job} at version {expected} did not settle: the server refused \
                 the compare-and-set although the job is at that version"
            ),
            source: None,
        })
    }

    fn list_filter(query: &JobQuery) -> Result<Document, StoreError> {
        let mut and: Vec<Document> = Vec::new();
        if let Some(owner) = &query.owner {
            and.push(doc! { "owner": owner.as_str() });
        }
        if !query.states.is_empty() {
            and.push(doc! { "state": { "$in": schema::to_bson(&query.states)? } });
        }
        if let Some(name) = &query.name {
            and.push(doc! { "name_lc": { "$regex": schema::regex_literal(&name.to_lowercase()) } });
        }
        if !query.labels.is_empty() {
            let pairs: Vec<String> = query
                .labels
                .iter()
                .map(|(k, v)| schema::label_pair(k, v))
                .collect();
            and.push(doc! { "labels": { "$all": pairs } });
        }
        // Times beyond i64 match nothing (after) or everything (before).
        if let Some(after) = query.created_after {
            match i64::try_from(after.0) {
                Ok(t) => and.push(doc! { "created_at": { "$gte": t } }),
                Err(_) => return Ok(doc! { "_id": { "$in": [] } }),
            }
        }
        if let Some(before) = query.created_before {
            if let Ok(t) = i64::try_from(before.0) {
                and.push(doc! { "created_at": { "$lt": t } });
            }
        }
        if let Some(c) = &query.cursor {
            if let Ok(t) = i64::try_from(c.created_at.0) {
                and.push(doc! { "$or": [
                    { "created_at": { "$lt": t } },
                    { "created_at": t, "_id": { "$lt": c.id.as_str() } },
                ] });
            }
        }
        Ok(match and.len() {
            0 => Document::new(),
            1 => and.pop().unwrap_or_default(),
            _ => doc! { "$and": and },
        })
    }
}

#[async_trait]
impl Store for MongoStore {
    async fn create_job(&self, summary: &JobSummary, records: &[Record]) -> Result<(), StoreError> {
        let job = &summary.id;
        check_sequence(job, 0, records)?;
        if records.is_empty() {
            return Err(StoreError::Invalid(
                "a job is created with at least one record".into(),
            ));
        }
        let n = records.len() as u64;
        let batch = BatchDoc {
            batch: token(),
            pending: schema::record_docs(records)?,
        };
        let doc = schema::job_doc(summary, n, batch)?;
        self.call("creating a job", async {
            match self.jobs.insert_one(&doc).await {
                Ok(_) => {
                    match self.materialise(job, &doc.batch.pending).await {
                        Ok(_) => self.settle(
                            job,
                            n,
                            doc.batch.batch.clone(),
                            summary.progress.state.is_terminal(),
                        ),
                        Err(e) => tracing::warn!(%job, error = %e,
                            "job created; copying its records into events failed, the next append will"),
                    }
                    Ok(())
                }
                Err(e) if is_duplicate_key(&e) => {
                    let head = self.head(job).await?.ok_or_else(|| not_found(job))?;
                    let stored = self.read_range(job, &head, 1, n).await?;
                    if stored == records {
                        Ok(())
                    } else {
                        Err(StoreError::AlreadyExists { job: job.clone() })
                    }
                }
                Err(e) => Err(from_driver(e, &format!("creating job {job}"), Some(job))),
            }
        })
        .await
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
        self.call(
            "appending",
            self.append_inner(job, expected, records, progress, fence),
        )
        .await
    }

    async fn read(&self, job: &JobId, after: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.call("reading a journal", async {
            let head = self.head(job).await?.ok_or_else(|| not_found(job))?;
            if limit == 0 || after == u64::MAX {
                return Ok(Vec::new());
            }
            let lo = after + 1;
            let hi = after.saturating_add(limit as u64);
            self.read_range(job, &head, lo, hi).await
        })
        .await
    }

    async fn put_snapshot(&self, job: &JobId, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.call("storing a snapshot", async {
            let current: VersionDoc = self
                .find_one(
                    &self.names.jobs,
                    doc! { "_id": job.as_str() },
                    doc! { "version": 1 },
                    job,
                )
                .await?
                .ok_or_else(|| not_found(job))?;
            if snapshot.view.header.id != *job {
                return Err(StoreError::Invalid(format!(
                    "snapshot of job {} stored under {job}",
                    snapshot.view.header.id
                )));
            }
            let version = schema::uint(current.version, Some(job), "version")?;
            if snapshot.view.version > version {
                return Err(StoreError::Invalid(format!(
                    "snapshot at version {} is ahead of job {job} at version {version}",
                    snapshot.view.version
                )));
            }
            let doc = schema::snapshot_doc(job, snapshot)?;
            // Replaces only an older snapshot; when the stored one is as new
            // or newer the filter misses, the upsert collides with its `_id`,
            // and that duplicate key means "keep the stored one".
            let result = self
                .snapshots
                .update_one(
                    doc! { "_id": job.as_str(), "version": { "$lt": doc.version } },
                    doc! { "$set": { "version": doc.version, "snapshot": &doc.snapshot } },
                )
                .upsert(true)
                .await;
            match result {
                Ok(_) => Ok(()),
                Err(e) if is_duplicate_key(&e) => Ok(()),
                Err(e) => Err(from_driver(
                    e,
                    &format!("storing the snapshot of {job}"),
                    Some(job),
                )),
            }
        })
        .await
    }

    async fn snapshot(&self, job: &JobId) -> Result<Option<Snapshot>, StoreError> {
        self.call("reading a snapshot", async {
            let stored: Option<SnapshotDoc> = self
                .find_one(
                    &self.names.snapshots,
                    doc! { "_id": job.as_str() },
                    Document::new(),
                    job,
                )
                .await?;
            match stored {
                Some(d) => Ok(Some(schema::snapshot(job, &d)?)),
                None => {
                    // No snapshot: distinguish "none yet" from "no such job".
                    self.find_one::<VersionDoc>(
                        &self.names.jobs,
                        doc! { "_id": job.as_str() },
                        doc! { "version": 1 },
                        job,
                    )
                    .await?
                    .ok_or_else(|| not_found(job))?;
                    Ok(None)
                }
            }
        })
        .await
    }

    async fn summary(&self, job: &JobId) -> Result<JobSummary, StoreError> {
        self.call("reading a summary", async {
            let d: SummaryDoc = self
                .find_one(
                    &self.names.jobs,
                    doc! { "_id": job.as_str() },
                    schema::summary_projection(),
                    job,
                )
                .await?
                .ok_or_else(|| not_found(job))?;
            schema::summary(d)
        })
        .await
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage, StoreError> {
        query.check()?;
        let filter = Self::list_filter(query)?;
        self.call("listing jobs", async {
            let coll = self.jobs.clone_with_type::<RawDocumentBuf>();
            let mut cursor = coll
                .find(filter)
                .sort(doc! { "created_at": -1, "_id": -1 })
                .limit(i64::try_from(query.limit + 1).unwrap_or(i64::MAX))
                .projection(schema::summary_projection())
                .batch_size(BATCH_SIZE)
                .await
                .map_err(|e| from_driver(e, "listing jobs", None))?;
            let mut jobs = Vec::with_capacity(query.limit + 1);
            while cursor
                .advance()
                .await
                .map_err(|e| from_driver(e, "listing jobs", None))?
            {
                let decoded = decode::<SummaryDoc>(cursor.current().as_bytes(), None, || {
                    format!("{}/?", self.names.jobs)
                })
                .and_then(schema::summary);
                match decoded {
                    Ok(s) => jobs.push(s),
                    // One bad document must not hide every other job.
                    Err(e) => {
                        tracing::error!(error = %e, "skipping a job summary that does not decode");
                    }
                }
            }
            let more = jobs.len() > query.limit;
            jobs.truncate(query.limit);
            let next_cursor = if more {
                jobs.last().map(|s| Cursor::after(s).to_string())
            } else {
                None
            };
            Ok(JobPage { jobs, next_cursor })
        })
        .await
    }

    async fn unfinished_jobs(&self) -> Result<Vec<JobId>, StoreError> {
        self.call("listing unfinished jobs", async {
            let coll = self.jobs.clone_with_type::<RawDocumentBuf>();
            let mut cursor = coll
                .find(doc! { "state": { "$in": schema::unfinished_states()? } })
                .projection(doc! { "_id": 1 })
                .sort(doc! { "_id": 1 })
                .batch_size(BATCH_SIZE)
                .await
                .map_err(|e| from_driver(e, "listing unfinished jobs", None))?;
            let mut ids = Vec::new();
            while cursor
                .advance()
                .await
                .map_err(|e| from_driver(e, "listing unfinished jobs", None))?
            {
                let d: IdDoc = decode(cursor.current().as_bytes(), None, || {
                    format!("{}/?", self.names.jobs)
                })?;
                let id =
                    d.id.parse()
                        .map_err(|e| corrupt(None, format!("{}/{}", self.names.jobs, d.id), e))?;
                ids.push(id);
            }
            Ok(ids)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call("pinging", async {
            self.db
                .run_command(doc! { "ping": 1 })
                .await
                .map_err(|e| from_driver(e, "pinging", None))?;
            Ok(())
        })
        .await
    }
}

fn not_found(job: &JobId) -> StoreError {
    StoreError::NotFound { job: job.clone() }
}

/// A fresh batch id: 128 random bits in hex.
fn token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Decodes a stored document into its typed struct; a failure is
/// [`StoreError::Corrupt`] naming the job and the document.
fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    job: Option<&JobId>,
    key: impl FnOnce() -> String,
) -> Result<T, StoreError> {
    mongodb::bson::deserialize_from_slice(bytes).map_err(|e| corrupt(job, key(), e))
}

/// [`StoreError::Fenced`] if the job's lease token is newer than `fence`.
fn check_fence(job: &JobId, head: &HeadDoc, fence: u64) -> Result<(), StoreError> {
    let current = schema::uint(head.lease_token, Some(job), "lease_token")?;
    if fence < current {
        return Err(StoreError::Fenced {
            job: job.clone(),
            token: fence,
            current,
        });
    }
    Ok(())
}
