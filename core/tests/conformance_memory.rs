//! The store conformance suite against the in-memory store (the reference implementation).

use std::sync::Arc;

use runvoy_core::memory::{MemoryConnections, MemoryStore};

runvoy_core::store_conformance_suite!(|| async { Arc::new(MemoryStore::new()) });
runvoy_core::connection_conformance_suite!(|| async { Arc::new(MemoryConnections::new()) });
