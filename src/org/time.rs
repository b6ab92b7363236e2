//! Unix seconds ↔ UTC calendar dates, for the `pigeon org` tool and
//! messages (credentials and lists carry Unix seconds). The conversions
//! are the proleptic Gregorian algorithms of Howard Hinnant's
//! `chrono`-compatible `days_from_civil` / `civil_from_days`
//! (<https://howardhinnant.github.io/date_algorithms.html>).

/// Days since 1970-01-01 of a calendar date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Calendar date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `2027-01-31 12:00:00 UTC`.
pub fn format(unix_s: u64) -> String {
    let s = i64::try_from(unix_s).unwrap_or(i64::MAX / 2);
    let (y, m, d) = civil_from_days(s.div_euclid(86_400));
    let r = s.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        r / 3600,
        r % 3600 / 60,
        r % 60
    )
}

/// A point in time given on the command line, relative to `now_s`: a
/// number of days (`30`, from now), or a UTC date `YYYY-MM-DD` (its
/// midnight), or `YYYY-MM-DDTHH:MM:SSZ`.
pub fn parse_when(text: &str, now_s: u64) -> Result<u64, String> {
    let t = text.trim();
    if let Ok(days) = t.parse::<u64>() {
        return days
            .checked_mul(86_400)
            .and_then(|d| now_s.checked_add(d))
            .ok_or_else(|| format!("{days} days is too far"));
    }
    let bad = || format!("not a number of days nor a date YYYY-MM-DD[THH:MM:SSZ]: \"{t}\"");
    let (date, clock) = match t.split_once('T') {
        Some((d, c)) => (d, Some(c.strip_suffix('Z').ok_or_else(bad)?)),
        None => (t, None),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(bad());
    };
    let (y, m, d) = (
        y.parse::<i64>().map_err(|_| bad())?,
        m.parse::<u32>().map_err(|_| bad())?,
        d.parse::<u32>().map_err(|_| bad())?,
    );
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let days = days_from_civil(y, m, d);
    if civil_from_days(days) != (y, m, d) {
        return Err(format!("no such date: \"{t}\""));
    }
    let mut secs = days * 86_400;
    if let Some(c) = clock {
        let p: Vec<&str> = c.split(':').collect();
        let [h, mi, s] = p.as_slice() else {
            return Err(bad());
        };
        let (h, mi, s) = (
            h.parse::<i64>().map_err(|_| bad())?,
            mi.parse::<i64>().map_err(|_| bad())?,
            s.parse::<i64>().map_err(|_| bad())?,
        );
        if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..60).contains(&s) {
            return Err(bad());
        }
        secs += h * 3600 + mi * 60 + s;
    }
    u64::try_from(secs).map_err(|_| bad())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(format(0), "1970-01-01 00:00:00 UTC");
        // 2000-02-29 (a leap day of a century divisible by 400).
        assert_eq!(format(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(parse_when("2000-02-29", 0).unwrap(), 951_782_400);
        assert_eq!(
            parse_when("2027-01-31T12:30:05Z", 0).unwrap(),
            parse_when("2027-01-31", 0).unwrap() + 12 * 3600 + 30 * 60 + 5
        );
        for s in [0u64, 86_399, 1_800_000_000, 4_102_444_800] {
            let day = format(s)[..10].to_owned();
            assert_eq!(parse_when(&day, 0).unwrap(), s - s % 86_400, "{day}");
        }
    }

    #[test]
    fn days_are_relative_and_bad_dates_refused() {
        assert_eq!(parse_when("30", 1_000).unwrap(), 1_000 + 30 * 86_400);
        for bad in [
            "",
            "x",
            "2027-02-30",
            "2027-13-01",
            "1969-12-31",
            "2027-01-01T25:00:00Z",
            "2027-01-01T10:00:00",
            "-3",
        ] {
            assert!(parse_when(bad, 0).is_err(), "{bad}");
        }
    }
}
