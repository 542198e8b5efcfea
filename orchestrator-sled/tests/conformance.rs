//! The core store conformance suite, unchanged, against a durable
//! `SledStore` in a fresh temporary directory per case (removed when the
//! case's store is dropped).

use orchestrator_sled::SledStore;

orchestrator_core::store_conformance_tests!(async {
    SledStore::temporary().expect("opening a store in a fresh temporary directory")
});
