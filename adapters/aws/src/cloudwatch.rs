//! The CloudWatch Logs source: `GetLogEvents` paging with the rules of spec §3.1 (the same token
//! at the end, empty pages mid-stream, tokens that expire), and the stream name ↔ execution id
//! mapping.
//!
//! The cursor this source hands out is `t:<ms>`: the next read starts at that timestamp
//! (`startTime`), so every millisecond is read whole and event ids ([`crate::identity`]) are
//! exact. A page ends at a millisecond boundary; at the end of the stream the cursor backs off by
//! [`OVERLAP_MS`] so lines ingested a little late with slightly older timestamps are still seen,
//! and it never passes the time the read began (less the overlap): `PutLogEvents` takes lines
//! stamped up to 2 h ahead, and one of them must not carry the cursor past the lines written
//! after it. Lines ingested later than the overlap behind the newest one are found by
//! completion's re-read of the whole stream.
//! CloudWatch's own forward tokens are only followed within one call, so their 24 h expiry never
//! matters.

use async_trait::async_trait;
use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata;
use runvoy_core::StoreError;
use runvoy_core::ports::{LogSource, SourcePage};

use crate::identity;

/// Lines per returned page (a page may exceed it to finish its last millisecond).
const PAGE_TARGET: usize = 5_000;
/// How far the end-of-stream cursor backs off.
pub const OVERLAP_MS: i64 = 2_000;

/// Maps execution ids to stream names with a template such as `task/runner/{execution_id}`.
#[derive(Debug, Clone)]
pub struct StreamNames {
    prefix: String,
    suffix: String,
}

impl StreamNames {
    pub fn new(template: &str) -> Result<StreamNames, String> {
        let (prefix, suffix) = template
            .split_once("{execution_id}")
            .ok_or_else(|| format!("stream template '{template}' must contain {{execution_id}}"))?;
        Ok(StreamNames {
            prefix: prefix.into(),
            suffix: suffix.into(),
        })
    }

    pub fn stream(&self, execution_id: &str) -> String {
        format!("{}{execution_id}{}", self.prefix, self.suffix)
    }

    /// The execution a stream belongs to, or `None` for streams of other producers — and for
    /// names that are not execution ids (an id like `x#ids#1` would address another
    /// execution's items).
    pub fn execution(&self, stream: &str) -> Option<String> {
        let id = stream
            .strip_prefix(&self.prefix)?
            .strip_suffix(&self.suffix)?;
        runvoy_core::api::validate_execution_id(id)
            .is_ok()
            .then(|| id.to_string())
    }
}

impl Default for StreamNames {
    fn default() -> Self {
        StreamNames::new("task/runner/{execution_id}").expect("the default template is valid")
    }
}

#[derive(Clone)]
pub struct CloudWatchSource {
    client: Client,
    group: String,
    names: StreamNames,
}

impl CloudWatchSource {
    pub fn new(client: Client, group: impl Into<String>, names: StreamNames) -> CloudWatchSource {
        CloudWatchSource {
            client,
            group: group.into(),
            names,
        }
    }

    pub fn names(&self) -> &StreamNames {
        &self.names
    }
}

fn map_err<E, R>(e: aws_sdk_cloudwatchlogs::error::SdkError<E, R>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match e.code() {
        Some("ThrottlingException" | "ServiceUnavailableException" | "LimitExceededException") => {
            StoreError::Throttled
        }
        Some("InvalidParameterException") if e.message().is_some_and(|m| m.contains("oken")) => {
            StoreError::InvalidToken
        }
        _ => StoreError::backend("CloudWatch Logs GetLogEvents failed", e),
    }
}

/// Attempts at a throttled `GetLogEvents` (beyond the SDK's own), with waits that double from
/// 250 ms: the account's quota is shared by every reader, so a throttled reader waits its turn
/// rather than failing its reconciliation.
const THROTTLED_ATTEMPTS: u32 = 6;

async fn send_patiently(
    req: aws_sdk_cloudwatchlogs::operation::get_log_events::builders::GetLogEventsFluentBuilder,
) -> Result<aws_sdk_cloudwatchlogs::operation::get_log_events::GetLogEventsOutput, StoreError> {
    let mut attempt = 0;
    loop {
        match req.clone().send().await.map_err(map_err) {
            Err(StoreError::Throttled) if attempt + 1 < THROTTLED_ATTEMPTS => {
                let cap = 250u64 << attempt;
                let jitter = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::from(d.subsec_nanos()))
                    % (cap / 2 + 1);
                tokio::time::sleep(std::time::Duration::from_millis(cap / 2 + jitter)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[async_trait]
impl LogSource for CloudWatchSource {
    async fn exists(&self, execution_id: &str) -> Result<bool, StoreError> {
        let r = self
            .client
            .get_log_events()
            .log_group_name(&self.group)
            .log_stream_name(self.names.stream(execution_id))
            .start_from_head(true)
            .limit(1)
            .send()
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(false),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn newest_timestamp(&self, execution_id: &str) -> Result<Option<i64>, StoreError> {
        // The last page of the stream, one event: the newest by timestamp.
        let r = self
            .client
            .get_log_events()
            .log_group_name(&self.group)
            .log_stream_name(self.names.stream(execution_id))
            .start_from_head(false)
            .limit(1)
            .send()
            .await;
        match r {
            Ok(out) => Ok(out.events().iter().filter_map(|e| e.timestamp()).max()),
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(None),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn page(
        &self,
        execution_id: &str,
        token: Option<&str>,
    ) -> Result<SourcePage, StoreError> {
        let start: Option<i64> = match token {
            None => None,
            Some(t) => Some(
                t.strip_prefix("t:")
                    .and_then(|v| v.parse().ok())
                    .ok_or(StoreError::InvalidToken)?,
            ),
        };
        let stream = self.names.stream(execution_id);
        // A stream being written never hands back the token it was given: a read that meets a
        // line ingested after it began has reached the live end (`live_end`), and ends there,
        // cut before its last millisecond like any page that is not the end.
        let began = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(i64::MAX, |d| d.as_millis() as i64);
        let mut lines: Vec<(i64, String)> = Vec::new();
        let mut cw_token: Option<String> = None;
        let mut live = false;
        let at_end = loop {
            let mut req = self
                .client
                .get_log_events()
                .log_group_name(&self.group)
                .log_stream_name(&stream)
                .start_from_head(true)
                .set_next_token(cw_token.clone());
            if let Some(s) = start {
                req = req.start_time(s);
            }
            let resp = send_patiently(req).await?;
            for e in resp.events.unwrap_or_default() {
                live |= e.ingestion_time.is_some_and(|t| t >= began);
                lines.push((e.timestamp.unwrap_or(0), e.message.unwrap_or_default()));
            }
            let next = resp.next_forward_token;
            // The end of the stream: CloudWatch hands back the token it was given.
            if next.is_none() || (cw_token.is_some() && next == cw_token) {
                break true;
            }
            cw_token = next;
            let split = (lines.len() >= PAGE_TARGET || live)
                && lines.first().map(|l| l.0) != lines.last().map(|l| l.0);
            if split {
                break false;
            }
        };
        let next_token = if at_end {
            let last = lines.iter().map(|l| l.0).max();
            let cursor = match (start, last) {
                (Some(s), Some(l)) => s.max(l - OVERLAP_MS),
                (Some(s), None) => s,
                (None, Some(l)) => (l - OVERLAP_MS).max(0),
                (None, None) => 0,
            };
            // Never ahead of the read itself: a line stamped in the future would otherwise
            // carry the cursor past every line written after it (and an earlier such cursor
            // is brought back).
            format!("t:{}", cursor.min(began - OVERLAP_MS).max(0))
        } else {
            // Cut before the last (possibly incomplete) millisecond; the next page starts there.
            let cut = lines.last().map(|l| l.0).unwrap_or(0);
            lines.retain(|l| l.0 < cut);
            format!("t:{cut}")
        };
        Ok(SourcePage {
            events: identity::with_ids(lines),
            next_token,
            live_end: at_end || live,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_map_both_ways() {
        let n = StreamNames::default();
        assert_eq!(n.stream("abc"), "task/runner/abc");
        assert_eq!(n.execution("task/runner/abc").as_deref(), Some("abc"));
        assert_eq!(n.execution("task/other/abc"), None);
        assert_eq!(n.execution("task/runner/"), None);
        assert_eq!(n.execution("task/runner/x#ids#1"), None);
        let custom = StreamNames::new("ecs/{execution_id}/main").unwrap();
        assert_eq!(custom.execution("ecs/x1/main").as_deref(), Some("x1"));
        assert!(StreamNames::new("no-placeholder").is_err());
    }
}
