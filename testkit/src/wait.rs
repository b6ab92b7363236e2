//! Bounded waits and small text helpers shared by every scenario.
//!
//! Every wait is a poll with a limit: what a test waits for is a state it
//! can see (a file, a Redis key, a received message), never a fixed sleep
//! standing in for one.

use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often a wait looks again: short next to every limit (hundreds of
/// milliseconds and more), long enough not to load a busy machine.
pub const POLL: Duration = Duration::from_millis(10);

/// Polls `check` every [`POLL`] until it returns `Some` (returned) or
/// `limit` has passed (`None`); `check` runs at least once.
pub fn poll_until<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if start.elapsed() >= limit {
            return None;
        }
        thread::sleep(POLL);
    }
}

/// Whether `check` held within `limit` (polled as [`poll_until`]).
pub fn holds_within(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    poll_until(limit, || check().then_some(())).is_some()
}

/// Polls `check` until it returns `Some`; after `limit`, panics naming
/// `what`, followed by what `diag` says (logs, received messages).
pub fn wait_for<T>(
    limit: Duration,
    what: &str,
    diag: impl FnOnce() -> String,
    check: impl FnMut() -> Option<T>,
) -> T {
    poll_until(limit, check)
        .unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}\n{}", diag()))
}

/// Polls `check` until it holds; after `limit`, panics naming `what`.
pub fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    wait_for(limit, what, String::new, || check().then_some(()));
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The current time in Unix seconds (0 before 1970).
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The current time in Unix milliseconds (0 before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The current time in Unix nanoseconds (0 before 1970).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The UTC date of Unix time `unix` as `YYYY-MM-DD` (days-to-civil, H.
/// Hinnant, <https://howardhinnant.github.io/date_algorithms.html>): the
/// suffix of the pigeon's daily log file.
pub fn utc_date(unix: i64) -> String {
    let z = unix.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Today's UTC date as `YYYY-MM-DD`.
pub fn today_utc() -> String {
    utc_date(now_unix())
}

/// A counter of the pigeon's last `stopped received=… sent=…` log line
/// (`key` is e.g. `"sent="`), the totals it logs when it stops.
pub fn stopped_count(log: &str, key: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains(" stopped "))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_of_known_days() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(1_700_000_000), "2023-11-14");
        assert_eq!(utc_date(-1), "1969-12-31");
    }

    #[test]
    fn stopped_counts_come_from_the_last_stopped_line() {
        let log = "x stopped received=1 sent=2\nlater\ny stopped received=7 sent=9 dropped=0\n";
        assert_eq!(stopped_count(log, "sent="), Some(9));
        assert_eq!(stopped_count(log, "received="), Some(7));
        assert_eq!(stopped_count(log, "to_slips="), None);
        assert_eq!(stopped_count("no such line", "sent="), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
