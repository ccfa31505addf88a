//! Time: where "now" comes from ([`Clock`]), the calendar day in Europe/Berlin, the one RFC 3339
//! rendering of unix milliseconds every answer, event and file uses, and the calendar facts
//! that mapping rules and validation share (days in a month, why a text is no date).

/// Where "now" comes from; tests pin it.
pub trait Clock: Send + Sync {
    /// Unix milliseconds.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock pinned to one instant (tests).
#[derive(Debug)]
pub struct FixedClock(pub i64);

impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        self.0
    }
}

/// The calendar day in Europe/Berlin at a unix-millisecond instant: CET (UTC+1), or CEST
/// (UTC+2) from the last Sunday of March 01:00 UTC to the last Sunday of October 01:00 UTC.
pub fn berlin_date(now_ms: i64) -> chrono::NaiveDate {
    use chrono::{Datelike, NaiveDate, TimeZone, Utc, Weekday};
    let utc = Utc
        .timestamp_millis_opt(now_ms)
        .single()
        .unwrap_or_else(Utc::now);
    let year = utc.year();
    let last_sunday = |month: u32| {
        let mut d =
            NaiveDate::from_ymd_opt(year, month, 31).expect("March and October have 31 days");
        while d.weekday() != Weekday::Sun {
            d = d.pred_opt().expect("in range");
        }
        Utc.from_utc_datetime(&d.and_hms_opt(1, 0, 0).expect("valid time"))
    };
    let offset = if utc >= last_sunday(3) && utc < last_sunday(10) {
        2
    } else {
        1
    };
    (utc + chrono::Duration::hours(offset)).date_naive()
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds (`2026-01-15T10:00:00.000Z`); empty when
/// out of range.
pub fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

// --- Calendar dates as text (ISO 8601 `YYYY-MM-DD`, `YYYY-MM`, `YYYY`) ---------------------

/// Number of days in a month of the proleptic Gregorian calendar.
pub(crate) fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 {
                29
            } else {
                28
            }
        }
    }
}

/// The number a run of ASCII digits stands for (`None`: empty, or not only digits).
pub(crate) fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
}

/// A four-digit year from 0001 (`None`: anything else).
pub(crate) fn year(b: &[u8]) -> Option<i32> {
    let y = digits(b)?;
    // Year 0000 is not a calendar year of xs:date.
    (b.len() == 4 && y >= 1).then_some(y as i32)
}

/// English month names, for messages.
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Why `s` is not a date of one of the `forms` (`YYYY-MM-DD`, `YYYY-MM`, `YYYY`), described by
/// its shape and never quoting it: `a date with day 30 in February`, `a month 13`, or the
/// value's [`shape`](crate::catalogue::shape) when it has none of the forms.
pub(crate) fn date_problem(s: &str, forms: &[&str]) -> String {
    let b = s.as_bytes();
    let all_digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let ymd = b.len() == 10 && b[4] == b'-' && b[7] == b'-';
    let ym = b.len() == 7 && b[4] == b'-';
    let y = b.len() == 4;
    let form = if ymd {
        "YYYY-MM-DD"
    } else if ym {
        "YYYY-MM"
    } else {
        "YYYY"
    };
    let fits = (ymd && all_digits(0..4) && all_digits(5..7) && all_digits(8..10))
        || (ym && all_digits(0..4) && all_digits(5..7))
        || (y && all_digits(0..4));
    if !fits || !forms.contains(&form) {
        return format!("a value of another form ({})", crate::catalogue::shape(s));
    }
    if year(&b[..4]).is_none() {
        return "year zero does not exist".to_string();
    }
    if ym || ymd {
        let m = digits(&b[5..7]).unwrap_or(0);
        if !(1..=12).contains(&m) {
            return format!("month {m} does not exist");
        }
        if ymd {
            let yr = year(&b[..4]).unwrap_or(1);
            let d = digits(&b[8..10]).unwrap_or(0);
            let name = MONTHS[(m - 1) as usize];
            if d == 0 {
                return "a date with day 0".to_string();
            }
            if m == 2 && d == 29 {
                return "a date with day 29 in February of a year that is not a leap year"
                    .to_string();
            }
            if d > days_in_month(yr, m) {
                return format!("a date with day {d} in {name}");
            }
        }
    }
    "a date that does not exist".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn berlin_days_around_midnight_and_dst() {
        assert_eq!(
            berlin_date(ms("2026-01-15T22:59:59Z")).to_string(),
            "2026-01-15"
        );
        assert_eq!(
            berlin_date(ms("2026-01-15T23:00:00Z")).to_string(),
            "2026-01-16"
        );
        assert_eq!(
            berlin_date(ms("2026-07-15T21:59:59Z")).to_string(),
            "2026-07-15"
        );
        assert_eq!(
            berlin_date(ms("2026-07-15T22:00:00Z")).to_string(),
            "2026-07-16"
        );
        // 2026: CEST from 29 March 01:00 UTC to 25 October 01:00 UTC.
        assert_eq!(
            berlin_date(ms("2026-03-28T23:30:00Z")).to_string(),
            "2026-03-29"
        );
        assert_eq!(
            berlin_date(ms("2026-10-25T22:30:00Z")).to_string(),
            "2026-10-25"
        );
        assert_eq!(
            berlin_date(ms("2026-10-24T22:30:00Z")).to_string(),
            "2026-10-25"
        );
    }
}
