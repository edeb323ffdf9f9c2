//! Source event identity for CloudWatch Logs.
//!
//! `GetLogEvents` (what reconciliation reads) returns no event id, while subscription payloads
//! carry one, so the two cannot be matched by CloudWatch's id. Both paths instead derive the id
//! from what both see: `"{timestamp}-{ordinal}-{digest}"`, where `digest` is 32 hex digits (128 bits) of
//! the SHA-256 of the message and `ordinal` counts identical `(timestamp, message)` lines before
//! this one in the same read window.
//!
//! Reconciliation reads whole milliseconds (see [`crate::cloudwatch`]), so its ordinals are exact.
//! A subscription batch only sees its own lines, so when identical lines of one millisecond are
//! split across batches the later batch under-counts: its line looks like a duplicate and is
//! committed by the next reconciliation instead (late, never lost, never twice: every derived id
//! maps to a distinct identical line of the stream).

use std::collections::HashMap;

use runvoy_core::SourceEvent;
use sha2::{Digest, Sha256};

pub fn digest(message: &str) -> String {
    let d = Sha256::digest(message.as_bytes());
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Gives each `(timestamp, message)` of one read window its id, in stream order.
pub fn with_ids(events: Vec<(i64, String)>) -> Vec<SourceEvent> {
    let mut seen: HashMap<(i64, String), u32> = HashMap::new();
    events
        .into_iter()
        .map(|(timestamp, message)| {
            let d = digest(&message);
            let ordinal = seen.entry((timestamp, d.clone())).or_insert(0);
            let id = format!("{timestamp}-{ordinal}-{d}");
            *ordinal += 1;
            SourceEvent {
                event_id: id,
                timestamp,
                message,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_lines_get_distinct_stable_ids() {
        let a = with_ids(vec![
            (1, "x".into()),
            (1, "x".into()),
            (1, "y".into()),
            (2, "x".into()),
        ]);
        let ids: Vec<&str> = a.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids.len(), 4);
        assert!(
            ids[0].starts_with("1-0-") && ids[1].starts_with("1-1-") && ids[2].starts_with("1-0-")
        );
        assert_ne!(ids[0], ids[2]);
        // The same window read again gives the same ids.
        let b = with_ids(a.iter().map(|e| (e.timestamp, e.message.clone())).collect());
        assert_eq!(a, b);
    }
}
