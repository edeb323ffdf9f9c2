//! stdout carries log lines only: raw messages by default, or NDJSON, optionally with index and
//! timestamp. Output is flushed after every batch of lines the client releases, so a line is
//! never held back waiting for the next one.

use std::io::{BufWriter, Stdout, Write};

use runvoy_core::LogEvent;
use runvoy_core::lines::LinesPage;

use crate::error::CliError;

#[derive(Debug, Clone, Copy, Default)]
pub struct Format {
    pub json: bool,
    pub timestamps: bool,
    pub index: bool,
    /// stdout is a terminal: show control characters visibly (see `terminal`).
    pub terminal_safe: bool,
}

impl Format {
    /// The message alone, unchanged.
    fn plain(&self) -> bool {
        !(self.json || self.timestamps || self.index || self.terminal_safe)
    }
}

#[derive(serde::Serialize)]
struct JsonLine<'a> {
    index: u64,
    event_id: &'a str,
    timestamp: i64,
    message: &'a str,
}

pub struct Printer<W: Write = Stdout> {
    out: BufWriter<W>,
    format: Format,
    scratch: Vec<u8>,
}

impl Printer {
    pub fn new(format: Format) -> Printer {
        Printer::to(std::io::stdout(), format)
    }
}

impl<W: Write> Printer<W> {
    /// A printer writing to `out` instead of stdout.
    pub fn to(out: W, format: Format) -> Printer<W> {
        Printer {
            out: BufWriter::with_capacity(256 * 1024, out),
            format,
            scratch: Vec::new(),
        }
    }

    pub fn print(&mut self, events: &[LogEvent]) -> Result<(), CliError> {
        if events.is_empty() {
            return Ok(());
        }
        for e in events {
            if self.format.json {
                // Always `message`: the base64 form exists only for Lambda's response limit.
                let line = JsonLine {
                    index: e.index,
                    event_id: &e.event_id,
                    timestamp: e.timestamp,
                    message: &e.message,
                };
                serde_json::to_writer(&mut self.out, &line).map_err(std::io::Error::from)?;
                self.out.write_all(b"\n")?;
            } else {
                self.text_line(e.index, e.timestamp, e.message.as_bytes())?;
            }
        }
        self.out.flush()?;
        Ok(())
    }

    /// Prints `take` events of a dense page after its first `skip` (never `--json`: dense
    /// pages carry no event ids, and the CLI does not ask for them then). Plain output writes
    /// each run's messages as the page holds them, in one call, without reading their heads.
    pub fn print_dense<B: AsRef<[u8]>>(
        &mut self,
        page: &LinesPage<B>,
        skip: usize,
        take: usize,
    ) -> Result<(), CliError> {
        let (from, to) = (skip, skip + take);
        let body = page.body();
        for run in page.runs() {
            let (lo, hi) = (from.max(run.first), to.min(run.first + run.count));
            if lo >= hi {
                continue;
            }
            if self.format.plain() && (lo, hi) == (run.first, run.first + run.count) {
                self.write_through(run.messages(body))?;
                continue;
            }
            // Its heads were checked when the page was framed.
            let records = run.records(body).skip(lo - run.first).take(hi - lo);
            if self.format.plain() {
                let mut span = None::<(usize, usize)>;
                for r in records {
                    span = Some((span.map_or(r.start, |(a, _)| a), r.start + r.len + 1));
                }
                if let Some((a, z)) = span {
                    self.write_through(&body[a..z])?;
                }
                continue;
            }
            let first = page.first_index() + lo as u64;
            for (i, r) in records.enumerate() {
                self.text_line(first + i as u64, page.timestamp(&r), page.message(&r))?;
            }
        }
        self.out.flush()?;
        Ok(())
    }

    /// Writes `bytes` as they are: a large piece straight to stdout, without copying it into
    /// the buffer first.
    fn write_through(&mut self, bytes: &[u8]) -> Result<(), CliError> {
        if bytes.len() < 16 * 1024 {
            self.out.write_all(bytes)?;
        } else {
            self.out.flush()?;
            self.out.get_mut().write_all(bytes)?;
        }
        Ok(())
    }

    fn text_line(&mut self, index: u64, timestamp: i64, message: &[u8]) -> Result<(), CliError> {
        if self.format.index {
            write!(self.out, "{index} ")?;
        }
        if self.format.timestamps {
            write!(self.out, "{} ", rfc3339_ms(timestamp))?;
        }
        if self.format.terminal_safe {
            self.scratch.clear();
            let text = String::from_utf8_lossy(message);
            crate::terminal::visible(&text, true, &mut self.scratch);
            self.out.write_all(&self.scratch)?;
        } else {
            self.out.write_all(message)?;
        }
        self.out.write_all(b"\n")?;
        Ok(())
    }
}

pub use runvoy_core::time::rfc3339_ms;

#[cfg(test)]
mod tests {
    use super::*;
    use runvoy_core::lines::{self, RunBuilder};
    use runvoy_core::model::Status;
    use runvoy_core::wire::LogsResponse;

    /// A dense page of lines 1..=10 in runs of 4, 4 and 2; line 5 holds a newline and line 6
    /// sets the terminal's title.
    fn page() -> LinesPage<Vec<u8>> {
        let mut runs = Vec::new();
        for chunk in (1..=10u64).collect::<Vec<_>>().chunks(4) {
            let mut run = RunBuilder::default();
            for i in chunk {
                let message = match i {
                    5 => "five\nand a half".to_string(),
                    6 => "\u{1b}]0;title\u{7}six".to_string(),
                    _ => format!("line {i}"),
                };
                run.push(1_700_000_000_000 + *i as i64, message.as_bytes());
            }
            run.append_to(&mut runs);
        }
        let meta = LogsResponse {
            execution_id: "abc".into(),
            status: Status::Running,
            events: Vec::new(),
            last_index: 10,
            has_more: false,
            final_index: None,
            exit_code: None,
            websocket_url: None,
        };
        LinesPage::parse(lines::body(&meta, runs).unwrap().into_bytes()).unwrap()
    }

    fn printed(format: Format, skip: usize, take: usize) -> String {
        let mut p = Printer::to(Vec::new(), format);
        p.print_dense(&page(), skip, take).unwrap();
        String::from_utf8(p.out.into_inner().unwrap()).unwrap()
    }

    #[test]
    fn dense_pages_print_the_lines_asked_for_whatever_runs_they_are_in() {
        let all: Vec<String> = (1..=10)
            .map(|i| match i {
                5 => "five\nand a half\n".to_string(),
                6 => "\u{1b}]0;title\u{7}six\n".to_string(),
                _ => format!("line {i}\n"),
            })
            .collect();
        for (skip, take) in [
            (0, 10),
            (0, 4),
            (2, 5),
            (3, 1),
            (4, 4),
            (7, 3),
            (9, 1),
            (5, 0),
        ] {
            assert_eq!(
                printed(Format::default(), skip, take),
                all[skip..skip + take].concat(),
                "skip {skip}, take {take}"
            );
        }
        let indexed = Format {
            index: true,
            timestamps: true,
            ..Format::default()
        };
        assert_eq!(
            printed(indexed, 3, 2),
            "4 2023-11-14T22:13:20.004Z line 4\n5 2023-11-14T22:13:20.005Z five\nand a half\n"
        );
        let terminal = Format {
            terminal_safe: true,
            ..Format::default()
        };
        let shown = printed(terminal, 5, 1);
        assert_eq!(shown, "^[]0;title^Gsix\n");
    }

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    }
}
