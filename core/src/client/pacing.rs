//! The follower's schedule (spec §7.2): every wait and limit of a client, and the decisions made
//! from them — when to poll in silence, how long to back off after a failure or a refused
//! handshake, when a WebSocket URL is too old to use, which page to ask for ahead. Pure: the
//! caller passes in the time that passed and a random draw, so the CLI (in real time) and the
//! interleaving tests (in virtual time, [`Schedule::scaled`]) make the same decisions.
//! `web/assets/follow.js` holds the same numbers; `web/tests/follow_schedule.rs` pins them.

use std::time::Duration;

/// Events per HTTP page the CLI asks for: about 2 MB of dense records at 70 bytes a line, so
/// that the three pages in flight keep the process under 20 MB (servers bound pages in bytes
/// too).
pub const PAGE_EVENTS: usize = 25_000;
/// Events per HTTP page the log page asks for: JSON pages parsed on the browser's one thread,
/// smaller so a page never blocks the view long (the API allows up to 100,000).
pub const BROWSER_PAGE_EVENTS: usize = 10_000;

/// Every wait of a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Silence after which the client polls once (and pings the socket).
    pub idle_poll: Duration,
    /// Each poll in silence that finds nothing doubles the next wait, up to this.
    pub idle_poll_max: Duration,
    /// Backoff after a failed request: from a quarter of the cap to the cap, the cap
    /// `retry_base × 2^failures` up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Wait before the next handshake after failed ones: the upper half of
    /// `handshake_base × 2^(failures − 1)` up to `handshake_max` (clients that lost the same
    /// server spread out, and a failing `$connect` is not invoked every two seconds).
    pub handshake_base: Duration,
    pub handshake_max: Duration,
    /// A connection that lived this long was healthy: its end is no failed handshake.
    pub healthy_after: Duration,
    /// A WebSocket URL older than this is renewed by a poll before a handshake (its token
    /// expires after an hour, or sooner when the key it was handed out under is retired).
    pub url_fresh_for: Duration,
    /// A catch-up this soon after the last one is skipped after a handshake.
    pub min_poll_gap: Duration,
    /// How long a WebSocket handshake may take before the client polls without it.
    pub connect_timeout: Duration,
    /// Give up after failing to reach the API for this long.
    pub give_up_after: Duration,
    /// `--no-follow` ("print what is there now") gives up on a failing API sooner.
    pub give_up_after_once: Duration,
    /// How long an execution that does not exist yet is waited for (`--wait`'s default).
    pub wait_for_start: Duration,
    /// How often an execution that does not exist yet is looked for.
    pub look_every: Duration,
}

impl Schedule {
    /// The numbers of spec §7.2.
    pub const SPEC: Schedule = Schedule {
        idle_poll: Duration::from_secs(2),
        idle_poll_max: Duration::from_secs(30),
        retry_base: Duration::from_millis(200),
        retry_max: Duration::from_secs(5),
        handshake_base: Duration::from_secs(2),
        handshake_max: Duration::from_secs(30),
        healthy_after: Duration::from_secs(10),
        url_fresh_for: Duration::from_secs(60),
        min_poll_gap: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(10),
        give_up_after: Duration::from_secs(600),
        give_up_after_once: Duration::from_secs(30),
        wait_for_start: Duration::from_secs(300),
        look_every: Duration::from_secs(2),
    };

    /// Every wait divided by `divisor`: the same decisions, sooner (tests in virtual
    /// time).
    pub fn scaled(self, divisor: u32) -> Schedule {
        let d = divisor.max(1);
        Schedule {
            idle_poll: self.idle_poll / d,
            idle_poll_max: self.idle_poll_max / d,
            retry_base: self.retry_base / d,
            retry_max: self.retry_max / d,
            handshake_base: self.handshake_base / d,
            handshake_max: self.handshake_max / d,
            healthy_after: self.healthy_after / d,
            url_fresh_for: self.url_fresh_for / d,
            min_poll_gap: self.min_poll_gap / d,
            connect_timeout: self.connect_timeout / d,
            give_up_after: self.give_up_after / d,
            give_up_after_once: self.give_up_after_once / d,
            wait_for_start: self.wait_for_start / d,
            look_every: self.look_every / d,
        }
    }

    /// The wait before retry number `failures` (≥ 1) of a failed request; `draw` in `0.0..=1.0`.
    pub fn retry_backoff(&self, failures: u32, draw: f64) -> Duration {
        let cap = (self.retry_base * (1u32 << failures.min(5))).min(self.retry_max);
        jittered(cap / 4, cap, draw)
    }

    /// The wait before the next handshake after `failures` (≥ 1) failed ones; `draw` in
    /// `0.0..=1.0`.
    pub fn handshake_backoff(&self, failures: u32, draw: f64) -> Duration {
        let doublings = failures.saturating_sub(1).min(4);
        let cap = (self.handshake_base * (1u32 << doublings)).min(self.handshake_max);
        jittered(cap / 2, cap, draw)
    }
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule::SPEC
    }
}

fn jittered(low: Duration, high: Duration, draw: f64) -> Duration {
    low + (high - low).mul_f64(draw.clamp(0.0, 1.0))
}

/// One follower's pacing: the silence before its next poll and its failed handshakes.
#[derive(Debug, Clone)]
pub struct Pacer {
    schedule: Schedule,
    idle: Duration,
    handshake_failures: u32,
}

impl Pacer {
    pub fn new(schedule: Schedule) -> Pacer {
        Pacer {
            schedule,
            idle: schedule.idle_poll,
            handshake_failures: 0,
        }
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// How long to wait in silence before polling.
    pub fn idle_wait(&self) -> Duration {
        self.idle
    }

    /// A poll in silence ended: it `found` lines (the next silence is short again) or not (the
    /// next is twice as long, up to `idle_poll_max`).
    pub fn polled_in_silence(&mut self, found: bool) {
        self.idle = if found {
            self.schedule.idle_poll
        } else {
            (self.idle * 2).min(self.schedule.idle_poll_max)
        };
    }

    /// Lines were pushed: the execution is not silent.
    pub fn pushed(&mut self) {
        self.idle = self.schedule.idle_poll;
    }

    /// A handshake was refused, timed out or failed.
    pub fn handshake_failed(&mut self) {
        self.handshake_failures = self.handshake_failures.saturating_add(1);
    }

    /// A connection ended after `lived`: soon after it opened, it counts as a failed handshake;
    /// after `healthy_after`, the failures are forgotten.
    pub fn connection_ended(&mut self, lived: Duration) {
        if lived >= self.schedule.healthy_after {
            self.handshake_failures = 0;
        } else {
            self.handshake_failed();
        }
    }

    /// Failed handshakes in a row.
    pub fn handshake_failures(&self) -> u32 {
        self.handshake_failures
    }

    /// How long to wait (polling meanwhile) before the next handshake; zero after none failed.
    pub fn handshake_delay(&self, draw: f64) -> Duration {
        match self.handshake_failures {
            0 => Duration::ZERO,
            n => self.schedule.handshake_backoff(n, draw),
        }
    }

    /// Whether a WebSocket URL received `age` ago (`None`: never) may be used for a handshake.
    pub fn url_is_fresh(&self, age: Option<Duration>) -> bool {
        age.is_some_and(|a| a < self.schedule.url_fresh_for)
    }

    /// Whether to catch up over HTTP after a handshake, the last catch-up having ended `since`
    /// ago (`None`: never): a poll that just ran is covered by `resume`.
    pub fn catch_up_after_handshake(&self, since: Option<Duration>) -> bool {
        since.is_none_or(|s| s >= self.schedule.min_poll_gap)
    }
}

/// The page to ask for after the next one, while a catch-up prints: the next page starts at
/// `next` (the `last_index` of the page in hand, which held `page_len` lines); the one after it
/// is guessed to hold as many. `None` when there is nothing to guess: an empty page, or a guess
/// at or past a known `final_index`.
pub fn guess_after(next: u64, page_len: usize, final_index: Option<u64>) -> Option<u64> {
    let after = next + page_len as u64;
    let known_end = final_index.is_some_and(|f| after >= f);
    (after > next && !known_end).then_some(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Schedule = Schedule::SPEC;

    #[test]
    fn retries_back_off_from_a_quarter_of_the_cap_to_the_cap() {
        assert_eq!(S.retry_backoff(1, 0.0), Duration::from_millis(100));
        assert_eq!(S.retry_backoff(1, 1.0), Duration::from_millis(400));
        assert_eq!(S.retry_backoff(3, 1.0), Duration::from_millis(1_600));
        assert_eq!(S.retry_backoff(5, 1.0), Duration::from_secs(5));
        assert_eq!(S.retry_backoff(50, 0.0), Duration::from_millis(1_250));
        assert_eq!(
            S.retry_backoff(50, 7.0),
            Duration::from_secs(5),
            "draws are clamped"
        );
    }

    #[test]
    fn handshakes_back_off_in_the_upper_half_doubling_to_thirty_seconds() {
        assert_eq!(S.handshake_backoff(1, 0.0), Duration::from_secs(1));
        assert_eq!(S.handshake_backoff(1, 1.0), Duration::from_secs(2));
        assert_eq!(S.handshake_backoff(2, 1.0), Duration::from_secs(4));
        assert_eq!(S.handshake_backoff(4, 0.5), Duration::from_secs(12));
        assert_eq!(S.handshake_backoff(5, 1.0), Duration::from_secs(30));
        assert_eq!(S.handshake_backoff(99, 0.0), Duration::from_secs(15));
    }

    #[test]
    fn silence_doubles_the_wait_and_lines_bring_it_back() {
        let mut p = Pacer::new(S);
        assert_eq!(p.idle_wait(), Duration::from_secs(2));
        for expected in [4, 8, 16, 30, 30] {
            p.polled_in_silence(false);
            assert_eq!(p.idle_wait(), Duration::from_secs(expected));
        }
        p.polled_in_silence(true);
        assert_eq!(p.idle_wait(), Duration::from_secs(2));
        p.polled_in_silence(false);
        p.pushed();
        assert_eq!(p.idle_wait(), Duration::from_secs(2));
    }

    #[test]
    fn short_connections_count_as_failed_handshakes_and_a_healthy_one_forgets_them() {
        let mut p = Pacer::new(S);
        assert_eq!(p.handshake_delay(1.0), Duration::ZERO);
        p.handshake_failed();
        p.connection_ended(Duration::from_secs(3));
        assert_eq!(p.handshake_failures(), 2);
        assert_eq!(p.handshake_delay(1.0), Duration::from_secs(4));
        p.connection_ended(Duration::from_secs(10));
        assert_eq!(p.handshake_failures(), 0);
        assert_eq!(p.handshake_delay(1.0), Duration::ZERO);
    }

    #[test]
    fn urls_and_polls_age() {
        let p = Pacer::new(S);
        assert!(!p.url_is_fresh(None));
        assert!(p.url_is_fresh(Some(Duration::from_secs(59))));
        assert!(!p.url_is_fresh(Some(Duration::from_secs(60))));
        assert!(p.catch_up_after_handshake(None));
        assert!(!p.catch_up_after_handshake(Some(Duration::from_millis(300))));
        assert!(p.catch_up_after_handshake(Some(Duration::from_secs(1))));
    }

    #[test]
    fn the_guess_after_the_next_page_stops_at_a_known_end() {
        assert_eq!(guess_after(100, 50, None), Some(150));
        assert_eq!(guess_after(100, 50, Some(200)), Some(150));
        assert_eq!(guess_after(100, 50, Some(150)), None);
        assert_eq!(guess_after(100, 0, None), None);
    }

    #[test]
    fn a_scaled_schedule_makes_the_same_decisions_sooner() {
        let fast = S.scaled(100);
        assert_eq!(fast.idle_poll, Duration::from_millis(20));
        assert_eq!(fast.handshake_backoff(5, 1.0), Duration::from_millis(300));
        assert_eq!(S.scaled(0), S, "a divisor of 0 is taken as 1");
    }
}
