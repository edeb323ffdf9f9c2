//! `deploy smoke`: writes lines into a live stack and checks I1–I6 end to end through its API.
//! On AWS the lines go to the runner log group with PutLogEvents (so they travel the real
//! subscription → forwarder path); on the local stack through the producer endpoint.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use runvoy_core::client::Follower;
use runvoy_core::wire::LogsResponse;
use serde_json::json;

/// Where the lines go.
pub enum Sink {
    CloudWatch {
        client: aws_sdk_cloudwatchlogs::Client,
        group: String,
        stream_template: String,
    },
    Local,
}

pub struct Smoke {
    pub api_url: String,
    pub api_key: String,
    pub sink: Sink,
    pub lines: usize,
    pub timeout: Duration,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Smoke {
    /// Runs the check; returns one line per invariant, or the first violation as an error.
    pub async fn run(&self) -> anyhow::Result<Vec<String>> {
        let http = reqwest::Client::new();
        let id = format!("smoke-{}", runvoy_runtime::random_hex(8));
        // Four batches; each has identical lines in the same millisecond and falling timestamps
        // across batches, the shapes that break naive pipelines.
        let base = now_ms() - 10_000;
        let mut sent: Vec<(i64, String)> = Vec::new();
        let per = self.lines.div_ceil(4);
        for b in 0..4 {
            let batch: Vec<(i64, String)> = (0..per)
                .filter(|i| b * per + i < self.lines)
                .map(|i| {
                    let n = b * per + i;
                    let ts = base + (3 - b as i64) * 1_000 + (i as i64 / 2);
                    (
                        ts,
                        if i % 10 == 0 {
                            "smoke: repeated line".to_string()
                        } else {
                            format!("smoke line {n}")
                        },
                    )
                })
                .collect();
            self.write(&http, &id, &batch).await?;
            sent.extend(batch);
        }
        // I1/I2/I3: everything arrives, contiguously, once.
        let deadline = Instant::now() + self.timeout;
        let events = loop {
            let events = self.read_all(&http, &id).await?;
            if events.len() >= sent.len() || Instant::now() > deadline {
                break events;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let mut report = Vec::new();
        let indexes_ok = events
            .iter()
            .enumerate()
            .all(|(i, e)| e.index == i as u64 + 1);
        anyhow::ensure!(
            indexes_ok,
            "I1 violated: indexes are not 1..={}",
            events.len()
        );
        report.push(format!("I1 contiguity: indexes 1..={}", events.len()));
        let count = |v: Vec<(i64, String)>| {
            v.into_iter().fold(BTreeMap::new(), |mut m, k| {
                *m.entry(k).or_insert(0) += 1;
                m
            })
        };
        let got = count(
            events
                .iter()
                .map(|e| (e.timestamp, e.message.clone()))
                .collect(),
        );
        anyhow::ensure!(
            got == count(sent.clone()),
            "I2 violated: {} lines committed for {} written",
            events.len(),
            sent.len()
        );
        report.push(format!(
            "I2 exactly-once: {} lines written, {} committed, identical lines included",
            sent.len(),
            events.len()
        ));
        let ids: std::collections::HashSet<&str> =
            events.iter().map(|e| e.event_id.as_str()).collect();
        anyhow::ensure!(
            ids.len() == events.len(),
            "I2 violated: an event id is committed twice"
        );
        // I6: completion publishes final_index after every line. A long re-read answers 503
        // `in_progress` with its progress saved: asking again continues it.
        let mut attempts = 0;
        loop {
            let r = http
                .post(format!("{}/api/v1/executions/{id}/complete", self.api_url))
                .header("X-API-Key", &self.api_key)
                .json(&json!({"status": "SUCCEEDED", "exit_code": 0}))
                .send()
                .await?;
            let status = r.status();
            if status.is_success() {
                break;
            }
            let body = r.text().await?;
            attempts += 1;
            anyhow::ensure!(
                status.as_u16() == 503 && body.contains("in_progress") && attempts < 30,
                "completing failed ({status}): {body}"
            );
        }
        // I5: the client algorithm from index 0 prints exactly 1..=final_index, then stops.
        let mut follower = Follower::new(0);
        let mut printed = 0u64;
        while follower.exit_code().is_none() {
            let page = self.page(&http, &id, follower.last()).await?;
            let accepted = follower.accept(page.events);
            anyhow::ensure!(
                !accepted.gap,
                "I5 violated: a page skipped lines after {}",
                follower.last()
            );
            printed += accepted.print.len() as u64;
            if let Some(f) = page.final_index {
                follower.terminal(page.status, page.exit_code, f);
            }
            anyhow::ensure!(
                Instant::now() < deadline + self.timeout,
                "I6 violated: no final_index in time"
            );
        }
        let final_index = follower.final_index().unwrap_or(0);
        anyhow::ensure!(
            final_index == events.len() as u64,
            "I6 violated: final_index {final_index} for {} lines",
            events.len()
        );
        anyhow::ensure!(
            printed == final_index,
            "I5 violated: printed {printed} of {final_index}"
        );
        report.push(format!(
            "I5 client: printed 1..={final_index} once, in order, exit {}",
            follower.exit_code().unwrap_or(-1)
        ));
        report.push(format!(
            "I6 completion: SUCCEEDED with final_index {final_index}"
        ));
        Ok(report)
    }

    async fn write(
        &self,
        http: &reqwest::Client,
        id: &str,
        batch: &[(i64, String)],
    ) -> anyhow::Result<()> {
        match &self.sink {
            Sink::Local => {
                let events: Vec<_> = batch
                    .iter()
                    .map(|(t, m)| json!({"timestamp": t, "message": m}))
                    .collect();
                let r = http
                    .post(format!("{}/local/v1/streams/{id}/events", self.api_url))
                    .header("X-API-Key", &self.api_key)
                    .json(&json!({ "events": events }))
                    .send()
                    .await?;
                let status = r.status();
                anyhow::ensure!(
                    status.is_success(),
                    "writing lines failed ({status}): {}",
                    r.text().await?
                );
            }
            Sink::CloudWatch {
                client,
                group,
                stream_template,
            } => {
                let stream = stream_template.replace("{execution_id}", id);
                let _ = client
                    .create_log_stream()
                    .log_group_name(group)
                    .log_stream_name(&stream)
                    .send()
                    .await;
                let mut sorted = batch.to_vec();
                sorted.sort();
                let events = sorted
                    .iter()
                    .map(|(t, m)| {
                        aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                            .timestamp(*t)
                            .message(m)
                            .build()
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                client
                    .put_log_events()
                    .log_group_name(group)
                    .log_stream_name(&stream)
                    .set_log_events(Some(events))
                    .send()
                    .await
                    .context("PutLogEvents into the runner log group")?;
            }
        }
        Ok(())
    }

    async fn page(
        &self,
        http: &reqwest::Client,
        id: &str,
        since: u64,
    ) -> anyhow::Result<LogsResponse> {
        let r = http
            .get(format!(
                "{}/api/v1/executions/{id}/logs?since_index={since}",
                self.api_url
            ))
            .header("X-API-Key", &self.api_key)
            .send()
            .await?;
        let status = r.status();
        let body = r.text().await?;
        anyhow::ensure!(status.is_success(), "GET logs answered {status}: {body}");
        Ok(serde_json::from_str(&body)?)
    }

    async fn read_all(
        &self,
        http: &reqwest::Client,
        id: &str,
    ) -> anyhow::Result<Vec<runvoy_core::LogEvent>> {
        let mut out = Vec::new();
        loop {
            let page = match self.page(http, id, out.len() as u64).await {
                Ok(p) => p,
                Err(e) if e.to_string().contains("404") => return Ok(out),
                Err(e) => return Err(e),
            };
            let more = page.has_more;
            out.extend(page.events);
            if !more {
                return Ok(out);
            }
        }
    }
}
