//! The CLI's own failures. Each prints as one sentence on stderr and exits 125 (spec §4.4.5).

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CliError {
    #[error(
        "cannot reach the runvoy API at {0}: {1}; check --api-url and that the stack is running"
    )]
    Unreachable(String, String),
    #[error("the API key was rejected (401); pass a valid key with --api-key or RUNVOY_API_KEY")]
    Unauthorized,
    #[error("access denied (403): {0}")]
    Forbidden(String),
    #[error("execution {0} was not found; check the id")]
    NotFound(String),
    #[error("the API answered {0}: {1}")]
    Server(u16, String),
    #[error(
        "the API answered {0} with a redirect to {1}; the API key is not sent there: set --api-url to the API's own address"
    )]
    Redirected(u16, String),
    #[error("{0}")]
    Config(String),
    /// A flag's value cannot be used (exit 2, as clap's own usage errors).
    #[error("{0}")]
    Usage(String),
    #[error("the API sent something unexpected: {0}")]
    Protocol(String),
    /// stdout was closed (`| head`): stop quietly.
    #[error("stdout was closed")]
    BrokenPipe,
    #[error("writing the output failed: {0}")]
    Output(std::io::Error),
}

impl CliError {
    /// Failures worth retrying. Before the API has answered once, only the server's own
    /// trouble (429, 5xx) is: no server, a bad key or an unknown execution end the CLI. After
    /// that, a lost connection (a restart, a closed keep-alive connection) and a passing 410
    /// are retried too.
    pub fn is_transient(&self, answered_before: bool) -> bool {
        match self {
            CliError::Protocol(_) => true,
            CliError::Unreachable(..) => answered_before,
            CliError::Server(410, _) => answered_before,
            CliError::Server(status, _) => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> CliError {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::Output(e)
        }
    }
}
