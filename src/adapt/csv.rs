//! The CSV engine: decodes the body (byte-order mark, the request's `charset`, else the mapping's
//! encoding), checks quoting strictly, reads the header row, and groups consecutive rows with the
//! same key column into one record tree: the first row's cells, plus for each list the rows it
//! selects. It knows no column names; the mapping file does.

use super::decode::{ByteGuard, DecodingReader, Guarded, Peeked, Step};
use super::mapping::{CsvSpec, MappingFile};
use super::rules::{RecordPlan, Rule, Source, apply_with, record_id, unknown_issue};
use super::{AdaptError, AdaptSink, DeliveryHeader, Issue, MAX_VALUE_BYTES, normalize};
use crate::catalogue::{Code, echo};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read};

/// A mapping compiled for the CSV engine.
#[derive(Debug)]
pub(crate) struct CsvPlan {
    spec: CsvSpec,
    record: RecordPlan,
    /// Every column a rule reads.
    mapped: BTreeSet<String>,
    /// Columns compared across the rows of a record (record-level fields), with the canonical
    /// path each fills.
    compared: Vec<(String, String)>,
}

impl CsvPlan {
    /// The record part of the plan.
    pub(crate) fn record(&self) -> &RecordPlan {
        &self.record
    }

    /// Compiles a checked mapping file.
    pub(crate) fn compile(file: &MappingFile) -> CsvPlan {
        let spec = file.csv.clone().expect("checked: csv section present");
        let record = RecordPlan::compile(file);
        let mut mapped = BTreeSet::new();
        let mut compared = Vec::new();
        for r in record.fields() {
            mapped.insert(r.from().to_string());
            if !compared.iter().any(|(c, _)| c == r.from()) {
                compared.push((r.from().to_string(), r.target().to_string()));
            }
        }
        for list in &record.lists {
            mapped.extend(list.sources().map(str::to_string));
            if let Some(rows) = &list.rows {
                mapped.extend(rows.when_any.iter().cloned());
                mapped.extend(rows.first_with.iter().cloned());
            }
        }
        // Columns read by lists are not compared, even if a record field reads them too.
        let list_columns: BTreeSet<String> = record
            .lists
            .iter()
            .flat_map(|l| {
                l.sources()
                    .map(str::to_string)
                    .chain(
                        l.rows
                            .iter()
                            .flat_map(|r| r.when_any.iter().chain(r.first_with.iter()).cloned()),
                    )
                    .collect::<Vec<_>>()
            })
            .collect();
        compared.retain(|(c, _)| !list_columns.contains(c));
        mapped.insert(spec.group_by.clone());
        // Known but unused columns: no W002.
        mapped.extend(file.record.informational.iter().cloned());
        CsvPlan {
            spec,
            record,
            mapped,
            compared,
        }
    }
}

/// Runs the CSV engine over a body.
pub(crate) fn run(
    file: &MappingFile,
    plan: &CsvPlan,
    reader: &mut dyn Read,
    charset: Option<&str>,
    sink: &mut dyn AdaptSink,
) -> Result<(), AdaptError> {
    let peeked = Peeked::new(reader, 3).map_err(AdaptError::from_io)?;
    let encoding = if peeked.head().starts_with(&[0xEF, 0xBB, 0xBF]) {
        encoding_rs::UTF_8
    } else if let Some(label) = charset {
        encoding_rs::Encoding::for_label(label.trim().as_bytes()).ok_or_else(|| {
            AdaptError::rejected(
                Code::S001,
                format!("charset '{}' is not an encoding Weiche knows", echo(label)),
            )
        })?
    } else {
        encoding_rs::Encoding::for_label(plan.spec.encoding.as_bytes())
            .unwrap_or(encoding_rs::WINDOWS_1252)
    };
    let decoded = DecodingReader::new(peeked, encoding);
    let checked = Guarded::new(
        decoded,
        QuoteCheck::new(plan.spec.separator as u8, plan.spec.quote as u8),
    );
    let mut csv = csv::ReaderBuilder::new()
        .delimiter(plan.spec.separator as u8)
        .quote(plan.spec.quote as u8)
        .has_headers(false)
        .flexible(false)
        .buffer_capacity(256 * 1024)
        .from_reader(checked);
    // Rows are read into records that are used again: a case's rows, then the next case's.
    let mut next = csv::StringRecord::new();
    let header: Vec<String> = if csv.read_record(&mut next).map_err(classify)? {
        next.iter()
            .map(|c| check_len(c).map(|()| normalize(c)))
            .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, name) in header.iter().enumerate() {
        if index.insert(name.clone(), i).is_some() {
            return Err(AdaptError::rejected(
                Code::X001,
                format!("column '{}' appears twice in the header row", echo(name)),
            ));
        }
    }
    if header.is_empty() {
        return Err(AdaptError::rejected(
            Code::X001,
            "the header row is missing",
        ));
    }
    for required in plan
        .spec
        .required_columns
        .iter()
        .chain(std::iter::once(&plan.spec.group_by))
    {
        if !index.contains_key(required) {
            return Err(AdaptError::rejected(
                Code::X001,
                format!("required column '{required}' is missing"),
            ));
        }
    }
    let unknown: Vec<(usize, String)> = header
        .iter()
        .enumerate()
        .filter(|(_, n)| !plan.mapped.contains(*n))
        .map(|(i, n)| (i, n.clone()))
        .collect();
    // The column each rule reads, looked up once instead of for every cell of every row.
    let column = |r: &Rule| match r.from() {
        "" => None,
        name => index.get(name).copied(),
    };
    let columns = Columns {
        record: plan.record.fields().iter().map(column).collect(),
        lists: plan
            .record
            .lists
            .iter()
            .map(|l| l.fields().iter().map(column).collect())
            .collect(),
        rows: plan
            .record
            .lists
            .iter()
            .map(|list| {
                list.rows.as_ref().map(|rule| match &rule.first_with {
                    Some(col) => RowRule::FirstWith(index.get(col).copied()),
                    None => RowRule::WhenAny(
                        rule.when_any
                            .iter()
                            .filter_map(|c| index.get(c).copied())
                            .collect(),
                    ),
                })
            })
            .collect(),
        compared: plan
            .compared
            .iter()
            .filter_map(|(col, target)| Some((index.get(col).copied()?, col, target)))
            .collect(),
        unknown: &unknown,
    };
    let mut unknown_used: BTreeSet<usize> = BTreeSet::new();
    let key_col = index[&plan.spec.group_by];
    sink.header(&DeliveryHeader::default())?;

    // The current case's rows are `group[..rows]`; the records after them are kept for reuse.
    let mut group: Vec<csv::StringRecord> = Vec::new();
    let mut rows = 0usize;
    let mut position = 0usize;
    let mut emit = |rows: &[csv::StringRecord],
                    unknown_used: &mut BTreeSet<usize>|
     -> Result<(), AdaptError> {
        if rows.is_empty() {
            return Ok(());
        }
        position += 1;
        let draft = build(file, plan, &columns, unknown_used, position, rows);
        sink.record(draft)
    };
    while csv.read_record(&mut next).map_err(classify)? {
        let row = &next;
        for cell in row.iter() {
            check_len(cell)?;
        }
        if row.iter().all(blank) {
            continue;
        }
        let key = &row[key_col];
        let same = !blank(key) && rows > 0 && same_text(&group[0][key_col], key);
        if !same {
            emit(&group[..rows], &mut unknown_used)?;
            rows = 0;
        }
        if rows == group.len() {
            group.push(csv::StringRecord::new());
        }
        std::mem::swap(&mut group[rows], &mut next);
        rows += 1;
    }
    emit(&group[..rows], &mut unknown_used)?;
    for (i, name) in &unknown {
        if !unknown_used.contains(i) {
            sink.warning(Issue::new(
                Code::W002,
                name.clone(),
                format!("unknown column '{}' ignored", echo(name)),
            ));
        }
    }
    Ok(())
}

/// Whether a cell is empty once cleaned ([`normalize`] trims; NFC never empties a text).
fn blank(cell: &str) -> bool {
    cell.trim_matches(char::is_whitespace).is_empty()
}

/// Whether two cells are the same once cleaned ([`normalize`]); equal trimmed texts need no
/// normalising.
fn same_text(a: &str, b: &str) -> bool {
    let (ta, tb) = (
        a.trim_matches(char::is_whitespace),
        b.trim_matches(char::is_whitespace),
    );
    ta == tb || normalize(ta) == normalize(tb)
}

fn check_len(cell: &str) -> Result<(), AdaptError> {
    if cell.len() > MAX_VALUE_BYTES {
        Err(AdaptError::too_long())
    } else {
        Ok(())
    }
}

/// A delivery's columns as its header row places them.
struct Columns<'a> {
    /// The column of each record rule, as `RecordPlan::fields` (`None`: a constant, or a column
    /// the header does not have).
    record: Vec<Option<usize>>,
    /// The column of each list's rules, as `RecordPlan::lists` and `ListRule::fields`.
    lists: Vec<Vec<Option<usize>>>,
    /// Each list's `rows` rule with its columns as indexes (`None`: the list has none), as
    /// `RecordPlan::lists`. A column missing from the header is never filled.
    rows: Vec<Option<RowRule>>,
    /// The plan's compared columns that the header has: (index, column, canonical field).
    compared: Vec<(usize, &'a String, &'a String)>,
    /// Columns the mapping does not know.
    unknown: &'a [(usize, String)],
}

/// A list's `rows` rule, its columns looked up in the header once (not for every row).
enum RowRule {
    /// The first row with this column filled (`None`: not in the header, so no row).
    FirstWith(Option<usize>),
    /// Every row with any of these columns filled.
    WhenAny(Vec<usize>),
}

/// Builds one record's draft from its rows: the rules read the cells of their columns directly
/// (no tree of the rows is built).
fn build(
    file: &MappingFile,
    plan: &CsvPlan,
    columns: &Columns<'_>,
    unknown_used: &mut BTreeSet<usize>,
    position: usize,
    rows: &[csv::StringRecord],
) -> super::Draft {
    let unknown = columns.unknown;
    fn cell(row: &csv::StringRecord, column: Option<usize>) -> Option<Source<'_>> {
        column.and_then(|c| row.get(c)).map(Source::Text)
    }
    let mut draft = plan.record.draft(position);
    let first = &rows[0];
    apply_with(
        file,
        plan.record.fields(),
        |i, _| cell(first, columns.record[i]),
        None,
        &mut draft,
        None,
    );
    let filled = |row: &csv::StringRecord, i: usize| !blank(&row[i]);
    let lists = plan.record.lists.iter().zip(&columns.lists);
    for ((list, list_columns), rule) in lists.zip(&columns.rows) {
        let Some(rule) = rule else {
            continue;
        };
        let selected: Vec<&csv::StringRecord> = match rule {
            RowRule::FirstWith(col) => rows
                .iter()
                .find(|r| col.is_some_and(|i| filled(r, i)))
                .into_iter()
                .collect(),
            RowRule::WhenAny(cols) => rows
                .iter()
                .filter(|r| cols.iter().any(|i| filled(r, *i)))
                .collect(),
        };
        let mut entries = Vec::with_capacity(selected.len());
        for (index, row) in selected.into_iter().enumerate() {
            let mut element = list.entry();
            apply_with(
                file,
                list.fields(),
                |i, _| cell(row, list_columns[i]),
                Some((&list.target, index)),
                &mut draft,
                Some(&mut element),
            );
            entries.push(Value::Object(element));
        }
        if !entries.is_empty() {
            draft
                .fields
                .insert(list.target.clone(), Value::Array(entries));
        }
    }
    draft.record_id = record_id(&draft);
    let mut extra: Vec<Issue> = Vec::new();
    for (i, name) in unknown {
        if rows.iter().any(|r| !blank(&r[*i])) {
            unknown_used.insert(*i);
            let mut w = unknown_issue(name.clone(), name);
            w.message = format!("unknown column '{}' ignored", echo(name));
            extra.push(w);
        }
    }
    for &(i, col, target) in &columns.compared {
        let first = &rows[0][i];
        if rows[1..].iter().any(|r| !same_text(&r[i], first)) {
            extra.push(Issue::new(
                Code::F004,
                target.clone(),
                format!("column '{col}' differs between the rows of the case"),
            ));
        }
    }
    extra.append(&mut draft.issues);
    draft.issues = extra;
    draft
}

/// Maps a csv error to the delivery-level code it stands for.
fn classify(e: csv::Error) -> AdaptError {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => AdaptError::from_csv_io(io),
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => AdaptError::rejected(
            Code::X000,
            format!(
                "row {} has {len} fields, the header has {expected_len}",
                pos.map(|p| p.line()).unwrap_or(0)
            ),
        ),
        csv::ErrorKind::Utf8 { .. } => {
            AdaptError::rejected(Code::S001, "bytes are not valid UTF-8")
        }
        other => AdaptError::rejected(Code::X000, format!("not well-formed CSV: {other:?}")),
    }
}

/// The most columns a header row may have (`X001` beyond): a header row is held whole.
pub(crate) const MAX_COLUMNS: usize = 10_000;

/// Bytes of one cell passed on to the csv reader: more than [`MAX_VALUE_BYTES`], so a longer
/// cell is still `L004` at the end of its row, but the reader never holds more of it.
const CELL_KEEP: usize = MAX_VALUE_BYTES + 4;

/// Checks the text as it streams by, in front of the csv reader (which holds a row whole):
/// - quoting: a quoted field must end with a quote followed by the separator, a line end or the
///   end of input (`X000` otherwise), and may not be left open;
/// - control characters (U+0000–U+001F other than tab, CR and LF) are `X000` for the whole
///   delivery, wherever they stand (docs/mapping-guide.md, "CSV");
/// - a cell is passed on up to [`CELL_KEEP`] bytes (enough to be `L004` at its row's end), and a
///   row up to one field more than the header has (enough to be `X000` at its end); the header row
///   may have at most [`MAX_COLUMNS`] columns (`X001`).
///
/// So a row that never ends (a gzip bomb of white space) streams through in bounded memory until
/// the body limit (`L001`) ends it. Bytes before a fault are passed on first; the error comes
/// with the next read, so problems earlier in the body are reported first.
struct QuoteCheck {
    sep: u8,
    quote: u8,
    state: QState,
    line: u64,
    /// 0-based field of the current row.
    field: usize,
    /// Value bytes of the current field read so far.
    cell: usize,
    /// Bytes of the current cell are being dropped (started at a character boundary).
    dropping: bool,
    /// The current row has a byte (empty lines are no rows).
    row_started: bool,
    /// Fields of the header row, once it has ended.
    header_fields: Option<usize>,
}

#[derive(Clone, Copy, PartialEq)]
enum QState {
    FieldStart,
    Unquoted,
    Quoted,
    QuoteInQuoted,
}

impl QuoteCheck {
    fn new(sep: u8, quote: u8) -> Self {
        QuoteCheck {
            sep,
            quote,
            state: QState::FieldStart,
            line: 1,
            field: 0,
            cell: 0,
            dropping: false,
            row_started: false,
            header_fields: None,
        }
    }

    fn bad(&self, what: &str) -> io::Error {
        io::Error::other(QuoteFault(format!("line {}: {what}", self.line)))
    }

    /// A separator outside quotes: the next field starts.
    fn next_field(&mut self) -> Step {
        self.row_started = true;
        self.field += 1;
        self.cell = 0;
        self.dropping = false;
        match self.header_fields {
            None if self.field >= MAX_COLUMNS => Step::Fault(super::refused(
                Code::X001,
                format!("the header row has more than {MAX_COLUMNS} columns"),
            )),
            Some(n) if self.field > n => Step::Drop,
            _ => Step::Keep,
        }
    }

    /// A line end outside quotes: the row ends.
    fn end_row(&mut self, b: u8) -> Step {
        if b == b'\n' {
            self.line += 1;
        }
        if self.row_started && self.header_fields.is_none() {
            self.header_fields = Some(self.field + 1);
        }
        self.row_started = false;
        self.field = 0;
        self.cell = 0;
        self.dropping = false;
        Step::Keep
    }

    /// A byte of a field's value.
    fn content(&mut self, b: u8) -> Step {
        self.row_started = true;
        if self.header_fields.is_some_and(|n| self.field > n) {
            return Step::Drop;
        }
        self.cell += 1;
        // Drop only whole characters: start at a byte that is no UTF-8 continuation byte.
        if self.cell > CELL_KEEP && (self.dropping || !(0x80..0xc0).contains(&b)) {
            self.dropping = true;
            return Step::Drop;
        }
        Step::Keep
    }
}

impl ByteGuard for QuoteCheck {
    /// Plain bytes: value bytes of the current field (no separator, quote, line end or control
    /// character where they would matter), within the kept part of a cell of a column the
    /// header has.
    fn plain_run(&mut self, bytes: &[u8]) -> usize {
        let special = match self.state {
            QState::Unquoted => self.sep,
            QState::Quoted => self.quote,
            QState::FieldStart | QState::QuoteInQuoted => return 0,
        };
        if self.header_fields.is_some_and(|n| self.field > n) {
            return 0;
        }
        let room = CELL_KEEP.saturating_sub(self.cell).min(bytes.len());
        let run = bytes[..room]
            .iter()
            .position(|&b| b < 0x20 || b == special)
            .unwrap_or(room);
        self.cell += run;
        if run > 0 {
            self.row_started = true;
        }
        run
    }

    fn step(&mut self, b: u8) -> Step {
        if b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r') {
            return Step::Fault(super::refused(
                Code::X000,
                format!(
                    "line {}: control character U+{:04X} in the CSV text",
                    self.line, b
                ),
            ));
        }
        let (state, step) = match self.state {
            QState::FieldStart if b == self.quote => {
                self.row_started = true;
                let step = if self.header_fields.is_some_and(|n| self.field > n) {
                    Step::Drop
                } else {
                    Step::Keep
                };
                (QState::Quoted, step)
            }
            QState::FieldStart | QState::Unquoted => {
                if b == b'\n' || b == b'\r' {
                    (QState::FieldStart, self.end_row(b))
                } else if b == self.sep {
                    (QState::FieldStart, self.next_field())
                } else {
                    (QState::Unquoted, self.content(b))
                }
            }
            QState::Quoted => {
                if b == self.quote {
                    let step = if self.header_fields.is_some_and(|n| self.field > n) {
                        Step::Drop
                    } else {
                        Step::Keep
                    };
                    (QState::QuoteInQuoted, step)
                } else {
                    if b == b'\n' {
                        self.line += 1;
                    }
                    (QState::Quoted, self.content(b))
                }
            }
            QState::QuoteInQuoted => {
                if b == self.quote {
                    // An escaped quote: one byte of the value, never dropped (it is syntax).
                    let step = match self.content(b) {
                        Step::Drop if self.header_fields.is_some_and(|n| self.field > n) => {
                            Step::Drop
                        }
                        _ => Step::Keep,
                    };
                    self.dropping = false;
                    (QState::Quoted, step)
                } else if b == self.sep {
                    (QState::FieldStart, self.next_field())
                } else if b == b'\n' || b == b'\r' {
                    (QState::FieldStart, self.end_row(b))
                } else {
                    return Step::Fault(self.bad("a character after a closing quote"));
                }
            }
        };
        self.state = state;
        step
    }

    fn at_end(&mut self) -> io::Result<()> {
        if matches!(self.state, QState::Quoted) {
            return Err(self.bad("a quoted field is not closed"));
        }
        Ok(())
    }
}

/// A quoting error found by [`QuoteCheck`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct QuoteFault(String);

impl AdaptError {
    /// Classifies read errors of the CSV engine, including quoting faults.
    fn from_csv_io(e: io::Error) -> Self {
        match e.get_ref().and_then(|i| i.downcast_ref::<QuoteFault>()) {
            Some(q) => AdaptError::rejected(Code::X000, format!("not well-formed CSV: {q}")),
            None => AdaptError::from_io(e),
        }
    }
}
