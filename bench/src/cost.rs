//! `bench cost`: what runvoy costs on AWS, measured on the sim and priced with
//! `bench/prices.toml`. One sim; for each rate (1, 100 and 10,000 lines a second of 100-byte
//! lines) and each number of followers (1 and 10 `runvoy logs ID`), one execution: written at
//! the rate for a window, watched until every follower printed every line, then completed. The
//! sim's `billing` counters are read before and after; what the window cost is scaled to an
//! hour of writing at that rate and to a million lines, and set next to CloudWatch Logs Live
//! Tail for the same watching.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::prices::{Bill, Prices, Units};
use crate::sim::{Sim, count_lines, reap};

/// Bytes of each line written.
const LINE_BYTES: usize = 100;
/// The rates and followers of the rows.
const RATES: [u32; 3] = [1, 100, 10_000];
const FOLLOWERS: [usize; 2] = [1, 10];
/// Live Tail shows every event up to this rate, a sample above it.
const LIVE_TAIL_FULL_RATE: u32 = 500;

/// One execution measured.
struct Run {
    rate: u32,
    followers: usize,
    lines: usize,
    write_secs: f64,
    /// From the first line written to the last printed by every follower.
    window_secs: f64,
    /// Followers that had not printed every line when the wait ended.
    behind: usize,
    /// Counted during the window.
    steady: Units,
    /// Counted while the execution started (first line, followers connecting) and while it
    /// completed (the completion's re-read, the followers leaving).
    once: Units,
}

impl Run {
    /// The window's units scaled to an hour of writing at the rate: by lines, except connection
    /// minutes, which are scaled by the time they were open.
    fn per_hour(&self) -> Units {
        let lines_per_hour = f64::from(self.rate) * 3600.0;
        let mut u = self.steady.times(lines_per_hour / self.lines as f64);
        u.ws_connection_minutes = self.steady.ws_connection_minutes * 3600.0 / self.window_secs;
        u
    }

    fn per_million(&self) -> Units {
        self.per_hour().times(1e6 / (f64::from(self.rate) * 3600.0))
    }

    /// Minutes of watching a million lines take, all followers together.
    fn watching_minutes_per_million(&self) -> f64 {
        self.followers as f64 * 1e6 / f64::from(self.rate) / 60.0
    }
}

/// The window at a rate: `RUNVOY_BENCH_COST_SECS` (default 30) seconds, a third of it at
/// 10,000 lines a second (100,000 lines by default) so the whole run stays near ten minutes.
fn window(rate: u32) -> u32 {
    let secs: u32 = std::env::var("RUNVOY_BENCH_COST_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    if rate >= 10_000 {
        (secs / 3).max(1)
    } else {
        secs
    }
}

pub async fn cost() {
    let prices = Prices::load();
    println!("## Cost on AWS, measured on the sim\n");
    let sim = Sim::start("cost").await;
    let mut runs = Vec::new();
    for rate in RATES {
        for followers in FOLLOWERS {
            runs.push(run(&sim, rate, followers).await);
        }
    }
    drop(sim);
    report(&prices, &runs);
}

async fn run(sim: &Sim, rate: u32, followers: usize) -> Run {
    let id = format!("cost-{rate}-{followers}-{}", runvoy_runtime::random_hex(4));
    let b0 = Units::from_billing(&sim.billing().await);
    sim.write(&id, vec![json!({"message": "start"})]).await;
    let (mut children, mut counts, mut readers) = (Vec::new(), Vec::new(), Vec::new());
    let open_before = sim.open_connections().await;
    for _ in 0..followers {
        let mut child = sim.follower(&id, &[]);
        let n = Arc::new(AtomicUsize::new(0));
        readers.push(count_lines(&mut child, n.clone()));
        counts.push(n);
        children.push(child);
    }
    let printed = |at_least: usize| counts.iter().all(|c| c.load(Ordering::Relaxed) >= at_least);
    // Every follower printed the first line and holds its WebSocket connection.
    let started = Instant::now();
    while !(printed(1) && sim.open_connections().await >= open_before + followers as u64) {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the followers of {id} did not connect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b1 = Units::from_billing(&sim.billing().await);
    let t1 = Instant::now();
    let total = (rate * window(rate)) as usize;
    // Lines as a producer flushes them: every 100 ms, or one at a time below 10 a second.
    let (period, per_tick) = if rate >= 10 {
        (Duration::from_millis(100), rate as usize / 10)
    } else {
        (Duration::from_millis(1000 / u64::from(rate)), 1)
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut written = 0;
    while written < total {
        tick.tick().await;
        let n = per_tick.min(total - written);
        let events = crate::lines(n, LINE_BYTES, &format!("{id}-{written}"))
            .into_iter()
            .map(|e| json!({"message": e.message}))
            .collect();
        sim.write(&id, events).await;
        written += n;
    }
    let write_secs = t1.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(600);
    while !printed(total + 1) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let window_secs = t1.elapsed().as_secs_f64();
    let behind = counts
        .iter()
        .filter(|c| c.load(Ordering::Relaxed) < total + 1)
        .count();
    let b2 = Units::from_billing(&sim.billing().await);
    sim.complete(&id).await;
    reap(&mut children, Duration::from_secs(120)).await;
    for r in readers {
        let _ = r.join();
    }
    // The followers' `$disconnect`s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b3 = Units::from_billing(&sim.billing().await);
    Run {
        rate,
        followers,
        lines: total,
        write_secs,
        window_secs,
        behind,
        steady: b2.since(b1),
        once: b1.since(b0).plus(b3.since(b2)),
    }
}

/// Three significant digits (dollars span from millionths to hundreds).
fn sig(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let decimals = (2 - x.abs().log10().floor() as i32).max(0) as usize;
    format!("{x:.decimals$}")
}

fn row(b: &Bill) -> String {
    format!(
        "{} | {} | {} | {} | {} | {} | **{}**",
        sig(b.dynamodb),
        sig(b.lambda),
        sig(b.websocket),
        sig(b.http_api),
        sig(b.logs_api),
        sig(b.lambda_logs),
        sig(b.runvoy())
    )
}

fn report(prices: &Prices, runs: &[Run]) {
    println!(
        "Each row: one execution on the sim, {}-byte lines written at the rate for {} s ({} s at \
         10,000 lines/s), watched by the followers (`runvoy logs ID`) until each printed every \
         line; the units the sim counted meanwhile are scaled to an hour of writing at that rate \
         (connection minutes by the time they were open) and to a million lines. Prices: \
         `bench/prices.toml`, {}, as published 2026 — check before relying; Lambda at the arm64 \
         price, its duration measured on x86_64 binaries of profile `test` (an upper bound). \
         \"runvoy\" is everything but the producers' own ingestion, which CloudWatch bills with \
         or without runvoy (Live Tail reads the same logs).\n",
        LINE_BYTES,
        window(1),
        window(10_000),
        prices.region
    );
    let head = "| lines/s | followers | DynamoDB | Lambda | API Gateway WebSocket | HTTP API | Logs API (GetLogEvents) | Lambda's own logs | runvoy | Live Tail, same watching | producers' ingestion (either way) |";
    let rule = "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";
    let sampled = |r: &Run| {
        if r.rate > LIVE_TAIL_FULL_RATE {
            " (a sample)"
        } else {
            ""
        }
    };
    println!("### USD per execution-hour\n\n{head}\n{rule}");
    for r in runs {
        let b = prices.bill(&r.per_hour());
        println!(
            "| {} | {} | {} | {}{} | {} |",
            r.rate,
            r.followers,
            row(&b),
            sig(prices.live_tail(r.followers as f64, 60.0)),
            sampled(r),
            sig(b.ingestion)
        );
    }
    println!("\n### USD per million lines\n\n{head}\n{rule}");
    for r in runs {
        let b = prices.bill(&r.per_million());
        println!(
            "| {} | {} | {} | {}{} | {} |",
            r.rate,
            r.followers,
            row(&b),
            sig(prices.live_tail(1.0, r.watching_minutes_per_million())),
            sampled(r),
            sig(b.ingestion)
        );
    }
    println!("\n### Measured in each window\n");
    println!(
        "| lines/s | followers | lines | writing (s) | until every follower printed every line (s) | WRU a line | RRU a line | Lambda invocations | Lambda GB-s | WebSocket messages (32 KB) | connection minutes | HTTP requests | GetLogEvents | Lambda log bytes a line | start and completion, once (USD) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        let s = &r.steady;
        let n = r.lines as f64;
        println!(
            "| {} | {} | {} | {:.1} | {:.1}{} | {:.3} | {:.3} | {} | {:.2} | {} | {:.2} | {} | {} | {:.0} | {} |",
            r.rate,
            r.followers,
            r.lines,
            r.write_secs,
            r.window_secs,
            if r.behind > 0 {
                format!(" ({} followers behind)", r.behind)
            } else {
                String::new()
            },
            s.write_units / n,
            s.read_units / n,
            s.lambda_requests,
            s.gb_seconds,
            s.ws_messages,
            s.ws_connection_minutes,
            s.http_requests,
            s.logs_api_calls,
            s.function_log_bytes / n,
            sig(prices.bill(&r.once).runvoy()),
        );
    }
    println!("\n### Prices used\n");
    println!("| service | unit | USD | per | source | written down | note |");
    println!("|---|---|---:|---:|---|---|---|");
    for p in &prices.price {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            p.service, p.unit, p.usd, p.per, p.source, p.checked, p.note
        );
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_scales_by_lines_and_connections_by_time() {
        let steady = Units {
            write_units: 60.0,
            ws_connection_minutes: 1.0,
            ..Units::default()
        };
        let r = Run {
            rate: 100,
            followers: 2,
            lines: 3000,
            write_secs: 30.0,
            window_secs: 30.0,
            behind: 0,
            steady,
            once: Units::default(),
        };
        // 360,000 lines an hour at 0.02 WRU a line; two connections open the whole hour.
        let h = r.per_hour();
        assert_eq!(h.write_units, 7200.0);
        assert_eq!(h.ws_connection_minutes, 120.0);
        assert_eq!(r.per_million().write_units, 20_000.0);
        // A million lines at 100 a second: 10,000 s, 166.7 minutes each.
        assert!((r.watching_minutes_per_million() - 2.0 * 1e4 / 60.0).abs() < 1e-9);
        assert_eq!(sig(0.000123456), "0.000123");
        assert_eq!(sig(12.345), "12.3");
        assert_eq!(sig(1234.4), "1234");
    }
}
