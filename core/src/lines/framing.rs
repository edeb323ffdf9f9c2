//! Framing runs: where a run's heads and messages lie in a body ([`Run`], [`parse_run`]), every
//! head checked against the messages, and its events read back one by one ([`Records`]).

/// One run of a body: which of the page's events it holds and where its parts lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// The page's event it starts with (0 for the first).
    pub first: usize,
    pub count: usize,
    pub(super) heads: usize,
    pub(super) messages: usize,
    pub(super) end: usize,
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
    pub(super) head: usize,
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
    pub(super) fn heads_agree(&self, body: &[u8]) -> bool {
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
    pub(super) fn records_agree(&self, body: &[u8]) -> bool {
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
