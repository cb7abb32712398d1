//! The tracker's wall clock ([`WallClock`]) and UTC days ([`Day`]).

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use skytower_transports::dmsg::replay::unix_ms_now;

/// Milliseconds in a UTC day.
pub const DAY_MS: u64 = 86_400_000;

/// The Unix time (milliseconds) the tracker judges heartbeats, online status and retention by.
/// Production uses [`SystemClock`]; tests use [`TokioClock`], which follows paused tokio time.
pub trait WallClock: Send + Sync + fmt::Debug {
    /// Unix time now, in milliseconds.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_ms(&self) -> u64 {
        unix_ms_now()
    }
}

/// A wall clock that starts at a chosen Unix time and moves with the tokio clock, so
/// `tokio::time::pause()` / `advance()` drive both the tracker's intervals and its dates.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
/// use std::time::Duration;
/// use skytower_services::uptime_tracker::{TokioClock, WallClock};
///
/// let clock = TokioClock::starting_at(1_700_000_000_000);
/// tokio::time::advance(Duration::from_secs(60)).await;
/// assert_eq!(clock.now_ms(), 1_700_000_060_000);
/// # });
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    base_ms: u64,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `unix_ms` now.
    pub fn starting_at(unix_ms: u64) -> Self {
        TokioClock {
            base_ms: unix_ms,
            start: tokio::time::Instant::now(),
        }
    }
}

impl WallClock for TokioClock {
    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.base_ms.saturating_add(elapsed)
    }
}

/// A UTC day: days since 1970-01-01. Written `YYYY-MM-DD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub u32);

impl Day {
    /// The day containing Unix time `ms`.
    pub fn of_ms(ms: u64) -> Day {
        Day(u32::try_from(ms / DAY_MS).unwrap_or(u32::MAX))
    }

    /// Unix milliseconds at the start of the day.
    pub fn start_ms(self) -> u64 {
        u64::from(self.0) * DAY_MS
    }

    /// `n` days earlier (saturating at 1970-01-01).
    pub fn minus(self, n: u32) -> Day {
        Day(self.0.saturating_sub(n))
    }

    /// The next day.
    pub fn next(self) -> Day {
        Day(self.0.saturating_add(1))
    }

    /// Parses `YYYY-MM-DD` (a real calendar date, not before 1970).
    ///
    /// ```
    /// use skytower_services::uptime_tracker::Day;
    ///
    /// let day = Day::parse("2026-01-05").unwrap();
    /// assert_eq!(day.to_string(), "2026-01-05");
    /// assert_eq!(day.start_ms(), 1_767_571_200_000);
    /// assert!(Day::parse("2026-02-30").is_none());
    /// assert!(Day::parse("2026-1-5").is_none());
    /// ```
    pub fn parse(s: &str) -> Option<Day> {
        let b = s.as_bytes();
        let shape = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if !shape {
            return None;
        }
        let t = humantime::parse_rfc3339(&format!("{s}T00:00:00Z")).ok()?;
        let ms = t.duration_since(UNIX_EPOCH).ok()?.as_millis();
        Some(Day::of_ms(u64::try_from(ms).ok()?))
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = UNIX_EPOCH + Duration::from_millis(self.start_ms());
        let text = humantime::format_rfc3339_seconds(t).to_string();
        f.write_str(text.get(..10).unwrap_or(&text))
    }
}

/// An inclusive range of days.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DayRange {
    /// The first day.
    pub from: Day,
    /// The last day (inclusive).
    pub to: Day,
}

impl DayRange {
    /// The days, in order.
    pub fn days(self) -> impl Iterator<Item = Day> {
        (self.from.0..=self.to.0).map(Day)
    }

    /// Whether `day` is in the range.
    pub fn contains(self, day: Day) -> bool {
        self.from <= day && day <= self.to
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_and_reject_malformed_dates() {
        assert_eq!(Day(0).to_string(), "1970-01-01");
        assert_eq!(Day::parse("1970-01-01"), Some(Day(0)));
        for d in [Day(1), Day(59), Day(365 * 30 + 7), Day(20_454)] {
            assert_eq!(Day::parse(&d.to_string()), Some(d));
        }
        assert_eq!(
            Day::parse("2024-02-29").unwrap().next().to_string(),
            "2024-03-01"
        );
        for bad in [
            "",
            "2026-13-01",
            "2026-00-10",
            "2026-01-32",
            "2025-02-29",
            "2026/01/05",
            "2026-01-05T00:00:00Z",
            "+026-01-05",
            "1969-12-31",
            "２026-01-05",
        ] {
            assert_eq!(Day::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn day_of_ms_is_utc() {
        let d = Day::parse("2026-01-05").unwrap();
        assert_eq!(Day::of_ms(d.start_ms()), d);
        assert_eq!(Day::of_ms(d.start_ms() - 1), d.minus(1));
        assert_eq!(Day::of_ms(d.start_ms() + DAY_MS - 1), d);
    }
}
