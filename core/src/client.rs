//! The client algorithm of spec §7 as pure state machines: [`Follower`] (I5) decides what to
//! print from what the WebSocket and HTTP deliver; [`pacing`] decides when to poll, back off
//! and reconnect. The CLI and the interleaving tests drive both.

pub mod pacing;

use crate::model::{LogEvent, Status};

/// What the follower wants done after it was fed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Events to print now, contiguous and ascending, each exactly once.
    pub print: Vec<LogEvent>,
    /// Events beyond `last + 1` arrived: fetch from `last` over HTTP.
    pub gap: bool,
}

/// What the follower releases of a run of contiguous events (a dense page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAccepted {
    /// Leading events of the run already released: skip them.
    pub skip: usize,
    /// Events after those to print now, each exactly once.
    pub take: usize,
    /// The run starts beyond `last + 1`: nothing released, fetch from `last` over HTTP.
    pub gap: bool,
}

/// Tracks the last printed index and the terminal status of one execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follower {
    last: u64,
    status: Option<Status>,
    exit_code: Option<i32>,
    final_index: Option<u64>,
}

impl Follower {
    /// Starts after `since_index` (0: from the first line).
    pub fn new(since_index: u64) -> Follower {
        Follower {
            last: since_index,
            status: None,
            exit_code: None,
            final_index: None,
        }
    }

    /// Highest index released so far; resume from here.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Feeds events from any channel, in any order, with duplicates. Releases the ones that
    /// continue the sequence; anything beyond a hole is dropped and reported as a gap, to be
    /// fetched in order over HTTP (memory stays bounded however the pushes misbehave).
    pub fn accept(&mut self, mut events: Vec<LogEvent>) -> Accepted {
        events.sort_by_key(|e| e.index);
        let mut print = Vec::new();
        let mut gap = false;
        for e in events {
            if e.index <= self.last {
                continue;
            }
            if e.index == self.last + 1 {
                self.last = e.index;
                print.push(e);
            } else {
                gap = true;
                break;
            }
        }
        Accepted { print, gap }
    }

    /// Feeds a run of `count` contiguous events from index `first` (a dense page, whose
    /// events are not materialised): the same rule as [`Follower::accept`], by index only.
    pub fn accept_run(&mut self, first: u64, count: usize) -> RunAccepted {
        if count == 0 {
            return RunAccepted {
                skip: 0,
                take: 0,
                gap: false,
            };
        }
        if first > self.last + 1 {
            return RunAccepted {
                skip: 0,
                take: 0,
                gap: true,
            };
        }
        let skip = ((self.last + 1 - first) as usize).min(count);
        let take = count - skip;
        self.last += take as u64;
        RunAccepted {
            skip,
            take,
            gap: false,
        }
    }

    /// Records a terminal status (from a `status` message or an HTTP response).
    pub fn terminal(&mut self, status: Status, exit_code: Option<i32>, final_index: u64) {
        if status.is_terminal() {
            self.status = Some(status);
            self.exit_code = exit_code;
            self.final_index = Some(final_index);
        }
    }

    pub fn final_index(&self) -> Option<u64> {
        self.final_index
    }

    /// True once the execution is terminal and everything up to `final_index` is released (I6).
    pub fn is_done(&self) -> bool {
        matches!(self.final_index, Some(f) if self.last >= f)
    }

    /// The process exit code once done: the execution's code, or 1 for a failure without one.
    pub fn exit_code(&self) -> Option<i32> {
        if !self.is_done() {
            return None;
        }
        Some(match (self.status, self.exit_code) {
            (_, Some(code)) => code,
            (Some(Status::Succeeded), None) => 0,
            _ => 1,
        })
    }
}
