//! The `dagrs` baseline: the dispatch scenario's shapes as dagrs 0.9 graphs
//! whose nodes really wait for their parents.
//!
//! dagrs spawns every node of a graph at once; only channel reads order them.
//! A no-op action would therefore not wait for anything, so every node here
//! receives one message from each input channel and then sends one to each
//! output channel, in plain loops: `OutChannels::broadcast` and
//! `InChannels::map` join one future per channel and turn quadratic on wide
//! fan-in and fan-out (the `fan` shape's root and sink).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dagrs::{
    Action, Content, DefaultNode, EnvVar, Graph, InChannels, NodeTable, OutChannels, Output,
};

use crate::shapes::Shape;

/// Completion order of a graph's nodes, for tests that check the nodes
/// really ran after their parents.
#[derive(Debug)]
pub struct Order {
    next: AtomicU64,
    /// Completion rank of each node (1-based; 0 while it has not finished).
    pub rank: Vec<AtomicU64>,
}

impl Order {
    /// An order for `n` nodes, none finished.
    pub fn new(n: usize) -> Self {
        Self {
            next: AtomicU64::new(1),
            rank: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// Waits for every parent, then signals every child.
struct Relay {
    /// Index of the node in the shape, and where to record its completion.
    order: Option<(usize, Arc<Order>)>,
}

#[async_trait::async_trait]
impl Action for Relay {
    async fn run(
        &self,
        input: &mut InChannels,
        output: &mut OutChannels,
        _env: Arc<EnvVar>,
    ) -> Output {
        for parent in input.get_sender_ids() {
            if let Err(e) = input.recv_from(&parent).await {
                return Output::error(e);
            }
        }
        if let Some((index, order)) = &self.order {
            let rank = order.next.fetch_add(1, Ordering::Relaxed);
            order.rank[*index].store(rank, Ordering::Relaxed);
        }
        for child in output.get_receiver_ids() {
            if let Err(e) = output.send_to(&child, Content::new(())).await {
                return Output::error(e);
            }
        }
        Output::empty()
    }
}

/// Builds `shape` as a dagrs graph: one [`DefaultNode`] per node (named like
/// our spec's nodes, registered in the graph's [`NodeTable`]), one
/// `add_edge` call per node with successors (dagrs makes one bounded mpsc
/// channel per edge). With `order`, each node records when it finished.
pub fn build(shape: &Shape, order: Option<&Arc<Order>>) -> Graph {
    let mut table = NodeTable::new();
    let mut graph = Graph::new();
    let ids: Vec<_> = (0..shape.len())
        .map(|i| {
            let relay = Relay {
                order: order.map(|o| (i, Arc::clone(o))),
            };
            let node = DefaultNode::with_action(format!("n{i}"), relay, &mut table);
            graph.add_node(node).expect("node ids are fresh")
        })
        .collect();
    for (from, succ) in shape.succ.iter().enumerate() {
        if !succ.is_empty() {
            graph
                .add_edge(ids[from], succ.iter().map(|&to| ids[to as usize]))
                .expect("both ends exist");
        }
    }
    graph.set_env(EnvVar::new(table));
    graph
}

/// Runs a graph built by [`build`] to completion and hands it back (so the
/// caller can drop it outside any timing).
///
/// The graph's loop runs right in the caller's future (on the `block_on`
/// thread), as dagrs' own examples run it from `#[tokio::main]`. Spawned
/// onto a worker instead, it shares that worker with the node tasks and its
/// join of one `JoinHandle` per node (a `FuturesUnordered`) runs out of
/// tokio's cooperative budget over and over: a layered 100,000-node run
/// then took 3-5x longer on a loaded 2-core machine, and the gap grows with
/// the graph.
pub async fn run(mut graph: Graph) -> Graph {
    let report = graph.async_start().await;
    assert!(report.is_ok(), "dagrs run failed: {:?}", report.err());
    graph
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_run_after_their_parents() {
        for shape in [shapes::chain(50), shapes::fan(50), shapes::layered(10, 8)] {
            let order = Arc::new(Order::new(shape.len()));
            let graph = build(&shape, Some(&order));
            drop(run(graph).await);
            let rank = |i: usize| order.rank[i].load(Ordering::Relaxed);
            for (from, succ) in shape.succ.iter().enumerate() {
                assert_ne!(rank(from), 0, "{}: node {from} ran", shape.name);
                for &to in succ {
                    assert!(
                        rank(from) < rank(to as usize),
                        "{}: node {to} finished before its parent {from}",
                        shape.name
                    );
                }
            }
        }
    }
}
