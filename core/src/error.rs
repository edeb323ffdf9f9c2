//! Errors of the core: what the stores report, what a commit can run into, and what services
//! return. Every message says what happened and what to do next.
//!
//! A backend's own error (SQLite's, the AWS SDK's, serde's) is kept as the source of a
//! [`StoreError::Backend`], for code that inspects it; its words are also in the message,
//! since what prints these errors (the functions' log lines, the local server) prints one line.
//!
//! Retrying: [`CoreError::is_retryable`] (and [`StoreError::is_retryable`] for what a store
//! reports) tells whether repeating the whole operation later can succeed. That decides whether
//! a Lambda invocation fails, so AWS retries it, or is answered and acknowledged.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use thiserror::Error;

/// A backend's own error, kept as the cause of a [`StoreError::Backend`] (shared, so the
/// error stays `Clone`).
pub type Cause = Arc<dyn StdError + Send + Sync + 'static>;

/// A store or source operation failed.
#[derive(Debug, Clone)]
pub enum StoreError {
    /// The backend asked us to slow down (DynamoDB throttling, SQLite busy). Retry with backoff.
    Throttled,
    /// A stored item is missing or past its expiry inside a committed range (I8).
    Expired(String),
    /// The log source refused a continuation token (CloudWatch tokens expire after 24 h).
    InvalidToken,
    /// Anything else: `context` names the backend and the operation; `source` is the
    /// backend's own error, when there is one.
    Backend {
        context: String,
        source: Option<Cause>,
    },
}

impl StoreError {
    /// A backend failure caused by `source`: the backend's own error (kept as it is, so it
    /// can be downcast), or the words of a decoder that reports a `String`.
    pub fn backend(
        context: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> StoreError {
        StoreError::Backend {
            context: context.into(),
            source: Some(Arc::from(source.into())),
        }
    }

    /// A backend failure found by the adapter itself (an unreadable item, a refused
    /// transaction), with no error of the backend to keep.
    pub fn backend_message(context: impl Into<String>) -> StoreError {
        StoreError::Backend {
            context: context.into(),
            source: None,
        }
    }

    /// Whether repeating the operation later can succeed: throttling and backend failures
    /// (unavailable, timed out, unreachable) can pass; expired logs stay expired, and a source
    /// that refuses a read without any continuation token refuses it again.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Throttled | StoreError::Backend { .. } => true,
            StoreError::Expired(_) | StoreError::InvalidToken => false,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Throttled => {
                f.write_str("the store is throttling requests; retry with backoff")
            }
            StoreError::Expired(id) => write!(
                f,
                "logs of execution {id} have expired and are no longer complete"
            ),
            StoreError::InvalidToken => f.write_str(
                "the log source rejected the continuation token; restart reading from the beginning",
            ),
            StoreError::Backend { context, source } => {
                f.write_str(context)?;
                if let Some(source) = source {
                    write_chain(f, &**source)?;
                }
                Ok(())
            }
        }
    }
}

/// Writes `": {e}"`, then each of its sources the same way, skipping one whose words are
/// already written (many errors repeat their source's message): the AWS SDK's errors say what
/// the service answered only in their sources.
fn write_chain(f: &mut fmt::Formatter<'_>, e: &(dyn StdError + 'static)) -> fmt::Result {
    let mut written = String::new();
    let mut next = Some(e);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !written.contains(&text) {
            write!(f, ": {text}")?;
            written.push_str(&text);
        }
        next = e.source();
    }
    Ok(())
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            StoreError::Backend {
                source: Some(source),
                ..
            } => Some(&**source),
            _ => None,
        }
    }
}

/// Errors compare by what they say (a backend's cause by its message): for tests.
impl PartialEq for StoreError {
    fn eq(&self, other: &StoreError) -> bool {
        match (self, other) {
            (StoreError::Throttled, StoreError::Throttled)
            | (StoreError::InvalidToken, StoreError::InvalidToken) => true,
            (StoreError::Expired(a), StoreError::Expired(b)) => a == b,
            (
                StoreError::Backend {
                    context: a,
                    source: sa,
                },
                StoreError::Backend {
                    context: b,
                    source: sb,
                },
            ) => {
                a == b
                    && sa.as_ref().map(ToString::to_string) == sb.as_ref().map(ToString::to_string)
            }
            _ => false,
        }
    }
}

impl Eq for StoreError {}

/// Why a conditional commit of a head and its new events did not happen.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommitError {
    /// The head's version is not the one the commit was computed from: another writer won.
    #[error("the execution head changed since it was read; re-read it and retry")]
    VersionConflict,
    /// Some of the events were already committed (idempotency record exists).
    #[error("{} event(s) of this commit are already committed", .0.len())]
    Duplicate(Vec<String>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Errors the services return to handlers; handlers map them to HTTP statuses or Lambda failures.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CoreError {
    #[error("execution {0} was not found; check the id (it is the ECS task id)")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(
        "gave up appending to execution {0} after {1} conflicting attempts; the invocation will be retried"
    )]
    TooManyConflicts(String, u32),
    #[error("execution {0} is already {1}; it cannot be completed again with a different status")]
    AlreadyTerminal(String, &'static str),
    /// Work that is saved as it goes ran out of time; repeating the call continues it.
    #[error("{0}")]
    Unfinished(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CoreError {
    /// Whether retrying the whole operation later can succeed (Lambda: fail the invocation).
    /// Conflicts past the attempts, work cut short by its deadline and a store that may pass
    /// later can; a missing execution, a malformed or invalid request, and a status that
    /// cannot be set again never can.
    pub fn is_retryable(&self) -> bool {
        match self {
            CoreError::TooManyConflicts(..) | CoreError::Unfinished(_) => true,
            CoreError::NotFound(_) | CoreError::BadRequest(_) | CoreError::AlreadyTerminal(..) => {
                false
            }
            CoreError::Store(e) => e.is_retryable(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{core_errors, store_errors};

    #[test]
    fn store_errors_are_retryable_unless_retrying_cannot_help() {
        for (e, retryable) in store_errors() {
            assert_eq!(e.is_retryable(), retryable, "{e:?}");
            assert_eq!(
                CoreError::Store(e.clone()).is_retryable(),
                retryable,
                "{e:?}"
            );
        }
    }

    #[test]
    fn core_errors_are_retryable_unless_retrying_cannot_help() {
        for (e, retryable) in core_errors() {
            assert_eq!(e.is_retryable(), retryable, "{e:?}");
        }
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("service error")
        }
    }

    impl StdError for Outer {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_backend_error_keeps_its_source_and_says_what_it_said() {
        let e = StoreError::backend(
            "DynamoDB Query failed",
            Outer(std::io::Error::other("ThrottlingException: Rate exceeded")),
        );
        assert_eq!(
            e.to_string(),
            "DynamoDB Query failed: service error: ThrottlingException: Rate exceeded"
        );
        let source = e.source().expect("the backend's error is kept");
        assert!(source.downcast_ref::<Outer>().is_some(), "{source:?}");
        // Through the core error too, as handlers see it.
        let core = CoreError::from(e.clone());
        assert_eq!(core.to_string(), e.to_string());
        assert!(core.source().is_some_and(|s| s.is::<Outer>()));

        let repeated = StoreError::backend(
            "SQLite failed",
            Outer(std::io::Error::other("service error")),
        );
        assert_eq!(repeated.to_string(), "SQLite failed: service error");
        let alone = StoreError::backend_message("DynamoDB item is malformed: status");
        assert_eq!(alone.to_string(), "DynamoDB item is malformed: status");
        assert!(alone.source().is_none());
    }
}
