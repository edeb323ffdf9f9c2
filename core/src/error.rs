//! Errors of the core: what the stores report, what a commit can run into, and what services
//! return. Every message says what happened and what to do next.

use thiserror::Error;

/// A store or source operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    /// The backend asked us to slow down (DynamoDB throttling, SQLite busy). Retry with backoff.
    #[error("the store is throttling requests; retry with backoff")]
    Throttled,
    /// A stored item is missing or past its expiry inside a committed range (I8).
    #[error("logs of execution {0} have expired and are no longer complete")]
    Expired(String),
    /// The log source refused a continuation token (CloudWatch tokens expire after 24 h).
    #[error("the log source rejected the continuation token; restart reading from the beginning")]
    InvalidToken,
    /// Anything else: the message names the backend and the operation.
    #[error("{0}")]
    Backend(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Throttled)
    }
}

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
    pub fn is_retryable(&self) -> bool {
        match self {
            CoreError::TooManyConflicts(..) | CoreError::Unfinished(_) => true,
            CoreError::Store(e) => !matches!(e, StoreError::Expired(_)),
            _ => false,
        }
    }
}
