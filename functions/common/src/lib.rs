//! The Lambda functions' handlers and their wiring. Each handler takes the event as AWS sends
//! it and the core [`Services`](runvoy_core::services::Services); the binaries under
//! `functions/*` only read the environment and run the Lambda loop.

pub mod api;
pub mod completion;
pub mod emf;
pub mod error;
pub mod forwarder;
pub mod janitor;
pub mod settings;
pub mod websocket;
pub mod wiring;

pub use error::HandlerError;
pub use runvoy_core::function::Function;

pub use runvoy_core::api::ApiConfig;
