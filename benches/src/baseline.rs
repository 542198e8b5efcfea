//! The minimal hand-written DAG scheduler the dispatch scenario compares
//! against: indegree counters, a channel of finished ids, one spawned task
//! per ready node, and a semaphore bounding concurrency. Its coordinator runs
//! inside a spawned task (on the `block_on` thread every node would pay a
//! cross-thread wake-up).

use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};

use crate::shapes::Shape;

/// Runs every node of `shape` as a no-op task, at most `concurrency` at once.
pub async fn run(shape: Arc<Shape>, concurrency: usize) {
    tokio::spawn(async move {
        let n = shape.len();
        let mut indeg = vec![0u32; n];
        for s in &shape.succ {
            for &t in s {
                indeg[t as usize] += 1;
            }
        }
        let sem = Arc::new(Semaphore::new(concurrency));
        let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
        let mut ready: Vec<u32> = (0..n as u32).filter(|&i| indeg[i as usize] == 0).collect();
        let mut done = 0;
        loop {
            while let Some(i) = ready.pop() {
                let permit = Arc::clone(&sem)
                    .acquire_owned()
                    .await
                    .expect("semaphore is never closed");
                let tx = tx.clone();
                tokio::spawn(async move {
                    drop(permit);
                    let _ = tx.send(i);
                });
            }
            if done == n {
                break;
            }
            let Some(i) = rx.recv().await else { break };
            done += 1;
            for &s in &shape.succ[i as usize] {
                indeg[s as usize] -= 1;
                if indeg[s as usize] == 0 {
                    ready.push(s);
                }
            }
        }
    })
    .await
    .expect("baseline coordinator does not panic");
}
