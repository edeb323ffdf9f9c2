//! The dense page format: a logs page a client asks for with `Accept:
//! application/vnd.runvoy.lines.v2` instead of the JSON of spec §4.1.2 (the format: spec §4.3), for draining a backlog at
//! the speed of the pipe it goes to.
//!
//! The body is the page's events in runs, in index order, then the page's JSON without its
//! events (`"events":[]`, every other field as in the JSON page) on the last line:
//!
//! ```text
//! 3 26 17
//! 1700000000000 5
//! +1 9
//! +0 0
//! hello
//! two
//! lines
//!
//! {"execution_id":"abc","status":"RUNNING","events":[],"last_index":3,"has_more":false,…}
//! ```
//!
//! A run is a header line (how many events, then the bytes of its heads and of its messages,
//! in decimal), the heads (one line per event: its timestamp in ms and its message's length in
//! bytes), then the messages, each followed by a newline. The messages of a run are therefore
//! the bytes a plain `runvoy logs` prints for it, and a client writes them in one call. A run's
//! first timestamp is written whole; a later one may be written as `+` and its difference from
//! the one before (`+0`, `+12`, `+-3`), a few bytes instead of thirteen. Framing
//! a run ([`parse_run`]) reads its heads, a compact pass, and checks them against the messages,
//! so a damaged run is refused whatever prints it; the records are walked again only for a line
//! printed on its own (with its index or timestamp, or made visible on a terminal).
//!
//! The indexes are implicit: the events are contiguous and end at `last_index`. The JSON comes
//! last so that a server appends it to the runs it read, without moving them (JSON holds no
//! raw newline and starts with `{`, a run with a digit). Event ids are not carried (the JSON
//! page has them). The body is UTF-8 text, so it travels unchanged through a Lambda proxy
//! response. A server may answer JSON anyway (an older server, or a page holding a message
//! that travels as base64); the `Content-Type` says which. The unversioned type of the first
//! format (events one by one) is no longer answered: a client asking for it gets JSON.

mod framing;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

pub use framing::{Record, Records, Run, parse_run};
pub use reader::{LinesPage, LinesReader, events_of};
pub use writer::{RunBuilder, push_part, push_run};

use crate::model::LogEvent;
use crate::wire::LogsResponse;

/// The media type of the dense format, asked for in `Accept` and answered in `Content-Type`.
pub const LINES_CONTENT_TYPE: &str = "application/vnd.runvoy.lines.v2";

/// Whether a request's `Accept` header asks for the dense format (named, and not with `q=0`).
pub fn accepts_lines(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|t| {
            let mut parts = t.split(';').map(str::trim);
            parts.next() == Some(LINES_CONTENT_TYPE)
                && !parts.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f64>().ok())
                        .is_some_and(|q| q <= 0.0)
                })
        })
    })
}

/// Whether `events` can go in a dense page within the bound its JSON page was read with: a
/// message that travels as base64 in JSON (it would grow the most when escaped) cannot.
pub fn fits_lines(events: &[LogEvent]) -> bool {
    !events.iter().any(LogEvent::travels_base64)
}

/// The dense body of `runs` (already encoded, as a store keeps them) and `page` (its events
/// left out). An error when the runs are not UTF-8 text, which only a damaged store yields.
pub fn body(page: &LogsResponse, mut runs: Vec<u8>) -> Result<String, String> {
    serde_json::to_writer(&mut runs, page).expect("response bodies serialize");
    runs.push(b'\n');
    String::from_utf8(runs).map_err(|e| {
        format!(
            "stored lines of {} are not UTF-8 text (at byte {}): the store is damaged",
            page.execution_id,
            e.utf8_error().valid_up_to()
        )
    })
}

/// The dense body of `page` (its events left out) with `events` (contiguous) as one run.
pub fn render(page: &LogsResponse, events: &[LogEvent]) -> String {
    let mut run = RunBuilder::default();
    for e in events {
        run.push(e.timestamp, e.message.as_bytes());
    }
    let mut out = Vec::with_capacity(run.encoded_len() + 1024);
    run.append_to(&mut out);
    body(page, out).expect("messages are UTF-8 strings")
}
