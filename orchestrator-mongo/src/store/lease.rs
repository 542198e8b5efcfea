//! [`LeaseStore`] on MongoDB: the lease lives in the job document
//! ([`LeaseDoc`]), so an append's fencing check is part of its
//! single-document compare-and-set, and every lease operation is one
//! atomic `find_one_and_update` / `update_one` filtered on the lease's
//! expiry or token.

use std::time::Duration;

use async_trait::async_trait;
use mongodb::bson::{doc, Document, RawDocumentBuf};
use mongodb::options::ReturnDocument;
use orchestrator_core::store::lease::{
    expiry, CancelRequest, Claimable, Granted, Lease, LeaseRecord, LeaseStore,
};
use orchestrator_core::{JobId, StoreError, Timestamp};
use serde::Deserialize;

use super::{decode, not_found, MongoStore};
use crate::error::from_driver;
use crate::schema::{self, lease_projection, LeaseDoc};

/// What [`LeaseStore::claimable`] reads of a job.
#[derive(Deserialize)]
struct ClaimableDoc {
    #[serde(rename = "_id")]
    id: String,
    priority: i32,
    created_at: i64,
    #[serde(default)]
    lease_token: i64,
}

impl MongoStore {
    /// The job's lease document, `None` if the job does not exist.
    async fn lease_doc(&self, job: &JobId) -> Result<Option<LeaseDoc>, StoreError> {
        self.find_one(
            &self.names.jobs,
            doc! { "_id": job.as_str() },
            lease_projection(),
            job,
        )
        .await
    }

    /// Applies `update` to the job if it matches `filter`, returning the
    /// lease as updated (`None`: no match).
    async fn update_lease(
        &self,
        job: &JobId,
        filter: Document,
        update: Document,
        doing: &str,
    ) -> Result<Option<LeaseDoc>, StoreError> {
        let hit = self
            .jobs
            .clone_with_type::<RawDocumentBuf>()
            .find_one_and_update(filter, update)
            .projection(lease_projection())
            .return_document(ReturnDocument::After)
            .await
            .map_err(|e| from_driver(e, &format!("{doing} of job {job}"), Some(job)))?;
        hit.map(|raw| {
            decode(raw.as_bytes(), Some(job), || {
                format!("{}/{job}", self.names.jobs)
            })
        })
        .transpose()
    }
}

fn record(job: &JobId, d: &LeaseDoc) -> Result<LeaseRecord, StoreError> {
    Ok(LeaseRecord {
        owner: d.lease_owner.clone(),
        token: schema::uint(d.lease_token, Some(job), "lease_token")?,
        expires_at: schema::uint(d.lease_expires, Some(job), "lease_expires")?,
        cancel: (d.cancel_requested != 0).then(|| CancelRequest {
            reason: Some(d.cancel_reason.clone()).filter(|r| !r.is_empty()),
        }),
    })
}

fn granted(job: &JobId, d: &LeaseDoc) -> Result<Granted, StoreError> {
    let r = record(job, d)?;
    Ok(Granted {
        lease: r.lease(job),
        cancel_requested: r.cancel,
    })
}

#[async_trait]
impl LeaseStore for MongoStore {
    async fn claim(
        &self,
        job: &JobId,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
        force: bool,
    ) -> Result<Granted, StoreError> {
        self.call("claiming a lease", async {
            let expires = schema::int(expiry(now, ttl), "lease expiry")?;
            let mut filter = doc! { "_id": job.as_str() };
            if !force {
                filter.insert(
                    "lease_expires",
                    doc! { "$lte": schema::int(now.0, "time")? },
                );
            }
            let update = doc! {
                "$set": { "lease_owner": owner, "lease_expires": expires },
                "$inc": { "lease_token": 1_i64 },
            };
            match self
                .update_lease(job, filter, update, "claiming the lease")
                .await?
            {
                Some(d) => granted(job, &d),
                None => {
                    let d = self.lease_doc(job).await?.ok_or_else(|| not_found(job))?;
                    Err(StoreError::LeaseHeld {
                        job: job.clone(),
                        owner: d.lease_owner,
                        expires_at: Timestamp(schema::uint(
                            d.lease_expires,
                            Some(job),
                            "lease_expires",
                        )?),
                    })
                }
            }
        })
        .await
    }

    async fn renew(
        &self,
        lease: &Lease,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Granted, StoreError> {
        let job = &lease.job;
        self.call("renewing a lease", async {
            let token = schema::int(lease.token, "lease token")?;
            let expires = schema::int(expiry(now, ttl), "lease expiry")?;
            let filter = doc! {
                "_id": job.as_str(), "lease_token": token, "lease_expires": { "$gt": 0_i64 },
            };
            let update = doc! { "$set": { "lease_expires": expires } };
            match self
                .update_lease(job, filter, update, "renewing the lease")
                .await?
            {
                Some(d) => granted(job, &d),
                None => {
                    let d = self.lease_doc(job).await?.ok_or_else(|| not_found(job))?;
                    Err(StoreError::Fenced {
                        job: job.clone(),
                        token: lease.token,
                        current: schema::uint(d.lease_token, Some(job), "lease_token")?,
                    })
                }
            }
        })
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let job = &lease.job;
        self.call("releasing a lease", async {
            let token = schema::int(lease.token, "lease token")?;
            self.jobs
                .update_one(
                    doc! { "_id": job.as_str(), "lease_token": token },
                    doc! { "$set": { "lease_expires": 0_i64 } },
                )
                .await
                .map_err(|e| {
                    from_driver(e, &format!("releasing the lease of job {job}"), Some(job))
                })?;
            Ok(())
        })
        .await
    }

    async fn lease(&self, job: &JobId) -> Result<LeaseRecord, StoreError> {
        self.call("reading a lease", async {
            let d = self.lease_doc(job).await?.ok_or_else(|| not_found(job))?;
            record(job, &d)
        })
        .await
    }

    async fn claimable(&self, now: Timestamp, limit: usize) -> Result<Vec<Claimable>, StoreError> {
        self.call("listing claimable jobs", async {
            let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
            let filter = doc! {
                "state": { "$in": schema::unfinished_states()? },
                "lease_expires": { "$lte": schema::int(now.0, "time")? },
            };
            let mut cursor = self
                .jobs
                .clone_with_type::<RawDocumentBuf>()
                .find(filter)
                .projection(doc! { "_id": 1, "priority": 1, "created_at": 1, "lease_token": 1 })
                .sort(doc! { "priority": -1, "created_at": 1, "_id": 1 })
                .limit(limit)
                .await
                .map_err(|e| from_driver(e, "listing claimable jobs", None))?;
            let mut out = Vec::new();
            while cursor
                .advance()
                .await
                .map_err(|e| from_driver(e, "listing claimable jobs", None))?
            {
                let d: ClaimableDoc = decode(cursor.current().as_bytes(), None, || {
                    format!("{}/?", self.names.jobs)
                })?;
                let key = || format!("{}/{}", self.names.jobs, d.id);
                let job: JobId =
                    d.id.parse()
                        .map_err(|e| crate::error::corrupt(None, key(), e))?;
                out.push(Claimable {
                    priority: d.priority,
                    created_at: Timestamp(schema::uint(d.created_at, Some(&job), "created_at")?),
                    token: schema::uint(d.lease_token, Some(&job), "lease_token")?,
                    job,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn request_cancel(
        &self,
        job: &JobId,
        request: &CancelRequest,
    ) -> Result<bool, StoreError> {
        self.call("requesting a cancel", async {
            let hit = self
                .jobs
                .update_one(
                    doc! { "_id": job.as_str(), "state": { "$in": schema::unfinished_states()? } },
                    doc! { "$set": {
                        "cancel_requested": 1_i32,
                        "cancel_reason": request.reason.clone().unwrap_or_default(),
                    } },
                )
                .await
                .map_err(|e| {
                    from_driver(e, &format!("requesting a cancel of job {job}"), Some(job))
                })?;
            if hit.matched_count > 0 {
                return Ok(true);
            }
            self.lease_doc(job).await?.ok_or_else(|| not_found(job))?;
            Ok(false)
        })
        .await
    }
}
