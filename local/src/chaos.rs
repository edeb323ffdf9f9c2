//! `--chaos dup=0.3,reorder=0.3,drop=0.05,delay-ms=0-500,ws-cut-ms=2000`: how badly the
//! subscription emulator behaves (spec §3.2), and how often WebSocket connections are cut; and,
//! on the sim only, AWS's timing (`ingest-lag-ms`, `txn-skew-ms`, `throttle-wcu`, `lambda-dup`,
//! `sdk-retry`, each documented where the sim plays it).

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Error)]
#[error(
    "invalid --chaos value: {0} (expected e.g. dup=0.3,reorder=0.3,drop=0.05,delay-ms=0-500,ws-cut-ms=2000; on the sim also ingest-lag-ms=3000,txn-skew-ms=50,throttle-wcu=1000,lambda-dup=0.2,sdk-retry=0.05)"
)]
pub struct ChaosError(String);

/// Probabilities (0.0–1.0) and a delay range for every delivered batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chaos {
    /// A batch is delivered twice (the copy right after it, unless `reorder` or `delay-ms`
    /// make deliveries concurrent).
    pub dup: f64,
    /// A batch is held back and delivered after later ones.
    pub reorder: f64,
    /// A batch is never delivered (reconciliation must recover it).
    pub drop: f64,
    /// Each delivery waits a random time in this range (ms), concurrently with the others.
    pub delay_ms: (u64, u64),
    /// Every WebSocket connection is cut (no close frame) this long after it opened.
    pub ws_cut_ms: Option<u64>,
    /// The WebSocket handshake answers this long after the connection was stored. On the sim,
    /// API Gateway opens it this long after `$connect` succeeded, and pushes meanwhile are
    /// answered 410, as on AWS; the local stack queues them.
    pub connect_ms: Option<u64>,
    /// Sim: a line is readable (`GetLogEvents`) and delivered (subscription) only this long
    /// after `PutLogEvents` returned.
    pub ingest_lag_ms: Option<u64>,
    /// Sim: items of a transaction under other partition keys than its first become visible to
    /// reads up to this long after it.
    pub txn_skew_ms: Option<u64>,
    /// Sim: write units per second each partition key takes before DynamoDB throttles.
    pub throttle_wcu: Option<u64>,
    /// Sim: an asynchronous event is also handed to a second, concurrent invocation.
    pub lambda_dup: f64,
    /// Sim: a successful `TransactWriteItems` is answered 500, so the SDK sends it again.
    pub sdk_retry: f64,
}

impl Chaos {
    /// Whether subscription delivery is calm (in order, once, at once).
    pub fn is_calm(&self) -> bool {
        self.dup == 0.0 && self.reorder == 0.0 && self.drop == 0.0 && self.delay_ms == (0, 0)
    }

    /// Whether a stream's batches are delivered one after another, in the order they were
    /// written (duplicates and drops keep that order): nothing holds one back or delays it.
    pub fn in_order(&self) -> bool {
        self.reorder == 0.0 && self.delay_ms == (0, 0)
    }

    /// What becomes of one delivery when deliveries are not in order (the local emulator and
    /// the sim's subscription both play it): held back (`reorder`, until the next one, when
    /// nothing is held yet), dropped, duplicated; what is sent now comes with the delay each
    /// copy waits (`delay-ms`), followed by the delivery held back before, if any.
    pub fn scatter<T: Clone>(
        &self,
        item: T,
        held: &mut Option<T>,
    ) -> Vec<(T, std::time::Duration)> {
        let roll = |p: f64| p > 0.0 && rand::random::<f64>() < p;
        if held.is_none() && roll(self.reorder) {
            *held = Some(item);
            return Vec::new();
        }
        let mut out = Vec::new();
        if !roll(self.drop) {
            if roll(self.dup) {
                out.push(item.clone());
            }
            out.push(item);
        }
        out.extend(held.take());
        out.into_iter().map(|i| (i, self.delay())).collect()
    }

    /// A delay drawn from `delay-ms`.
    pub fn delay(&self) -> std::time::Duration {
        let (lo, hi) = self.delay_ms;
        let ms = if hi > lo {
            rand::random_range(lo..=hi)
        } else {
            lo
        };
        std::time::Duration::from_millis(ms)
    }

    /// The keys set that only the sim plays (AWS's timing), for a stack that cannot.
    pub fn sim_only(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.ingest_lag_ms.is_some() {
            out.push("ingest-lag-ms");
        }
        if self.txn_skew_ms.is_some() {
            out.push("txn-skew-ms");
        }
        if self.throttle_wcu.is_some() {
            out.push("throttle-wcu");
        }
        if self.lambda_dup > 0.0 {
            out.push("lambda-dup");
        }
        if self.sdk_retry > 0.0 {
            out.push("sdk-retry");
        }
        out
    }
}

impl std::str::FromStr for Chaos {
    type Err = ChaosError;

    fn from_str(s: &str) -> Result<Chaos, ChaosError> {
        let mut c = Chaos::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| ChaosError(format!("'{part}' has no '='")))?;
            let prob = |v: &str| -> Result<f64, ChaosError> {
                let p: f64 = v
                    .parse()
                    .map_err(|_| ChaosError(format!("{k}={v} is not a number")))?;
                if (0.0..=1.0).contains(&p) {
                    Ok(p)
                } else {
                    Err(ChaosError(format!("{k}={v} is not between 0 and 1")))
                }
            };
            match k {
                "dup" => c.dup = prob(v)?,
                "reorder" => c.reorder = prob(v)?,
                "drop" => c.drop = prob(v)?,
                "delay-ms" => {
                    let (lo, hi) = v.split_once('-').unwrap_or((v, v));
                    let lo: u64 = lo.parse().map_err(|_| {
                        ChaosError(format!("delay-ms={v} is not a range like 0-500"))
                    })?;
                    let hi: u64 = hi.parse().map_err(|_| {
                        ChaosError(format!("delay-ms={v} is not a range like 0-500"))
                    })?;
                    if lo > hi || hi > 60_000 {
                        return Err(ChaosError(format!(
                            "delay-ms={v} must be low-high, at most 60000"
                        )));
                    }
                    c.delay_ms = (lo, hi);
                }
                "connect-ms" => {
                    let ms: u64 = v.parse().map_err(|_| {
                        ChaosError(format!("connect-ms={v} is not a number of milliseconds"))
                    })?;
                    if ms > 60_000 {
                        return Err(ChaosError(format!("connect-ms={v} must be at most 60000")));
                    }
                    c.connect_ms = Some(ms);
                }
                "ingest-lag-ms" | "txn-skew-ms" => {
                    let ms: u64 = v.parse().map_err(|_| {
                        ChaosError(format!("{k}={v} is not a number of milliseconds"))
                    })?;
                    if ms > 600_000 {
                        return Err(ChaosError(format!("{k}={v} must be at most 600000")));
                    }
                    if k == "ingest-lag-ms" {
                        c.ingest_lag_ms = Some(ms);
                    } else {
                        c.txn_skew_ms = Some(ms);
                    }
                }
                "throttle-wcu" => {
                    let units: u64 = v.parse().map_err(|_| {
                        ChaosError(format!("throttle-wcu={v} is not a number of write units"))
                    })?;
                    if units < 10 {
                        return Err(ChaosError(format!(
                            "throttle-wcu={v} must be at least 10 (DynamoDB's partition takes 1000)"
                        )));
                    }
                    c.throttle_wcu = Some(units);
                }
                "lambda-dup" => c.lambda_dup = prob(v)?,
                "sdk-retry" => c.sdk_retry = prob(v)?,
                "ws-cut-ms" => {
                    let ms: u64 = v.parse().map_err(|_| {
                        ChaosError(format!("ws-cut-ms={v} is not a number of milliseconds"))
                    })?;
                    if ms < 100 {
                        return Err(ChaosError(format!("ws-cut-ms={v} must be at least 100")));
                    }
                    c.ws_cut_ms = Some(ms);
                }
                other => return Err(ChaosError(format!("unknown key '{other}'"))),
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scatter_holds_back_drops_and_duplicates() {
        let calm = Chaos::default();
        let mut held = None;
        let out = calm.scatter(1, &mut held);
        assert_eq!(out, vec![(1, std::time::Duration::ZERO)]);
        let always_hold: Chaos = "reorder=1".parse().unwrap();
        assert!(always_hold.scatter(1, &mut held).is_empty());
        assert_eq!(held, Some(1));
        let sent: Vec<i32> = always_hold
            .scatter(2, &mut held)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(sent, vec![2, 1], "the held one follows the next");
        let dropped: Chaos = "drop=1".parse().unwrap();
        assert!(dropped.scatter(3, &mut None).is_empty());
        let twice: Chaos = "dup=1,delay-ms=5-5".parse().unwrap();
        assert_eq!(
            twice.scatter(4, &mut None),
            vec![(4, std::time::Duration::from_millis(5)); 2]
        );
    }

    #[test]
    fn parses_the_documented_form() {
        let c: Chaos = "dup=0.3,reorder=0.3,drop=0.05,delay-ms=0-500"
            .parse()
            .unwrap();
        assert_eq!(
            c,
            Chaos {
                dup: 0.3,
                reorder: 0.3,
                drop: 0.05,
                delay_ms: (0, 500),
                ..Chaos::default()
            }
        );
        let timing: Chaos =
            "ingest-lag-ms=3000,txn-skew-ms=50,throttle-wcu=1000,lambda-dup=0.2,sdk-retry=0.05"
                .parse()
                .unwrap();
        assert_eq!(timing.ingest_lag_ms, Some(3000));
        assert_eq!(timing.txn_skew_ms, Some(50));
        assert_eq!(timing.throttle_wcu, Some(1000));
        assert_eq!(
            timing.sim_only(),
            [
                "ingest-lag-ms",
                "txn-skew-ms",
                "throttle-wcu",
                "lambda-dup",
                "sdk-retry"
            ]
        );
        assert!(timing.is_calm(), "AWS's timing leaves delivery calm");
        let cut: Chaos = "ws-cut-ms=2000".parse().unwrap();
        assert_eq!(cut.ws_cut_ms, Some(2000));
        assert!(cut.is_calm(), "cutting connections leaves delivery calm");
        assert!("".parse::<Chaos>().unwrap().is_calm());
        for bad in [
            "dup=2",
            "dup",
            "lag=1",
            "delay-ms=5-1",
            "drop=x",
            "ws-cut-ms=5",
            "ws-cut-ms=x",
            "throttle-wcu=5",
            "lambda-dup=1.5",
            "ingest-lag-ms=-1",
        ] {
            assert!(bad.parse::<Chaos>().is_err(), "{bad}");
        }
    }
}
