//! The dense page format: a logs page a client asks for with `Accept: application/vnd.runvoy.lines`
//! instead of the JSON of spec §4, for draining a backlog at the speed of the pipe it goes to.
//!
//! The body is one record per event, in index order, then the page's JSON without its events
//! (`"events":[]`, every other field as in the JSON page) on the last line:
//!
//! ```text
//! 1700000000000 5
//! hello
//! 1700000000001 12
//! two
//! lines
//! {"execution_id":"abc","status":"RUNNING","events":[],"last_index":2,"has_more":false,…}
//! ```
//!
//! A record is the timestamp (ms) and the message's length in bytes, in decimal, then the message
//! itself and a newline. The indexes are implicit: the records are contiguous and end at
//! `last_index`. The JSON comes last so that a server appends it to the records it read, without
//! moving them (JSON holds no raw newline, so the last line is always the JSON). Event ids are not carried (the JSON page has them). The body is UTF-8 text, so it
//! travels unchanged through a Lambda proxy response. A server may answer JSON anyway (an older
//! server, or a page holding a message that travels as base64); the `Content-Type` says which.

use crate::model::LogEvent;
use crate::wire::LogsResponse;

/// The media type of the dense format, asked for in `Accept` and answered in `Content-Type`.
pub const LINES_CONTENT_TYPE: &str = "application/vnd.runvoy.lines";

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

/// The dense body of `records` (already dense) and `page` (its events left out).
pub fn body(page: &LogsResponse, mut records: Vec<u8>) -> String {
    serde_json::to_writer(&mut records, page).expect("response bodies serialize");
    records.push(b'\n');
    String::from_utf8(records).expect("JSON and UTF-8 messages are UTF-8")
}

/// The dense body of `page` (its events left out) with `events` as its records.
pub fn render(page: &LogsResponse, events: &[LogEvent]) -> String {
    let mut records =
        Vec::with_capacity(events.iter().map(|e| e.message.len() + 24).sum::<usize>() + 1024);
    for e in events {
        push_record(&mut records, e.timestamp, e.message.as_bytes());
    }
    body(page, records)
}

/// Appends one record. A message is UTF-8 text (a [`LogEvent`]'s `String`), so the body is too.
pub fn push_record(out: &mut Vec<u8>, timestamp: i64, message: &[u8]) {
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(digits.format(timestamp).as_bytes());
    out.push(b' ');
    out.extend_from_slice(digits.format(message.len()).as_bytes());
    out.push(b'\n');
    out.extend_from_slice(message);
    out.push(b'\n');
}

/// One record of a parsed dense page: where it starts and where its message lies in the body.
/// Its timestamp is read when asked for ([`Record::timestamp`]): summing its digits is a chain
/// of multiplications that plain output does not need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    head: usize,
    pub start: usize,
    pub len: usize,
}

impl Record {
    /// The record's timestamp, from the body it was parsed from.
    pub fn timestamp(&self, body: &[u8]) -> i64 {
        // Checked when the record was parsed.
        digits(body, self.head, true).map_or(0, |(t, _)| t)
    }
}

/// A dense page as received: the body, kept whole, and where each message lies in it (no copy
/// per line).
#[derive(Debug, Clone)]
pub struct LinesPage<B> {
    /// Every field of the page but its events (`events` is empty).
    pub meta: LogsResponse,
    body: B,
    records: Vec<Record>,
}

/// Parses a dense body as it arrives: [`LinesReader::feed`] after each chunk (the records
/// are read while the bytes are fresh in the cache), [`LinesReader::finish`] at the end.
#[derive(Debug, Default)]
pub struct LinesReader {
    records: Vec<Record>,
    at: usize,
}

impl LinesReader {
    /// Reads the complete records of `received` (the body so far) not read yet. A record is
    /// known by its first bytes, so one cut by the end of `received` is read on a later call.
    pub fn feed(&mut self, received: &[u8]) {
        while let Some(record) = parse_record(received, self.at) {
            self.at = record.start + record.len + 1;
            self.records.push(record);
        }
    }

    /// The page, once `body` is whole: what follows the records must be the JSON line.
    pub fn finish<B: AsRef<[u8]>>(mut self, body: B) -> Result<LinesPage<B>, String> {
        self.feed(body.as_ref());
        let rest = &body.as_ref()[self.at..];
        let Some((b'\n', line)) = rest.split_last() else {
            return Err(format!(
                "a dense page does not end with its JSON line after record {}",
                self.records.len()
            ));
        };
        let meta: LogsResponse = serde_json::from_slice(line).map_err(|e| {
            format!(
                "after record {}, a dense page holds no record and no logs page: {e}",
                self.records.len()
            )
        })?;
        if !meta.events.is_empty() {
            return Err("a dense page's JSON line carries events".into());
        }
        if self.records.len() as u64 > meta.last_index {
            return Err("a dense page holds more records than its last_index allows".into());
        }
        Ok(LinesPage {
            meta,
            body,
            records: self.records,
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

    /// Every field but the events.
    pub fn into_meta(self) -> LogsResponse {
        self.meta
    }

    /// Index of the first record (`last_index + 1` when there are none).
    pub fn first_index(&self) -> u64 {
        // `parse` checked that the records are no more than `last_index`.
        (self.meta.last_index - self.records.len() as u64).wrapping_add(1)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The timestamp of `record`.
    pub fn timestamp(&self, record: &Record) -> i64 {
        record.timestamp(self.body.as_ref())
    }

    /// The message bytes of `record` followed by its newline: the line as printed raw.
    pub fn line(&self, record: &Record) -> &[u8] {
        &self.body.as_ref()[record.start..record.start + record.len + 1]
    }

    /// The message bytes of `record`.
    pub fn message(&self, record: &Record) -> &[u8] {
        &self.body.as_ref()[record.start..record.start + record.len]
    }
}

/// The record starting at `at` in `bytes`: its timestamp and where its message lies, checked
/// to end with a newline. `None` when what is there is not a record.
pub fn parse_record(bytes: &[u8], head: usize) -> Option<Record> {
    let at = skip_digits(bytes, head)?;
    if bytes.get(at) != Some(&b' ') {
        return None;
    }
    let (len, at) = digits(bytes, at + 1, false)?;
    if bytes.get(at) != Some(&b'\n') {
        return None;
    }
    let start = at + 1;
    let len = usize::try_from(len).ok()?;
    let end = start.checked_add(len)?;
    if bytes.get(end) != Some(&b'\n') {
        return None;
    }
    Some(Record { head, start, len })
}

/// Where the timestamp at `at` ends, checked to be one without reading its value (up to 18
/// digits always are; 19 are read to check they fit).
#[inline]
fn skip_digits(bytes: &[u8], at: usize) -> Option<usize> {
    let from = at + usize::from(bytes.get(at) == Some(&b'-'));
    let mut end = from;
    while end - from < 19 && bytes.get(end).is_some_and(u8::is_ascii_digit) {
        end += 1;
    }
    match end - from {
        0 => None,
        1..=18 => Some(end),
        _ => digits(bytes, at, true).map(|(_, end)| end),
    }
}

/// A decimal number at `at` (with a leading `-` when `signed`), and where it ends. Up to 18
/// digits cannot overflow an `i64` and are summed without checks; 19 are parsed with them.
#[inline]
fn digits(bytes: &[u8], at: usize, signed: bool) -> Option<(i64, usize)> {
    let negative = signed && bytes.get(at) == Some(&b'-');
    let from = at + usize::from(negative);
    let mut end = from;
    let mut n: i64 = 0;
    while let Some(&b) = bytes.get(end) {
        let d = b.wrapping_sub(b'0');
        if d > 9 || end - from == 19 {
            break;
        }
        n = n.wrapping_mul(10).wrapping_add(i64::from(d));
        end += 1;
    }
    match end - from {
        0 => None,
        1..=18 => Some((if negative { -n } else { n }, end)),
        _ => {
            let text = std::str::from_utf8(&bytes[at..end]).ok()?;
            Some((text.parse().ok()?, end))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    fn page(last_index: u64) -> LogsResponse {
        LogsResponse {
            execution_id: "abc".into(),
            status: Status::Running,
            events: Vec::new(),
            last_index,
            has_more: true,
            final_index: None,
            exit_code: None,
            websocket_url: Some("ws://x/ws?token=t".into()),
        }
    }

    fn event(index: u64, message: &str) -> LogEvent {
        LogEvent {
            index,
            event_id: format!("id-{index}"),
            timestamp: 1_700_000_000_000 + index as i64,
            message: message.into(),
        }
    }

    #[test]
    fn a_page_reads_back_as_it_was_written() {
        let events = vec![
            event(8, "plain"),
            event(9, "two\nlines and a \"quote\""),
            event(10, ""),
            event(11, "é 日本 🙂 \u{1b}[1m"),
        ];
        let body = render(&page(11), &events);
        let parsed = LinesPage::parse(body.as_bytes()).unwrap();
        assert_eq!(parsed.meta, page(11));
        assert_eq!(parsed.first_index(), 8);
        let got: Vec<(i64, &[u8])> = parsed
            .records()
            .iter()
            .map(|r| (parsed.timestamp(r), parsed.message(r)))
            .collect();
        let want: Vec<(i64, &[u8])> = events
            .iter()
            .map(|e| (e.timestamp, e.message.as_bytes()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_page_fed_in_pieces_reads_as_a_whole() {
        let events: Vec<LogEvent> = (1..=40)
            .map(|i| event(i, &"x\ny ".repeat(i as usize)))
            .collect();
        let body = render(&page(40), &events).into_bytes();
        let whole = LinesPage::parse(body.as_slice()).unwrap();
        for piece in [1, 7, 64, 1000] {
            let mut reader = LinesReader::default();
            for end in (piece..body.len()).step_by(piece) {
                reader.feed(&body[..end]);
            }
            let fed = reader.finish(body.as_slice()).unwrap();
            assert_eq!(fed.records(), whole.records(), "pieces of {piece}");
            assert_eq!(fed.meta, whole.meta);
        }
    }

    #[test]
    fn an_empty_page_has_its_header_only() {
        let body = render(&page(5), &[]);
        assert_eq!(body.lines().count(), 1);
        let parsed = LinesPage::parse(body.as_bytes()).unwrap();
        assert!(parsed.is_empty());
        assert_eq!(parsed.first_index(), 6);
    }

    #[test]
    fn a_damaged_body_is_refused_not_misread() {
        let body = render(&page(2), &[event(1, "one"), event(2, "two")]);
        for cut in [body.len() - 1, body.len() - 3, body.find('\n').unwrap() + 1] {
            assert!(
                LinesPage::parse(&body.as_bytes()[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        assert_eq!(
            parse_record(b"-5 3\nabc\n", 0).map(|r| r.timestamp(b"-5 3\nabc\n")),
            Some(-5)
        );
        for t in [i64::MIN, i64::MAX, -1, 0, 1_700_000_000_000_000_000] {
            let mut out = Vec::new();
            push_record(&mut out, t, b"abc");
            assert_eq!(
                parse_record(&out, 0).map(|r| r.timestamp(&out)),
                Some(t),
                "{t}"
            );
        }
        assert!(parse_record(b"12345678901234567890 3\nabc\n", 0).is_none());
        assert!(parse_record(b"9223372036854775808 3\nabc\n", 0).is_none());
        assert!(parse_record(b"5 \nabc\n", 0).is_none());
        let wrong_length = body.replacen(" 3\none", " 4\none", 1);
        assert!(LinesPage::parse(wrong_length.as_bytes()).is_err());
        let top = LinesPage::parse(render(&page(u64::MAX), &[event(9, "x")]).into_bytes()).unwrap();
        assert_eq!(top.first_index(), u64::MAX);
        let more_than_promised = render(&page(1), &[event(1, "one"), event(2, "two")]);
        assert!(LinesPage::parse(more_than_promised.as_bytes()).is_err());
        assert!(LinesPage::parse(&b"not json\n"[..]).is_err());
    }

    #[test]
    fn accept_headers_are_matched_by_media_type() {
        assert!(accepts_lines(Some(LINES_CONTENT_TYPE)));
        assert!(accepts_lines(Some(
            "application/json;q=0.5, application/vnd.runvoy.lines"
        )));
        assert!(!accepts_lines(Some("application/json")));
        assert!(!accepts_lines(Some("application/vnd.runvoy.lines;q=0")));
        assert!(accepts_lines(Some("application/vnd.runvoy.lines; q=0.1")));
        assert!(!accepts_lines(None));
    }
}
