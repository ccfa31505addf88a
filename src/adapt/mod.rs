//! Mapping files and the format engines that turn a vendor's bytes into [`Draft`]s.
//!
//! A [`Mapping`] is one loaded, checked mapping file ([`mapping::MappingFile`]) compiled for the
//! engine of its syntax; a [`MappingSet`] holds every mapping of a directory (or the ones built
//! into the binary) together with the files that failed to load. Engines stream: they hand each
//! record to an [`AdaptSink`] as soon as it is read, and report delivery-level problems as
//! [`AdaptError::Rejected`] with the spec's code.

mod csv;
mod decode;
mod draft;
#[cfg(test)]
mod hostile_tests;
mod json;
#[cfg(test)]
mod language_tests;
pub mod mapping;
mod nest;
mod rules;
pub mod watch;
mod xml;

pub use draft::{Draft, Issue, Unmapped, set_path};
pub use mapping::{MappingError, MappingFile, Mode, Syntax};

use crate::catalogue::Code;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

/// Any value longer than this (UTF-8 bytes, after decoding, before trimming) is `L004`.
pub const MAX_VALUE_BYTES: usize = 4096;

/// What an engine (or its sink) stopped a delivery for.
#[derive(Debug, thiserror::Error)]
pub enum AdaptError {
    /// The delivery is rejected whole with this code.
    #[error("{code}: {message}")]
    Rejected {
        /// Delivery-level code (`X000`, `X001`, `S001`, `S010`, `V000`, `L00x`).
        code: Code,
        /// Text for a person.
        message: String,
    },
    /// The body could not be read to its end (the client went away, or the pipeline stopped).
    #[error("delivery aborted: {0}")]
    Aborted(String),
}

impl AdaptError {
    /// A whole-delivery rejection.
    pub fn rejected(code: Code, message: impl Into<String>) -> Self {
        AdaptError::Rejected {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn too_long() -> Self {
        Self::rejected(
            Code::L004,
            format!("a value is longer than {MAX_VALUE_BYTES} bytes"),
        )
    }

    pub(crate) fn too_deep(max: usize) -> Self {
        Self::rejected(Code::L003, format!("nesting deeper than {max} levels"))
    }

    /// Classifies an I/O error raised while reading a body.
    pub fn from_io(e: io::Error) -> Self {
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<InputFault>())
        {
            Some(InputFault::TooLarge { limit }) => Self::rejected(
                Code::L001,
                format!("body larger than the limit of {limit} bytes"),
            ),
            Some(InputFault::InvalidEncoding { encoding }) => {
                Self::rejected(Code::S001, format!("bytes are not valid {encoding}"))
            }
            Some(InputFault::Transport(m)) => AdaptError::Aborted(m.clone()),
            Some(InputFault::Refused { code, message }) => Self::rejected(*code, message.clone()),
            None => AdaptError::Aborted(e.to_string()),
        }
    }
}

/// Problems of the byte stream itself, carried inside `io::Error`s through parsers.
#[derive(Debug, thiserror::Error)]
pub enum InputFault {
    /// More bytes than the configured limit.
    #[error("body larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// Bytes not valid in the encoding.
    #[error("bytes are not valid {encoding}")]
    InvalidEncoding {
        /// Encoding name.
        encoding: String,
    },
    /// The transfer broke off.
    #[error("body transfer failed: {0}")]
    Transport(String),
    /// A guard in front of a parser refused the text (a forbidden character, a token over a
    /// limit): the delivery is rejected whole with this code.
    #[error("{code}: {message}")]
    Refused {
        /// Delivery-level code (`X000`, `X001`, `L004`).
        code: Code,
        /// Text for a person.
        message: String,
    },
}

/// An I/O error that rejects the delivery whole with `code` ([`InputFault::Refused`]).
pub(crate) fn refused(code: Code, message: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        InputFault::Refused { code, message },
    )
}

pub(crate) fn invalid_encoding(encoding: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        InputFault::InvalidEncoding {
            encoding: encoding.to_string(),
        },
    )
}

/// What an engine learned from a delivery's header.
#[derive(Debug, Clone, Default)]
pub struct DeliveryHeader {
    /// The payload's own message id, if the format has one.
    pub idempotency_key: Option<String>,
    /// The mode the payload declares, if the format declares one.
    pub mode: Option<Mode>,
    /// A test delivery: validated and answered, never stored or routed.
    pub test: bool,
}

/// Receives what an engine reads, in order: at most one header (before any record), then records.
pub trait AdaptSink {
    /// The delivery's header is known.
    fn header(&mut self, header: &DeliveryHeader) -> Result<(), AdaptError>;
    /// One record. Returning an error stops the engine.
    fn record(&mut self, draft: Draft) -> Result<(), AdaptError>;
    /// Whether the sink takes records of the JSON and XML engines unmapped
    /// ([`AdaptSink::unmapped`]) to map them on another thread, so that reading and mapping
    /// run on two cores. Records that read enclosing elements (`../`) are always mapped by the
    /// engine.
    fn takes_unmapped(&self) -> bool {
        false
    }
    /// One record, not yet mapped (only when [`AdaptSink::takes_unmapped`]): the sink maps it
    /// with [`Mapping::map_unmapped`], in the order the records came. Returning an error stops
    /// the engine.
    fn unmapped(&mut self, record: Unmapped) -> Result<(), AdaptError> {
        let _ = record;
        Err(AdaptError::Aborted(
            "the sink takes no unmapped records".into(),
        ))
    }
    /// A delivery-level warning (e.g. an unknown header field, `W002` with no record).
    fn warning(&mut self, issue: Issue);
}

/// Trims Unicode white space at both ends and NFC-normalises (conformance-rules.md, "Text").
pub fn normalize(s: &str) -> String {
    normalized(s).into_owned()
}

/// [`normalize`], borrowing from `s` when it is already trimmed NFC text.
pub fn normalized(s: &str) -> std::borrow::Cow<'_, str> {
    let t = s.trim_matches(char::is_whitespace);
    if is_nfc_quick(t.chars()) == IsNormalized::Yes {
        std::borrow::Cow::Borrowed(t)
    } else {
        std::borrow::Cow::Owned(t.nfc().collect())
    }
}

/// The engine a mapping is compiled for.
#[derive(Debug)]
enum Plan {
    Json(json::JsonPlan),
    Csv(csv::CsvPlan),
    Xml(xml::XmlPlan),
}

/// One loaded mapping.
#[derive(Debug)]
pub struct Mapping {
    /// The file as written.
    pub file: MappingFile,
    /// Where it came from (file name).
    pub origin: String,
    /// Its version: lowercase hex SHA-256 of the file's bytes.
    pub hash: String,
    plan: Plan,
}

impl Mapping {
    /// Parses, checks and compiles a mapping file's text.
    pub fn from_text(origin: &str, text: &str) -> Result<Mapping, MappingError> {
        let file = MappingFile::parse(origin, text)?;
        let plan = match file.syntax {
            Syntax::Json | Syntax::Jsonl => Plan::Json(json::JsonPlan::compile(&file)),
            Syntax::Csv => Plan::Csv(csv::CsvPlan::compile(&file)),
            Syntax::Xml => Plan::Xml(xml::XmlPlan::compile(&file)),
        };
        Ok(Mapping {
            hash: hex::encode(Sha256::digest(text.as_bytes())),
            origin: origin.to_string(),
            file,
            plan,
        })
    }

    /// The format id.
    pub fn id(&self) -> &str {
        &self.file.id
    }

    /// The source path a canonical field comes from in this mapping (`services[1].end` →
    /// the list entry's path), for messages that name both.
    pub fn source_of(&self, field: &str) -> Option<&str> {
        let mut plain = String::with_capacity(field.len());
        let mut in_index = false;
        for c in field.chars() {
            match c {
                '[' => {
                    in_index = true;
                    plain.push('[');
                }
                ']' => {
                    in_index = false;
                    plain.push(']');
                }
                _ if in_index => {}
                c => plain.push(c),
            }
        }
        if let Some((list, inner)) = plain.split_once("[].") {
            let spec = self.file.record.lists.get(list)?;
            return spec.fields.get(inner)?.from.as_deref();
        }
        self.file
            .record
            .fields
            .get(&plain)
            .or_else(|| self.file.delivery.fields.get(&plain))?
            .from
            .as_deref()
    }

    /// Maps a record an engine of this mapping handed over unmapped: the draft the engine would
    /// have handed over itself.
    pub fn map_unmapped(&self, record: Unmapped) -> Draft {
        let plan = match &self.plan {
            Plan::Json(plan) => plan.record(),
            Plan::Xml(plan) => plan.record(),
            Plan::Csv(plan) => plan.record(),
        };
        rules::map_unmapped(&self.file, plan, record)
    }

    /// Reads a body and hands its header and records to the sink. `charset` is the request's
    /// `Content-Type` charset, if any.
    pub fn run(
        &self,
        reader: &mut dyn Read,
        charset: Option<&str>,
        sink: &mut dyn AdaptSink,
    ) -> Result<(), AdaptError> {
        match &self.plan {
            Plan::Json(plan) => json::run(&self.file, plan, reader, sink),
            Plan::Csv(plan) => csv::run(&self.file, plan, reader, charset, sink),
            Plan::Xml(plan) => xml::run(&self.file, plan, reader, sink),
        }
    }
}

/// The mapping files shipped in `mappings/`, compiled into the binary.
pub const EMBEDDED_MAPPINGS: &[(&str, &str)] = &[
    (
        "fallwerk-csv.toml",
        include_str!("../../mappings/fallwerk-csv.toml"),
    ),
    (
        "klidas-json.toml",
        include_str!("../../mappings/klidas-json.toml"),
    ),
    (
        "xsozial-lieferung.toml",
        include_str!("../../mappings/xsozial-lieferung.toml"),
    ),
];

/// Every mapping of one source, by format id, and the files that failed to load.
#[derive(Debug, Default)]
pub struct MappingSet {
    /// Loaded mappings by id.
    pub mappings: BTreeMap<String, Arc<Mapping>>,
    /// Files that failed to load.
    pub failures: Vec<MappingError>,
}

impl MappingSet {
    /// Loads every `*.toml` file of a directory.
    pub fn load_dir(dir: &Path) -> Result<MappingSet, MappingError> {
        let (sources, unreadable) = Self::read_dir(dir)?;
        let mut set = Self::from_sources(sources.iter().map(|(n, t)| (n.as_str(), t.as_str())));
        set.failures.extend(unreadable);
        Ok(set)
    }

    /// Reads every `*.toml` file of a directory, sorted by name: (name, text) pairs and the
    /// files that could not be read.
    #[allow(clippy::type_complexity)]
    fn read_dir(dir: &Path) -> Result<(Vec<(String, String)>, Vec<MappingError>), MappingError> {
        let entries = std::fs::read_dir(dir).map_err(|source| MappingError::Io {
            file: dir.display().to_string(),
            source,
        })?;
        let mut files: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        let mut sources = Vec::new();
        let mut unreadable = Vec::new();
        for path in files {
            let name = path.display().to_string();
            match std::fs::read_to_string(&path) {
                Ok(text) => sources.push((name, text)),
                Err(source) => unreadable.push(MappingError::Io { file: name, source }),
            }
        }
        Ok((sources, unreadable))
    }

    /// The mappings built into the binary.
    pub fn embedded() -> MappingSet {
        Self::from_sources(EMBEDDED_MAPPINGS.iter().copied())
    }

    /// Loads mappings from (origin, text) pairs.
    pub fn from_sources<'a>(sources: impl Iterator<Item = (&'a str, &'a str)>) -> MappingSet {
        Self::from_sources_after(sources, &MappingSet::default())
    }

    /// Loads mappings; when two files claim one format id, the file that defined it in
    /// `previous` keeps it (a newcomer never takes over a working format), else the first.
    fn from_sources_after<'a>(
        sources: impl Iterator<Item = (&'a str, &'a str)>,
        previous: &MappingSet,
    ) -> MappingSet {
        let mut set = MappingSet::default();
        let mut loaded: Vec<(Mapping, usize)> = Vec::new();
        for (origin, text) in sources {
            match Mapping::from_text(origin, text) {
                // With the line of its id, in case another file has it too.
                Ok(m) => loaded.push((m, mapping::key_line(text, &["id"]))),
                Err(e) => set.failures.push(e),
            }
        }
        // The incumbent of each id goes first.
        loaded.sort_by_key(|(m, _)| {
            previous
                .mappings
                .get(m.id())
                .is_none_or(|p| p.origin != m.origin)
        });
        for (m, id_line) in loaded {
            if let Some(prev) = set.mappings.get(m.id()) {
                set.failures.push(MappingError::Invalid {
                    file: m.origin.clone(),
                    line: id_line,
                    message: format!(
                        "format id '{}' is already defined by {}",
                        m.id(),
                        prev.origin
                    ),
                });
            } else {
                set.mappings.insert(m.id().to_string(), Arc::new(m));
            }
        }
        set
    }

    /// A mapping by format id.
    pub fn get(&self, id: &str) -> Option<Arc<Mapping>> {
        self.mappings.get(id).cloned()
    }

    /// Loads a directory again. A file that fails to load keeps the mapping it gave before (from
    /// `previous`), so a broken edit never replaces a working mapping; the failure is reported.
    pub fn reload_dir(dir: &Path, previous: &MappingSet) -> MappingSet {
        let mut set = match Self::read_dir(dir) {
            Ok((sources, unreadable)) => {
                let mut set = Self::from_sources_after(
                    sources.iter().map(|(n, t)| (n.as_str(), t.as_str())),
                    previous,
                );
                set.failures.extend(unreadable);
                set
            }
            Err(e) => MappingSet {
                mappings: BTreeMap::new(),
                failures: vec![e],
            },
        };
        let failed: Vec<String> = set.failures.iter().map(|f| f.file().to_string()).collect();
        for old in previous.mappings.values() {
            if failed.contains(&old.origin) && !set.mappings.contains_key(old.id()) {
                set.mappings.insert(old.id().to_string(), old.clone());
            }
        }
        set
    }
}
