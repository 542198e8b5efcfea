//! Stored policies on sled: one tree, `policies`, keyed by the name, a zero
//! byte and the version in big-endian (so a name's versions sort
//! numerically and a prefix scan lists them), holding the policy as JSON.
//! Policy names cannot contain a zero byte, so keys never collide.
//!
//! A put is one `compare_and_swap` from "absent" (atomic: of two racing
//! writers exactly one inserts) followed by a flush: policies are rare and
//! always written durably, whatever the store's [`Durability`](crate::Durability).

use async_trait::async_trait;
use orchestrator_core::policy::StoredPolicy;
use orchestrator_core::store::PolicyStore;
use orchestrator_core::StoreError;

use crate::error::from_sled;
use crate::SledStore;

const TREE: &str = "policies";

fn key(name: &str, version: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 5);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

fn prefix(name: &str) -> Vec<u8> {
    let mut k = name.as_bytes().to_vec();
    k.push(0);
    k
}

fn decode(k: &[u8], v: &[u8]) -> Result<StoredPolicy, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        job: None,
        key: format!("{TREE}/{}", String::from_utf8_lossy(k).replace('\0', "@")),
        message: e.to_string(),
    })
}

impl SledStore {
    fn policies(&self) -> Result<sled::Tree, StoreError> {
        self.db
            .open_tree(TREE)
            .map_err(|e| from_sled(e, "opening the policies tree"))
    }
}

#[async_trait]
impl PolicyStore for SledStore {
    async fn put_policy(&self, policy: &StoredPolicy) -> Result<(), StoreError> {
        let tree = self.policies()?;
        let k = key(&policy.name, policy.version);
        let bytes = serde_json::to_vec(policy)
            .map_err(|e| StoreError::Invalid(format!("policy does not encode: {e}")))?;
        match tree
            .compare_and_swap(&k, None as Option<&[u8]>, Some(bytes))
            .map_err(|e| from_sled(e, "storing a policy"))?
        {
            Ok(()) => self.flush().await,
            Err(cas) => {
                let current = cas.current.ok_or_else(|| StoreError::Backend {
                    message: "policy compare-and-swap failed without a current value".into(),
                    source: None,
                })?;
                if decode(&k, &current)? == *policy {
                    // Durable already, or about to be: make sure before
                    // acknowledging, as for a first write.
                    self.flush().await
                } else {
                    Err(StoreError::PolicyConflict {
                        name: policy.name.clone(),
                        version: policy.version,
                    })
                }
            }
        }
    }

    async fn get_policy(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<StoredPolicy>, StoreError> {
        let tree = self.policies()?;
        let found = match version {
            Some(v) => {
                let k = key(name, v);
                tree.get(&k)
                    .map_err(|e| from_sled(e, "reading a policy"))?
                    .map(|v| (k.into(), v))
            }
            None => tree
                .scan_prefix(prefix(name))
                .next_back()
                .transpose()
                .map_err(|e| from_sled(e, "reading a policy"))?,
        };
        found.map(|(k, v)| decode(&k, &v)).transpose()
    }

    async fn list_policies(&self) -> Result<Vec<StoredPolicy>, StoreError> {
        let mut out: Vec<StoredPolicy> = Vec::new();
        for item in &self.policies()? {
            let (k, v) = item.map_err(|e| from_sled(e, "listing policies"))?;
            let p = decode(&k, &v)?;
            match out.last_mut() {
                Some(last) if last.name == p.name => *last = p,
                _ => out.push(p),
            }
        }
        Ok(out)
    }

    async fn policy_versions(&self, name: &str) -> Result<Vec<StoredPolicy>, StoreError> {
        self.policies()?
            .scan_prefix(prefix(name))
            .map(|item| {
                let (k, v) = item.map_err(|e| from_sled(e, "listing policy versions"))?;
                decode(&k, &v)
            })
            .collect()
    }
}
