//! The scheduler's timers: a min-heap of deadlines behind one tokio `Sleep`.
//!
//! The scheduler polls its timer source every time it goes idle, which for a
//! chain of no-op nodes is once per node. A general timer queue re-examines
//! its internal wheel on each poll; this one only re-arms its single `Sleep`
//! when the earliest deadline changes, so an idle poll is one cheap check.
//! Timers are never cancelled: a timer that fires for a job or attempt that
//! moved on is recognised as stale by its receiver and ignored.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

#[derive(Debug)]
struct Entry<T> {
    at: Instant,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Items that become due at their deadlines, in deadline order (ties in
/// insertion order).
pub(crate) struct Timers<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    seq: u64,
    sleep: Pin<Box<Sleep>>,
    /// The deadline `sleep` is armed for, if any.
    armed: Option<Instant>,
}

impl<T> Timers<T> {
    pub(crate) fn new() -> Self {
        Self {
            heap: BinaryHeap::new(),
            seq: 0,
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
            armed: None,
        }
    }

    /// Makes `item` due after `delay`.
    pub(crate) fn insert(&mut self, item: T, delay: Duration) {
        let at = Instant::now() + delay;
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.seq,
            item,
        }));
        if self.armed.is_none_or(|a| at < a) {
            self.sleep.as_mut().reset(at);
            self.armed = Some(at);
        }
    }

    /// Completes with the next due item; pending while none is due (and
    /// forever while empty).
    pub(crate) fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<T> {
        loop {
            let Some(Reverse(next)) = self.heap.peek() else {
                self.armed = None;
                return Poll::Pending;
            };
            let at = next.at;
            // The sleep decides whether `at` has come: no clock read here,
            // as this is polled on every scheduler wake-up while any timer
            // is armed (a job timeout keeps one armed for the job's life).
            if self.armed != Some(at) {
                self.sleep.as_mut().reset(at);
                self.armed = Some(at);
            }
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if let Some(Reverse(entry)) = self.heap.pop() {
                return Poll::Ready(entry.item);
            }
        }
    }

    /// Whether no timer is pending.
    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next<T>(t: &mut Timers<T>) -> T {
        std::future::poll_fn(|cx| t.poll_due(cx)).await
    }

    #[tokio::test(start_paused = true)]
    async fn items_come_due_in_deadline_order() {
        let mut t = Timers::new();
        let start = Instant::now();
        t.insert("late", Duration::from_secs(5));
        t.insert("early", Duration::from_secs(1));
        t.insert("tie-a", Duration::from_secs(3));
        t.insert("tie-b", Duration::from_secs(3));
        assert_eq!(next(&mut t).await, "early");
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(next(&mut t).await, "tie-a");
        assert_eq!(next(&mut t).await, "tie-b");
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        // A timer added while waiting for a later one re-arms the sleep.
        t.insert("inserted", Duration::from_millis(500));
        assert_eq!(next(&mut t).await, "inserted");
        assert_eq!(next(&mut t).await, "late");
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert!(t.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_queue_stays_pending() {
        let mut t: Timers<u8> = Timers::new();
        let waited = tokio::time::timeout(Duration::from_secs(60), next(&mut t)).await;
        assert!(waited.is_err());
        t.insert(7, Duration::ZERO);
        assert_eq!(next(&mut t).await, 7);
    }
}
