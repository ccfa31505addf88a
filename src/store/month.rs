//! Calendar months, as retention needs them: reporting periods (`YYYY-MM`), the cut-off month of
//! records, and the monthly time partitions of the PostgreSQL store (bounds in unix milliseconds,
//! UTC, for tables partitioned by a time column).

use chrono::{Datelike, TimeZone, Utc};

/// One calendar month (proleptic Gregorian, year 0–9999).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    /// 1–12.
    month: u32,
}

impl Month {
    /// The month, if `month` is 1–12 and `year` 0–9999.
    pub fn new(year: i32, month: u32) -> Option<Month> {
        ((0..=9999).contains(&year) && (1..=12).contains(&month)).then_some(Month { year, month })
    }

    /// Parses a reporting period: exactly `YYYY-MM`.
    pub fn parse_period(s: &str) -> Option<Month> {
        let b = s.as_bytes();
        if b.len() != 7
            || b[4] != b'-'
            || !s[..4]
                .bytes()
                .chain(s[5..].bytes())
                .all(|c| c.is_ascii_digit())
        {
            return None;
        }
        Month::new(s[..4].parse().ok()?, s[5..].parse().ok()?)
    }

    /// The year.
    pub fn year(self) -> i32 {
        self.year
    }

    /// The month of the year, 1–12.
    pub fn month(self) -> u32 {
        self.month
    }

    /// As a reporting period, `YYYY-MM`.
    pub fn period(self) -> String {
        format!("{:04}-{:02}", self.year, self.month)
    }

    /// The month (UTC) of a unix-millisecond instant.
    pub fn of_ms(ms: i64) -> Month {
        let t = Utc
            .timestamp_millis_opt(ms)
            .single()
            .unwrap_or_else(Utc::now);
        Month {
            year: t.year().clamp(0, 9999),
            month: t.month(),
        }
    }

    /// The month of a calendar day.
    pub fn of_date(d: chrono::NaiveDate) -> Month {
        Month {
            year: d.year().clamp(0, 9999),
            month: d.month(),
        }
    }

    /// Unix milliseconds of the month's first instant (00:00 UTC on the 1st).
    pub fn start_ms(self) -> i64 {
        chrono::NaiveDate::from_ymd_opt(self.year, self.month, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| Utc.from_utc_datetime(&t).timestamp_millis())
            .unwrap_or(i64::MIN)
    }

    /// The month `n` months later (earlier for negative `n`), clamped to years 0–9999.
    pub fn plus(self, n: i64) -> Month {
        let index = i64::from(self.year) * 12 + i64::from(self.month) - 1 + n;
        let index = index.clamp(0, 9999 * 12 + 11);
        Month {
            year: i32::try_from(index / 12).unwrap_or(9999),
            month: u32::try_from(index % 12).unwrap_or(0) + 1,
        }
    }

    /// The next month (December 9999 stays).
    pub fn next(self) -> Month {
        self.plus(1)
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_periods_strictly() {
        assert_eq!(Month::parse_period("2026-01"), Month::new(2026, 1));
        assert_eq!(Month::parse_period("0000-12"), Month::new(0, 12));
        for bad in [
            "2026-13",
            "2026-00",
            "2026-1",
            "26-01",
            "2026/01",
            "2026-01-01",
            "+026-01",
            "",
        ] {
            assert_eq!(Month::parse_period(bad), None, "{bad}");
        }
    }

    #[test]
    fn arithmetic_and_bounds() {
        let m = Month::new(2026, 11).unwrap();
        assert_eq!(m.plus(2).period(), "2027-01");
        assert_eq!(m.plus(-24).period(), "2024-11");
        assert_eq!(m.plus(-11).period(), "2025-12");
        assert_eq!(m.next(), Month::new(2026, 12).unwrap());
        assert_eq!(Month::new(9999, 12).unwrap().next().period(), "9999-12");
        assert_eq!(Month::new(0, 1).unwrap().plus(-5).period(), "0000-01");
        assert_eq!(m.start_ms(), 1_793_491_200_000);
        assert_eq!(Month::of_ms(1_793_491_200_000), m);
        assert_eq!(
            Month::of_ms(1_793_491_199_999),
            Month::new(2026, 10).unwrap()
        );
        assert_eq!(m.to_string(), "2026-11");
        assert!(Month::new(2025, 12).unwrap() < Month::new(2026, 1).unwrap());
    }
}
