//! Stored policies on MongoDB: the `policies` collection (with the store's
//! collection prefix), one document per version:
//! `{_id: "name@version", name, version, body}`, where `body` is the
//! policy's JSON text (kept verbatim, so an identical re-put compares
//! exactly and no BSON conversion touches its floats).
//!
//! Portable subset only: an `insert_one` whose unique `_id` makes racing
//! writers of one version collide (exactly one inserts; the others get a
//! duplicate key, read the winner and compare), `find` with a filter on
//! `name`, a sort and a limit. No transactions, no aggregation.

use async_trait::async_trait;
use mongodb::bson::{doc, Document};
use orchestrator_core::policy::StoredPolicy;
use orchestrator_core::store::PolicyStore;
use orchestrator_core::StoreError;

use crate::error::{from_driver, is_duplicate_key};
use crate::store::MongoStore;

fn decode(doc: &Document, coll: &str) -> Result<StoredPolicy, StoreError> {
    let id = doc.get_str("_id").unwrap_or("?").to_owned();
    let corrupt = |message: String| StoreError::Corrupt {
        job: None,
        key: format!("{coll}/{id}"),
        message,
    };
    let body = doc
        .get_str("body")
        .map_err(|e| corrupt(format!("no body: {e}")))?;
    serde_json::from_str(body).map_err(|e| corrupt(e.to_string()))
}

impl MongoStore {
    fn policies(&self) -> mongodb::Collection<Document> {
        self.database().collection(&self.policy_collection())
    }

    async fn find_policies(
        &self,
        filter: Document,
        sort: Document,
        limit: Option<i64>,
        doing: &str,
    ) -> Result<Vec<StoredPolicy>, StoreError> {
        let coll_name = self.policy_collection();
        self.call(doing, async {
            let coll = self.policies();
            let mut find = coll.find(filter).sort(sort);
            if let Some(n) = limit {
                find = find.limit(n);
            }
            let mut cursor = find.await.map_err(|e| from_driver(e, doing, None))?;
            let mut out = Vec::new();
            while cursor
                .advance()
                .await
                .map_err(|e| from_driver(e, doing, None))?
            {
                let d: Document = cursor
                    .deserialize_current()
                    .map_err(|e| from_driver(e, doing, None))?;
                out.push(decode(&d, &coll_name)?);
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl PolicyStore for MongoStore {
    async fn put_policy(&self, policy: &StoredPolicy) -> Result<(), StoreError> {
        let body = serde_json::to_string(policy)
            .map_err(|e| StoreError::Invalid(format!("policy does not encode: {e}")))?;
        let id = format!("{}@{}", policy.name, policy.version);
        let document = doc! {
            "_id": &id,
            "name": &policy.name,
            "version": i64::from(policy.version),
            "body": &body,
        };
        let doing = "storing a policy";
        let inserted = self
            .call(doing, async {
                match self.policies().insert_one(document).await {
                    Ok(_) => Ok(true),
                    Err(e) if is_duplicate_key(&e) => Ok(false),
                    Err(e) => Err(from_driver(e, doing, None)),
                }
            })
            .await?;
        if inserted {
            return Ok(());
        }
        let stored = self
            .find_policies(doc! { "_id": &id }, doc! { "_id": 1 }, Some(1), doing)
            .await?;
        match stored.first() {
            Some(p) if p == policy => Ok(()),
            _ => Err(StoreError::PolicyConflict {
                name: policy.name.clone(),
                version: policy.version,
            }),
        }
    }

    async fn get_policy(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<StoredPolicy>, StoreError> {
        let filter = match version {
            Some(v) => doc! { "_id": format!("{name}@{v}") },
            None => doc! { "name": name },
        };
        Ok(self
            .find_policies(filter, doc! { "version": -1 }, Some(1), "reading a policy")
            .await?
            .pop())
    }

    async fn list_policies(&self) -> Result<Vec<StoredPolicy>, StoreError> {
        // Policies are few (a handful of versions per name): read them all
        // and keep each name's latest, rather than rely on aggregation.
        let all = self
            .find_policies(
                doc! {},
                doc! { "name": 1, "version": 1 },
                None,
                "listing policies",
            )
            .await?;
        let mut out: Vec<StoredPolicy> = Vec::new();
        for p in all {
            match out.last_mut() {
                Some(last) if last.name == p.name => *last = p,
                _ => out.push(p),
            }
        }
        Ok(out)
    }

    async fn policy_versions(&self, name: &str) -> Result<Vec<StoredPolicy>, StoreError> {
        self.find_policies(
            doc! { "name": name },
            doc! { "version": 1 },
            None,
            "listing policy versions",
        )
        .await
    }
}
