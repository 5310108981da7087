//! Business hours: parsing the `schedule` node's hours and dates, and deciding open or
//! closed at an instant.
//!
//! Owns the meaning of `HH:MM-HH:MM`, `YYYY-MM-DD` / `MM-DD` and the precedence of
//! holidays over special days over weekdays over `daily`. It never reads the system
//! clock: the instant is always passed in. Time zones come from jiff's bundled IANA
//! database, so a server without tzdata gives the same answer as one with it.

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::model::{Day, Schedule};

/// Minutes since midnight, `[start, end)`.
pub type Range = (u16, u16);

/// Parses `HH:MM-HH:MM` (end may be `24:00`; the range may not wrap past midnight).
pub fn parse_range(s: &str) -> Result<Range, String> {
    let bad = || format!("\"{s}\" is not a time range; write HH:MM-HH:MM, e.g. 09:00-17:30");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let start = parse_time(a.trim()).ok_or_else(bad)?;
    let end = parse_time(b.trim()).ok_or_else(bad)?;
    if start >= end {
        return Err(format!(
            "\"{s}\" ends before it starts; a range cannot cross midnight, so split it into \
             two days (e.g. 22:00-24:00 and 00:00-06:00)"
        ));
    }
    Ok((start, end))
}

fn parse_time(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    match (h, m) {
        (24, 0) => Some(24 * 60),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

/// A date in a schedule: one day, or the same day every year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateSpec {
    On(Date),
    EveryYear { month: i8, day: i8 },
}

impl DateSpec {
    fn matches(self, d: Date) -> bool {
        match self {
            DateSpec::On(x) => x == d,
            DateSpec::EveryYear { month, day } => d.month() == month && d.day() == day,
        }
    }
}

/// Parses `YYYY-MM-DD` or `MM-DD`.
pub fn parse_date(s: &str) -> Result<DateSpec, String> {
    let bad = || format!("\"{s}\" is not a date; write YYYY-MM-DD, or MM-DD for every year");
    let parts: Vec<&str> = s.split('-').collect();
    let num = |p: &str, len: usize| -> Result<i16, String> {
        if p.len() != len || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        p.parse().map_err(|_| bad())
    };
    match parts.as_slice() {
        [y, m, d] => {
            let (y, m, d) = (num(y, 4)?, num(m, 2)? as i8, num(d, 2)? as i8);
            Date::new(y, m, d)
                .map(DateSpec::On)
                .map_err(|_| format!("\"{s}\" is not a day of the calendar"))
        }
        [m, d] => {
            let (m, d) = (num(m, 2)? as i8, num(d, 2)? as i8);
            // A leap year, so 02-29 is accepted (it matches only in leap years).
            Date::new(2000, m, d)
                .map(|_| DateSpec::EveryYear { month: m, day: d })
                .map_err(|_| format!("\"{s}\" is not a day of the calendar"))
        }
        _ => Err(bad()),
    }
}

fn day_of(w: Weekday) -> Day {
    match w {
        Weekday::Monday => Day::Mon,
        Weekday::Tuesday => Day::Tue,
        Weekday::Wednesday => Day::Wed,
        Weekday::Thursday => Day::Thu,
        Weekday::Friday => Day::Fri,
        Weekday::Saturday => Day::Sat,
        Weekday::Sunday => Day::Sun,
    }
}

/// Whether the schedule is open at `now`. Entries that do not parse count as absent; the
/// validator rejects such flows before they can run. An unknown time zone means UTC for
/// the same reason.
pub fn is_open(s: &Schedule, now: Timestamp) -> bool {
    let tz = TimeZone::get(&s.timezone.value).unwrap_or(TimeZone::UTC);
    let local = now.to_zoned(tz);
    let date = local.date();
    let minute = local.hour() as u16 * 60 + local.minute() as u16;
    let date_is = |text: &str| parse_date(text).is_ok_and(|d| d.matches(date));

    if s.holidays.iter().any(|h| date_is(&h.value)) {
        return false;
    }
    let ranges = match s.special_days.iter().find(|(d, _)| date_is(&d.value)) {
        Some((_, ranges)) => ranges,
        None => {
            let today = day_of(local.weekday());
            match s
                .hours
                .iter()
                .find(|(d, _)| d.value == today)
                .or_else(|| s.hours.iter().find(|(d, _)| d.value == Day::Daily))
            {
                Some((_, ranges)) => ranges,
                None => return false,
            }
        }
    };
    ranges
        .iter()
        .filter_map(|r| parse_range(&r.value).ok())
        .any(|(a, b)| a <= minute && minute < b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(yaml: &str) -> Schedule {
        serde_saphyr::from_str(yaml).unwrap()
    }

    const OFFICE: &str = "timezone: Europe/Istanbul\n\
        hours:\n  mon: [\"09:00-12:00\", \"13:00-18:00\"]\n  sat: [\"10:00-14:00\"]\n  daily: [\"09:00-17:00\"]\n\
        holidays: [\"2026-10-29\", \"01-01\"]\n\
        special_days:\n  \"2026-12-31\": [\"09:00-13:00\"]\n  \"2026-12-30\": []\n\
        open: a\nclosed: b\n";

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn weekday_hours_in_the_schedule_time_zone() {
        let s = schedule(OFFICE);
        // Monday 2026-12-07, Istanbul is UTC+3.
        assert!(is_open(&s, at("2026-12-07T09:30:00+03:00")));
        assert!(!is_open(&s, at("2026-12-07T12:30:00+03:00")), "lunch break");
        assert!(!is_open(&s, at("2026-12-07T05:59:00Z")), "08:59 local");
        assert!(is_open(&s, at("2026-12-07T06:00:00Z")), "09:00 local");
        // Tuesday falls back to daily; Saturday has its own.
        assert!(is_open(&s, at("2026-12-08T16:59:00+03:00")));
        assert!(!is_open(&s, at("2026-12-08T17:00:00+03:00")));
        assert!(is_open(&s, at("2026-12-05T10:00:00+03:00")));
        assert!(!is_open(&s, at("2026-12-05T15:00:00+03:00")));
    }

    #[test]
    fn holidays_and_special_days_win() {
        let s = schedule(OFFICE);
        assert!(
            !is_open(&s, at("2026-10-29T10:00:00+03:00")),
            "dated holiday"
        );
        assert!(
            !is_open(&s, at("2027-01-01T10:00:00+03:00")),
            "yearly holiday"
        );
        assert!(
            is_open(&s, at("2026-12-31T10:00:00+03:00")),
            "short day, morning"
        );
        assert!(
            !is_open(&s, at("2026-12-31T14:00:00+03:00")),
            "short day, afternoon"
        );
        assert!(
            !is_open(&s, at("2026-12-30T10:00:00+03:00")),
            "special day closed"
        );
    }

    #[test]
    fn all_day_and_parsing() {
        let s =
            schedule("timezone: UTC\nhours: { daily: [\"00:00-24:00\"] }\nopen: a\nclosed: b\n");
        assert!(is_open(&s, at("2026-12-31T23:59:59Z")));
        assert!(is_open(&s, at("2026-12-31T00:00:00Z")));
        assert!(parse_range("17:00-09:00").is_err());
        assert!(parse_range("9-17").is_err());
        assert!(parse_range("24:01-24:00").is_err());
        assert!(parse_date("2026-02-30").is_err());
        assert!(parse_date("02-29").is_ok());
        assert!(parse_date("2026/01/01").is_err());
    }
}
