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

/// A run being built: its heads and its messages, each in their own buffer.
#[derive(Debug, Default, Clone)]
pub struct RunBuilder {
    heads: Vec<u8>,
    messages: Vec<u8>,
    count: usize,
    /// The timestamp of the last event pushed.
    previous: Option<i64>,
}

impl RunBuilder {
    /// Adds one event. A message is UTF-8 text (a [`LogEvent`]'s `String`), so the body is too.
    pub fn push(&mut self, timestamp: i64, message: &[u8]) {
        push_head(&mut self.heads, self.previous, timestamp, message.len());
        self.previous = Some(timestamp);
        self.messages.extend_from_slice(message);
        self.messages.push(b'\n');
        self.count += 1;
    }

    /// Events pushed.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The bytes [`RunBuilder::append_to`] appends.
    pub fn encoded_len(&self) -> usize {
        if self.count == 0 {
            return 0;
        }
        header_len(self.count, self.heads.len(), self.messages.len())
            + self.heads.len()
            + self.messages.len()
    }

    /// The run as a body carries it (empty when it is).
    pub fn encoded(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.append_to(&mut out);
        out
    }

    /// Appends the run as a body carries it (nothing when it is empty).
    pub fn append_to(&self, out: &mut Vec<u8>) {
        push_run(out, self.count, &self.heads, &self.messages);
    }
}

/// Appends the head of an event of `len` bytes at `timestamp`, relative to `previous` (the
/// timestamp of the head before it in the run) when there is one and the difference fits.
fn push_head(heads: &mut Vec<u8>, previous: Option<i64>, timestamp: i64, len: usize) {
    let mut digits = itoa::Buffer::new();
    match previous.and_then(|p| timestamp.checked_sub(p)) {
        Some(delta) => {
            heads.push(b'+');
            heads.extend_from_slice(digits.format(delta).as_bytes());
        }
        None => heads.extend_from_slice(digits.format(timestamp).as_bytes()),
    }
    heads.push(b' ');
    heads.extend_from_slice(digits.format(len).as_bytes());
    heads.push(b'\n');
}

/// Appends `records` (contiguous records of one run framed in `body`) as a run of their own;
/// `heads_to` is where the head after the last of them starts (or where the run's heads end).
/// The first one's timestamp is written whole, since the head it was relative to stays out.
pub fn push_part(out: &mut Vec<u8>, body: &[u8], records: &[Record], heads_to: usize) {
    let (Some(a), Some(z)) = (records.first(), records.last()) else {
        return;
    };
    let mut heads = Vec::with_capacity(heads_to - a.head + 24);
    push_head(&mut heads, None, a.timestamp, a.len);
    if let Some(b) = records.get(1) {
        heads.extend_from_slice(&body[b.head..heads_to]);
    }
    push_run(
        out,
        records.len(),
        &heads,
        &body[a.start..z.start + z.len + 1],
    );
}

/// Appends a run of `count` events whose heads and messages are already encoded (nothing
/// when `count` is 0).
pub fn push_run(out: &mut Vec<u8>, count: usize, heads: &[u8], messages: &[u8]) {
    if count == 0 {
        return;
    }
    let mut digits = itoa::Buffer::new();
    out.reserve(header_len(count, heads.len(), messages.len()) + heads.len() + messages.len());
    for (n, sep) in [(count, b' '), (heads.len(), b' '), (messages.len(), b'\n')] {
        out.extend_from_slice(digits.format(n).as_bytes());
        out.push(sep);
    }
    out.extend_from_slice(heads);
    out.extend_from_slice(messages);
}

/// The bytes of a run's header line.
fn header_len(count: usize, heads: usize, messages: usize) -> usize {
    let mut digits = itoa::Buffer::new();
    [count, heads, messages]
        .iter()
        .map(|n| digits.format(*n).len() + 1)
        .sum()
}

/// One run of a body: which of the page's events it holds and where its parts lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// The page's event it starts with (0 for the first).
    pub first: usize,
    pub count: usize,
    heads: usize,
    messages: usize,
    end: usize,
}

impl Run {
    /// The run's messages, each followed by its newline: the run printed plain.
    pub fn messages<'a>(&self, body: &'a [u8]) -> &'a [u8] {
        &body[self.messages..self.end]
    }

    /// Each event of the run, from the body it was framed in (where every head was checked).
    pub fn records<'a>(&self, body: &'a [u8]) -> Records<'a> {
        Records {
            body,
            head: self.heads,
            heads_end: self.messages,
            start: self.messages,
            end: self.end,
            timestamp: None,
        }
    }
}

/// The events of a run, in order ([`Run::records`]). It ends early at anything that is not a
/// head, or a message that does not end with its newline inside the run (which framing
/// refuses).
#[derive(Debug, Clone)]
pub struct Records<'a> {
    body: &'a [u8],
    /// The next head, and where the heads end.
    head: usize,
    heads_end: usize,
    /// The next message, and where the messages end.
    start: usize,
    end: usize,
    /// The timestamp of the record before (the next may be relative to it).
    timestamp: Option<i64>,
}

impl Iterator for Records<'_> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        if self.head >= self.heads_end {
            return None;
        }
        let body = self.body;
        let (timestamp, at) = match body.get(self.head) {
            Some(b'+') => {
                let (delta, at) = digits(body, self.head + 1, true)?;
                (self.timestamp?.checked_add(delta)?, at)
            }
            _ => digits(body, self.head, true)?,
        };
        if body.get(at) != Some(&b' ') {
            return None;
        }
        let (len, at) = digits(body, at + 1, false)?;
        if at >= self.heads_end || body[at] != b'\n' {
            return None;
        }
        let len = usize::try_from(len).ok()?;
        let newline = self.start.checked_add(len)?;
        if newline >= self.end || body[newline] != b'\n' {
            return None;
        }
        let record = Record {
            head: self.head,
            timestamp,
            start: self.start,
            len,
        };
        (self.head, self.start, self.timestamp) = (at + 1, newline + 1, Some(timestamp));
        Some(record)
    }
}

/// One event of a framed run: its timestamp, where its head starts and where its message lies
/// in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    head: usize,
    pub timestamp: i64,
    pub start: usize,
    pub len: usize,
}

impl Record {
    /// Where its head starts in the body.
    pub fn head(&self) -> usize {
        self.head
    }
}

/// The run at `at` of `bytes`, the page's events before it being `first`: `Ok(None)` when
/// `bytes` ends before the run does, or when what is at `at` is not a run (the JSON line, or
/// the end). Every head is read and checked against the messages; anything else is an error.
pub fn parse_run(bytes: &[u8], at: usize, first: usize) -> Result<Option<Run>, String> {
    if !bytes.get(at).is_some_and(u8::is_ascii_digit) {
        return Ok(None);
    }
    let damaged = || format!("the run after event {first} of a dense page is damaged");
    let mut fields = [0usize; 3];
    let mut cursor = at;
    for (i, sep) in [b' ', b' ', b'\n'].into_iter().enumerate() {
        let Some((n, end)) = digits(bytes, cursor, false) else {
            return if cursor >= bytes.len() {
                Ok(None)
            } else {
                Err(damaged())
            };
        };
        match bytes.get(end) {
            None => return Ok(None),
            Some(b) if *b != sep => return Err(damaged()),
            Some(_) => {}
        }
        fields[i] = usize::try_from(n).map_err(|_| damaged())?;
        cursor = end + 1;
    }
    let [count, heads_len, messages_len] = fields;
    let heads = cursor;
    let messages = heads.checked_add(heads_len).ok_or_else(damaged)?;
    let end = messages.checked_add(messages_len).ok_or_else(damaged)?;
    if end > bytes.len() {
        return Ok(None);
    }
    let run = Run {
        first,
        count,
        heads,
        messages,
        end,
    };
    // Every head read, and its message found where the lengths before it say, ending with its
    // newline: a run framed here is read the same by anyone.
    if count == 0 || !run.heads_agree(bytes) {
        return Err(damaged());
    }
    Ok(Some(run))
}

impl Run {
    /// Whether its heads, read as [`Records`] reads them, are `count` heads that describe its
    /// messages exactly. The same answer as walking [`Run::records`], in about half the time:
    /// no early exit per field, and numbers of more than 18 digits (which could overflow) left
    /// to the walk.
    fn heads_agree(&self, body: &[u8]) -> bool {
        let (Some(heads), Some(messages)) = (
            body.get(self.heads..self.messages),
            body.get(self.messages..self.end),
        ) else {
            return false;
        };
        let (mut at, mut start, mut read, mut timestamp) = (0, 0usize, 0, 0i64);
        let (mut ok, mut long) = (true, false);
        // Every head is read to the end whatever the ones before were (`ok` collects the
        // verdict): one branch less per field.
        let end = heads.len();
        while at < end {
            // Where the number starts is found by branches, which are predicted (a head after
            // a run's first is relative, and a timestamp seldom goes back), not computed from
            // the bytes: the next head's reading need not wait for this one's.
            let relative = heads[at] == b'+';
            if relative {
                at += 1;
            } else {
                at = unusual(at);
            }
            let negative = at < end && heads[at] == b'-';
            if negative {
                at = unusual(at + 1);
            }
            let (value, n) = unchecked_digits(heads, &mut at);
            ok &= (n > 0) & (at < end && heads[at] == b' ') & ((read > 0) | !relative);
            at += 1;
            let (len, m) = unchecked_digits(heads, &mut at);
            ok &= (m > 0) & (at < end && heads[at] == b'\n');
            at += 1;
            long |= (n > 18) | (m > 18);
            let value = if negative {
                value.wrapping_neg()
            } else {
                value
            };
            let overflow;
            (timestamp, overflow) = if relative {
                timestamp.overflowing_add(value)
            } else {
                (value, false)
            };
            let newline = start.wrapping_add(len as usize);
            ok &= !overflow & (newline < messages.len() && messages[newline] == b'\n');
            (start, read) = (newline.wrapping_add(1), read + 1);
        }
        if long {
            // Numbers that could overflow: checked the slow way.
            return self.records_agree(body);
        }
        ok && read == self.count && start == messages.len()
    }

    /// [`Run::heads_agree`] by walking [`Run::records`]: every head read, in number, and the
    /// last message ending where the run does.
    fn records_agree(&self, body: &[u8]) -> bool {
        let mut records = self.records(body);
        let read = records.by_ref().count();
        read == self.count && records.head == self.messages && records.start == self.end
    }
}

/// `at`, through a call the compiler cannot see through or inline: the branch to it stays a
/// branch (see [`Run::heads_agree`]).
#[cold]
#[inline(never)]
fn unusual(at: usize) -> usize {
    std::hint::black_box(at)
}

/// The decimal digits at `at` as a number (wrapping past 18 digits), and how many there were;
/// `at` moves past them.
#[inline(always)]
fn unchecked_digits(bytes: &[u8], at: &mut usize) -> (i64, usize) {
    let from = *at;
    let mut n: i64 = 0;
    let mut i = from;
    while i < bytes.len() && bytes[i].wrapping_sub(b'0') < 10 {
        n = n.wrapping_mul(10).wrapping_add(i64::from(bytes[i] - b'0'));
        i += 1;
    }
    *at = i;
    (n, i - from)
}

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

/// A decimal number at `at` (with a leading `-` when `signed`), and where it ends. Up to 18
/// digits cannot overflow an `i64` and are summed without checks; 19 are parsed with them.
#[inline(always)]
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

    /// A body of `events` in runs of `per_run`, as a store that packs them would send it.
    fn in_runs(meta: &LogsResponse, events: &[LogEvent], per_run: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in events.chunks(per_run) {
            let mut run = RunBuilder::default();
            for e in chunk {
                run.push(e.timestamp, e.message.as_bytes());
            }
            let before = out.len();
            run.append_to(&mut out);
            assert_eq!(out.len() - before, run.encoded_len());
        }
        body(meta, out).unwrap().into_bytes()
    }

    fn read_back(parsed: &LinesPage<&[u8]>) -> Vec<(i64, Vec<u8>)> {
        parsed
            .records()
            .map(|r| (parsed.timestamp(&r), parsed.message(&r).to_vec()))
            .collect()
    }

    fn expected(events: &[LogEvent]) -> Vec<(i64, Vec<u8>)> {
        events
            .iter()
            .map(|e| (e.timestamp, e.message.as_bytes().to_vec()))
            .collect()
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
        assert_eq!(parsed.len(), 4);
        assert_eq!(read_back(&parsed), expected(&events));
        // The run's messages are the lines as printed plain, in one piece.
        assert_eq!(parsed.runs().len(), 1);
        let plain: String = events.iter().map(|e| format!("{}\n", e.message)).collect();
        assert_eq!(parsed.runs()[0].messages(parsed.body()), plain.as_bytes());
        for per_run in [1, 2, 3] {
            let body = in_runs(&page(11), &events, per_run);
            let parsed = LinesPage::parse(body.as_slice()).unwrap();
            assert_eq!(parsed.runs().len(), events.len().div_ceil(per_run));
            assert_eq!(read_back(&parsed), expected(&events), "runs of {per_run}");
            let firsts: Vec<usize> = parsed.runs().iter().map(|r| r.first).collect();
            assert_eq!(firsts, (0..4).step_by(per_run).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_page_fed_in_pieces_reads_as_a_whole() {
        let events: Vec<LogEvent> = (1..=40)
            .map(|i| event(i, &"x\ny ".repeat(i as usize)))
            .collect();
        let body = in_runs(&page(40), &events, 7);
        let whole = LinesPage::parse(body.as_slice()).unwrap();
        for piece in [1, 7, 64, 1000] {
            let mut reader = LinesReader::default();
            for end in (piece..body.len()).step_by(piece) {
                reader.feed(&body[..end]);
            }
            let fed = reader.finish(body.as_slice()).unwrap();
            assert_eq!(fed.runs(), whole.runs(), "pieces of {piece}");
            assert_eq!(fed.meta, whole.meta);
        }
        assert_eq!(read_back(&whole), expected(&events));
    }

    #[test]
    fn runs_that_are_not_utf8_are_refused_with_a_sentence() {
        let mut runs = Vec::new();
        push_run(&mut runs, 1, b"5 2\n", b"\xff\xfe\n");
        let e = body(&page(1), runs).unwrap_err();
        assert!(e.contains("not UTF-8") && e.contains("abc"), "{e}");
    }

    #[test]
    fn an_empty_page_has_its_json_line_only() {
        let body = render(&page(5), &[]);
        assert_eq!(body.lines().count(), 1);
        let parsed = LinesPage::parse(body.as_bytes()).unwrap();
        assert!(parsed.is_empty());
        assert_eq!(parsed.first_index(), 6);
    }

    #[test]
    fn a_damaged_body_is_refused_not_misread() {
        let events = [event(1, "one"), event(2, "two")];
        let body = render(&page(2), &events);
        for cut in [body.len() - 1, body.len() - 3, body.find('\n').unwrap() + 1] {
            assert!(
                LinesPage::parse(&body.as_bytes()[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        // Heads whose lengths disagree with the messages, though the heads count right and
        // every part ends with a newline: refused when framed, whatever prints the page.
        for (from, to) in [(" 3\n", " 2\n"), (" 3\n", " 4\n"), (" 3\n", " 9\n")] {
            let wrong_length = body.replacen(from, to, 1);
            assert!(LinesPage::parse(wrong_length.as_bytes()).is_err(), "{to:?}");
        }
        let swapped = body.replacen("one\ntwo", "on\netwo", 1);
        assert!(LinesPage::parse(swapped.as_bytes()).is_err());
        let hostile = b"2 8 4\n0 9\n0 1\na\nb\n{}\n";
        assert!(LinesPage::parse(&hostile[..]).is_err());
        let one_for_two = b"1 4 6\n0 0\nabcde\n{}\n";
        assert!(LinesPage::parse(&one_for_two[..]).is_err());
        // A header announcing more or fewer heads than there are.
        for header in ["3 ", "1 "] {
            let wrong_count = body.replacen("2 ", header, 1);
            assert!(
                LinesPage::parse(wrong_count.as_bytes()).is_err(),
                "{header}"
            );
        }
        assert!(LinesPage::parse(body.replacen("2 ", "0 ", 1).as_bytes()).is_err());
        assert!(LinesPage::parse(body.replacen("2 ", "-2 ", 1).as_bytes()).is_err());
        assert!(LinesPage::parse(&b"99999999999999999999 1 1\n"[..]).is_err());
        assert!(LinesPage::parse(&b"not json\n"[..]).is_err());
        let top = LinesPage::parse(render(&page(u64::MAX), &[event(9, "x")]).into_bytes()).unwrap();
        assert_eq!(top.first_index(), u64::MAX);
        let more_than_promised = render(&page(1), &events);
        assert!(LinesPage::parse(more_than_promised.as_bytes()).is_err());
    }

    #[test]
    fn timestamps_read_back_at_the_edges_of_i64() {
        for t in [i64::MIN, i64::MAX, -1, 0, 1_700_000_000_000_000_000] {
            let mut run = RunBuilder::default();
            run.push(t, b"abc");
            let mut out = Vec::new();
            run.append_to(&mut out);
            assert_eq!(events_of(&out).unwrap(), [(t, &b"abc"[..])], "{t}");
        }
        let too_long = b"1 27 4\n12345678901234567890 3\nabc\n";
        assert!(events_of(too_long).is_err());
        let too_large = b"1 26 4\n9223372036854775808 3\nabc\n";
        assert!(events_of(too_large).is_err());
        assert!(events_of(b"1 4 4\n5 \nabc\n").is_err());
        // Empty numbers, even where an empty message would fit.
        assert!(events_of(b"1 3 1\n5 \n\n").is_err());
        assert!(events_of(b"1 3 1\n 0\n\n").is_err());
        assert!(events_of(b"2 7 2\n5 0\n+ 0\n\n\n").is_err());
        // Differences of 18 digits that add up past i64::MAX (or MIN) at the ninth; eight fit.
        for big in ["999999999999999999", "-999999999999999999"] {
            let run = |differences: usize| {
                let heads = format!("{big} 0\n") + &format!("+{big} 0\n").repeat(differences);
                let count = differences + 1;
                format!(
                    "{count} {} {count}\n{heads}{}",
                    heads.len(),
                    "\n".repeat(count)
                )
            };
            assert!(events_of(run(9).as_bytes()).is_err(), "{big}");
            assert_eq!(events_of(run(8).as_bytes()).unwrap().len(), 9, "{big}");
        }
        // A negative difference brings the sum back: 8e18, 7e18, then 9e18, never past MAX.
        let up = "+999999999999999999 0\n";
        let heads = "999999999999999999 0\n".to_string()
            + &up.repeat(7)
            + "+-999999999999999999 0\n"
            + &up.repeat(2);
        let run = format!("11 {} 11\n{heads}{}", heads.len(), "\n".repeat(11));
        let read = events_of(run.as_bytes()).unwrap();
        assert_eq!(read.last().unwrap().0, 8_999_999_999_999_999_991);
    }

    #[test]
    fn later_timestamps_travel_as_differences_and_read_back_whole() {
        let timestamps = [
            1_700_000_000_000,
            1_700_000_000_000,
            1_700_000_000_007,
            1_699_999_999_990,
            i64::MAX,
            i64::MIN,
            -1,
            0,
        ];
        let mut run = RunBuilder::default();
        for (i, t) in timestamps.iter().enumerate() {
            run.push(*t, format!("line {i}").as_bytes());
        }
        let mut out = Vec::new();
        run.append_to(&mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        // Whole only where the difference does not fit an i64 (MIN after MAX).
        assert!(text.contains("\n+0 6\n+7 6\n+-17 6\n"), "{text}");
        assert!(
            text.contains("\n-9223372036854775808 6\n+9223372036854775807 6\n+1 6\n"),
            "{text}"
        );
        let read: Vec<i64> = events_of(&out).unwrap().iter().map(|(t, _)| *t).collect();
        assert_eq!(read, timestamps);

        // Any stretch of the run, sent as a run of its own, reads back the same.
        let framed = parse_run(&out, 0, 0).unwrap().unwrap();
        let records: Vec<Record> = framed.records(&out).collect();
        let heads_end = records[0].start;
        for from in 0..records.len() {
            for to in from + 1..=records.len() {
                let mut part = Vec::new();
                let heads_to = records.get(to).map_or(heads_end, |r| r.head());
                push_part(&mut part, &out, &records[from..to], heads_to);
                let read: Vec<i64> = events_of(&part).unwrap().iter().map(|(t, _)| *t).collect();
                assert_eq!(read, timestamps[from..to], "{from}..{to}");
            }
        }

        // A run cannot start relative, nor a difference overflow.
        assert!(events_of(b"1 5 2\n+1 1\na\n").is_err());
        assert!(events_of(b"2 27 4\n9223372036854775807 1\n+1 1\na\nb\n").is_err());
        assert!(events_of(b"2 11 4\n5 1\n++1 1\na\nb\n").is_err());
    }

    proptest::proptest! {
        /// Framing's fast check answers as walking every record does, for runs damaged
        /// anywhere: heads, messages, or the count in the header.
        #[test]
        fn the_fast_check_of_heads_agrees_with_walking_them(
            lines in proptest::collection::vec(
                (
                    // Mostly steps of a few digits; now and then one of 18 or 19 (which
                    // the fast check leaves to the walk).
                    proptest::prop_oneof![
                        8 => proptest::sample::select(vec![0i64, 1, -3, 12, 1_700_000_000_000]),
                        1 => proptest::sample::select(vec![i64::MAX, i64::MIN, 999_999_999_999_999_999]),
                    ],
                    proptest::collection::vec(proptest::sample::select(b"ab 7\n".to_vec()), 0..12),
                ),
                1..8,
            ),
            damage in proptest::collection::vec(
                (
                    proptest::num::usize::ANY,
                    proptest::sample::select(b"+-0123456789 \nx".to_vec()),
                    0u8..3,
                ),
                0..4,
            ),
            count_off in -1i64..=1,
            split_off in -2i64..=2,
            tail in proptest::collection::vec(proptest::sample::select(b"+-0123456789 \nx{}".to_vec()), 0..6),
        ) {
            let mut run = RunBuilder::default();
            let mut timestamp = 0i64;
            for (step, message) in &lines {
                timestamp = timestamp.wrapping_add(*step);
                run.push(timestamp, message);
            }
            let mut body = run.encoded();
            let framed = parse_run(&body, 0, 0).unwrap().unwrap();
            proptest::prop_assert!(framed.heads_agree(&body) && framed.records_agree(&body));
            // Damage after the header, the run keeping its bounds: a byte replaced, one taken
            // out (what follows shifts left) or one put in (what follows shifts right), the
            // body keeping its length. Then what follows the run on a page (the next run, the
            // JSON line), and a header whose heads or messages are a little longer or shorter.
            let after_header = framed.heads;
            for (at, byte, how) in damage {
                let at = after_header + at % (body.len() - after_header);
                match how {
                    0 => body[at] = byte,
                    1 => {
                        body.remove(at);
                        body.push(byte);
                    }
                    _ => {
                        body.insert(at, byte);
                        body.pop();
                    }
                }
            }
            body.extend_from_slice(&tail);
            let messages = framed
                .messages
                .saturating_add_signed(split_off as isize)
                .clamp(framed.heads, framed.end);
            let run = Run {
                count: framed.count.saturating_add_signed(count_off as isize),
                messages,
                ..framed
            };
            proptest::prop_assert_eq!(run.heads_agree(&body), run.records_agree(&body));
        }
    }

    #[test]
    fn accept_headers_are_matched_by_media_type() {
        assert!(accepts_lines(Some(LINES_CONTENT_TYPE)));
        assert!(accepts_lines(Some(
            "application/json;q=0.5, application/vnd.runvoy.lines.v2"
        )));
        assert!(!accepts_lines(Some("application/json")));
        assert!(!accepts_lines(Some("application/vnd.runvoy.lines")));
        assert!(!accepts_lines(Some("application/vnd.runvoy.lines.v2;q=0")));
        assert!(accepts_lines(Some(
            "application/vnd.runvoy.lines.v2; q=0.1"
        )));
        assert!(!accepts_lines(None));
    }
}
