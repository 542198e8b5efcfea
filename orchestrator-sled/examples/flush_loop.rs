//! Appends 200 one-record batches, each waiting for its flush, so the
//! system calls behind a durability mode can be seen:
//!
//! ```text
//! cargo build -p orchestrator-sled --example flush_loop
//! strace -f -c -e trace=fsync,fdatasync,sync_file_range,pwrite64 \
//!     target/debug/examples/flush_loop durable   # or: synced
//! ```
//!
//! `durable` shows `pwrite64` + `sync_file_range` per flush and no
//! `fsync`/`fdatasync` beyond sled's periodic one; `synced` adds one
//! `fdatasync` per flush.

// An example that reports its counters on stdout.
#![allow(clippy::print_stdout)]

use orchestrator_core::testkit::{note, TestJob, T0};
use orchestrator_sled::{Durability, SledOptions, SledStore};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let durability = match std::env::args().nth(1).as_deref() {
        None | Some("durable") => Durability::Durable,
        Some("synced") => Durability::Synced,
        Some(other) => return Err(format!("unknown mode {other:?}: durable or synced").into()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = SledStore::temporary_with(SledOptions::new().durability(durability))?;
        let mut job = TestJob::new("flush-loop", T0);
        job.create(&store).await;
        for i in 0..200 {
            job.append(&store, [note(format!("append {i}"))]).await;
        }
        println!("{durability:?}: {:?}", store.stats());
        Ok(())
    })
}
