//! Packed bodies: the JSON bodies of records, items and audit events stored as zstd frames
//! compressed with a dictionary trained from the database's own bodies.
//!
//! A record's canonical body and a recipient's item are about 1 KB of JSON each, most of it the
//! same keys, codes and envelope in every row; compressed one by one without a dictionary they
//! shrink by a third, with a dictionary trained on a thousand of them to about a seventh. What a
//! delivery writes is then less than half as many bytes (WAL, checkpoint, pages), and that was
//! most of the store writer's time (BENCHMARKS.md).
//!
//! - A body is stored either as JSON text (before a dictionary exists, and the bare erasure
//!   envelopes `blank_sent_items` writes in SQL) or as one zstd frame (a BLOB in SQLite) whose
//!   header names its dictionary by id. Readers tell the two apart by zstd's magic number: JSON
//!   text starts with `{`.
//! - Dictionaries live in the database (`body_dictionaries`, keyed by zstd's dictionary id) and
//!   are never deleted or changed, so every packed body stays readable. A reader that meets an
//!   id it has not loaded (another process trained it) loads the table again and retries.
//! - The store trains one dictionary once enough plain bodies exist (the SQLite housekeeper);
//!   from then on it packs every record, item and audit event body it writes (the audit chain
//!   hashes the text, as before). Both backends pack: SQLite's housekeeper and PostgreSQL's
//!   trainer task call `Store::pack_bodies` until it succeeds; PostgreSQL's body columns are
//!   `bytea` (migration 0009), SQLite's hold TEXT or BLOB values.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwapOption;
use zstd::dict::{DecoderDictionary, EncoderDictionary};

use super::{NewAuditEvent, NewItem, NewRecord, StoreError, StoreResult};

/// zstd's frame magic number, little-endian, as the first four bytes of a packed body.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Compression level: 1, the fastest; with a dictionary it packs nearly as small as 3.
const LEVEL: i32 = 1;

/// The most a dictionary may hold.
pub(super) const DICTIONARY_BYTES: usize = 16 * 1024;

/// How many plain bodies a dictionary is trained on (the newest of records and items).
pub(super) const TRAINING_SAMPLES: i64 = 2000;

/// How many plain item bodies a store waits for before it trains the dictionary of packed
/// bodies.
pub(super) const TRAIN_AFTER_BODIES: i64 = 1000;
/// How often a store looks whether there are enough bodies to train on.
pub(super) const TRAINING_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// How long it waits after training failed.
pub(super) const TRAINING_BACK_OFF: std::time::Duration = std::time::Duration::from_secs(60);

/// A body column as read from either backend: the bytes of JSON text or of a zstd frame.
#[derive(Clone)]
pub(crate) struct StoredBody(pub(crate) Vec<u8>);

impl sqlx::Type<sqlx::Sqlite> for StoredBody {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <Vec<u8> as sqlx::Type<sqlx::Sqlite>>::type_info()
    }
    fn compatible(ty: &sqlx::sqlite::SqliteTypeInfo) -> bool {
        <Vec<u8> as sqlx::Type<sqlx::Sqlite>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Sqlite> for StoredBody {
    fn decode(value: sqlx::sqlite::SqliteValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        <Vec<u8> as sqlx::Decode<sqlx::Sqlite>>::decode(value).map(StoredBody)
    }
}

impl sqlx::Type<sqlx::Postgres> for StoredBody {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <Vec<u8> as sqlx::Type<sqlx::Postgres>>::type_info()
    }
    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <Vec<u8> as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for StoredBody {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        <Vec<u8> as sqlx::Decode<sqlx::Postgres>>::decode(value).map(StoredBody)
    }
}

/// A body packed by a store's [`BodyPacker`]: one zstd frame.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct PackedBody(Vec<u8>);

/// Only the length: a packed body may hold personal data.
impl std::fmt::Debug for PackedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedBody({} bytes)", self.0.len())
    }
}

impl PackedBody {
    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty (never, for a packed body).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A body to bind: JSON text, or packed.
#[derive(Clone)]
pub(super) enum BodyParam<'a> {
    /// Stored as text.
    Text(&'a str),
    /// A zstd frame (a BLOB in SQLite; PostgreSQL's `bytea` holds either).
    Packed(std::borrow::Cow<'a, [u8]>),
}

impl sqlx::Type<sqlx::Sqlite> for BodyParam<'_> {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <&str as sqlx::Type<sqlx::Sqlite>>::type_info()
    }
}

impl<'q> sqlx::Encode<'q, sqlx::Sqlite> for BodyParam<'q> {
    fn encode_by_ref(
        &self,
        buf: &mut Vec<sqlx::sqlite::SqliteArgumentValue<'q>>,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <Self as sqlx::Encode<'q, sqlx::Sqlite>>::encode(self.clone(), buf)
    }
    fn encode(
        self,
        buf: &mut Vec<sqlx::sqlite::SqliteArgumentValue<'q>>,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        buf.push(match self {
            BodyParam::Text(text) => sqlx::sqlite::SqliteArgumentValue::Text(text.into()),
            BodyParam::Packed(bytes) => sqlx::sqlite::SqliteArgumentValue::Blob(bytes),
        });
        Ok(sqlx::encode::IsNull::No)
    }
}

impl sqlx::Type<sqlx::Postgres> for BodyParam<'_> {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <&[u8] as sqlx::Type<sqlx::Postgres>>::type_info()
    }
}

impl<'q> sqlx::Encode<'q, sqlx::Postgres> for BodyParam<'q> {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        let bytes: &[u8] = match self {
            BodyParam::Text(text) => text.as_bytes(),
            BodyParam::Packed(bytes) => bytes,
        };
        <&[u8] as sqlx::Encode<sqlx::Postgres>>::encode_by_ref(&bytes, buf)
    }
}

/// How one write transaction stores bodies: the store's dictionaries and the one it packs with
/// (taken when the transaction began).
#[derive(Clone)]
pub(super) struct BodyWriter {
    /// The store's dictionaries.
    pub(super) codec: Arc<Codec>,
    /// The dictionary to pack with (`None`: bodies are stored as text).
    pub(super) packer: Option<Arc<BodyPacker>>,
}

impl BodyWriter {
    /// How a transaction beginning now stores bodies.
    pub(super) fn of(codec: &Arc<Codec>) -> BodyWriter {
        BodyWriter {
            codec: codec.clone(),
            packer: codec.packer(),
        }
    }

    /// The bodies to bind, in order: see [`body_params`].
    pub(super) fn params<'a>(
        &self,
        bodies: impl Iterator<Item = (&'a str, Option<&'a PackedBody>)>,
    ) -> StoreResult<Vec<BodyParam<'a>>> {
        body_params(&self.codec, self.packer.as_deref(), bodies)
    }
}

/// The bodies to bind, in order: packed ones as they are, text packed when there is a
/// dictionary to pack with. A body packed with a dictionary this store does not hold is an
/// error, never stored.
fn body_params<'a>(
    codec: &Codec,
    packer: Option<&BodyPacker>,
    bodies: impl Iterator<Item = (&'a str, Option<&'a PackedBody>)>,
) -> StoreResult<Vec<BodyParam<'a>>> {
    let mut compressor = None;
    let mut scratch = Vec::new();
    bodies
        .map(|(text, packed)| match (packed, packer) {
            (Some(packed), _) => {
                let id = zstd::zstd_safe::get_dict_id_from_frame(&packed.0).map(u32::from);
                if id.is_none_or(|id| !codec.holds(id)) {
                    return Err(StoreError::Corrupt(format!(
                        "a body packed with dictionary {id:?}, which this store does not hold"
                    )));
                }
                Ok(BodyParam::Packed(std::borrow::Cow::Borrowed(&packed.0)))
            }
            (None, Some(packer)) => {
                let compressor = match &mut compressor {
                    Some(c) => c,
                    None => compressor.insert(packer.compressor()?),
                };
                Ok(BodyParam::Packed(std::borrow::Cow::Owned(
                    packer.pack_with(compressor, &mut scratch, text)?.0,
                )))
            }
            (None, None) => Ok(BodyParam::Text(text)),
        })
        .collect()
}

/// Packs bodies with the dictionary a store packs with now (`Store::body_packer`).
pub struct BodyPacker {
    id: u32,
    dict: EncoderDictionary<'static>,
}

impl std::fmt::Debug for BodyPacker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyPacker")
            .field("dictionary", &self.id)
            .finish()
    }
}

impl BodyPacker {
    fn compressor(&self) -> StoreResult<zstd::bulk::Compressor<'_>> {
        zstd::bulk::Compressor::with_prepared_dictionary(&self.dict)
            .map_err(|e| StoreError::Corrupt(format!("body dictionary {}: {e}", self.id)))
    }

    /// Packs `text` into `scratch` (room for zstd's worst case, kept from body to body) and
    /// returns a copy of exactly the packed bytes. Packing straight into a new buffer meant
    /// allocating the worst case, about the text's size, and shrinking it afterwards (a staged
    /// delivery holds the packed size, which its memory budget counts): two allocations and a
    /// copy a body, and with mimalloc returning freed pages at once (`src/main.rs`) the freed
    /// worst-case buffers cost `madvise` calls and page faults (`perf`, BENCHMARKS.md).
    fn pack_with(
        &self,
        compressor: &mut zstd::bulk::Compressor<'_>,
        scratch: &mut Vec<u8>,
        text: &str,
    ) -> StoreResult<PackedBody> {
        scratch.clear();
        scratch.reserve(zstd::zstd_safe::compress_bound(text.len()));
        compressor
            .compress_to_buffer(text.as_bytes(), scratch)
            .map_err(|e| StoreError::Corrupt(format!("packing a body: {e}")))?;
        Ok(PackedBody(scratch.as_slice().to_vec()))
    }

    /// Packs the bodies of records, items and audit events not packed yet; empties the text of
    /// records and items (an event keeps it: the chain hashes the text when it is appended).
    pub fn pack(
        &self,
        records: &mut [NewRecord],
        items: &mut [NewItem],
        events: &mut [NewAuditEvent],
    ) -> StoreResult<()> {
        let mut compressor = self.compressor()?;
        let mut scratch = Vec::new();
        for e in events.iter_mut().filter(|e| e.packed.is_none()) {
            e.packed = Some(self.pack_with(&mut compressor, &mut scratch, &e.body)?);
        }
        let bodies = records
            .iter_mut()
            .map(|r| (&mut r.body, &mut r.packed))
            .chain(items.iter_mut().map(|i| (&mut i.body, &mut i.packed)));
        for (text, packed) in bodies {
            if packed.is_none() {
                let text: String = std::mem::take(text);
                *packed = Some(self.pack_with(&mut compressor, &mut scratch, &text)?);
            }
        }
        Ok(())
    }

    /// Packs bodies, in order (tests).
    #[cfg(test)]
    fn pack_all<'a>(&self, bodies: impl Iterator<Item = &'a str>) -> StoreResult<Vec<Vec<u8>>> {
        let mut compressor = self.compressor()?;
        let mut scratch = Vec::new();
        bodies
            .map(|b| {
                self.pack_with(&mut compressor, &mut scratch, b)
                    .map(|p| p.0)
            })
            .collect()
    }
}

/// Why a body could not be unpacked.
#[derive(Debug)]
pub(super) enum UnpackError {
    /// Packed with a dictionary this process has not loaded.
    UnknownDictionary(u32),
    /// Not JSON text and not a readable zstd frame.
    Corrupt(String),
}

/// The dictionaries of one store: the one it packs with and every one it can read.
#[derive(Default)]
pub(super) struct Codec {
    packer: ArcSwapOption<BodyPacker>,
    readers: RwLock<HashMap<u32, Arc<DecoderDictionary<'static>>>>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("packing_with", &self.packer().map(|p| p.id))
            .finish_non_exhaustive()
    }
}

impl Codec {
    /// The dictionary to pack with, if one has been trained.
    pub(super) fn packer(&self) -> Option<Arc<BodyPacker>> {
        self.packer.load_full()
    }

    /// Whether it has loaded the dictionary with this id.
    fn holds(&self, id: u32) -> bool {
        self.readers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&id)
    }

    /// Adds stored dictionaries (id, bytes); the newest (last) becomes the one to pack with
    /// when `pack` is set.
    pub(super) fn load(&self, dictionaries: &[(i64, Vec<u8>)], pack: bool) -> StoreResult<()> {
        let mut readers = self.readers.write().unwrap_or_else(|e| e.into_inner());
        for (id, bytes) in dictionaries {
            let id = u32::try_from(*id)
                .map_err(|_| StoreError::Corrupt(format!("body dictionary id {id}")))?;
            readers
                .entry(id)
                .or_insert_with(|| Arc::new(DecoderDictionary::copy(bytes)));
        }
        drop(readers);
        if pack && let Some((id, bytes)) = dictionaries.last() {
            self.packer.store(Some(Arc::new(BodyPacker {
                id: *id as u32,
                dict: EncoderDictionary::copy(bytes, LEVEL),
            })));
        }
        Ok(())
    }

    /// An unpacker for one read (it keeps a decompression context per dictionary).
    pub(super) fn unpacker(&self) -> Unpacker<'_> {
        Unpacker {
            codec: self,
            contexts: HashMap::new(),
        }
    }
}

/// Unpacks the bodies of one read.
pub(super) struct Unpacker<'c> {
    codec: &'c Codec,
    contexts: HashMap<
        u32,
        (
            Arc<DecoderDictionary<'static>>,
            zstd::zstd_safe::DCtx<'static>,
        ),
    >,
}

impl Unpacker<'_> {
    /// The JSON text of a stored body.
    pub(super) fn text(&mut self, body: &StoredBody) -> Result<String, UnpackError> {
        let bytes = &body.0;
        if !bytes.starts_with(&ZSTD_MAGIC) {
            return std::str::from_utf8(bytes)
                .map(str::to_owned)
                .map_err(|e| UnpackError::Corrupt(format!("a stored body is not UTF-8: {e}")));
        }
        let id = zstd::zstd_safe::get_dict_id_from_frame(bytes)
            .map(u32::from)
            .ok_or_else(|| UnpackError::Corrupt("a packed body names no dictionary".into()))?;
        let size = zstd::zstd_safe::get_frame_content_size(bytes)
            .ok()
            .flatten()
            .ok_or_else(|| UnpackError::Corrupt("a packed body has no content size".into()))?;
        if !self.contexts.contains_key(&id) {
            let dict = self
                .codec
                .readers
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&id)
                .cloned()
                .ok_or(UnpackError::UnknownDictionary(id))?;
            self.contexts
                .insert(id, (dict, zstd::zstd_safe::DCtx::create()));
        }
        let (dict, dctx) = self.contexts.get_mut(&id).expect("inserted above");
        let mut out = Vec::with_capacity(size as usize);
        dctx.decompress_using_ddict(&mut out, bytes, dict.as_ddict())
            .map_err(|code| {
                UnpackError::Corrupt(format!(
                    "a packed body: {}",
                    zstd::zstd_safe::get_error_name(code)
                ))
            })?;
        String::from_utf8(out)
            .map_err(|e| UnpackError::Corrupt(format!("a packed body is not UTF-8: {e}")))
    }
}

/// Runs `read` over bodies with this store's dictionaries; when it meets a dictionary not loaded
/// (another process trained it), loads them again with `reload` and runs `read` once more.
pub(super) async fn unpack_with<T, R, Fut>(
    codec: &Codec,
    mut read: impl FnMut(&mut Unpacker<'_>) -> Result<T, UnpackError>,
    reload: R,
) -> StoreResult<T>
where
    R: FnOnce() -> Fut,
    Fut: std::future::Future<Output = StoreResult<()>>,
{
    match read(&mut codec.unpacker()) {
        Ok(done) => return Ok(done),
        Err(UnpackError::Corrupt(e)) => return Err(StoreError::Corrupt(e)),
        Err(UnpackError::UnknownDictionary(_)) => {}
    }
    reload().await?;
    read(&mut codec.unpacker()).map_err(|e| match e {
        UnpackError::UnknownDictionary(id) => StoreError::Corrupt(format!(
            "a body was packed with dictionary {id}, which is not stored"
        )),
        UnpackError::Corrupt(e) => StoreError::Corrupt(e),
    })
}

/// What [`pack_bodies`] asks of a backend.
pub(super) trait DictionaryTable {
    /// The stored dictionaries, oldest first.
    async fn stored(&self) -> StoreResult<Vec<(i64, Vec<u8>)>>;
    /// How many plain (unpacked) item bodies are stored, counted up to `limit`.
    async fn plain_items(&self, limit: i64) -> StoreResult<i64>;
    /// Up to `items` of the newest plain item bodies, `records` plain record bodies and
    /// `events` of the newest plain audit bodies.
    async fn samples(&self, items: i64, records: i64, events: i64) -> StoreResult<Vec<String>>;
    /// Stores `dict` as dictionary `id` unless a dictionary is stored already (another process
    /// trained one meanwhile: it wins).
    async fn insert_first(&self, id: i64, dict: &[u8]) -> StoreResult<()>;
}

/// Packs bodies from now on: loads a stored dictionary, else trains one from the newest plain
/// bodies once `min_bodies` item bodies are stored, and stores it. Returns whether bodies are
/// packed.
pub(super) async fn pack_bodies(
    table: &impl DictionaryTable,
    codec: &Codec,
    min_bodies: i64,
) -> StoreResult<bool> {
    if codec.packer().is_some() {
        return Ok(true);
    }
    let stored = table.stored().await?;
    if !stored.is_empty() {
        codec.load(&stored, true)?;
        return Ok(true);
    }
    if table.plain_items(min_bodies.max(1)).await? < min_bodies.max(1) {
        return Ok(false);
    }
    // Half items, a quarter records, a quarter audit events: the bodies the store packs.
    let bodies = table
        .samples(
            TRAINING_SAMPLES / 2,
            TRAINING_SAMPLES / 4,
            TRAINING_SAMPLES / 4,
        )
        .await?;
    let (id, dict) = tokio::task::spawn_blocking(move || train(&training_samples(&bodies)))
        .await
        .map_err(|e| StoreError::Corrupt(format!("training a body dictionary: {e}")))??;
    table.insert_first(id, &dict).await?;
    let stored = table.stored().await?;
    codec.load(&stored, true)?;
    tracing::info!(
        dictionary = stored.last().map(|(id, _)| *id),
        "record and item bodies are packed from now on"
    );
    Ok(true)
}

/// Bodies that share a value with fewer than this many other sampled bodies lose it before
/// training: a dictionary holds only what many clients' bodies have in common.
const MIN_SHARED: usize = 20;

/// Training samples from plain bodies: every string, number and key that fewer than
/// [`MIN_SHARED`] of the bodies contain is masked (`""`, `0`, `"_"`), so the dictionary (kept
/// for as long as the database) holds structure, codes and common values, never a value that
/// points to one client. Bodies that are not JSON are left out.
pub(super) fn training_samples(bodies: &[String]) -> Vec<Vec<u8>> {
    use serde_json::Value;
    fn leaves(v: &Value, out: &mut std::collections::HashSet<String>) {
        match v {
            Value::String(s) => {
                out.insert(format!("s{s}"));
            }
            Value::Number(n) => {
                out.insert(format!("n{n}"));
            }
            Value::Array(items) => items.iter().for_each(|i| leaves(i, out)),
            Value::Object(map) => {
                for (k, v) in map {
                    out.insert(format!("k{k}"));
                    leaves(v, out);
                }
            }
            Value::Bool(_) | Value::Null => {}
        }
    }
    fn mask(v: Value, shared: &dyn Fn(&str) -> bool) -> Value {
        match v {
            Value::String(s) if !shared(&format!("s{s}")) => Value::String(String::new()),
            Value::Number(n) if !shared(&format!("n{n}")) => Value::from(0),
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|i| mask(i, shared)).collect())
            }
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| {
                        let k = if shared(&format!("k{k}")) {
                            k
                        } else {
                            "_".to_string()
                        };
                        (k, mask(v, shared))
                    })
                    .collect(),
            ),
            other => other,
        }
    }
    let parsed: Vec<Value> = bodies
        .iter()
        .filter_map(|b| serde_json::from_str(b).ok())
        .collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for v in &parsed {
        let mut seen = std::collections::HashSet::new();
        leaves(v, &mut seen);
        for leaf in seen {
            *counts.entry(leaf).or_default() += 1;
        }
    }
    let shared = |leaf: &str| counts.get(leaf).is_some_and(|&n| n >= MIN_SHARED);
    parsed
        .into_iter()
        .map(|v| serde_json::to_vec(&mask(v, &shared)).unwrap_or_default())
        .collect()
}

/// Trains a dictionary from sample bodies; returns its zstd id and bytes.
pub(super) fn train(samples: &[Vec<u8>]) -> StoreResult<(i64, Vec<u8>)> {
    let dict = zstd::dict::from_samples(samples, DICTIONARY_BYTES)
        .map_err(|e| StoreError::Corrupt(format!("training a body dictionary: {e}")))?;
    let id = zstd::zstd_safe::get_dict_id_from_dict(&dict)
        .ok_or_else(|| StoreError::Corrupt("a trained dictionary has no id".into()))?;
    Ok((i64::from(u32::from(id)), dict))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                format!(
                    r#"{{"type":"record","record_ref":"p1.k.{i:032x}","policy_version":"abc","reporting_period":"2026-{:02}","client":{{"sex":"{}","birth_year":{}}},"services":[{{"kind":"beratung","start":"2026-0{}-01"}}]}}"#,
                    i % 12 + 1,
                    ["f", "m", "d"][i % 3],
                    1950 + i % 60,
                    i % 9 + 1
                )
            })
            .collect()
    }

    #[test]
    fn packs_and_unpacks_every_body_exactly() {
        let all = bodies(1500);
        let samples: Vec<Vec<u8>> = all.iter().map(|b| b.clone().into_bytes()).collect();
        let (id, dict) = train(&samples).expect("train");
        let codec = Codec::default();
        codec.load(&[(id, dict)], true).unwrap();
        let packed = codec
            .packer()
            .expect("packer")
            .pack_all(all.iter().map(String::as_str))
            .unwrap();
        let total: usize = packed.iter().map(Vec::len).sum();
        let plain: usize = all.iter().map(String::len).sum();
        assert!(total * 3 < plain, "packed {total} of {plain} bytes");
        let mut unpacker = codec.unpacker();
        for (body, packed) in all.iter().zip(packed) {
            assert_eq!(&unpacker.text(&StoredBody(packed)).unwrap(), body);
        }
        // Text stays text.
        assert_eq!(
            unpacker.text(&StoredBody(b"{\"a\":1}".to_vec())).unwrap(),
            "{\"a\":1}"
        );
    }

    #[test]
    fn training_masks_what_few_bodies_share() {
        let mut all = bodies(1500);
        all[7] =
            r#"{"type":"record","client":{"family_name":"Yılmaz-Oberdorfer","sex":"f"}}"#.into();
        let samples = training_samples(&all);
        assert_eq!(samples.len(), all.len());
        let joined = String::from_utf8(samples.concat()).unwrap();
        assert!(!joined.contains("Oberdorfer"));
        // A record_ref is in one body only; the sex codes and keys are in hundreds.
        assert!(!joined.contains("p1.k.0000"));
        assert!(joined.contains(r#""sex":"f""#));
        assert!(joined.contains("policy_version"));
        let (_, dict) = train(&samples).unwrap();
        assert!(!String::from_utf8_lossy(&dict).contains("Oberdorfer"));
    }

    #[test]
    fn an_unknown_dictionary_is_reported_not_guessed() {
        let all = bodies(1500);
        let samples: Vec<Vec<u8>> = all.iter().map(|b| b.clone().into_bytes()).collect();
        let (id, dict) = train(&samples).unwrap();
        let writer = Codec::default();
        writer.load(&[(id, dict.clone())], true).unwrap();
        let packed = writer
            .packer()
            .unwrap()
            .pack_all(["{}"].into_iter())
            .unwrap();
        let reader = Codec::default();
        match reader.unpacker().text(&StoredBody(packed[0].clone())) {
            Err(UnpackError::UnknownDictionary(got)) => assert_eq!(i64::from(got), id),
            other => panic!("{other:?}"),
        }
        reader.load(&[(id, dict)], false).unwrap();
        assert!(reader.packer().is_none());
        assert_eq!(
            reader
                .unpacker()
                .text(&StoredBody(packed[0].clone()))
                .unwrap(),
            "{}"
        );
        // A damaged frame is an error, not a body.
        let mut damaged = packed[0].clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xFF;
        damaged.truncate(last);
        assert!(reader.unpacker().text(&StoredBody(damaged)).is_err());
    }
}
