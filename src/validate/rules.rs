//! The record rules a JSON Schema cannot express, as small pure functions: strict calendar dates,
//! reporting months, partial birth dates and their 120-year window, and the character rule for
//! names (conformance-rules.md, "Record level" and "Text"). No allocation on the success path.

pub(crate) use crate::clock::{date_problem, days_in_month};
use crate::clock::{digits, year};
use unicode_general_category::{GeneralCategory, get_general_category};
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

/// A calendar day as (year, month, day); compares chronologically.
pub(crate) type Day = (i32, u32, u32);

/// Longest name in code points (after NFC).
pub(crate) const NAME_MAX: usize = 100;

/// Parses a strict `YYYY-MM-DD` calendar day.
pub(crate) fn parse_date(s: &str) -> Option<Day> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y = year(&b[..4])?;
    let m = digits(&b[5..7])?;
    let d = digits(&b[8..10])?;
    ((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m)).then_some((y, m, d))
}

/// Parses a strict `YYYY-MM` month.
pub(crate) fn parse_month(s: &str) -> Option<(i32, u32)> {
    let b = s.as_bytes();
    if b.len() != 7 || b[4] != b'-' {
        return None;
    }
    let y = year(&b[..4])?;
    let m = digits(&b[5..7])?;
    (1..=12).contains(&m).then_some((y, m))
}

/// A birth date, full or partial, as the range of days it may stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BirthDate {
    /// First possible day.
    pub(crate) first: Day,
    /// Last possible day.
    pub(crate) last: Day,
    /// True for `YYYY-MM` and `YYYY`.
    pub(crate) partial: bool,
}

/// Parses `YYYY-MM-DD`, `YYYY-MM` or `YYYY`.
pub(crate) fn parse_birth_date(s: &str) -> Option<BirthDate> {
    match s.len() {
        10 => parse_date(s).map(|d| BirthDate {
            first: d,
            last: d,
            partial: false,
        }),
        7 => parse_month(s).map(|(y, m)| BirthDate {
            first: (y, m, 1),
            last: (y, m, days_in_month(y, m)),
            partial: true,
        }),
        4 => year(s.as_bytes()).map(|y| BirthDate {
            first: (y, 1, 1),
            last: (y, 12, 31),
            partial: true,
        }),
        _ => None,
    }
}

/// Where a birth date stands relative to a reporting month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BirthRange {
    /// Within the window.
    Ok,
    /// First possible day after the reporting month's last day.
    AfterPeriod,
    /// Last possible day earlier than the reporting month's last day minus 120 years.
    TooOld,
}

/// Checks a birth date against the reporting month `(year, month)`: not after the month's last
/// day, and its last possible day not earlier than that day minus 120 years (exactly 120 is fine).
pub(crate) fn birth_range(birth: &BirthDate, period: (i32, u32)) -> BirthRange {
    let (y, m) = period;
    let period_end = (y, m, days_in_month(y, m));
    // The last day of the same month 120 years earlier is "the last day minus 120 years"
    // (a 29 February that does not exist then becomes the 28th).
    let oldest = (y - 120, m, days_in_month(y - 120, m));
    if birth.first > period_end {
        BirthRange::AfterPeriod
    } else if birth.last < oldest {
        BirthRange::TooOld
    } else {
        BirthRange::Ok
    }
}

/// Why a name is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameProblem {
    /// No characters.
    Empty,
    /// More than [`NAME_MAX`] code points after NFC; holds the count.
    TooLong(usize),
    /// A character that is not a letter, a mark, space, `-`, `'` or `.`.
    BadChar(char),
}

/// Checks the name rule: 1–100 code points after NFC, only letters (L*), marks (M*), space, `-`,
/// `'` and `.`.
pub(crate) fn check_name(s: &str) -> Result<(), NameProblem> {
    fn scan(chars: impl Iterator<Item = char>) -> Result<(), NameProblem> {
        let mut n = 0usize;
        for c in chars {
            n += 1;
            if !name_char(c) {
                return Err(NameProblem::BadChar(c));
            }
        }
        match n {
            0 => Err(NameProblem::Empty),
            n if n > NAME_MAX => Err(NameProblem::TooLong(n)),
            _ => Ok(()),
        }
    }
    if is_nfc_quick(s.chars()) == IsNormalized::Yes {
        scan(s.chars())
    } else {
        scan(s.nfc())
    }
}

fn name_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic() || matches!(c, ' ' | '-' | '\'' | '.');
    }
    matches!(
        get_general_category(c),
        GeneralCategory::UppercaseLetter
            | GeneralCategory::LowercaseLetter
            | GeneralCategory::TitlecaseLetter
            | GeneralCategory::ModifierLetter
            | GeneralCategory::OtherLetter
            | GeneralCategory::NonspacingMark
            | GeneralCategory::SpacingMark
            | GeneralCategory::EnclosingMark
    )
}

/// True if `s` is exactly `n` ASCII digits.
pub(crate) fn ascii_digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_dates() {
        assert_eq!(parse_date("2024-02-29"), Some((2024, 2, 29)));
        assert_eq!(parse_date("2000-02-29"), Some((2000, 2, 29)));
        for bad in [
            "1990-02-30",
            "1900-02-29",
            "2023-02-29",
            "2026-04-31",
            "2026-13-01",
            "2026-00-10",
            "2026-01-00",
            "0000-01-01",
            "2026-1-01",
            "2026-01-1",
            "26-01-01",
            "2026/01/01",
            "2026-01-01T00:00",
            "２０２６-01-01",
            "+026-01-01",
            "",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
        assert_eq!(parse_month("2026-10"), Some((2026, 10)));
        assert_eq!(parse_month("2026-13"), None);
        assert_eq!(parse_month("2026-1"), None);
    }

    #[test]
    fn partial_birth_dates() {
        let y = parse_birth_date("1983").unwrap();
        assert!(y.partial);
        assert_eq!((y.first, y.last), ((1983, 1, 1), (1983, 12, 31)));
        let m = parse_birth_date("2024-02").unwrap();
        assert_eq!((m.first, m.last), ((2024, 2, 1), (2024, 2, 29)));
        assert!(!parse_birth_date("1983-05-17").unwrap().partial);
        for bad in ["198", "19831", "1983-5", "1983-13", "1983-02-30", "0000"] {
            assert_eq!(parse_birth_date(bad), None, "{bad}");
        }
    }

    fn range(birth: &str, period: (i32, u32)) -> BirthRange {
        birth_range(&parse_birth_date(birth).unwrap(), period)
    }

    #[test]
    fn birth_window() {
        let p = (2026, 10);
        // Born in the reporting month, on its last day: fine; the day after: too late.
        assert_eq!(range("2026-10-31", p), BirthRange::Ok);
        assert_eq!(range("2026-10", p), BirthRange::Ok);
        assert_eq!(range("2026", p), BirthRange::Ok);
        assert_eq!(range("2026-11-01", p), BirthRange::AfterPeriod);
        assert_eq!(range("2026-11", p), BirthRange::AfterPeriod);
        assert_eq!(range("2027", p), BirthRange::AfterPeriod);
        // Exactly 120 years before the month's last day is fine; a day more is not.
        assert_eq!(range("1906-10-31", p), BirthRange::Ok);
        assert_eq!(range("1906-10-30", p), BirthRange::TooOld);
        assert_eq!(range("1906-10", p), BirthRange::Ok);
        assert_eq!(range("1906-09", p), BirthRange::TooOld);
        assert_eq!(range("1906", p), BirthRange::Ok);
        assert_eq!(range("1905", p), BirthRange::TooOld);
        // February: 2020-02-29 minus 120 years is 1900-02-28 (1900 is no leap year).
        assert_eq!(range("1900-02-28", (2020, 2)), BirthRange::Ok);
        assert_eq!(range("1900-02-27", (2020, 2)), BirthRange::TooOld);
        // Very early reporting years do not underflow.
        assert_eq!(range("0001", (100, 1)), BirthRange::Ok);
    }

    #[test]
    fn names() {
        for ok in [
            "Müller",
            "Nowak-Kowalska",
            "O'Brien",
            "Jr.",
            "Anna Lena",
            "Çelik",
            "Şahin",
            "Ιωάννου",
            "Кравченко",
            "محمد",
            "李",
            "Zoe\u{308}",
            "Nguyễn",
            &"a".repeat(100),
            // 100 code points after NFC although 200 before.
            &"e\u{301}".repeat(100),
        ] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_name(""), Err(NameProblem::Empty));
        assert_eq!(check_name(&"a".repeat(101)), Err(NameProblem::TooLong(101)));
        assert_eq!(check_name("R2D2"), Err(NameProblem::BadChar('2')));
        assert_eq!(check_name("a_b"), Err(NameProblem::BadChar('_')));
        assert_eq!(check_name("a\tb"), Err(NameProblem::BadChar('\t')));
        assert_eq!(check_name("O’Brien"), Err(NameProblem::BadChar('’')));
        assert_eq!(check_name("Ⅻ"), Err(NameProblem::BadChar('Ⅻ')));
        assert_eq!(check_name("Ⓐnna"), Err(NameProblem::BadChar('Ⓐ')));
        assert_eq!(check_name("a\u{a0}b"), Err(NameProblem::BadChar('\u{a0}')));
    }

    #[test]
    fn digits_rule() {
        assert!(ascii_digits("40227", 5));
        assert!(!ascii_digits("4022", 5));
        assert!(!ascii_digits("4022a", 5));
        assert!(!ascii_digits("４０２２７", 5));
        assert!(ascii_digits("05111000", 8));
    }
}
