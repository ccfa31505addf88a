//! Fetching a sealed batch in one of its formats, page by page: [`BatchPages::open`] writes
//! what comes before the first item (and for CSV reads the columns, pass 1), and
//! [`BatchPages::next`] gives the next piece — items in pages of [`PAGE`] from the store, then
//! what closes the document. The API streams the pieces as they come; nothing here knows HTTP.
//! Rendering itself is [`super::formats`]'s.

use super::formats::{self, BatchFormat, BatchHead, CsvColumns, FormatError};
use crate::store::{BatchInfo, BatchItem, Store, StoreError};
use std::sync::Arc;

/// Items fetched from the store per page.
pub const PAGE: i64 = 1000;

/// Why a batch cannot be fetched (further).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored item cannot be rendered in the asked format (never written so by Weiche). The
    /// message names the batch and the item's position, never its content.
    #[error("batch {batch_id}: item {seq} cannot be rendered as {format}: {source}")]
    Unrenderable {
        /// The batch.
        batch_id: String,
        /// The item's `seq` (0: the document's head).
        seq: i64,
        /// The format's name.
        format: &'static str,
        /// What does not fit.
        source: FormatError,
    },
}

/// A batch being fetched in a format.
pub struct BatchPages {
    store: Arc<dyn Store>,
    batch_id: String,
    form: BatchFormat,
    /// CSV: the columns of every item (pass 1).
    csv: Option<CsvColumns>,
    /// What comes before the first item, until it is given out.
    head: Option<Vec<u8>>,
    /// `seq` of the last item given out.
    after: i64,
    /// No item given out yet (JSON needs a comma before every later page).
    first: bool,
    /// Everything given out.
    done: bool,
}

impl BatchPages {
    /// Starts fetching `batch` as `form`: the document's head now, and for CSV the columns of
    /// all its items (read once before the rows).
    pub async fn open(
        store: Arc<dyn Store>,
        batch: &BatchInfo,
        form: BatchFormat,
    ) -> Result<BatchPages, FetchError> {
        let mut csv = None;
        let head = match form {
            BatchFormat::Json => json_head(batch).into_bytes(),
            BatchFormat::Ndjson => Vec::new(),
            BatchFormat::Xml => formats::xml_head(&BatchHead {
                batch_id: &batch.batch_id,
                recipient: &batch.recipient,
                created_at: &crate::clock::rfc3339_ms(batch.created_at),
                items: batch.items,
                periods: &batch.periods,
            })
            .into_bytes(),
            BatchFormat::Csv => {
                let columns = csv_columns(store.as_ref(), &batch.batch_id).await?;
                let header = columns
                    .header()
                    .map_err(|e| unrenderable(&batch.batch_id, 0, form, e))?;
                csv = Some(columns);
                header
            }
        };
        Ok(BatchPages {
            store,
            batch_id: batch.batch_id.clone(),
            form,
            csv,
            head: Some(head),
            after: 0,
            first: true,
            done: false,
        })
    }

    /// The next piece of the document; `None` once it is complete. After an error nothing
    /// follows.
    pub async fn next(&mut self) -> Option<Result<Vec<u8>, FetchError>> {
        if let Some(head) = self.head.take()
            && !head.is_empty()
        {
            return Some(Ok(head));
        }
        if self.done {
            return None;
        }
        let piece = self.page().await;
        if piece.is_err() {
            self.done = true;
        }
        Some(piece)
    }

    /// The next page of items, rendered, with the document's end after the last page.
    async fn page(&mut self) -> Result<Vec<u8>, FetchError> {
        let form = self.form;
        if let Some(separator) = joined_separator(form) {
            // JSON and NDJSON: the items as stored, joined by the store.
            let page = self
                .store
                .batch_items_joined(&self.batch_id, self.after, PAGE, separator)
                .await?;
            let mut out = Vec::new();
            let count = match page {
                Some(page) => {
                    if form == BatchFormat::Json && !self.first {
                        out.push(b',');
                    }
                    out.extend_from_slice(page.text.as_bytes());
                    if form == BatchFormat::Ndjson {
                        out.push(b'\n');
                    }
                    self.first = false;
                    self.after = page.last_seq;
                    page.count
                }
                None => 0,
            };
            if count < PAGE {
                self.done = true;
                if form == BatchFormat::Json {
                    out.extend_from_slice(b"]}");
                }
            }
            return Ok(out);
        }
        let page = self
            .store
            .batch_items(&self.batch_id, self.after, PAGE)
            .await?;
        let mut out = match &self.csv {
            Some(columns) => columns
                .rows(page.iter().map(|i| i.body.as_str()))
                .map_err(|e| unrenderable(&self.batch_id, self.after, form, e))?,
            None => xml_page(&page, &self.batch_id)?,
        };
        if let Some(last) = page.last() {
            self.after = last.seq;
        }
        if (page.len() as i64) < PAGE {
            self.done = true;
            if form == BatchFormat::Xml {
                out.extend_from_slice(formats::xml_foot().as_bytes());
            }
        }
        Ok(out)
    }
}

/// The JSON document up to its items: `{"batch_id","created_at","state","periods","recipient",
/// "items":[`, written member by member.
fn json_head(batch: &BatchInfo) -> String {
    let members = [
        ("batch_id", serde_json::json!(batch.batch_id)),
        (
            "created_at",
            serde_json::json!(crate::clock::rfc3339_ms(batch.created_at)),
        ),
        ("state", serde_json::json!(batch.state.as_str())),
        ("periods", serde_json::json!(batch.periods)),
        ("recipient", serde_json::json!(batch.recipient)),
    ];
    let mut out = String::from("{");
    for (key, value) in members {
        out.push_str(&serde_json::Value::from(key).to_string());
        out.push(':');
        out.push_str(&value.to_string());
        out.push(',');
    }
    out.push_str("\"items\":[");
    out
}

/// Pass 1 of a CSV rendering: the union of the items' column paths (values are not kept).
async fn csv_columns(store: &dyn Store, batch_id: &str) -> Result<CsvColumns, FetchError> {
    let mut columns = CsvColumns::new();
    let mut after = 0;
    loop {
        let page = store.batch_items(batch_id, after, PAGE).await?;
        for item in &page {
            columns
                .add_item(&item.body)
                .map_err(|e| unrenderable(batch_id, item.seq, BatchFormat::Csv, e))?;
        }
        match page.last() {
            Some(last) if page.len() as i64 >= PAGE => after = last.seq,
            _ => return Ok(columns),
        }
    }
}

/// The separator between stored items when a format sends them as they are (JSON, NDJSON).
fn joined_separator(form: BatchFormat) -> Option<&'static str> {
    match form {
        BatchFormat::Json => Some(","),
        BatchFormat::Ndjson => Some("\n"),
        BatchFormat::Xml | BatchFormat::Csv => None,
    }
}

/// One page of items as XML `<item>` elements (CSV rows need the columns of pass 1, see
/// [`CsvColumns::rows`]).
fn xml_page(page: &[BatchItem], batch_id: &str) -> Result<Vec<u8>, FetchError> {
    let mut out = Vec::new();
    for item in page {
        let xml = formats::xml_item(&item.body)
            .map_err(|e| unrenderable(batch_id, item.seq, BatchFormat::Xml, e))?;
        out.extend_from_slice(xml.as_bytes());
    }
    Ok(out)
}

fn unrenderable(batch_id: &str, seq: i64, form: BatchFormat, source: FormatError) -> FetchError {
    FetchError::Unrenderable {
        batch_id: batch_id.to_string(),
        seq,
        format: form.name(),
        source,
    }
}
