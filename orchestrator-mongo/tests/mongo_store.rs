//! What the conformance suite cannot see: a writer that dies between the
//! two steps of an append, corrupt documents, the index layout, collection
//! prefixes, and how an unreachable server surfaces (no server needed for
//! those last ones).

mod support;

use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use orchestrator_core::testkit::{run_node, TestJob, T0};
use orchestrator_core::{Event, JobView, Store, StoreError, StoreExt};
use orchestrator_mongo::{BreakerConfig, MongoOptions, MongoStore};

/// Every call of these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(60);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {LIMIT:?}"))
}

fn raw(store: &MongoStore, coll: &str) -> mongodb::Collection<Document> {
    store
        .client()
        .database(store.database_name())
        .collection(coll)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_dies_between_commit_and_copy_loses_nothing() {
    if support::skip() {
        return;
    }
    within("the test", async {
        let a = support::fresh_store().await;
        let mut job = TestJob::new("job-1", T0);
        job.create(&a).await;
        job.append(&a, [Event::Queued, Event::Started]).await;
        let last = job.append(&a, run_node(0)).await;
        assert_eq!(job.version(), 6);

        // The writer "died" after its commit, before copying the batch into
        // `events`: remove the copy.
        let events = raw(&a, "events");
        let removed = events
            .delete_many(doc! { "job": "job-1", "seq": { "$gt": 3 } })
            .await
            .expect("deleting the copy");
        assert_eq!(removed.deleted_count, 3);

        // Another process sees the whole journal, from the job document.
        let b = MongoStore::connect_with(
            &support::server_uri().expect("a server"),
            support::test_options(a.database_name()),
        )
        .await
        .expect("a second store");
        let records = b.read_all(job.id(), 0).await.expect("read_all");
        assert_eq!(
            records,
            job.records(),
            "the pending batch is read from the job"
        );
        assert_eq!(JobView::replay(&records).expect("replays"), *job.view());
        // Replaying the lost append's reply is recognised.
        assert_eq!(
            b.append(job.id(), last.expected, &last.records, &last.progress, 0)
                .await
                .expect("replay"),
            6
        );
        assert_eq!(b.stats().batches_helped, 0, "reads and replays never write");

        // The next writer copies the pending batch before replacing it.
        job.append(&b, run_node(1)).await;
        assert_eq!(b.stats().batches_helped, 1);
        let copied = events
            .count_documents(doc! { "job": "job-1" })
            .await
            .expect("count");
        assert_eq!(copied, 9, "every committed record is in events again");
        assert_eq!(
            b.read_all(job.id(), 0).await.expect("read_all"),
            job.records()
        );
        // And the first store, whose memory of the batch is stale now, still
        // appends correctly.
        job.append(&a, [Event::NodeReady { node: 2 }]).await;
        assert_eq!(
            a.read_all(job.id(), 0).await.expect("read_all"),
            job.records()
        );
        assert_eq!(a.summary(job.id()).await.expect("summary"), job.summary());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_documents_are_reported_with_their_key_and_stay_local() {
    if support::skip() {
        return;
    }
    within("the test", async {
        let s = support::fresh_store().await;
        let mut bad = TestJob::new("bad", T0);
        bad.create(&s).await;
        bad.append(&s, [Event::Queued, Event::Started]).await;
        bad.append(&s, run_node(0)).await;
        let good = TestJob::new("good", T0);
        good.create(&s).await;

        raw(&s, "events")
            .update_one(
                doc! { "job": "bad", "seq": 2 },
                doc! { "$set": { "event": "{not json" } },
            )
            .await
            .expect("corrupting an event");
        match s.read(bad.id(), 0, 10).await {
            Err(StoreError::Corrupt { job, key, .. }) => {
                assert_eq!(job.as_ref(), Some(bad.id()));
                assert_eq!(key, "events/bad/2");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }

        raw(&s, "jobs")
            .update_one(
                doc! { "_id": "bad" },
                doc! { "$set": { "state": "exploded" } },
            )
            .await
            .expect("corrupting a summary");
        match s.summary(bad.id()).await {
            Err(StoreError::Corrupt { job, key, .. }) => {
                assert_eq!(job.as_ref(), Some(bad.id()));
                assert_eq!(key, "jobs/bad");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        let page = s
            .list_jobs(&Default::default())
            .await
            .expect("listing skips the bad summary");
        let ids: Vec<&str> = page.jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["good"]);
        assert_eq!(s.summary(good.id()).await.expect("summary"), good.summary());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_use_creates_the_documented_indexes_and_prefixes_isolate() {
    if support::skip() {
        return;
    }
    within("the test", async {
        let db = support::database_name();
        let uri = support::server_uri().expect("a server");
        let plain = MongoStore::connect_with(&uri, support::test_options(&db))
            .await
            .expect("store");
        let prefixed = MongoStore::connect_with(
            &uri,
            support::test_options(&db).collection_prefix("team_a_"),
        )
        .await
        .expect("prefixed store");
        TestJob::new("one", T0).create(&plain).await;
        TestJob::new("two", T0).create(&prefixed).await;
        let ids = |p: orchestrator_core::store::JobPage| {
            p.jobs
                .into_iter()
                .map(|j| j.id.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(plain.list_jobs(&Default::default()).await.unwrap()),
            ["one"]
        );
        assert_eq!(
            ids(prefixed.list_jobs(&Default::default()).await.unwrap()),
            ["two"]
        );

        // Indexes are found by their keys, never by name; by the fields
        // only, as nx-27017 reports every direction as 1.
        let fields = |d: &Document| d.keys().cloned().collect::<Vec<String>>();
        let keys = |coll: &'static str| {
            let c = raw(&plain, coll);
            async move {
                let mut cursor = c.list_indexes().await.expect("list_indexes");
                let mut out = Vec::new();
                while cursor.advance().await.expect("next index") {
                    let model = cursor.deserialize_current().expect("index model");
                    let unique = model
                        .options
                        .as_ref()
                        .and_then(|o| o.unique)
                        .unwrap_or(false);
                    out.push((fields(&model.keys), unique));
                }
                out
            }
        };
        let events = keys("events").await;
        assert!(
            events.contains(&(vec!["job".into(), "seq".into()], true)),
            "events has the unique (job, seq) index: {events:?}"
        );
        let jobs = keys("jobs").await;
        for want in [
            vec!["created_at"],
            vec!["state", "created_at"],
            vec!["owner", "created_at"],
        ] {
            assert!(
                jobs.iter().any(|(k, _)| *k == want),
                "jobs has an index on {want:?}: {jobs:?}"
            );
        }
    })
    .await;
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
    let port = listener.local_addr().expect("its address").port();
    drop(listener);
    port
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_the_breaker_fails_fast() {
    within("the test", async {
        let uri = format!("mongodb://127.0.0.1:{}/x", dead_port());
        let options = MongoOptions::new()
            .server_selection_timeout(Duration::from_millis(200))
            .connect_timeout(Duration::from_millis(200))
            .breaker(BreakerConfig::new(2, Duration::from_secs(30)));
        // Connecting sends nothing: a store can be built while the database
        // is down.
        let store = MongoStore::connect_with(&uri, options)
            .await
            .expect("connect does not contact the server");
        for i in 0..2 {
            let e = store.ping().await.expect_err("no server");
            assert!(
                matches!(e, StoreError::Unavailable { .. }) && e.is_retryable(),
                "call {i}: {e:?}"
            );
        }
        assert!(store.stats().breaker_open);
        assert_eq!(store.stats().breaker_opened, 1);
        let start = Instant::now();
        let e = store
            .summary(&"job-1".parse().expect("an id"))
            .await
            .expect_err("breaker open");
        assert!(start.elapsed() < Duration::from_millis(100), "failed fast");
        assert!(
            matches!(&e, StoreError::Unavailable { message, .. } if message.contains("circuit breaker")),
            "{e:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn bad_connection_settings_are_invalid() {
    for uri in ["postgres://x", "mongodb://", "mongodb://host:notaport"] {
        match MongoStore::connect(uri).await {
            Err(StoreError::Invalid(_)) => {}
            other => panic!("{uri}: expected Invalid, got {other:?}"),
        }
    }
    match MongoStore::connect_with(
        "mongodb://127.0.0.1",
        MongoOptions::new().collection_prefix("a.b"),
    )
    .await
    {
        Err(StoreError::Invalid(m)) => assert!(m.contains("prefix"), "{m}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    let s = MongoStore::connect("mongodb://127.0.0.1:1/jobsdb")
        .await
        .expect("valid");
    assert_eq!(s.database_name(), "jobsdb");
    let s = MongoStore::connect("mongodb://127.0.0.1:1")
        .await
        .expect("valid");
    assert_eq!(s.database_name(), orchestrator_mongo::DEFAULT_DATABASE);
}
