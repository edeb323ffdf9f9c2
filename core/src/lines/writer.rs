//! Writing runs: the heads and messages of a run built event by event ([`RunBuilder`]), runs
//! whose parts are already encoded, and a stretch of a framed run sent as a run of its own.

use super::framing::Record;

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
    /// Adds one event. A message is UTF-8 text (a [`LogEvent`](crate::model::LogEvent)'s
    /// `String`), so the body is too.
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
