//! Handler errors, split on purpose: a retryable error fails the invocation so AWS retries it
//! (and, for the forwarder and completion, finally sends it to the on-failure destination);
//! an error retrying can never fix is answered, or logged, counted and acknowledged by the
//! handler, never retried forever.

use runvoy_core::CoreError;
use thiserror::Error;

/// What made a handler fail: a [`CoreError`], or a [`CallFailed`] of the handler's own.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, Error)]
pub enum HandlerError {
    /// Retrying later can succeed (throttling, an unavailable or unreachable service, conflicts
    /// past the attempts, time running out): fail the invocation.
    #[error("retryable failure: {0}")]
    Retryable(#[source] Cause),
    /// Retrying can never succeed (a malformed or invalid request, an execution that does not
    /// exist, expired logs, a status that cannot be set again): handlers answer or acknowledge
    /// it rather than fail with it.
    #[error("permanent failure: {0}")]
    Permanent(#[source] Cause),
    /// The function is misconfigured (missing environment, unreadable secret): fail loudly.
    #[error("configuration error: {message}")]
    Config {
        message: String,
        #[source]
        source: Option<Cause>,
    },
}

impl HandlerError {
    /// Whether the invocation must fail so AWS retries it.
    pub fn is_retryable(&self) -> bool {
        matches!(self, HandlerError::Retryable(_))
    }

    /// A configuration error found by the function itself.
    pub fn config(message: impl Into<String>) -> HandlerError {
        HandlerError::Config {
            message: message.into(),
            source: None,
        }
    }

    /// A failed AWS call of the handler's own (the janitor's SQS): retrying later can pass.
    pub fn call(
        doing: impl Into<String>,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> HandlerError {
        HandlerError::Retryable(Box::new(CallFailed::new(doing, e)))
    }
}

/// An AWS call failed: what was being done, what the service answered (with the SDK's whole
/// context: its own message says only "service error"), and the SDK's error as the source.
#[derive(Debug, Error)]
#[error("{doing}: {said}")]
pub struct CallFailed {
    doing: String,
    said: String,
    source: Cause,
}

impl CallFailed {
    pub fn new(
        doing: impl Into<String>,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> CallFailed {
        CallFailed {
            doing: doing.into(),
            said: runvoy_aws::describe(&e),
            source: Box::new(e),
        }
    }
}

impl From<CoreError> for HandlerError {
    fn from(e: CoreError) -> HandlerError {
        if e.is_retryable() {
            HandlerError::Retryable(Box::new(e))
        } else {
            HandlerError::Permanent(Box::new(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// Every core error (and store error inside one), classified in the core's test kit.
    #[test]
    fn only_errors_a_retry_can_fix_fail_the_invocation() {
        for (core, retryable) in runvoy_core::testkit::core_errors() {
            let text = core.to_string();
            let e = HandlerError::from(core.clone());
            assert_eq!(e.is_retryable(), retryable, "{core:?}");
            assert!(
                matches!(
                    (&e, retryable),
                    (HandlerError::Retryable(_), true) | (HandlerError::Permanent(_), false)
                ),
                "{e:?}"
            );
            // The core error is kept: its words in the message, itself as the source.
            assert!(e.to_string().ends_with(&text), "{e}");
            let source = e.source().and_then(|s| s.downcast_ref::<CoreError>());
            assert_eq!(source, Some(&core));
        }
    }

    #[test]
    fn a_failed_call_says_what_it_did_and_keeps_the_sdk_error() {
        let e = HandlerError::call(
            "reading the on-failure queue q",
            std::io::Error::other("AccessDenied: not authorized"),
        );
        assert!(e.is_retryable());
        assert!(
            e.to_string()
                .starts_with("retryable failure: reading the on-failure queue q: AccessDenied"),
            "{e}"
        );
        let call = e.source().and_then(|s| s.downcast_ref::<CallFailed>());
        assert!(
            call.and_then(|c| c.source())
                .is_some_and(|s| s.is::<std::io::Error>())
        );
        assert!(!HandlerError::config("RUNVOY_LOGS_TABLE is not set").is_retryable());
    }
}
