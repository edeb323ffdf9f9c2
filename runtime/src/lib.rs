//! What the binaries take from the machine: the real clock (wall time, tokio sleeps, random
//! jitter) behind the core's `Clock` port, and random ids and secrets.

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

/// `bytes` random bytes as lowercase hex, from the thread's cryptographically secure generator:
/// execution and connection ids, and the secrets the local stack, the sim and `deploy` make
/// (API keys, token secrets).
pub fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_hex_is_hex_of_the_length_asked_and_differs() {
        let (a, b) = (super::random_hex(16), super::random_hex(16));
        assert_eq!(a.len(), 32);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }
}
