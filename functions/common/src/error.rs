//! Handler errors, split on purpose: a retryable error fails the invocation so AWS retries it
//! (and, for the forwarder, finally sends it to the on-failure destination); everything else is
//! answered or logged and counted, never retried forever.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum HandlerError {
    /// Transient (throttling, conflicts, an unreachable service): fail the invocation.
    #[error("retryable failure: {0}")]
    Retryable(String),
    /// The function is misconfigured (missing environment, unreadable secret): fail loudly.
    #[error("configuration error: {0}")]
    Config(String),
}

impl From<runvoy_core::CoreError> for HandlerError {
    fn from(e: runvoy_core::CoreError) -> HandlerError {
        HandlerError::Retryable(e.to_string())
    }
}
