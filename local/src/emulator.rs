//! The subscription emulator: delivers batches of new source events to the forwarder logic
//! asynchronously — in order, one at a time (batches duplicated or dropped with `--chaos dup`,
//! `drop`), or, with `reorder` or `delay-ms`, like the worst of spec §3.2 (duplicated, held back,
//! dropped, delayed and concurrent).

use std::sync::Arc;

use runvoy_core::SourceEvent;
use runvoy_core::ports::{Metric, Metrics};
use runvoy_core::services::Forwarder;
use tokio::sync::{Semaphore, mpsc};

use crate::chaos::Chaos;

/// A batch of one stream, as a subscription delivers it.
pub type Batch = (String, Vec<SourceEvent>);

/// Concurrent forwarder invocations under chaos.
const FORWARDERS: usize = 8;

/// Delivers one batch through the forwarder, retrying retryable failures a few times, then
/// giving it up (reconciliation recovers it, as it would after AWS's retries).
async fn deliver(
    forwarder: &Forwarder,
    metrics: &dyn Metrics,
    execution_id: &str,
    events: Vec<SourceEvent>,
) {
    for attempt in 0..5u32 {
        match forwarder.forward(execution_id, events.clone()).await {
            Ok(_) => return,
            Err(e) if e.is_retryable() => {
                tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
            }
            Err(_) => break,
        }
    }
    metrics.incr(Metric::AppendFailures, 1);
}

/// Starts the emulator; send batches into the returned sender.
pub fn start(
    forwarder: Forwarder,
    metrics: Arc<dyn Metrics>,
    chaos: Chaos,
) -> mpsc::UnboundedSender<Batch> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Batch>();
    tokio::spawn(async move {
        if chaos.in_order() {
            let roll = |p: f64| p > 0.0 && rand::random::<f64>() < p;
            while let Some((exec, events)) = rx.recv().await {
                if roll(chaos.drop) {
                    continue;
                }
                let again = roll(chaos.dup).then(|| events.clone());
                deliver(&forwarder, &*metrics, &exec, events).await;
                if let Some(events) = again {
                    deliver(&forwarder, &*metrics, &exec, events).await;
                }
            }
            return;
        }
        let slots = Arc::new(Semaphore::new(FORWARDERS));
        let mut held: Option<Batch> = None;
        while let Some(batch) = rx.recv().await {
            for ((exec, events), delay) in chaos.scatter(batch, &mut held) {
                let f = forwarder.clone();
                let m = metrics.clone();
                let slots = slots.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _permit = slots.acquire().await;
                    deliver(&f, &*m, &exec, events).await;
                });
            }
        }
        if let Some((exec, events)) = held {
            deliver(&forwarder, &*metrics, &exec, events).await;
        }
    });
    tx
}
