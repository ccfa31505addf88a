//! Staging: a delivery's output (records, items, audit events, revocations) held while its body
//! is still arriving, so that no store transaction is open — and on SQLite no write lock held —
//! while a client sends slowly. The first [`MEMORY_BYTES`] stay in memory; the rest is written to
//! an anonymous file in the data directory (unlinked at creation: it vanishes when the delivery
//! ends, and with the process after a crash), so memory stays bounded whatever the delivery's
//! size. The store transaction begins only when the body has ended and the pipeline is done;
//! then the staged chunks are read back in order and written.

use crate::store::{NewAuditEvent, NewItem, NewRecord};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Output a delivery keeps in memory before it spills to its staging file.
pub const MEMORY_BYTES: usize = 16 << 20;

/// Errors of staging (all I/O on the staging file).
#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    /// The staging file could not be created, written or read.
    #[error("staging file in {dir}: {source}")]
    Io {
        /// The staging directory.
        dir: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A staged chunk could not be encoded or decoded.
    #[error("staged chunk: {0}")]
    Encoding(#[from] postcard::Error),
    /// A chunk's bodies could not be packed.
    #[error("packing a staged chunk: {0}")]
    Packing(#[from] crate::store::StoreError),
}

/// A piece of a delivery's output, written to the store in one step.
#[derive(Default, Serialize, Deserialize)]
pub struct Chunk {
    /// Accepted records.
    pub records: Vec<NewRecord>,
    /// Their output items.
    pub items: Vec<NewItem>,
    /// Audit events of their routing decisions.
    pub audit: Vec<NewAuditEvent>,
    /// (record id, period, withdrawn consent ids, subject) of records whose holders under those
    /// consents get revocations.
    pub revocations: Vec<(String, String, Vec<String>, Option<String>)>,
}

impl Chunk {
    /// An empty chunk with room for `records` records and as many items and audit events a
    /// record as `like` held: the next chunk of a delivery is filled without growing those
    /// lists (each growth of a list of large structs copied it, and freed the old one).
    pub fn with_room_like(like: &Chunk, records: usize) -> Chunk {
        let per = |n: usize| match like.records.len() {
            0 => 0,
            r => n.div_ceil(r) * records,
        };
        Chunk {
            records: Vec::with_capacity(records),
            items: Vec::with_capacity(per(like.items.len())),
            audit: Vec::with_capacity(per(like.audit.len())),
            revocations: Vec::new(),
        }
    }

    /// Appends `other`'s records, items, audit events and revocations, after this chunk's.
    pub fn append(&mut self, mut other: Chunk) {
        self.records.append(&mut other.records);
        self.items.append(&mut other.items);
        self.audit.append(&mut other.audit);
        self.revocations.append(&mut other.revocations);
    }

    /// Whether the chunk holds nothing to write but audit events.
    pub fn only_audit(&self) -> bool {
        self.records.is_empty() && self.items.is_empty() && self.revocations.is_empty()
    }

    /// About how many bytes of memory the chunk holds: bodies (as text, or packed), the other
    /// strings, and a fixed allowance a record, item and event for the structures around them.
    /// Counting only the bodies was close while they were text; packed, they are a quarter of
    /// that, and the rest of a record would have gone uncounted.
    pub fn bytes(&self) -> usize {
        /// Headers and allocator rounding of one record's, item's or event's strings.
        const OVERHEAD: usize = 256;
        let packed = |p: &Option<crate::store::PackedBody>| p.as_ref().map_or(0, |p| p.len());
        let records: usize = self
            .records
            .iter()
            .map(|r| {
                OVERHEAD
                    + r.body.len()
                    + packed(&r.packed)
                    + r.vendor.len()
                    + r.record_id.len()
                    + r.reporting_period.len()
                    + r.program.len()
                    + r.client_id.len()
                    + r.delivery_id.len()
            })
            .sum();
        let items: usize = self
            .items
            .iter()
            .map(|i| {
                OVERHEAD
                    + i.body.len()
                    + packed(&i.packed)
                    + i.recipient.len()
                    + i.vendor.len()
                    + i.record_id.len()
                    + i.reporting_period.len()
                    + i.record_ref.len()
            })
            .sum();
        let audit: usize = self
            .audit
            .iter()
            .map(|a| {
                OVERHEAD
                    + a.body.len()
                    + packed(&a.packed)
                    + a.kind.len()
                    + a.subject.as_ref().map_or(0, String::len)
            })
            .sum();
        records + items + audit
    }
}

/// A delivery's staged output, in order.
pub struct Staging {
    dir: PathBuf,
    memory: VecDeque<Chunk>,
    memory_bytes: usize,
    budget: usize,
    file: Option<BufWriter<std::fs::File>>,
    spilled: usize,
}

impl Staging {
    /// Empty staging that spills into `dir` (created when first needed) past [`MEMORY_BYTES`].
    pub fn new(dir: &Path) -> Staging {
        Self::with_budget(dir, MEMORY_BYTES)
    }

    /// Empty staging with another memory budget (tests).
    pub fn with_budget(dir: &Path, budget: usize) -> Staging {
        Staging {
            dir: dir.to_path_buf(),
            memory: VecDeque::new(),
            memory_bytes: 0,
            budget,
            file: None,
            spilled: 0,
        }
    }

    fn io(&self, source: io::Error) -> StagingError {
        StagingError::Io {
            dir: self.dir.clone(),
            source,
        }
    }

    /// Adds the next chunk.
    pub fn push(&mut self, chunk: Chunk) -> Result<(), StagingError> {
        let bytes = chunk.bytes();
        if self.file.is_none() && self.memory_bytes + bytes <= self.budget {
            self.memory_bytes += bytes;
            self.memory.push_back(chunk);
            return Ok(());
        }
        if self.file.is_none() {
            std::fs::create_dir_all(&self.dir).map_err(|e| self.io(e))?;
            let file = tempfile::tempfile_in(&self.dir).map_err(|e| self.io(e))?;
            self.file = Some(BufWriter::with_capacity(1 << 20, file));
        }
        let encoded = postcard::to_stdvec(&chunk)?;
        let len = (encoded.len() as u64).to_le_bytes();
        let file = self.file.as_mut().expect("opened above");
        let written = file.write_all(&len).and_then(|()| file.write_all(&encoded));
        written.map_err(|e| self.io(e))?;
        self.spilled += 1;
        Ok(())
    }

    /// Whether nothing was staged.
    pub fn is_empty(&self) -> bool {
        self.memory.is_empty() && self.spilled == 0
    }

    /// Takes the chunks held in memory, in order (all of them while nothing has spilled).
    pub fn take_memory(&mut self) -> VecDeque<Chunk> {
        self.memory_bytes = 0;
        std::mem::take(&mut self.memory)
    }

    /// Whether part of the output went to the staging file.
    pub fn spilled(&self) -> bool {
        self.spilled > 0
    }

    /// The staged chunks in the order they were pushed.
    pub fn into_chunks(mut self) -> Result<Chunks, StagingError> {
        let file = match self.file.take() {
            None => None,
            Some(w) => {
                let mut file = w.into_inner().map_err(|e| self.io(e.into_error()))?;
                file.rewind().map_err(|e| self.io(e))?;
                Some(BufReader::with_capacity(1 << 20, file))
            }
        };
        Ok(Chunks {
            dir: self.dir,
            memory: self.memory,
            file,
            left: self.spilled,
        })
    }
}

/// The staged chunks, read back in order (the spilled ones one at a time).
pub struct Chunks {
    dir: PathBuf,
    memory: VecDeque<Chunk>,
    file: Option<BufReader<std::fs::File>>,
    left: usize,
}

impl Chunks {
    /// Whether every chunk stayed in memory (reading them back does no I/O).
    pub fn in_memory(&self) -> bool {
        self.left == 0
    }

    fn read_one(&mut self) -> Result<Option<Chunk>, StagingError> {
        if let Some(chunk) = self.memory.pop_front() {
            return Ok(Some(chunk));
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(None);
        };
        if self.left == 0 {
            return Ok(None);
        }
        let io = |source| StagingError::Io {
            dir: self.dir.clone(),
            source,
        };
        let mut len = [0u8; 8];
        file.read_exact(&mut len).map_err(io)?;
        let mut bytes = vec![0u8; u64::from_le_bytes(len) as usize];
        file.read_exact(&mut bytes).map_err(io)?;
        self.left -= 1;
        Ok(Some(postcard::from_bytes(&bytes)?))
    }
}

impl Iterator for Chunks {
    type Item = Result<Chunk, StagingError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.read_one().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ItemKind;

    fn chunk(i: usize) -> Chunk {
        Chunk {
            records: vec![NewRecord {
                vendor: "v".into(),
                record_id: format!("r{i}"),
                reporting_period: "2026-10".into(),
                program: "p".into(),
                client_id: format!("c{i}"),
                delivery_id: "d".into(),
                body: "x".repeat(100 + i),
                packed: None,
            }],
            items: vec![NewItem {
                recipient: "s".into(),
                kind: ItemKind::Record,
                vendor: "v".into(),
                record_id: format!("r{i}"),
                reporting_period: "2026-10".into(),
                record_ref: "ref".into(),
                body: "{}".into(),
                packed: None,
                consent_id: i.is_multiple_of(2).then(|| "k".into()),
            }],
            audit: Vec::new(),
            revocations: vec![(format!("r{i}"), "2026-10".into(), vec!["k".into()], None)],
        }
    }

    #[test]
    fn chunks_come_back_in_order_from_memory_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut staging = Staging::with_budget(dir.path(), 350);
        for i in 0..10 {
            staging.push(chunk(i)).unwrap();
        }
        assert!(staging.spilled(), "a budget of 350 bytes spills");
        let chunks = staging.into_chunks().unwrap();
        assert!(!chunks.in_memory());
        let ids: Vec<String> = chunks
            .map(|c| c.unwrap().records[0].record_id.clone())
            .collect();
        let expected: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
        assert_eq!(ids, expected);
        // The staging file is anonymous: nothing is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn small_deliveries_stay_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("staging");
        let mut staging = Staging::new(&missing);
        staging.push(chunk(1)).unwrap();
        assert!(!staging.spilled());
        let chunks = staging.into_chunks().unwrap();
        assert!(chunks.in_memory());
        assert_eq!(chunks.count(), 1);
        assert!(!missing.exists(), "no directory is created without a spill");
    }
}
