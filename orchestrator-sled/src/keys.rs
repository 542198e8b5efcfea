//! The key layout of every tree, in one place.
//!
//! Job ids are 1 to 64 bytes of `[A-Za-z0-9_-]` (see [`JobId`]), so they
//! never contain `0x00`: a record key `id 0x00 seq` can therefore not be a
//! prefix of another job's keys, and `id 0x00` is an exact per-job prefix.
//! Integers are big-endian, so byte order is numeric order and a range scan
//! reads records in seq order and the listing index in creation order.

use orchestrator_core::{JobId, Timestamp};

/// Tree of journal records: `id 0x00 seq(u64 BE)` → encoded [`Record`].
///
/// [`Record`]: orchestrator_core::Record
pub(crate) const RECORDS: &str = "records";
/// Tree of summaries: `id` → encoded [`JobSummary`].
///
/// [`JobSummary`]: orchestrator_core::JobSummary
pub(crate) const SUMMARIES: &str = "summaries";
/// Tree of snapshots: `id` → snapshot version (u64 BE) + encoded snapshot.
pub(crate) const SNAPSHOTS: &str = "snapshots";
/// Listing index: `created_at(u64 BE) id` → empty.
pub(crate) const BY_CREATED: &str = "by_created";
/// Recovery index: `id` → empty, for every job not in a terminal state.
pub(crate) const UNFINISHED: &str = "unfinished";
/// Tree of job leases: `id` → encoded [`LeaseRecord`]; absent for a job
/// never claimed.
///
/// [`LeaseRecord`]: orchestrator_core::store::lease::LeaseRecord
pub(crate) const LEASES: &str = "leases";
/// Key, in sled's default tree, of the on-disk layout version.
pub(crate) const LAYOUT_KEY: &[u8] = b"orchestrator-sled/layout";

/// The key of record `seq` of `job`.
pub(crate) fn record(job: &JobId, seq: u64) -> Vec<u8> {
    let mut k = record_prefix(job);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The prefix every record key of `job` starts with.
pub(crate) fn record_prefix(job: &JobId) -> Vec<u8> {
    let id = job.as_str().as_bytes();
    let mut k = Vec::with_capacity(id.len() + 9);
    k.extend_from_slice(id);
    k.push(0);
    k
}

/// The seq a record key ends with, if it has the record-key shape.
pub(crate) fn seq_of(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// The key of `job` in the per-job trees (summaries, snapshots, unfinished).
pub(crate) fn job(job: &JobId) -> &[u8] {
    job.as_str().as_bytes()
}

/// The listing-index key of a job created at `created_at`.
pub(crate) fn created(created_at: Timestamp, job: &JobId) -> Vec<u8> {
    let id = job.as_str().as_bytes();
    let mut k = Vec::with_capacity(8 + id.len());
    k.extend_from_slice(&created_at.0.to_be_bytes());
    k.extend_from_slice(id);
    k
}

/// The job id a listing-index key ends with.
pub(crate) fn job_of_created(key: &[u8]) -> Option<JobId> {
    std::str::from_utf8(key.get(8..)?).ok()?.parse().ok()
}

/// A readable name for a key, for error messages: `records/<id>/<seq>`.
pub(crate) fn describe_record(job: &JobId, seq: u64) -> String {
    format!("{RECORDS}/{job}/{seq}")
}

/// A readable name for a per-job key: `<tree>/<id>`.
pub(crate) fn describe(tree: &str, job: &JobId) -> String {
    format!("{tree}/{job}")
}

/// A readable form of raw key bytes (which may be garbage).
pub(crate) fn describe_raw(tree: &str, key: &[u8]) -> String {
    format!("{tree}/{}", String::from_utf8_lossy(key).escape_debug())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> JobId {
        s.parse().expect("valid id")
    }

    #[test]
    fn record_keys_sort_by_job_then_seq_and_never_overlap() {
        let a = id("job-1");
        let b = id("job-10");
        assert!(record(&a, 2) < record(&a, 256));
        assert!(record(&a, 255) < record(&a, 256));
        assert!(!record(&b, 1).starts_with(&record_prefix(&a)));
        assert_eq!(seq_of(&record(&a, 42)), Some(42));
        assert_eq!(seq_of(b"short"), None);
    }

    #[test]
    fn listing_keys_sort_by_creation_then_id() {
        let k1 = created(Timestamp(5), &id("b"));
        let k2 = created(Timestamp(5), &id("ba"));
        let k3 = created(Timestamp(6), &id("a"));
        assert!(k1 < k2 && k2 < k3);
        assert_eq!(job_of_created(&k2), Some(id("ba")));
        assert_eq!(job_of_created(b"1234567"), None);
        assert_eq!(job_of_created(b"12345678bad id"), None);
    }
}
