//! The DAG shapes the scenarios run.

use orchestrator_core::{JobSpec, NodeSpec};
use rand::{Rng, SeedableRng};

/// A DAG as plain adjacency (successor lists), shared by the baselines.
#[derive(Clone, Debug)]
pub struct Shape {
    /// Scenario key, e.g. `chain`.
    pub name: &'static str,
    /// Successors of each node.
    pub succ: Vec<Vec<u32>>,
}

impl Shape {
    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.succ.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.succ.is_empty()
    }

    /// Number of edges.
    pub fn edges(&self) -> usize {
        self.succ.iter().map(Vec::len).sum()
    }

    /// The same DAG as a job spec of `noop` nodes.
    pub fn spec(&self) -> JobSpec {
        let mut preds: Vec<Vec<u32>> = vec![Vec::new(); self.len()];
        for (from, succ) in self.succ.iter().enumerate() {
            for &to in succ {
                preds[to as usize].push(from as u32);
            }
        }
        JobSpec::builder(self.name)
            .nodes(preds.into_iter().enumerate().map(|(i, p)| {
                NodeSpec::new(format!("n{i}"), "noop")
                    .depends_on(p.into_iter().map(|d| format!("n{d}")))
            }))
            .build()
    }
}

/// `n` nodes in a single chain.
pub fn chain(n: usize) -> Shape {
    let succ = (0..n)
        .map(|i| {
            if i + 1 < n {
                vec![i as u32 + 1]
            } else {
                Vec::new()
            }
        })
        .collect();
    Shape {
        name: "chain",
        succ,
    }
}

/// One root, `n - 2` middle nodes, one sink (a diamond when `n` is small).
pub fn fan(n: usize) -> Shape {
    let sink = (n - 1) as u32;
    let mut succ = vec![Vec::new(); n];
    succ[0] = (1..sink).collect();
    for s in succ.iter_mut().take(n - 1).skip(1) {
        s.push(sink);
    }
    Shape { name: "fan", succ }
}

/// `layers` layers of `width` nodes, each depending on 3 random nodes of the
/// previous layer (fixed seed, so every run measures the same graph).
pub fn layered(layers: usize, width: usize) -> Shape {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let n = layers * width;
    let mut succ = vec![Vec::new(); n];
    for layer in 1..layers {
        for j in 0..width {
            let node = (layer * width + j) as u32;
            let mut parents = [0u32; 3];
            for p in &mut parents {
                *p = ((layer - 1) * width + rng.random_range(0..width)) as u32;
            }
            parents.sort_unstable();
            for (k, &p) in parents.iter().enumerate() {
                if k == 0 || parents[k - 1] != p {
                    succ[p as usize].push(node);
                }
            }
        }
    }
    Shape {
        name: "layered",
        succ,
    }
}

/// The jobs of the `jobs` scenario: `count` jobs of 10 nodes each,
/// alternating a 10-node chain and a diamond (one root, 8 middle nodes, one
/// sink).
pub fn job_mix(count: usize) -> Vec<Shape> {
    (0..count)
        .map(|i| if i % 2 == 0 { chain(10) } else { fan(10) })
        .collect()
}

/// The disjoint union of `parts` as one DAG named `name` (node ids of each
/// part shifted past the previous parts').
pub fn union(name: &'static str, parts: &[Shape]) -> Shape {
    let mut succ = Vec::with_capacity(parts.iter().map(Shape::len).sum());
    for part in parts {
        let base = succ.len() as u32;
        succ.extend(
            part.succ
                .iter()
                .map(|s| s.iter().map(|&t| t + base).collect::<Vec<u32>>()),
        );
    }
    Shape { name, succ }
}
