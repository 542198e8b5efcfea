//! [`PolicyStore`]: stored, versioned policies ([`StoredPolicy`]).
//!
//! # Contract
//!
//! - **Immutable versions.** [`PolicyStore::put_policy`] writes
//!   `name@version` once. Writing the identical policy again succeeds (so a
//!   create that timed out is safe to retry); a different body for an
//!   existing version is [`StoreError::PolicyConflict`] and leaves the stored
//!   one as it was.
//! - **Atomic.** Two writers racing on one version: exactly one body wins,
//!   the other gets the conflict (or success, if it wrote the same body).
//! - **Latest** is the highest version of a name.
//! - Callers validate policies ([`StoredPolicy::check`]) before storing;
//!   stores do not parse retry specs, they keep documents.

use async_trait::async_trait;

use super::StoreError;
use crate::policy::StoredPolicy;

/// Persistence for stored policies. Every [`Store`](super::Store) is one.
#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// Stores `policy` as `name@version` if that version does not exist yet.
    /// An identical repeat succeeds; a different body is
    /// [`StoreError::PolicyConflict`].
    async fn put_policy(&self, policy: &StoredPolicy) -> Result<(), StoreError>;

    /// `name@version`, or the latest version of `name` when `version` is
    /// `None`; `Ok(None)` if there is none.
    async fn get_policy(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<StoredPolicy>, StoreError>;

    /// The latest version of every policy, by name.
    async fn list_policies(&self) -> Result<Vec<StoredPolicy>, StoreError>;

    /// Every version of `name`, oldest first (empty if there is none).
    async fn policy_versions(&self, name: &str) -> Result<Vec<StoredPolicy>, StoreError>;
}

/// The in-memory policy table of [`MemoryStore`](super::MemoryStore).
#[derive(Debug, Default)]
pub(crate) struct MemoryPolicies {
    map: std::sync::Mutex<std::collections::BTreeMap<(String, u32), StoredPolicy>>,
}

impl MemoryPolicies {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<(String, u32), StoredPolicy>> {
        // Every mutation is one insert after its checks: a poisoned lock is
        // still consistent.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl PolicyStore for super::MemoryStore {
    async fn put_policy(&self, policy: &StoredPolicy) -> Result<(), StoreError> {
        let mut map = self.policies.lock();
        let key = (policy.name.clone(), policy.version);
        match map.get(&key) {
            Some(stored) if stored == policy => Ok(()),
            Some(_) => Err(StoreError::PolicyConflict {
                name: policy.name.clone(),
                version: policy.version,
            }),
            None => {
                map.insert(key, policy.clone());
                Ok(())
            }
        }
    }

    async fn get_policy(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<StoredPolicy>, StoreError> {
        let map = self.policies.lock();
        Ok(match version {
            Some(v) => map.get(&(name.to_owned(), v)).cloned(),
            None => map
                .range((name.to_owned(), 0)..=(name.to_owned(), u32::MAX))
                .next_back()
                .map(|(_, p)| p.clone()),
        })
    }

    async fn list_policies(&self) -> Result<Vec<StoredPolicy>, StoreError> {
        let map = self.policies.lock();
        let mut out: Vec<StoredPolicy> = Vec::new();
        for ((name, _), p) in map.iter() {
            match out.last_mut() {
                Some(last) if last.name == *name => *last = p.clone(),
                _ => out.push(p.clone()),
            }
        }
        Ok(out)
    }

    async fn policy_versions(&self, name: &str) -> Result<Vec<StoredPolicy>, StoreError> {
        let map = self.policies.lock();
        Ok(map
            .range((name.to_owned(), 0)..=(name.to_owned(), u32::MAX))
            .map(|(_, p)| p.clone())
            .collect())
    }
}
