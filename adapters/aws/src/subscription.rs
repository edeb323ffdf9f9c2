//! Decoding CloudWatch Logs subscription payloads: base64 of gzip of
//! `{messageType, owner, logGroup, logStream, subscriptionFilters, logEvents}`.
//! Malformed input is a typed error, never a panic.

use std::io::Read;

use base64::Engine;
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("the subscription payload is not valid base64: {0}")]
    Base64(String),
    #[error("the subscription payload is not valid gzip: {0}")]
    Gzip(String),
    #[error("the subscription payload is not the expected JSON: {0}")]
    Json(String),
    #[error("the decompressed payload exceeds {0} bytes")]
    TooLarge(usize),
}

/// CloudWatch sends at most ~1 MB compressed; allow generous headroom, bound memory anyway.
const MAX_DECOMPRESSED: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    pub message_type: String,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub log_group: String,
    #[serde(default)]
    pub log_stream: String,
    #[serde(default)]
    pub subscription_filters: Vec<String>,
    #[serde(default)]
    pub log_events: Vec<PayloadEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PayloadEvent {
    pub id: String,
    pub timestamp: i64,
    pub message: String,
}

impl Payload {
    pub fn is_control(&self) -> bool {
        self.message_type == "CONTROL_MESSAGE"
    }
}

/// Decodes the `awslogs.data` string of a subscription event.
pub fn decode(data: &str) -> Result<Payload, PayloadError> {
    let compressed = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| PayloadError::Base64(e.to_string()))?;
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(compressed.as_slice())
        .take(MAX_DECOMPRESSED as u64 + 1)
        .read_to_end(&mut json)
        .map_err(|e| PayloadError::Gzip(e.to_string()))?;
    if json.len() > MAX_DECOMPRESSED {
        return Err(PayloadError::TooLarge(MAX_DECOMPRESSED));
    }
    serde_json::from_slice(&json).map_err(|e| PayloadError::Json(e.to_string()))
}

/// Encodes a payload the way CloudWatch does (fixtures and tests).
pub fn encode(json: &str) -> String {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(json.as_bytes())
        .expect("writing to memory cannot fail");
    let gz = enc.finish().expect("writing to memory cannot fail");
    base64::engine::general_purpose::STANDARD.encode(gz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_data_and_control_messages_and_rejects_garbage() {
        let data = encode(
            r#"{"messageType":"DATA_MESSAGE","owner":"123","logGroup":"/g","logStream":"task/runner/x",
               "subscriptionFilters":["f"],"logEvents":[{"id":"1","timestamp":5,"message":"hi"}]}"#,
        );
        let p = decode(&data).unwrap();
        assert_eq!(
            (p.log_stream.as_str(), p.log_events.len(), p.is_control()),
            ("task/runner/x", 1, false)
        );
        let c = decode(&encode(r#"{"messageType":"CONTROL_MESSAGE","logEvents":[{"id":"","timestamp":0,"message":"CWL CONTROL MESSAGE"}]}"#)).unwrap();
        assert!(c.is_control());
        assert!(matches!(decode("%%%"), Err(PayloadError::Base64(_))));
        assert!(matches!(decode("aGVsbG8="), Err(PayloadError::Gzip(_))));
        assert!(matches!(
            decode(&encode("[1,2]")),
            Err(PayloadError::Json(_))
        ));
    }
}
