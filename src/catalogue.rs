//! The public error catalogue: every code of `http-api.md` (delivery level, record level, warnings,
//! notes), its HTTP status and the JSON error body. Modules keep their own `thiserror` enums and map
//! into [`Code`] at the API edge; nothing else invents codes.

use serde::{Deserialize, Serialize};

/// A code of the spec's error catalogue (`http-api.md`, "Error codes").
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum Code {
    /// Not well-formed, or a DTD / entity declaration.
    X000,
    /// Structure does not fit the format.
    X001,
    /// Bytes not valid in the declared or default encoding.
    S001,
    /// Unsupported code list id or version.
    S010,
    /// Every record was rejected.
    S020,
    /// Duplicate delivery.
    S100,
    /// Same idempotency key, different content.
    S101,
    /// Format or version not supported, or no mapping for this vendor.
    V000,
    /// Body larger than the limit.
    L001,
    /// Too many records.
    L002,
    /// Nesting too deep.
    L003,
    /// A value longer than 4 KiB.
    L004,
    /// Not authenticated.
    T070,
    /// Not allowed.
    T071,
    /// Storage unavailable.
    U001,
    /// Required field missing.
    F001,
    /// Bad format.
    F002,
    /// Code not in the code list or the mapping's value map.
    F003,
    /// Inconsistent values.
    F004,
    /// The same `record_id` twice in one delivery.
    F005,
    /// Value out of range.
    F006,
    /// Partial birth date.
    W001,
    /// Unknown field or column ignored.
    W002,
    /// Not routed to a recipient for lack of valid consent.
    C001,
    /// A field dropped because the consent does not cover it.
    C002,
    /// Aggregate dimension not allowed for this recipient.
    A001,
    /// Resource not found (no spec code of its own; answered as `404`).
    N404,
    /// Method not allowed on this endpoint (answered as `405`).
    M405,
    /// Request malformed in a way no other code covers (bad query parameter, bad JSON body).
    R400,
    /// An internal failure; never caused by input.
    I500,
    /// A `Content-Encoding` the endpoint does not accept (answered as `415`).
    R415,
    /// Too many requests from one principal, or failed authentications from one address
    /// (answered as `429` with `Retry-After`).
    R429,
    /// The resource is not in a state that allows the action (e.g. replaying a push group
    /// that is not a dead letter; answered as `409`).
    R409,
}

/// The catalogue, one row per code: the code, as the spec spells it, the HTTP status an API
/// error of it answers with (`422` for the codes that only stand in receipts), and its title. In
/// the order of [`Code`].
const CATALOGUE: &[(Code, &str, u16, &str)] = &[
    (
        Code::X000,
        "X000",
        422,
        "Not well-formed, or a DTD / entity declaration",
    ),
    (Code::X001, "X001", 422, "Structure does not fit the format"),
    (
        Code::S001,
        "S001",
        422,
        "Bytes not valid in the declared or default encoding",
    ),
    (
        Code::S010,
        "S010",
        422,
        "Unsupported code list id or version",
    ),
    (Code::S020, "S020", 422, "Every record was rejected"),
    (Code::S100, "S100", 200, "Duplicate delivery"),
    (
        Code::S101,
        "S101",
        409,
        "Same idempotency key, different content",
    ),
    (
        Code::V000,
        "V000",
        400,
        "Format or version not supported, or no mapping for this vendor",
    ),
    (Code::L001, "L001", 413, "Body larger than the limit"),
    (Code::L002, "L002", 422, "Too many records"),
    (Code::L003, "L003", 422, "Nesting too deep"),
    (Code::L004, "L004", 422, "A value longer than 4 KiB"),
    (Code::T070, "T070", 401, "Not authenticated"),
    (Code::T071, "T071", 403, "Not allowed"),
    (Code::U001, "U001", 503, "Storage unavailable"),
    (Code::F001, "F001", 422, "Required field missing"),
    (Code::F002, "F002", 422, "Bad format"),
    (
        Code::F003,
        "F003",
        422,
        "Code not in the code list or the mapping's value map",
    ),
    (Code::F004, "F004", 422, "Inconsistent values"),
    (
        Code::F005,
        "F005",
        422,
        "The same `record_id` twice in one delivery",
    ),
    (Code::F006, "F006", 422, "Value out of range"),
    (Code::W001, "W001", 422, "Partial birth date"),
    (Code::W002, "W002", 422, "Unknown field or column ignored"),
    (
        Code::C001,
        "C001",
        422,
        "Not routed to a recipient for lack of valid consent",
    ),
    (
        Code::C002,
        "C002",
        422,
        "A field dropped because the consent does not cover it",
    ),
    (
        Code::A001,
        "A001",
        400,
        "Aggregate dimension not allowed for this recipient",
    ),
    (Code::N404, "N404", 404, "Resource not found"),
    (
        Code::M405,
        "M405",
        405,
        "Method not allowed on this endpoint",
    ),
    (
        Code::R400,
        "R400",
        400,
        "Request malformed in a way no other code covers (bad query parameter, bad JSON body)",
    ),
    (
        Code::I500,
        "I500",
        500,
        "An internal failure; never caused by input",
    ),
    (
        Code::R415,
        "R415",
        415,
        "A `Content-Encoding` the endpoint does not accept",
    ),
    (
        Code::R429,
        "R429",
        429,
        "Too many requests from one principal, or failed authentications from one address",
    ),
    (
        Code::R409,
        "R409",
        409,
        "The resource is not in a state that allows the action (e.g. replaying a push group that is not a dead letter)",
    ),
];

impl Code {
    /// This code's row of the catalogue.
    fn row(self) -> &'static (Code, &'static str, u16, &'static str) {
        &CATALOGUE[self as usize]
    }

    /// The code as the spec spells it.
    pub fn as_str(self) -> &'static str {
        self.row().1
    }

    /// The HTTP status an API error of this code answers with.
    pub fn http_status(self) -> u16 {
        self.row().2
    }

    /// The code's title (what the spec's catalogue calls it).
    pub fn title(self) -> &'static str {
        self.row().3
    }

    /// True for the codes that reject a whole delivery (receipt status `E4`).
    pub fn is_delivery_level(self) -> bool {
        matches!(
            self,
            Code::X000
                | Code::X001
                | Code::S001
                | Code::S010
                | Code::S020
                | Code::V000
                | Code::L001
                | Code::L002
                | Code::L003
                | Code::L004
        )
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error body of every API error: `{"code", "message", "details"}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Catalogue code.
    pub code: Code,
    /// Text for a person; never echoes more than 200 characters of the caller's input.
    pub message: String,
    /// Further structured details (may be empty).
    pub details: Vec<serde_json::Value>,
}

/// Shortens caller-supplied text for inclusion in a message (the spec allows at most 200 characters).
pub fn echo(input: &str) -> String {
    const MAX: usize = 60;
    if input.chars().count() <= MAX {
        input.to_string()
    } else {
        let cut: String = input.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

/// Canonical fields whose values are not personal data, so receipts may quote them (shortened
/// by [`echo`]): the reporting period, the program, and the codes that describe the delivery
/// rather than the client — service kinds, consent purposes and field groups. Everything else,
/// in particular every `client.*`, `sensitive.*`, `case.*` value and every date, is described
/// by its shape only ([`shape`]). `field` may carry array indices (`services[2].kind`).
pub fn quotable(field: &str) -> bool {
    let mut pattern = String::with_capacity(field.len());
    let mut in_index = false;
    for c in field.chars() {
        match c {
            '[' => {
                in_index = true;
                pattern.push('[');
            }
            ']' => {
                in_index = false;
                pattern.push(']');
            }
            _ if in_index => {}
            _ => pattern.push(c),
        }
    }
    matches!(
        pattern.as_str(),
        "reporting_period"
            | "program"
            | "schema_version"
            | "services[].kind"
            | "consents[].purpose"
            | "consents[].fields"
            | "consents[].fields[]"
    )
}

/// The shape of a value for a message, never the value itself: its length and the kinds of
/// characters in it, e.g. `10 characters: digits and '-'` or `7 characters: letters, a space
/// and ','`. Single punctuation characters are named; letters and digits only counted.
pub fn shape(value: &str) -> String {
    let n = value.chars().count();
    if n == 0 {
        return "an empty value".to_string();
    }
    let (mut letters, mut digits, mut spaces) = (false, false, false);
    let mut others: Vec<char> = Vec::new();
    for c in value.chars() {
        if c.is_alphabetic() {
            letters = true;
        } else if c.is_ascii_digit() {
            digits = true;
        } else if c.is_whitespace() {
            spaces = true;
        } else if !others.contains(&c) && others.len() < 4 {
            others.push(c);
        }
    }
    let mut kinds: Vec<String> = Vec::new();
    if letters {
        kinds.push("letters".into());
    }
    if digits {
        kinds.push("digits".into());
    }
    if spaces {
        kinds.push("spaces".into());
    }
    for c in others {
        kinds.push(format!("'{}'", c.escape_debug()));
    }
    let kinds = match kinds.len() {
        0 => String::new(),
        1 => kinds.remove(0),
        _ => {
            let last = kinds.pop().unwrap_or_default();
            format!("{} and {last}", kinds.join(", "))
        }
    };
    let chars = if n == 1 { "character" } else { "characters" };
    format!("{n} {chars}: {kinds}")
}

/// A value for a message about `field`: quoted (shortened) when [`quotable`], else its
/// [`shape`] — `'SGB XII'`, or `the value (7 characters: letters and spaces)`.
pub fn value_for(field: &str, value: &str) -> String {
    if quotable(field) {
        format!("'{}'", echo(value))
    } else {
        format!("the value ({})", shape(value))
    }
}

#[cfg(test)]
mod catalogue_tests {
    use super::*;

    #[test]
    fn one_row_per_code_in_the_order_of_the_enum() {
        for (i, (code, spelt, status, title)) in CATALOGUE.iter().enumerate() {
            assert_eq!(*code as usize, i, "{code}: row {i}");
            assert_eq!(format!("{code:?}"), *spelt);
            assert!((200..600).contains(status), "{code}");
            assert!(!title.is_empty(), "{code}");
        }
        assert_eq!(Code::R409 as usize, CATALOGUE.len() - 1);
        assert_eq!(Code::U001.http_status(), 503);
        assert_eq!(Code::F003.http_status(), 422);
        assert_eq!(Code::S100.http_status(), 200);
    }
}

#[cfg(test)]
mod shape_tests {
    use super::*;

    #[test]
    fn quotable_fields() {
        assert!(quotable("program"));
        assert!(quotable("reporting_period"));
        assert!(quotable("services[3].kind"));
        assert!(quotable("consents[0].fields[2]"));
        assert!(!quotable("client.sex"));
        assert!(!quotable("client.family_name"));
        assert!(!quotable("sensitive.primary_substance"));
        assert!(!quotable("services[0].start"));
        assert!(!quotable("case.case_id"));
    }

    #[test]
    fn shapes_never_hold_the_value() {
        assert_eq!(shape("1990-02-30"), "10 characters: digits and '-'");
        assert_eq!(
            shape("Müller, Jörg"),
            "12 characters: letters, spaces and ','"
        );
        assert_eq!(shape("x"), "1 character: letters");
        assert_eq!(shape(""), "an empty value");
        assert_eq!(value_for("program", "SGB XII"), "'SGB XII'");
        assert_eq!(
            value_for("client.sex", "weiblich"),
            "the value (8 characters: letters)"
        );
    }
}
