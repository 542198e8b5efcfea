//! A job's ready queue: a max-priority queue (priority, then critical-path
//! length, then spec order) that costs O(1) per node for the usual
//! arrival order.
//!
//! Nodes mostly become ready already in dispatch order: a fan-out's
//! successors arrive in spec order and all rank alike, so each one ranks
//! below the one before it. A binary heap would still pay O(log n) with a
//! cache miss per level for each of them (about 110 ns a pop with 100,000
//! ready nodes). Here an arrival that ranks no higher than the last one
//! queued in order joins a sorted run (a deque, greatest first); only
//! out-of-order arrivals go to a heap, and a pop takes the greater of the
//! two fronts. The order popped is exactly a heap's.

use std::collections::{BinaryHeap, VecDeque};

/// See the module docs.
#[derive(Debug)]
pub(super) struct ReadyQueue<T> {
    /// Sorted greatest first: each element ranks no higher than the one
    /// before it.
    run: VecDeque<T>,
    /// Whatever arrived out of order.
    heap: BinaryHeap<T>,
}

impl<T: Ord> Default for ReadyQueue<T> {
    fn default() -> Self {
        Self {
            run: VecDeque::new(),
            heap: BinaryHeap::new(),
        }
    }
}

impl<T: Ord> ReadyQueue<T> {
    pub(super) fn push(&mut self, item: T) {
        match self.run.back() {
            Some(last) if item > *last => self.heap.push(item),
            _ => self.run.push_back(item),
        }
    }

    /// The greatest queued item.
    pub(super) fn pop(&mut self) -> Option<T> {
        match (self.run.front(), self.heap.peek()) {
            (Some(first), Some(top)) if top > first => self.heap.pop(),
            (Some(_), _) => self.run.pop_front(),
            (None, _) => self.heap.pop(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.run.is_empty() && self.heap.is_empty()
    }

    pub(super) fn clear(&mut self) {
        self.run.clear();
        self.heap.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_arrivals_stay_in_the_run() {
        let mut q = ReadyQueue::default();
        for i in (0..5).rev() {
            q.push(i);
        }
        assert!(q.heap.is_empty());
        assert_eq!(q.run.len(), 5);
        q.push(7);
        assert_eq!(q.heap.len(), 1);
        let popped: Vec<i32> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(popped, [7, 4, 3, 2, 1, 0]);
        assert!(q.is_empty());
    }

    #[test]
    fn clear_empties_both_parts() {
        let mut q = ReadyQueue::default();
        q.push(1);
        q.push(5);
        q.clear();
        assert!(q.is_empty());
        assert_eq!(q.pop(), None);
    }

    /// An operation of the model test: push a value, or pop.
    #[derive(Clone, Debug)]
    enum Op {
        Push(u8),
        Pop,
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => any::<u8>().prop_map(Op::Push),
            3 => Just(Op::Pop),
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        /// Whatever the pushes, pops and clears, the queue pops exactly
        /// what a binary heap pops.
        #[test]
        fn pops_what_a_heap_pops(ops in proptest::collection::vec(op(), 0..200)) {
            let mut q = ReadyQueue::default();
            let mut model = BinaryHeap::new();
            for op in ops {
                match op {
                    Op::Push(v) => {
                        q.push(v);
                        model.push(v);
                    }
                    Op::Pop => prop_assert_eq!(q.pop(), model.pop()),
                    Op::Clear => {
                        q.clear();
                        model.clear();
                    }
                }
                prop_assert_eq!(q.is_empty(), model.is_empty());
            }
            let rest: Vec<u8> = std::iter::from_fn(|| q.pop()).collect();
            prop_assert_eq!(rest, model.into_sorted_vec().into_iter().rev().collect::<Vec<_>>());
        }
    }
}
