//! Cross-crate end-to-end tests of orchestrator, and the helpers they share
//! with their worker binaries.
//!
//! | item | what it is |
//! | --- | --- |
//! | `src/bin/crash_worker.rs` | runs one job on a sled directory until it finishes; the crash test kills it |
//! | [`crash`] | the crash job: its spec, its side-file format, its id |
//! | `tests/crash.rs` | kills the worker with SIGKILL at random moments and checks recovery |

pub mod crash;
