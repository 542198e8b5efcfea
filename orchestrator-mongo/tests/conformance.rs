//! The core store conformance suite, unchanged, against `MongoStore` on the
//! server `MONGODB_URI` names (the nx-27017 test server under
//! `scripts/test.sh`), each case in a database of its own. Without a server
//! the cases skip with one line saying why; under `CI=true` they fail.

mod support;

orchestrator_core::store_conformance_tests!(support::fresh_store(), skip_if: support::skip());
