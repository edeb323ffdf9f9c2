//! The local pusher: a registry of open WebSocket sessions, each fed through a bounded queue.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use runvoy_core::ports::{PushError, Pusher};
use tokio::sync::mpsc;

/// Messages queued per connection before pushes fail (the client then fills the gap over HTTP).
pub const QUEUE: usize = 512;

#[derive(Default)]
pub struct LocalPusher {
    sessions: Mutex<HashMap<String, mpsc::Sender<String>>>,
}

impl LocalPusher {
    /// Registers a session; must happen before the connection is stored, so no push finds it
    /// missing and prunes it.
    pub fn register(&self, connection_id: &str) -> mpsc::Receiver<String> {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.sessions
            .lock()
            .expect("pusher lock")
            .insert(connection_id.to_string(), tx);
        rx
    }

    pub fn unregister(&self, connection_id: &str) {
        self.sessions
            .lock()
            .expect("pusher lock")
            .remove(connection_id);
    }
}

#[async_trait]
impl Pusher for LocalPusher {
    async fn push(&self, connection_id: &str, text: &str) -> Result<(), PushError> {
        let tx = self
            .sessions
            .lock()
            .expect("pusher lock")
            .get(connection_id)
            .cloned();
        let Some(tx) = tx else {
            return Err(PushError::Gone);
        };
        match tx.try_send(text.to_string()) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(PushError::Gone),
            Err(mpsc::error::TrySendError::Full(_)) => Err(PushError::Failed(
                "the client is not reading fast enough".into(),
            )),
        }
    }

    /// Ends the session: its queue closes, and the session sends a close frame.
    async fn close(&self, connection_id: &str) -> Result<(), PushError> {
        self.unregister(connection_id);
        Ok(())
    }
}
