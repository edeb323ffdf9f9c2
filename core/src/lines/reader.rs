//! Reading dense pages: a body framed run by run as it arrives ([`LinesReader`]), and the page it
//! makes once whole ([`LinesPage`]), its lines left where they are in the body.

use super::framing::{Record, Run, parse_run};
use crate::wire::LogsResponse;

/// The events of `bytes`, runs without a JSON line (what a store appends to a page): timestamp
/// and message each.
pub fn events_of(bytes: &[u8]) -> Result<Vec<(i64, &[u8])>, String> {
    let mut reader = LinesReader::default();
    reader.feed(bytes);
    if let Some(e) = reader.broken {
        return Err(e);
    }
    if reader.at != bytes.len() {
        return Err(format!("{} bytes after the runs", bytes.len() - reader.at));
    }
    Ok(reader
        .runs
        .iter()
        .flat_map(|run| run.records(bytes))
        .map(|r| (r.timestamp, &bytes[r.start..r.start + r.len]))
        .collect())
}

/// A dense page as received: the body, kept whole, and where each run lies in it (no copy per
/// line).
#[derive(Debug, Clone)]
pub struct LinesPage<B> {
    /// Every field of the page but its events (`events` is empty).
    pub meta: LogsResponse,
    body: B,
    runs: Vec<Run>,
    count: usize,
}

/// Parses a dense body as it arrives: [`LinesReader::feed`] after each chunk (each run is
/// framed once it is whole), [`LinesReader::finish`] at the end.
#[derive(Debug, Default)]
pub struct LinesReader {
    runs: Vec<Run>,
    count: usize,
    at: usize,
    broken: Option<String>,
}

impl LinesReader {
    /// Frames the whole runs of `received` (the body so far) not framed yet. A run cut by the
    /// end of `received` is framed on a later call.
    pub fn feed(&mut self, received: &[u8]) {
        while self.broken.is_none() {
            match parse_run(received, self.at, self.count) {
                Ok(Some(run)) => {
                    self.at = run.end;
                    self.count += run.count;
                    self.runs.push(run);
                }
                Ok(None) => break,
                Err(e) => self.broken = Some(e),
            }
        }
    }

    /// The page, once `body` is whole: what follows the runs must be the JSON line.
    pub fn finish<B: AsRef<[u8]>>(mut self, body: B) -> Result<LinesPage<B>, String> {
        self.feed(body.as_ref());
        if let Some(e) = self.broken {
            return Err(e);
        }
        let rest = &body.as_ref()[self.at..];
        let Some((b'\n', line)) = rest.split_last() else {
            return Err(format!(
                "a dense page does not end with its JSON line after event {}",
                self.count
            ));
        };
        let meta: LogsResponse = serde_json::from_slice(line).map_err(|e| {
            format!(
                "after event {}, a dense page holds no run and no logs page: {e}",
                self.count
            )
        })?;
        if !meta.events.is_empty() {
            return Err("a dense page's JSON line carries events".into());
        }
        if self.count as u64 > meta.last_index {
            return Err("a dense page holds more events than its last_index allows".into());
        }
        Ok(LinesPage {
            meta,
            body,
            runs: self.runs,
            count: self.count,
        })
    }
}

impl<B: AsRef<[u8]>> LinesPage<B> {
    /// Parses a dense body. Anything that is not exactly the format is an error saying where.
    pub fn parse(body: B) -> Result<LinesPage<B>, String> {
        LinesReader::default().finish(body)
    }

    /// Every field but the events, and the body (to reuse its buffer).
    pub fn into_parts(self) -> (LogsResponse, B) {
        (self.meta, self.body)
    }

    /// Index of the first event (`last_index + 1` when there are none).
    pub fn first_index(&self) -> u64 {
        // `finish` checked that the events are no more than `last_index`.
        (self.meta.last_index - self.count as u64).wrapping_add(1)
    }

    /// Events in the page.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    pub fn body(&self) -> &[u8] {
        self.body.as_ref()
    }

    /// Every event of the page, in order.
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        let body = self.body.as_ref();
        self.runs.iter().flat_map(move |run| run.records(body))
    }

    /// The timestamp of `record`.
    pub fn timestamp(&self, record: &Record) -> i64 {
        record.timestamp
    }

    /// The message bytes of `record`.
    pub fn message(&self, record: &Record) -> &[u8] {
        &self.body.as_ref()[record.start..record.start + record.len]
    }
}
