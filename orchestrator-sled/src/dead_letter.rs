//! The dead-letter queue on sled: [`DeadLetterStore`] for [`SledStore`].
//!
//! Two trees of their own, written together in one sled transaction (so
//! the index never disagrees with the entries, and the merge and the
//! compare-and-set on the status are atomic):
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `dead_letters` | entry id (`<job>.<node>.<n>`) | `0x01` + JSON [`DeadLetter`] |
//! | `dead_letters_by_created` | `created_at:u64 BE` + entry id | empty: the listing index, newest first by reverse scan |
//!
//! Listing walks the index backwards from the cursor (or the
//! `created_before` bound), reads the entries and filters them, so a page
//! costs the entries it skips, not the whole queue. Writes wait for
//! durability like appends do.

use std::ops::Bound;

use async_trait::async_trait;
use orchestrator_core::store::dead_letter::{
    check_resolution, DeadLetter, DeadLetterCursor, DeadLetterId, DeadLetterPage, DeadLetterQuery,
    DeadLetterStatus, Resolution, Resolve,
};
use orchestrator_core::store::DeadLetterStore;
use orchestrator_core::StoreError;
use sled::transaction::TransactionalTree;
use sled::Transactional;

use crate::error::{from_sled, from_tx};
use crate::{codec, SledStore};

/// Tree of entries: id → encoded [`DeadLetter`].
const DEAD_LETTERS: &str = "dead_letters";
/// Listing index: `created_at(u64 BE) id` → empty.
const BY_CREATED: &str = "dead_letters_by_created";

fn index_key(created_at: u64, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + id.len());
    k.extend_from_slice(&created_at.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

fn describe(id: &str) -> String {
    format!("{DEAD_LETTERS}/{id}")
}

fn decode(raw: &[u8], id: &DeadLetterId) -> Result<DeadLetter, StoreError> {
    let key = id.to_string();
    codec::decode(raw, Some(&id.job), || describe(&key))
}

impl SledStore {
    fn dead_letter_trees(&self) -> Result<(sled::Tree, sled::Tree), StoreError> {
        // sled keeps opened trees in a map: opening again is a lookup.
        let open = |name: &str| {
            self.db
                .open_tree(name)
                .map_err(|e| from_sled(e, &format!("opening tree {name}")))
        };
        Ok((open(DEAD_LETTERS)?, open(BY_CREATED)?))
    }
}

/// Writes `next` over whatever `stored` was, index included.
fn tx_write(
    entries: &TransactionalTree,
    index: &TransactionalTree,
    next: &DeadLetter,
    value: &[u8],
) -> Result<(), sled::transaction::UnabortableTransactionError> {
    let id = next.id.to_string();
    entries.insert(id.as_bytes(), value)?;
    index.insert(index_key(next.created_at.0, &id), &[][..])?;
    Ok(())
}

#[async_trait]
impl DeadLetterStore for SledStore {
    async fn put_dead_letter(&self, entry: &DeadLetter) -> Result<(), StoreError> {
        let (entries, index) = self.dead_letter_trees()?;
        let id = entry.id.to_string();
        let wrote = (&entries, &index)
            .transaction(|(et, it)| {
                let next = match et.get(id.as_bytes())? {
                    Some(raw) => {
                        let stored = decode(&raw, &entry.id)
                            .map_err(sled::transaction::ConflictableTransactionError::Abort)?;
                        if stored.created_at != entry.created_at {
                            it.remove(index_key(stored.created_at.0, &id))?;
                        }
                        DeadLetter::merge(&stored, entry)
                    }
                    None => Some(entry.clone()),
                };
                let Some(next) = next else {
                    return Ok(false);
                };
                let value = codec::encode(&next)
                    .map_err(sled::transaction::ConflictableTransactionError::Abort)?;
                tx_write(et, it, &next, &value)?;
                Ok(true)
            })
            .map_err(|e| from_tx(e, "storing a dead letter"))?;
        if wrote {
            self.committed().await?;
        }
        Ok(())
    }

    async fn dead_letter(&self, id: &DeadLetterId) -> Result<Option<DeadLetter>, StoreError> {
        let (entries, _) = self.dead_letter_trees()?;
        let key = id.to_string();
        match entries
            .get(key.as_bytes())
            .map_err(|e| from_sled(e, "reading a dead letter"))?
        {
            Some(raw) => decode(&raw, id).map(Some),
            None => Ok(None),
        }
    }

    async fn list_dead_letters(
        &self,
        query: &DeadLetterQuery,
    ) -> Result<DeadLetterPage, StoreError> {
        query.check()?;
        let (entries, index) = self.dead_letter_trees()?;
        // Both upper limits are exclusive: the cursor's own position, and
        // the first key of the `created_before` millisecond.
        let cursor = query
            .cursor
            .as_ref()
            .map(|c: &DeadLetterCursor| index_key(c.created_at.0, &c.id));
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
        let mut hits = Vec::new();
        for item in index.range::<Vec<u8>, _>((lower, upper)).rev() {
            let (k, _) = item.map_err(|e| from_sled(e, "listing dead letters"))?;
            let Some(id) = k
                .get(8..)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse::<DeadLetterId>().ok())
            else {
                tracing::error!(key = ?k, "malformed dead-letter index key; skipped");
                continue;
            };
            let raw = entries
                .get(id.to_string().as_bytes())
                .map_err(|e| from_sled(e, "reading a dead letter"))?;
            let Some(raw) = raw else { continue };
            let entry = match decode(&raw, &id) {
                Ok(e) => e,
                Err(e) => {
                    // One bad entry must not take listing down for all.
                    tracing::error!(dead_letter = %id, error = %e, "entry left out of a listing");
                    continue;
                }
            };
            if !query.matches(&entry) {
                continue;
            }
            hits.push(entry);
            if hits.len() > query.limit {
                break;
            }
        }
        Ok(query.page(hits))
    }

    async fn resolve_dead_letter(
        &self,
        id: &DeadLetterId,
        resolution: &Resolution,
    ) -> Result<Resolve, StoreError> {
        check_resolution(resolution)?;
        let (entries, index) = self.dead_letter_trees()?;
        let key = id.to_string();
        let outcome = (&entries, &index)
            .transaction(|(et, it)| {
                let Some(raw) = et.get(key.as_bytes())? else {
                    return Ok(Resolve::Missing);
                };
                let stored = decode(&raw, id)
                    .map_err(sled::transaction::ConflictableTransactionError::Abort)?;
                if stored.status != DeadLetterStatus::Open {
                    return Ok(Resolve::Conflict(stored));
                }
                let next = stored.resolved(resolution.clone());
                let value = codec::encode(&next)
                    .map_err(sled::transaction::ConflictableTransactionError::Abort)?;
                tx_write(et, it, &next, &value)?;
                Ok(Resolve::Done(next))
            })
            .map_err(|e| from_tx(e, "resolving a dead letter"))?;
        if let Resolve::Done(_) = outcome {
            self.committed().await?;
        }
        Ok(outcome)
    }
}
