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

    use runvoy_core::StoreError;

    use super::*;

    /// Every core error, and every store error inside one, with whether the invocation fails.
    /// The matches fail to compile when a variant is added, so none goes unclassified.
    fn classified() -> Vec<(CoreError, bool)> {
        let store = [
            // DynamoDB or SQLite asked to slow down: the next attempt may pass.
            (StoreError::Throttled, true),
            // The logs are gone: no attempt can bring them back.
            (StoreError::Expired("e".into()), false),
            // A read refused without any continuation token is refused again.
            (StoreError::InvalidToken, false),
            // The store could not be reached or failed (network, unavailable, timed out).
            (
                StoreError::backend(
                    "DynamoDB TransactWriteItems failed",
                    std::io::Error::other("connection reset by peer"),
                ),
                true,
            ),
            (
                StoreError::backend_message("DynamoDB cancelled the transaction"),
                true,
            ),
        ];
        for (e, _) in &store {
            match e {
                StoreError::Throttled
                | StoreError::Expired(_)
                | StoreError::InvalidToken
                | StoreError::Backend { .. } => {}
            }
        }
        let mut all = vec![
            // The execution does not exist: a retry finds nothing either.
            (CoreError::NotFound("e".into()), false),
            // A malformed or invalid request stays invalid.
            (
                CoreError::BadRequest("status must be terminal".into()),
                false,
            ),
            // Writers raced past the attempts: a later attempt meets fewer of them.
            (CoreError::TooManyConflicts("e".into(), 8), true),
            // The status is set for good; a different one is refused for good.
            (CoreError::AlreadyTerminal("e".into(), "SUCCEEDED"), false),
            // Saved progress ran out of time: the next attempt continues it.
            (
                CoreError::Unfinished("the sweep stopped at its deadline".into()),
                true,
            ),
        ];
        for (e, _) in &all {
            match e {
                CoreError::NotFound(_)
                | CoreError::BadRequest(_)
                | CoreError::TooManyConflicts(..)
                | CoreError::AlreadyTerminal(..)
                | CoreError::Unfinished(_)
                | CoreError::Store(_) => {}
            }
        }
        all.extend(store.into_iter().map(|(e, r)| (CoreError::Store(e), r)));
        all
    }

    #[test]
    fn only_errors_a_retry_can_fix_fail_the_invocation() {
        for (core, retryable) in classified() {
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
