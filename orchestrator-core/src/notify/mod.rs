//! Notifications: the executor's event feed, delivered to sinks (a log, a
//! webhook, your own) as a stable JSON [`Envelope`], filtered per sink.
//!
//! There is one event bus, [`Executor::subscribe`]: every journaled record,
//! published once it is durable. A [`Dispatcher`] is one more subscriber. It
//! turns each record a sink wants into an [`Envelope`] and hands it to the
//! sink's own worker through a **bounded** queue, so a slow or dead sink
//! never slows the scheduler (the feed is a broadcast channel that never
//! waits for its readers) nor the other sinks: when a sink's queue is full
//! the event is dropped for that sink, counted ([`SinkStats::dropped`]) and
//! logged. Delivery is at least once per delivered envelope; receivers
//! de-duplicate by [`Envelope::id`].
//!
//! Events worth a page (`escalation.required`) and the recovery trail
//! (`recovery.initiated`, `recovery.completed`) are described in
//! [`crate::recovery`]; every other lifecycle event (`execution.*`,
//! `node.*`) is delivered the same way. The feed also carries reports the
//! executor could not journal — a stuck job's `escalation.required` while
//! its executor is wedged or its appends fail ([`crate::sweep`]) — and
//! sinks get them like the rest, marked `journaled: false`.
//!
//! Sinks here do no network or file I/O: the [`LogSink`] writes to
//! `tracing`. The webhook sink lives in the HTTP adapter
//! (`orchestrator_http::webhook`), which already carries an HTTP stack.
//!
//! ```
//! use std::sync::Arc;
//! use orchestrator_core::notify::{Dispatcher, EventFilter, LogSink, Route};
//! use orchestrator_core::{Executor, MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let executor = Executor::builder(Arc::new(MemoryStore::new())).start().await?;
//! let filter: EventFilter = "escalation.*,recovery.*".parse()?;
//! let dispatcher = Dispatcher::start(&executor, vec![Route::new(Arc::new(LogSink), filter)]);
//! // … run jobs …
//! dispatcher.close().await;
//! # Ok(()) }
//! ```
//!
//! [`Executor::subscribe`]: crate::Executor::subscribe

mod envelope;
mod filter;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::executor::{Executor, Notification, Subscription};
use crate::journal::Event;
use crate::spec::JobSpec;
use crate::store::Store;
use crate::time::JobId;

pub use envelope::{rfc3339, Envelope};
pub use filter::{EventFilter, FilterError};

/// Why a sink could not deliver an envelope. The dispatcher only counts and
/// logs it: retrying and dead-lettering are the sink's business.
pub type DeliveryError = Box<dyn std::error::Error + Send + Sync>;

/// Somewhere notifications go.
#[async_trait]
pub trait NotificationSink: Send + Sync + 'static {
    /// A short name for logs and statistics, e.g. `log` or the webhook URL.
    fn name(&self) -> &str;

    /// Delivers one envelope, retrying as the sink sees fit. The sink's
    /// worker awaits it before taking the next envelope, so envelopes reach a
    /// sink in feed order.
    async fn deliver(&self, envelope: &Envelope) -> Result<(), DeliveryError>;
}

/// Writes each event as one structured `tracing` event (target
/// `orchestrator::notify`): `warn` for `escalation.*`, `info` otherwise,
/// with the envelope's fields as fields.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogSink;

#[async_trait]
impl NotificationSink for LogSink {
    fn name(&self) -> &str {
        "log"
    }

    async fn deliver(&self, e: &Envelope) -> Result<(), DeliveryError> {
        let details = serde_json::Value::Object(e.details.clone()).to_string();
        let node = e.node.as_deref().unwrap_or("");
        if e.kind.starts_with("escalation.") {
            tracing::warn!(target: "orchestrator::notify", event = %e.kind, id = %e.id,
                job = %e.job, node, time = %e.time, %details, "escalation required");
        } else {
            tracing::info!(target: "orchestrator::notify", event = %e.kind, id = %e.id,
                job = %e.job, node, time = %e.time, %details, "event");
        }
        Ok(())
    }
}

/// A sink with the events it wants and the size of its queue.
#[derive(Clone)]
pub struct Route {
    sink: Arc<dyn NotificationSink>,
    filter: EventFilter,
    queue: usize,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("sink", &self.sink.name())
            .field("filter", &self.filter)
            .field("queue", &self.queue)
            .finish()
    }
}

impl Route {
    /// Default queue size: envelopes waiting for a sink before new ones are
    /// dropped for it.
    pub const DEFAULT_QUEUE: usize = 1024;

    /// `sink` receives the events `filter` matches.
    pub fn new(sink: Arc<dyn NotificationSink>, filter: EventFilter) -> Self {
        Self {
            sink,
            filter,
            queue: Self::DEFAULT_QUEUE,
        }
    }

    /// Sets the queue size (at least 1).
    #[must_use]
    pub fn queue(mut self, size: usize) -> Self {
        self.queue = size.max(1);
        self
    }
}

/// Counters of one sink.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// The sink's name.
    pub name: String,
    /// Envelopes the sink delivered.
    pub delivered: u64,
    /// Envelopes the sink gave up on (it dead-letters them itself).
    pub failed: u64,
    /// Envelopes dropped because the sink's queue was full.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// Counters of a dispatcher.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DispatcherStats {
    /// Event batches the dispatcher missed because it fell behind the feed
    /// (they are in the journal, but were not notified).
    pub lagged: u64,
    /// Per sink, in the order given.
    pub sinks: Vec<SinkStats>,
}

/// Jobs whose specs are remembered to name nodes, at most.
const SPEC_CACHE: usize = 4096;

/// Delivers the executor's events to sinks. Dropping it stops delivery at
/// once; [`Dispatcher::close`] first delivers what is already published.
#[derive(Debug)]
pub struct Dispatcher {
    task: Option<JoinHandle<()>>,
    stop: Option<oneshot::Sender<()>>,
    workers: Vec<JoinHandle<()>>,
    names: Vec<String>,
    counters: Vec<Arc<Counters>>,
    lagged: Arc<AtomicU64>,
}

impl Dispatcher {
    /// Subscribes to `executor`'s feed and starts delivering to `routes`.
    /// Must be called within a tokio runtime. Events of jobs the executor
    /// resumed while it started may be missed: to see them, subscribe on
    /// the builder and use [`Dispatcher::with_feed`].
    pub fn start(executor: &Executor, routes: Vec<Route>) -> Self {
        Self::with_feed(executor.subscribe(), Arc::clone(executor.store()), routes)
    }

    /// Starts delivering the events of `feed` (from
    /// [`ExecutorBuilder::subscribe`](crate::executor::ExecutorBuilder::subscribe)
    /// or [`Executor::subscribe`]) to `routes`; `store` is the executor's,
    /// read to name the nodes of jobs submitted before the feed began.
    pub fn with_feed(feed: Subscription, store: Arc<dyn Store>, routes: Vec<Route>) -> Self {
        let lagged = Arc::new(AtomicU64::new(0));
        let mut outs = Vec::new();
        let mut workers = Vec::new();
        let mut names = Vec::new();
        let mut counters = Vec::new();
        for route in routes {
            let (tx, mut rx) = mpsc::channel::<Arc<Envelope>>(route.queue);
            let c = Arc::new(Counters::default());
            let sink = Arc::clone(&route.sink);
            let wc = Arc::clone(&c);
            workers.push(tokio::spawn(async move {
                while let Some(envelope) = rx.recv().await {
                    match sink.deliver(&envelope).await {
                        Ok(()) => wc.delivered.fetch_add(1, Ordering::Relaxed),
                        Err(error) => {
                            tracing::warn!(sink = sink.name(), id = %envelope.id, %error,
                                "notification not delivered");
                            wc.failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }));
            names.push(route.sink.name().to_owned());
            counters.push(Arc::clone(&c));
            outs.push(Out {
                name: route.sink.name().to_owned(),
                filter: route.filter,
                tx,
                counters: c,
            });
        }
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(
            Feed {
                feed,
                store,
                outs,
                specs: HashMap::new(),
                lagged: Arc::clone(&lagged),
            }
            .run(stopped),
        );
        Self {
            task: Some(task),
            stop: Some(stop),
            workers,
            names,
            counters,
            lagged,
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> DispatcherStats {
        DispatcherStats {
            lagged: self.lagged.load(Ordering::Relaxed),
            sinks: self
                .names
                .iter()
                .zip(&self.counters)
                .map(|(name, c)| SinkStats {
                    name: name.clone(),
                    delivered: c.delivered.load(Ordering::Relaxed),
                    failed: c.failed.load(Ordering::Relaxed),
                    dropped: c.dropped.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }

    /// Routes every event already published, waits until every sink has
    /// dealt with its queue (delivered or given up), and stops. Returns the
    /// final counters.
    pub async fn close(mut self) -> DispatcherStats {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        for w in std::mem::take(&mut self.workers) {
            let _ = w.await;
        }
        self.stats()
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        for w in &self.workers {
            w.abort();
        }
    }
}

struct Out {
    name: String,
    filter: EventFilter,
    tx: mpsc::Sender<Arc<Envelope>>,
    counters: Arc<Counters>,
}

/// The dispatcher task: reads the feed and routes envelopes.
struct Feed {
    feed: Subscription,
    store: Arc<dyn Store>,
    outs: Vec<Out>,
    specs: HashMap<JobId, Arc<JobSpec>>,
    lagged: Arc<AtomicU64>,
}

impl Feed {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        loop {
            tokio::select! {
                biased;
                next = self.feed.recv() => if !self.take(next).await { return },
                _ = &mut stop => break,
            }
        }
        // Closing: route what is already published, then let the workers
        // drain (dropping `outs` closes their queues).
        while let Some(next) = futures::FutureExt::now_or_never(self.feed.recv()) {
            if !self.take(next).await {
                return;
            }
        }
    }

    /// Routes one feed item; false once the feed is over.
    async fn take(&mut self, next: Result<Option<Notification>, crate::executor::Lagged>) -> bool {
        match next {
            Ok(Some(n)) => {
                self.route(&n).await;
                true
            }
            Ok(None) => false,
            Err(crate::executor::Lagged(missed)) => {
                self.lagged.fetch_add(missed, Ordering::Relaxed);
                tracing::warn!(
                    missed,
                    "notification dispatcher fell behind; events were not notified"
                );
                true
            }
        }
    }

    async fn route(&mut self, n: &Notification) {
        if let Event::Submitted { header } = &n.record.event {
            self.remember(n.job.clone(), Arc::clone(&header.spec));
        }
        let name = n.record.event.name();
        if !self.outs.iter().any(|o| o.filter.matches(name)) {
            return;
        }
        let spec = match n.record.event.node() {
            Some(_) => self.spec(&n.job).await,
            None => None,
        };
        let envelope = Arc::new(Envelope::of(n, spec.as_deref()));
        for out in &self.outs {
            if !out.filter.matches(name) {
                continue;
            }
            if out.tx.try_send(Arc::clone(&envelope)).is_err() {
                let dropped = out.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // Once, then every 1000th: a stuck sink must not flood the log.
                if dropped % 1000 == 1 {
                    tracing::warn!(sink = %out.name, dropped, id = %envelope.id,
                        "notification sink is not keeping up; event dropped for it");
                }
            }
        }
        if matches!(n.record.event, Event::Finished { .. }) {
            self.specs.remove(&n.job);
        }
    }

    fn remember(&mut self, job: JobId, spec: Arc<JobSpec>) {
        if self.specs.len() >= SPEC_CACHE {
            self.specs.clear();
        }
        self.specs.insert(job, spec);
    }

    /// The job's spec (to name nodes): remembered from its submission, or
    /// read once from the store (its first record) for jobs submitted
    /// elsewhere or before the dispatcher started.
    async fn spec(&mut self, job: &JobId) -> Option<Arc<JobSpec>> {
        if let Some(spec) = self.specs.get(job) {
            return Some(Arc::clone(spec));
        }
        let first = self.store.read(job, 0, 1).await.ok()?;
        let Event::Submitted { header } = &first.first()?.event else {
            return None;
        };
        let spec = Arc::clone(&header.spec);
        self.remember(job.clone(), Arc::clone(&spec));
        Some(spec)
    }
}
