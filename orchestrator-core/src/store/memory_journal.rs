//! How the [`MemoryStore`](super::MemoryStore) keeps one job's journal:
//! sixteen bytes per record for the records every node writes.
//!
//! Almost every record of a running job is one of three: a node is ready,
//! a node started, a node succeeded (most often without output). Kept as
//! [`Record`]s (80 bytes each), those were most of the store's memory, 160
//! bytes per node of a chain, and the page faults of the growing journal
//! showed in the dispatch benchmark. A record of those kinds is
//! kept in one [`Entry`] of 16 bytes: its time, node and attempt, and the
//! kind in the time's two top bits (milliseconds since the epoch need 42).
//! Every other record is kept whole, aside, and its entry holds its index
//! there. A record's seq is its position, which `check_sequence` enforces
//! before anything is stored, so it is not kept either.
//!
//! Entries live in fixed-size chunks: appending never reallocates or copies
//! what is already stored, however long the journal grows.

use serde_json::Value;

use crate::journal::{Event, Record};
use crate::time::Timestamp;

/// Records per chunk: 64 KiB of entries.
const CHUNK: usize = 4096;

/// The kind of an entry, in the top two bits of [`Entry::word`].
const KIND_SHIFT: u32 = 62;
const PAYLOAD: u64 = (1 << KIND_SHIFT) - 1;
const OTHER: u64 = 0;
const READY: u64 = 1;
const STARTED: u64 = 2;
const SUCCEEDED: u64 = 3;

/// One record: inline for the three hot kinds, else a pointer aside.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// The kind (top two bits), then the time in milliseconds for an
    /// inline record, or the index in [`Journal::others`] for the rest.
    word: u64,
    node: u32,
    attempt: u32,
}

impl Entry {
    /// The inline form of `record`, if it has one.
    fn inline(record: &Record) -> Option<Self> {
        let (kind, node, attempt) = match &record.event {
            Event::NodeReady { node } => (READY, *node, 0),
            Event::NodeStarted { node, attempt } => (STARTED, *node, *attempt),
            Event::NodeSucceeded {
                node,
                attempt,
                output: Value::Null,
            } => (SUCCEEDED, *node, *attempt),
            _ => return None,
        };
        // A time too far out for the payload bits (never a real clock's)
        // is kept whole like any other record.
        (record.at.0 <= PAYLOAD).then_some(Self {
            word: kind << KIND_SHIFT | record.at.0,
            node,
            attempt,
        })
    }

    /// The record this entry stands for, at position `seq`.
    fn record(self, seq: u64, others: &[Record]) -> Option<Record> {
        let at = Timestamp(self.word & PAYLOAD);
        let (node, attempt) = (self.node, self.attempt);
        let event = match self.word >> KIND_SHIFT {
            READY => Event::NodeReady { node },
            STARTED => Event::NodeStarted { node, attempt },
            SUCCEEDED => Event::NodeSucceeded {
                node,
                attempt,
                output: Value::Null,
            },
            _ => {
                let index = usize::try_from(self.word & PAYLOAD).ok()?;
                return others.get(index).cloned();
            }
        };
        Some(Record { seq, at, event })
    }
}

/// One job's records, in order.
#[derive(Debug, Default)]
pub(super) struct Journal {
    chunks: Vec<Vec<Entry>>,
    /// The records without an inline form, in order.
    others: Vec<Record>,
    len: usize,
}

impl Journal {
    pub(super) fn from(records: &[Record]) -> Self {
        let mut j = Self::default();
        j.extend(records);
        j
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Appends `records`, which the caller checked are numbered from
    /// `len() + 1` on.
    pub(super) fn extend(&mut self, records: &[Record]) {
        for record in records {
            let entry = Entry::inline(record).unwrap_or_else(|| {
                self.others.push(record.clone());
                Entry {
                    word: OTHER << KIND_SHIFT | (self.others.len() - 1) as u64,
                    node: 0,
                    attempt: 0,
                }
            });
            if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
                self.chunks.push(Vec::with_capacity(CHUNK));
            }
            if let Some(chunk) = self.chunks.last_mut() {
                chunk.push(entry);
                self.len += 1;
            }
        }
    }

    /// The record at position `i` (its seq is `i + 1`).
    fn get(&self, i: usize) -> Option<Record> {
        let entry = *self.chunks.get(i / CHUNK)?.get(i % CHUNK)?;
        entry.record(i as u64 + 1, &self.others)
    }

    /// Whether `records` are stored, identical, from position `start` on.
    pub(super) fn holds_at(&self, start: usize, records: &[Record]) -> bool {
        start
            .checked_add(records.len())
            .is_some_and(|end| end <= self.len)
            && records
                .iter()
                .enumerate()
                .all(|(k, r)| self.get(start + k).as_ref() == Some(r))
    }

    /// The records in positions `start..end`.
    pub(super) fn range(&self, start: usize, end: usize) -> Vec<Record> {
        (start..end).filter_map(|i| self.get(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::failure::Failure;
    use crate::state::JobState;

    fn record(seq: u64, at: u64, event: Event) -> Record {
        Record {
            seq,
            at: Timestamp(at),
            event,
        }
    }

    /// Events of every storage form: the three inline kinds, and kinds
    /// (or payloads) that are kept whole.
    fn event() -> impl Strategy<Value = Event> {
        let node = 0u32..5;
        let attempt = 1u32..4;
        prop_oneof![
            node.clone().prop_map(|node| Event::NodeReady { node }),
            (node.clone(), attempt.clone())
                .prop_map(|(node, attempt)| Event::NodeStarted { node, attempt }),
            (node.clone(), attempt.clone(), prop::option::of(0i64..3)).prop_map(
                |(node, attempt, output)| Event::NodeSucceeded {
                    node,
                    attempt,
                    output: output.map_or(Value::Null, Value::from),
                }
            ),
            (node.clone(), attempt).prop_map(|(node, attempt)| Event::NodeFailed {
                node,
                attempt,
                failure: Box::new(Failure::permanent("boom")),
                retry_in_ms: None,
            }),
            node.prop_map(|node| Event::NodeCancelled { node }),
            Just(Event::Finished {
                state: JobState::Succeeded
            }),
        ]
    }

    /// A time that is usually a clock's, now and then one too large for
    /// the inline form.
    fn at() -> impl Strategy<Value = u64> {
        prop_oneof![9 => 0u64..=PAYLOAD, 1 => PAYLOAD..=u64::MAX]
    }

    proptest! {
        /// Whatever is appended, in whatever batches, reads back identical,
        /// and `holds_at` recognises exactly what was stored.
        #[test]
        fn records_read_back_as_appended(
            events in prop::collection::vec((at(), event()), 0..40),
            cuts in prop::collection::vec(0usize..40, 0..5),
        ) {
            let records: Vec<Record> = events
                .into_iter()
                .enumerate()
                .map(|(i, (at, event))| record(i as u64 + 1, at, event))
                .collect();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(records.len())).collect();
            cuts.push(0);
            cuts.push(records.len());
            cuts.sort_unstable();
            let mut journal = Journal::default();
            for pair in cuts.windows(2) {
                journal.extend(&records[pair[0]..pair[1]]);
            }
            prop_assert_eq!(journal.len(), records.len());
            prop_assert_eq!(journal.range(0, records.len()), records.clone());
            for start in 0..records.len() {
                prop_assert!(journal.holds_at(start, &records[start..]));
                let mut changed = records[start..].to_vec();
                changed[0].at = Timestamp(changed[0].at.0 ^ 1);
                prop_assert!(!journal.holds_at(start, &changed));
            }
            prop_assert!(!journal.holds_at(records.len(), &[record(1, 0, Event::Queued)]));
        }
    }

    #[test]
    fn the_hot_kinds_are_inline_and_the_rest_aside() {
        let records = [
            record(1, 7, Event::NodeReady { node: 3 }),
            record(
                2,
                8,
                Event::NodeStarted {
                    node: 3,
                    attempt: 1,
                },
            ),
            record(
                3,
                9,
                Event::NodeSucceeded {
                    node: 3,
                    attempt: 1,
                    output: Value::Null,
                },
            ),
            record(
                4,
                9,
                Event::NodeSucceeded {
                    node: 4,
                    attempt: 1,
                    output: Value::from(1),
                },
            ),
            record(5, u64::MAX, Event::NodeReady { node: 5 }),
        ];
        let journal = Journal::from(&records);
        // The output and the out-of-range time are kept whole.
        assert_eq!(journal.others, records[3..].to_vec());
        assert_eq!(journal.range(0, 5), records.to_vec());
        assert_eq!(journal.range(2, 3), records[2..3].to_vec());
        assert_eq!(std::mem::size_of::<Entry>(), 16);
    }

    #[test]
    fn a_journal_longer_than_a_chunk_keeps_its_order() {
        let records: Vec<Record> = (0..CHUNK as u64 * 2 + 3)
            .map(|i| {
                let node = i as u32;
                let event = if i % 7 == 0 {
                    Event::NodeCancelled { node }
                } else {
                    Event::NodeReady { node }
                };
                record(i + 1, i, event)
            })
            .collect();
        let mut journal = Journal::default();
        for batch in records.chunks(1000) {
            journal.extend(batch);
        }
        assert_eq!(journal.chunks.len(), 3);
        assert_eq!(journal.range(0, records.len()), records);
        assert_eq!(journal.get(records.len()), None);
    }
}
