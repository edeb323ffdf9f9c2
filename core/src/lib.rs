//! Core of runvoy log streaming: the model, the wire types, the ports and the services that give
//! every log line of an execution a contiguous index exactly once (spec invariants I1–I9, docs/spec.md §2).
//!
//! This crate knows no AWS and does no I/O of its own: adapters implement [`ports`], binaries wire
//! them to the [`services`].

pub mod api;
pub mod auth;
pub mod client;
pub mod error;
pub mod function;
pub mod lines;
pub mod memory;
pub mod model;
pub mod ports;
pub mod services;
pub mod time;
pub mod wire;
pub mod ws;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use error::{CommitError, CoreError, StoreError};
pub use model::{Connection, ExecutionSummary, Head, LogEvent, SourceEvent, Status};
