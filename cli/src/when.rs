//! Durations and start times as people type them: `90s`, `10m`, `1h30m`, `2d`, `500ms` (a bare
//! number is seconds), and RFC 3339 times (`2026-12-07T12:00:00Z`).

use std::time::Duration;

/// A duration such as `90s`, `10m`, `1h30m`, `2d`, `500ms`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "'{text}' is not a duration; write it like 30s, 10m, 1h30m or 2d (a bare number is seconds)"
        )
    };
    let t = text.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let ms = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        total += Duration::from_millis(n.checked_mul(ms).ok_or_else(bad)?);
    }
    Ok(total)
}

/// `--since`: a duration back from `now_ms`, or an RFC 3339 time; milliseconds since the epoch.
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, String> {
    if let Some(ms) = runvoy_core::time::parse_rfc3339_ms(text.trim()) {
        return Ok(ms);
    }
    match parse_duration(text) {
        Ok(d) => Ok(now_ms - d.as_millis() as i64),
        Err(_) => Err(format!(
            "'{text}' is neither a duration back from now (10m, 1h30m, 2d) nor an RFC 3339 time (2026-12-07T12:00:00Z)"
        )),
    }
}

/// A duration as people read it: `45s`, `5m`, `1h30m`.
pub fn show(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3_599 if s.is_multiple_of(60) => format!("{}m", s / 60),
        60..=3_599 => format!("{}m{}s", s / 60, s % 60),
        _ if s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
        _ => format!("{}h{}m", s / 3_600, s % 3_600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_people_write_them() {
        let ok =
            |t: &str, ms: u64| assert_eq!(parse_duration(t), Ok(Duration::from_millis(ms)), "{t}");
        ok("0", 0);
        ok("90", 90_000);
        ok("90s", 90_000);
        ok("10m", 600_000);
        ok("1h30m", 5_400_000);
        ok("2d", 172_800_000);
        ok("500ms", 500);
        for bad in ["", "m", "10x", "-5s", "1.5h", "10 m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(show(Duration::from_secs(300)), "5m");
        assert_eq!(show(Duration::from_secs(5_400)), "1h30m");
    }

    #[test]
    fn since_takes_a_duration_back_or_a_time() {
        let now = 1_796_645_010_123;
        assert_eq!(parse_since("10m", now), Ok(now - 600_000));
        assert_eq!(
            parse_since("2026-12-07T12:03:30.123Z", now),
            Ok(1_796_645_010_123)
        );
        assert!(parse_since("yesterday", now).is_err());
    }
}
