//! Services: the logic every deployment shares (Lambda functions and the local stack alike).

mod append;
mod completion;
mod fanout;
mod forward;
mod populate;
mod read;
mod reconcile;
mod wiring;

pub use append::{AppendOutcome, Appender, EngineConfig};
pub use completion::Completer;
pub use fanout::{
    BACKLOG_BYTES, BACKLOG_PAGE, FANOUT_CONCURRENCY, FanOut, HANDSHAKE_GRACE_MS, pack_messages,
};
pub use forward::Forwarder;
pub use populate::{Populator, ReconcileSchedule};
pub use read::{DensePage, LogsPage, MAX_PAGE_BYTES, Reader};
pub use reconcile::{ReconcileOutcome, Reconciler};
pub use wiring::{Ports, Services};
