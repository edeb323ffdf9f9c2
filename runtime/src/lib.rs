//! The real clock for deployed code: wall time, tokio sleeps, random jitter.

use async_trait::async_trait;
use runvoy_core::ports::Clock;

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }

    async fn sleep_ms(&self, ms: u64) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }

    fn jitter(&self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            rand::random_range(0..bound)
        }
    }
}
