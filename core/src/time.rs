//! Times as AWS and people write them: RFC 3339 in UTC (`2026-12-07T12:03:30.123Z`), to and
//! from milliseconds since the epoch (proleptic Gregorian calendar).

/// `2024-01-02T03:04:05.678Z` from milliseconds since the epoch (UTC, proleptic Gregorian).
pub fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Milliseconds since the epoch of an RFC 3339 time as AWS writes them in events
/// (`2026-12-07T12:03:30.123Z`, `…+00:00`); `None` when it is not one.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let (date, rest) = text.split_once(['T', 't'])?;
    let mut d = date.splitn(3, '-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (clock, offset_ms) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let at = rest.rfind(['+', '-'])?;
        let (c, off) = rest.split_at(at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        let minutes = oh.parse::<i64>().ok()? * 60 + om.parse::<i64>().ok()?;
        (c, sign * minutes * 60_000)
    };
    let mut c = clock.splitn(3, ':');
    let (h, min, sec): (i64, i64, &str) =
        (c.next()?.parse().ok()?, c.next()?.parse().ok()?, c.next()?);
    let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let s: i64 = whole.parse().ok()?;
    let ms: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || s > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3_600 + min * 60 + s) * 1_000 + ms) - offset_ms)
}

#[cfg(test)]
mod tests {
    use super::{parse_rfc3339_ms as rfc3339_ms, rfc3339_ms as format};

    #[test]
    fn times_format_and_parse_back() {
        for ms in [0, 1_796_645_010_123, 951_782_400_000, -1] {
            assert_eq!(rfc3339_ms(&format(ms)), Some(ms));
        }
        assert_eq!(format(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn aws_times_parse() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_ms("2026-12-07T12:03:30.123Z"),
            Some(1_796_645_010_123)
        );
        assert_eq!(
            rfc3339_ms("2026-12-07T13:03:30.1+01:00"),
            Some(1_796_645_010_100)
        );
        assert_eq!(
            rfc3339_ms("2020-02-29T23:59:59.999Z"),
            Some(1_583_020_799_999)
        );
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "yesterday",
            "2026-12-07",
            "2026-12-07T25:00:00Z",
        ] {
            assert_eq!(rfc3339_ms(bad), None, "{bad}");
        }
    }
}
