//! The SQL the two backends share, written once. SQLite and PostgreSQL both read `$N`
//! placeholders, so a statement that is the same on both is one text here. The macros below
//! expand, in each backend's module, into its implementation of [`super::Store`] and
//! [`super::DeliveryTx`]: the methods written here, plus the backend's own methods it passes
//! in — where the backends differ (locking, array parameters, partitions, the WAL), the code
//! stays in `sqlite.rs` or `postgres.rs`, beside the reason.
//!
//! Names the shared methods use are the backend's: its `map_err`, `MAX_ROWS_PER_INSERT`,
//! `PUSH_COLUMNS`, and its store's `reader()`, `writer()` and `begin_write()` (on PostgreSQL
//! all one pool).

/// `impl DeliveryTx for $dtx` (a struct with a field `tx: Transaction<'static, $db>`): the
/// shared methods and the backend's own (`{ … }`).
macro_rules! impl_delivery_tx {
    ($dtx:ident, $db:ident, { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl DeliveryTx for $dtx {
            $($own)*

            async fn put(&mut self, records: &[NewRecord], items: &[NewItem]) -> StoreResult<()> {
                let now = now_ms();
                insert_records(&mut self.tx, records, &self.bodies, now).await?;
                insert_items(&mut self.tx, items, &self.bodies, now).await
            }

            async fn commit(mut self: Box<Self>, d: &NewDelivery) -> StoreResult<CommitOutcome> {
                let inserted = sqlx::query(
                    "INSERT INTO deliveries (id, vendor, idempotency_key, content_hash, format, mode, \
                     status, test, received_at, receipt) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (vendor, idempotency_key) DO NOTHING",
                )
                .bind(&d.id)
                .bind(&d.vendor)
                .bind(d.idempotency_key.as_deref())
                .bind(&d.content_hash)
                .bind(&d.format)
                .bind(&d.mode)
                .bind(&d.status)
                .bind(d.test)
                .bind(d.received_at)
                .bind(&d.receipt)
                .execute(&mut *self.tx)
                .await
                .map_err(map_err)?
                .rows_affected();
                if inserted == 1 {
                    insert_receipt_subjects(&mut self.tx, d).await?;
                    self.tx.commit().await.map_err(map_err)?;
                    return Ok(CommitOutcome::Committed);
                }
                // Only the (vendor, idempotency_key) conflict is absorbed, so the key is set here.
                let first: Option<(String, String)> = sqlx::query_as(
                    "SELECT content_hash, receipt FROM deliveries \
                     WHERE vendor = $1 AND idempotency_key = $2",
                )
                .bind(&d.vendor)
                .bind(d.idempotency_key.as_deref())
                .fetch_optional(&mut *self.tx)
                .await
                .map_err(map_err)?;
                self.tx.rollback().await.map_err(map_err)?;
                let (content_hash, receipt) = first.ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "delivery {} conflicted on its idempotency key, but no earlier delivery was found",
                        d.id
                    ))
                })?;
                Ok(CommitOutcome::Duplicate {
                    content_hash,
                    receipt,
                })
            }

            async fn rollback(self: Box<Self>) -> StoreResult<()> {
                self.tx.rollback().await.map_err(map_err)
            }

            async fn commit_plain(self: Box<Self>) -> StoreResult<()> {
                self.tx.commit().await.map_err(map_err)
            }

            async fn put_withdrawal(&mut self, vendor: &str, w: &Withdrawal) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO withdrawals (vendor, client_id, consent_id, withdrawn_on) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (vendor, client_id, consent_id) DO UPDATE \
                     SET withdrawn_on = excluded.withdrawn_on \
                     WHERE excluded.withdrawn_on < withdrawals.withdrawn_on",
                )
                .bind(vendor)
                .bind(&w.client_id)
                .bind(&w.consent_id)
                .bind(&w.withdrawn_on)
                .execute(&mut *self.tx)
                .await
                .map_err(map_err)?;
                Ok(())
            }

            async fn audit(&mut self, events: &[NewAuditEvent]) -> StoreResult<()> {
                if events.is_empty() {
                    return Ok(());
                }
                let sets = field_sets_of(events);
                if !sets.is_empty() {
                    let mut qb =
                        QueryBuilder::<$db>::new("INSERT INTO audit_field_sets (sha256, fields) ");
                    qb.push_values(sets, |mut row, set| {
                        row.push_bind(set.sha256.as_str())
                            .push_bind(set.fields.as_str());
                    });
                    qb.push(" ON CONFLICT (sha256) DO NOTHING");
                    qb.build().execute(&mut *self.tx).await.map_err(map_err)?;
                }
                // One appender at a time: the last link read below stays the last until this
                // transaction ends (see the backend's `lock_audit`).
                lock_audit(&mut self.tx).await?;
                let last: Option<(i64, String)> = sqlx::query_as(LAST_LINK)
                    .fetch_optional(&mut *self.tx)
                    .await
                    .map_err(map_err)?;
                let links = super::chain::link(last, events);
                for (range, kept) in insert_blocks(events.len(), MAX_ROWS_PER_INSERT) {
                    let (chunk, chunk_events) = (&links[range.clone()], &events[range]);
                    let mut qb = QueryBuilder::<$db>::new(
                        "INSERT INTO audit (seq, at_ms, kind, subject, body, prev_hash, hash) ",
                    );
                    // The chain hashes the text; the row may hold it packed (packed already
                    // when the event was staged).
                    let mut bodies = self
                        .bodies
                        .params(chunk_events.iter().map(|e| (e.body.as_str(), e.packed.as_ref())))?
                        .into_iter();
                    qb.push_values(chunk.iter().zip(chunk_events), |mut row, (l, e)| {
                        row.push_bind(l.seq)
                            .push_bind(e.at_ms)
                            .push_bind(e.kind.as_str())
                            .push_bind(e.subject.as_deref())
                            .push_bind(bodies.next().expect("a body an event"))
                            .push_bind(l.prev_hash.as_str())
                            .push_bind(l.hash.as_str());
                    });
                    qb.build()
                        .persistent(kept)
                        .execute(&mut *self.tx)
                        .await
                        .map_err(map_err)?;
                }
                Ok(())
            }

            async fn client_holders(
                &mut self,
                vendor: &str,
                client_id: &str,
                consent_id: Option<&str>,
            ) -> StoreResult<Vec<Holder>> {
                // The client's few records (index records_vendor_client) are the outer loop
                // (`LOOP_JOIN`), each probing items_latest (and holdings); left to itself SQLite's
                // planner would scan the vendor's items. The latest of items and holdings by seq decides.
                let rows: Vec<HolderRow> = sqlx::query_as(&format!(
                    "SELECT {items} FROM items AS i WHERE i.seq IN (\
                     SELECT MAX(j.seq) FROM records AS r \
                     {loop_join} items AS j ON j.vendor = r.vendor AND j.record_id = r.record_id \
                     AND j.reporting_period = r.reporting_period \
                     WHERE r.vendor = $1 AND r.client_id = $2 \
                     GROUP BY j.record_id, j.reporting_period, j.recipient) \
                     AND i.kind = 'record' AND (CAST($3 AS TEXT) IS NULL OR i.consent_id = $3) AND {no_newer_holding} \
                     UNION ALL \
                     SELECT {held} FROM records AS r \
                     {loop_join} holdings AS h ON h.vendor = r.vendor AND h.record_id = r.record_id \
                     AND h.reporting_period = r.reporting_period \
                     WHERE r.vendor = $1 AND r.client_id = $2 AND h.kind = 'record' \
                     AND (CAST($3 AS TEXT) IS NULL OR h.consent_id = $3) AND {no_newer_item} \
                     ORDER BY 3, 4, 1",
                    items = holder_columns("i"),
                    held = holder_columns("h"),
                    no_newer_holding = NO_NEWER_HOLDING,
                    no_newer_item = NO_NEWER_ITEM,
                    loop_join = LOOP_JOIN,
                ))
                .bind(vendor)
                .bind(client_id)
                .bind(consent_id)
                .fetch_all(&mut *self.tx)
                .await
                .map_err(map_err)?;
                Ok(rows.into_iter().map(holder).collect())
            }

            async fn erase_client(
                &mut self,
                vendor: &str,
                client_id: &str,
                subject: &str,
            ) -> StoreResult<Erased> {
                let mut erased = Erased::default();
                // Items first: they are found through the client's records.
                let deleted: Vec<String> = sqlx::query_scalar(
                    "DELETE FROM items WHERE batch_id IS NULL AND vendor = $1 \
                     AND (record_id, reporting_period) IN (SELECT record_id, reporting_period \
                     FROM records WHERE vendor = $1 AND client_id = $2) RETURNING kind",
                )
                .bind(vendor)
                .bind(client_id)
                .fetch_all(&mut *self.tx)
                .await
                .map_err(map_err)?;
                let blanked = blank_sent_items(&mut self.tx, vendor, client_id).await?;
                count_items(&mut erased, deleted.iter().chain(&blanked));
                erased.feedback = sqlx::query(
                    "DELETE FROM feedback WHERE vendor = $1 AND (record_id, reporting_period) IN \
                     (SELECT record_id, reporting_period FROM records WHERE vendor = $1 AND client_id = $2)",
                )
                .bind(vendor)
                .bind(client_id)
                .execute(&mut *self.tx)
                .await
                .map_err(map_err)?
                .rows_affected();
                // What recipients held of the client's records, from purged items.
                sqlx::query(
                    "DELETE FROM holdings WHERE vendor = $1 \
                     AND (record_id, reporting_period) IN (SELECT record_id, reporting_period \
                     FROM records WHERE vendor = $1 AND client_id = $2)",
                )
                .bind(vendor)
                .bind(client_id)
                .execute(&mut *self.tx)
                .await
                .map_err(map_err)?;
                erased.records = sqlx::query("DELETE FROM records WHERE vendor = $1 AND client_id = $2")
                    .bind(vendor)
                    .bind(client_id)
                    .execute(&mut *self.tx)
                    .await
                    .map_err(map_err)?
                    .rows_affected();
                erased.withdrawals =
                    sqlx::query("DELETE FROM withdrawals WHERE vendor = $1 AND client_id = $2")
                        .bind(vendor)
                        .bind(client_id)
                        .execute(&mut *self.tx)
                        .await
                        .map_err(map_err)?
                        .rows_affected();
                // Receipt entries about the client's records, found by its subject pseudonym.
                let found: Vec<(String, i64)> = sqlx::query_as(
                    "DELETE FROM receipt_subjects WHERE subject = $1 RETURNING delivery_id, record",
                )
                .bind(subject)
                .fetch_all(&mut *self.tx)
                .await
                .map_err(map_err)?;
                for (delivery_id, records) in by_delivery(found) {
                    let receipt: Option<String> =
                        sqlx::query_scalar(&format!("SELECT receipt FROM deliveries WHERE id = $1 AND vendor = $2{FOR_UPDATE}"))
                            .bind(&delivery_id)
                            .bind(vendor)
                            .fetch_optional(&mut *self.tx)
                            .await
                            .map_err(map_err)?;
                    let Some(receipt) = receipt else { continue };
                    if let Some((text, n)) = scrub_receipt(&receipt, &records)? {
                        sqlx::query("UPDATE deliveries SET receipt = $1 WHERE id = $2")
                            .bind(text)
                            .bind(&delivery_id)
                            .execute(&mut *self.tx)
                            .await
                            .map_err(map_err)?;
                        erased.receipts += 1;
                        erased.receipt_entries += n;
                    }
                }
                Ok(erased)
            }
        }
    };
}

/// `impl Store for $store` (whose delivery transactions are `$dtx`): the shared methods and the
/// backend's own (`{ … }`).
macro_rules! impl_store {
    ($store:ident, $db:ident, $dtx:ident, { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl Store for $store {
            $($own)*

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1")
                    .execute(self.reader())
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn delivery_by_key(
                &self,
                vendor: &str,
                key: &str,
            ) -> StoreResult<Option<(String, String)>> {
                sqlx::query_as(
                    "SELECT content_hash, receipt FROM deliveries \
                     WHERE vendor = $1 AND idempotency_key = $2",
                )
                .bind(vendor)
                .bind(key)
                .fetch_optional(self.reader())
                .await
                .map_err(map_err)
            }

            async fn delivery(&self, vendor: &str, id: &str) -> StoreResult<Option<StoredDelivery>> {
                let row: Option<(String, i64, String)> = sqlx::query_as(
                    "SELECT id, received_at, receipt FROM deliveries WHERE id = $1 AND vendor = $2",
                )
                .bind(id)
                .bind(vendor)
                .fetch_optional(self.reader())
                .await
                .map_err(map_err)?;
                Ok(row.map(|(id, received_at, receipt)| StoredDelivery {
                    id,
                    received_at,
                    receipt,
                }))
            }

            async fn deliveries(
                &self,
                vendor: &str,
                since: Option<i64>,
                after: Option<(i64, String)>,
                limit: i64,
            ) -> StoreResult<Vec<StoredDelivery>> {
                let mut qb = QueryBuilder::<$db>::new(
                    "SELECT id, received_at, receipt FROM deliveries WHERE vendor = ",
                );
                qb.push_bind(vendor);
                if let Some(since) = since {
                    qb.push(" AND received_at >= ").push_bind(since);
                }
                if let Some((at, id)) = after {
                    qb.push(" AND (received_at, id) < (")
                        .push_bind(at)
                        .push(", ")
                        .push_bind(id)
                        .push(")");
                }
                qb.push(" ORDER BY received_at DESC, id DESC LIMIT ")
                    .push_bind(limit.max(0));
                let rows: Vec<(String, i64, String)> = qb
                    .build_query_as()
                    .fetch_all(self.reader())
                    .await
                    .map_err(map_err)?;
                Ok(rows
                    .into_iter()
                    .map(|(id, received_at, receipt)| StoredDelivery {
                        id,
                        received_at,
                        receipt,
                    })
                    .collect())
            }

            async fn record(
                &self,
                vendor: &str,
                record_id: &str,
                period: &str,
            ) -> StoreResult<Option<String>> {
                let body: Option<StoredBody> = sqlx::query_scalar(
                    "SELECT body FROM records \
                     WHERE vendor = $1 AND record_id = $2 AND reporting_period = $3",
                )
                .bind(vendor)
                .bind(record_id)
                .bind(period)
                .fetch_optional(self.reader())
                .await
                .map_err(map_err)?;
                self.unpacked(
                    |u| body.as_ref().map(|b| u.text(b)).transpose(),
                )
                .await
            }

            async fn batches(
                &self,
                recipient: &str,
                state: Option<BatchState>,
            ) -> StoreResult<Vec<BatchInfo>> {
                let mut qb = QueryBuilder::<$db>::new("SELECT ");
                qb.push(BATCH_COLUMNS)
                    .push(" FROM batches WHERE recipient = ")
                    .push_bind(recipient);
                if let Some(state) = state {
                    qb.push(" AND state = ").push_bind(state.as_str());
                }
                qb.push(" ORDER BY seal_no");
                let rows = qb
                    .build_query_as()
                    .fetch_all(self.reader())
                    .await
                    .map_err(map_err)?;
                rows.into_iter().map(batch_info).collect()
            }

            async fn batch(&self, recipient: &str, batch_id: &str) -> StoreResult<Option<BatchInfo>> {
                let row = sqlx::query_as(&format!(
                    "SELECT {BATCH_COLUMNS} FROM batches WHERE batch_id = $1 AND recipient = $2"
                ))
                .bind(batch_id)
                .bind(recipient)
                .fetch_optional(self.reader())
                .await
                .map_err(map_err)?;
                row.map(batch_info).transpose()
            }

            async fn batch_items(
                &self,
                batch_id: &str,
                after_seq: i64,
                limit: i64,
            ) -> StoreResult<Vec<BatchItem>> {
                // A range scan of the index items_sealed (batch_id, seq).
                let rows: Vec<(i64, StoredBody)> = sqlx::query_as(&format!(
                    "SELECT i.seq, {ITEM_BODY} FROM {ITEMS_WITH_BODY} \
                     WHERE i.batch_id = $1 AND i.seq > $2 ORDER BY i.seq LIMIT $3",
                ))
                .bind(batch_id)
                .bind(after_seq)
                .bind(limit.max(0))
                .fetch_all(self.reader())
                .await
                .map_err(map_err)?;
                self.unpacked(
                    |u| {
                        rows.iter()
                            .map(|(seq, body)| Ok(BatchItem { seq: *seq, body: u.text(body)? }))
                            .collect()
                    },
                )
                .await
            }

            async fn withdrawals(&self, vendor: &str) -> StoreResult<Vec<Withdrawal>> {
                let rows: Vec<(String, String, String)> = sqlx::query_as(
                    "SELECT client_id, consent_id, withdrawn_on FROM withdrawals WHERE vendor = $1 \
                     ORDER BY client_id, consent_id",
                )
                .bind(vendor)
                .fetch_all(self.reader())
                .await
                .map_err(map_err)?;
                Ok(rows
                    .into_iter()
                    .map(|(client_id, consent_id, withdrawn_on)| Withdrawal {
                        client_id,
                        consent_id,
                        withdrawn_on,
                    })
                    .collect())
            }

            async fn current_records(&self, recipient: &str, period: &str) -> StoreResult<Vec<String>> {
                let bodies: Vec<StoredBody> = sqlx::query_scalar(&format!(
                    "SELECT r.body FROM records AS r \
                     WHERE r.state = 'active' AND r.reporting_period = $1 \
                     AND {LATEST_KIND} = 'record' ORDER BY r.vendor, r.record_id"
                ))
                .bind(period)
                .bind(recipient)
                .fetch_all(self.reader())
                .await
                .map_err(map_err)?;
                self.unpacked(
                    |u| bodies.iter().map(|b| u.text(b)).collect(),
                )
                .await
            }

            async fn audit_events(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<AuditRow>> {
                let rows: Vec<AuditTuple> = sqlx::query_as(&format!(
                    "SELECT {AUDIT_SELECT} FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2"
                ))
                .bind(after_seq)
                .bind(limit.max(0))
                .fetch_all(self.reader())
                .await
                .map_err(map_err)?;
                self.unpacked(
                    |u| rows.iter().map(|row| audit_row(u, row)).collect(),
                )
                .await
            }

            async fn index_audit_subjects(&self, min_events: i64, max_events: i64) -> StoreResult<u64> {
                let (oldest, last, upto): (Option<i64>, Option<i64>, i64) = sqlx::query_as(
                    "SELECT (SELECT MIN(seq) FROM audit), (SELECT MAX(seq) FROM audit), \
                     (SELECT indexed_upto FROM audit_index_state WHERE id = 1)",
                )
                .fetch_one(self.reader())
                .await
                .map_err(map_err)?;
                if last.unwrap_or(0) - upto < min_events.max(1) {
                    return Ok(0);
                }
                // Events purged before they were indexed need no entries.
                let after = upto.max(oldest.unwrap_or(0) - 1);
                // Read before the write turn, on a reader (appended events never change), so
                // that the turn holds only the index's inserts: the read was most of it. The
                // chain's seqs have no gaps, so the next events are a closed range: PostgreSQL
                // estimates it and walks the primary key in order (with `LIMIT` alone it chose
                // a bitmap scan and sorted tens of thousands of rows on disk).
                let events: Vec<(i64, Option<String>)> = sqlx::query_as(
                    "SELECT seq, subject FROM audit WHERE seq > $1 AND seq <= $1 + $2 ORDER BY seq",
                )
                .bind(after)
                .bind(max_events.max(1))
                .fetch_all(self.reader())
                .await
                .map_err(map_err)?;
                let (Some(&(first, _)), Some(&(through, _))) = (events.first(), events.last())
                else {
                    return Ok(0);
                };
                // Sorted, so that the index's pages are each written once per pass.
                let mut runs =
                    super::chain::subject_runs(events.iter().map(|(seq, s)| (*seq, s.as_deref())));
                runs.sort_unstable();
                let mut tx = self.begin_write().await?;
                // Another process may have indexed meanwhile (the state row decides: locked on
                // PostgreSQL, SQLite's write lock is held), or a purge removed these events:
                // then this pass ends, and the next one reads again.
                let (now_upto, oldest): (i64, Option<i64>) = sqlx::query_as(&format!(
                    "SELECT indexed_upto, (SELECT MIN(seq) FROM audit) \
                     FROM audit_index_state WHERE id = 1{FOR_UPDATE}"
                ))
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?;
                if now_upto != upto || oldest.is_none_or(|oldest| oldest > first) {
                    tx.rollback().await.map_err(map_err)?;
                    return Ok(0);
                }
                for chunk in runs.chunks(MAX_ROWS_PER_INSERT) {
                    let mut qb = QueryBuilder::<$db>::new(
                        "INSERT INTO audit_subject_runs (subject, first_seq, last_seq) ",
                    );
                    qb.push_values(chunk, |mut row, (subject, first, last)| {
                        row.push_bind(*subject).push_bind(*first).push_bind(*last);
                    });
                    qb.push(" ON CONFLICT (subject, first_seq) DO NOTHING");
                    qb.build()
                        .persistent(chunk.len() == MAX_ROWS_PER_INSERT)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                }
                sqlx::query("UPDATE audit_index_state SET indexed_upto = $1 WHERE id = 1")
                    .bind(through)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(u64::try_from(events.len()).unwrap_or(u64::MAX))
            }

            async fn audit_by_subject(&self, subject: &str) -> StoreResult<Vec<AuditRow>> {
                let rows: Vec<AuditTuple> = sqlx::query_as(&format!(
                    "SELECT {AUDIT_SELECT} FROM audit WHERE seq IN (\
                     SELECT a.seq FROM audit_subject_runs AS r JOIN audit AS a \
                     ON a.seq BETWEEN r.first_seq AND r.last_seq \
                     WHERE r.subject = $1 AND a.subject = $1 \
                     UNION SELECT seq FROM audit WHERE subject = $1 AND seq > \
                     (SELECT indexed_upto FROM audit_index_state WHERE id = 1)) ORDER BY seq"
                ))
                .bind(subject)
                .fetch_all(self.reader())
                .await
                .map_err(map_err)?;
                self.unpacked(
                    |u| rows.iter().map(|row| audit_row(u, row)).collect(),
                )
                .await
            }

            async fn release_lane(&self, recipient: &str, owner: &str) -> StoreResult<()> {
                sqlx::query(
                    "UPDATE push_lanes SET owner = NULL, lease_until = 0 WHERE recipient = $1 AND owner = $2",
                )
                .bind(recipient)
                .bind(owner)
                .execute(self.writer())
                .await
                .map_err(map_err)?;
                Ok(())
            }

            async fn feedback(
                &self,
                vendor: &str,
                after_seq: i64,
                limit: i64,
            ) -> StoreResult<Vec<FeedbackRow>> {
                let rows: Vec<FeedbackTuple> = sqlx::query_as(&format!(
                    "SELECT {FEEDBACK_COLUMNS} FROM feedback WHERE vendor = $1 AND seq > $2 \
                     ORDER BY seq LIMIT $3"
                ))
                .bind(vendor)
                .bind(after_seq)
                .bind(limit.max(0))
                .fetch_all(self.reader())
                .await
                .map_err(map_err)?;
                Ok(rows.into_iter().map(feedback_row).collect())
            }

            async fn audit_anchor(&self) -> StoreResult<Option<AuditAnchor>> {
                let row: Option<(i64, String)> =
                    sqlx::query_as("SELECT seq, hash FROM audit_anchor WHERE id = 1")
                        .fetch_optional(self.reader())
                        .await
                        .map_err(map_err)?;
                Ok(row.map(|(seq, hash)| AuditAnchor { seq, hash }))
            }

            async fn push_heads(&self, recipient: &str, limit: i64) -> StoreResult<Vec<PushGroup>> {
                let rows: Vec<PushGroupTuple> = sqlx::query_as(&format!(
                    "SELECT {PUSH_COLUMNS} FROM push_groups WHERE recipient = $1 AND state = 'pending' \
                     ORDER BY seal_no LIMIT $2"
                ))
                .bind(recipient)
                .bind(limit.max(0))
                .fetch_all(self.reader())
                .await
                .map_err(map_err)?;
                rows.into_iter().map(push_group_row).collect()
            }

            async fn push_groups(
                &self,
                state: PushState,
                recipient: Option<&str>,
            ) -> StoreResult<Vec<PushGroup>> {
                let rows: Vec<PushGroupTuple> = sqlx::query_as(&format!(
                    "SELECT {PUSH_COLUMNS} FROM push_groups WHERE state = $1 \
                     AND (CAST($2 AS TEXT) IS NULL OR recipient = $2) ORDER BY updated_at, batch_id"
                ))
                .bind(state.as_str())
                .bind(recipient)
                .fetch_all(self.reader())
                .await
                .map_err(map_err)?;
                rows.into_iter().map(push_group_row).collect()
            }

            async fn push_group(&self, batch_id: &str) -> StoreResult<Option<PushGroup>> {
                let row: Option<PushGroupTuple> = sqlx::query_as(&format!(
                    "SELECT {PUSH_COLUMNS} FROM push_groups WHERE batch_id = $1"
                ))
                .bind(batch_id)
                .fetch_optional(self.reader())
                .await
                .map_err(map_err)?;
                row.map(push_group_row).transpose()
            }

            async fn settle_dead_letter(
                &self,
                batch_id: &str,
                to: PushState,
                now_ms: i64,
                audit: &[NewAuditEvent],
            ) -> StoreResult<Option<PushGroup>> {
                let mut dtx = self.delivery_tx(self.begin_write().await?);
                let row: Option<PushGroupTuple> = sqlx::query_as(&format!(
                    "UPDATE push_groups SET state = $2, \
                     attempts = CASE WHEN $2 = 'pending' THEN 0 ELSE attempts END, \
                     next_at = $3, updated_at = $3 WHERE batch_id = $1 AND state = 'dead' \
                     RETURNING {PUSH_COLUMNS}"
                ))
                .bind(batch_id)
                .bind(to.as_str())
                .bind(now_ms)
                .fetch_optional(&mut *dtx.tx)
                .await
                .map_err(map_err)?;
                let Some(row) = row else {
                    dtx.tx.rollback().await.map_err(map_err)?;
                    return Ok(None);
                };
                if to == PushState::Discarded {
                    sqlx::query(
                        "UPDATE batches SET state = 'acknowledged', acked_at = $1 WHERE batch_id = $2",
                    )
                    .bind(now_ms)
                    .bind(batch_id)
                    .execute(&mut *dtx.tx)
                    .await
                    .map_err(map_err)?;
                }
                dtx.audit(audit).await?;
                dtx.tx.commit().await.map_err(map_err)?;
                push_group_row(row).map(Some)
            }

            async fn push_results(
                &self,
                recipient: &str,
                owner: &str,
                results: &[PushResult],
            ) -> StoreResult<usize> {
                if results.is_empty() {
                    return Ok(0);
                }
                // Results are recorded only by the lane's holder: nobody claims the lane while they are
                // written (the backend's `FOR_SHARE`).
                let mut dtx = self.delivery_tx(self.begin_write().await?);
                let held: Option<String> = sqlx::query_scalar(&format!(
                    "SELECT recipient FROM push_lanes WHERE recipient = $1 AND owner = $2{FOR_SHARE}"
                ))
                .bind(recipient)
                .bind(owner)
                .fetch_optional(&mut *dtx.tx)
                .await
                .map_err(map_err)?;
                if held.is_none() {
                    dtx.tx.rollback().await.map_err(map_err)?;
                    return Ok(0);
                }
                let mut recorded = 0;
                for r in results {
                    let (state, next_at, error) = outcome_columns(&r.outcome, r.at_ms);
                    let changed = sqlx::query(
                        "UPDATE push_groups SET state = $3, attempts = attempts + 1, next_at = $4, \
                         last_error = $5, updated_at = $6 \
                         WHERE batch_id = $1 AND recipient = $2 AND state = 'pending'",
                    )
                    .bind(&r.batch_id)
                    .bind(recipient)
                    .bind(state.as_str())
                    .bind(next_at)
                    .bind(error)
                    .bind(r.at_ms)
                    .execute(&mut *dtx.tx)
                    .await
                    .map_err(map_err)?
                    .rows_affected();
                    if changed != 1 {
                        continue;
                    }
                    if state == PushState::Delivered {
                        sqlx::query(
                            "UPDATE batches SET state = 'acknowledged', acked_at = $1 WHERE batch_id = $2",
                        )
                        .bind(r.at_ms)
                        .bind(&r.batch_id)
                        .execute(&mut *dtx.tx)
                        .await
                        .map_err(map_err)?;
                    }
                    dtx.audit(&r.audit).await?;
                    recorded += 1;
                }
                dtx.tx.commit().await.map_err(map_err)?;
                Ok(recorded)
            }

            // --- the administrator's console ---------------------------------------------------

            async fn admin_deliveries(
                &self,
                filter: &DeliveryFilter,
                after: Option<(i64, String)>,
                limit: i64,
            ) -> StoreResult<Vec<DeliverySummary>> {
                let mut qb = QueryBuilder::<$db>::new(
                    "SELECT id, vendor, format, mode, status, test, received_at, receipt \
                     FROM deliveries WHERE 1 = 1",
                );
                for (column, value) in [
                    ("vendor", &filter.vendor),
                    ("format", &filter.format),
                    ("status", &filter.status),
                    ("mode", &filter.mode),
                    ("id", &filter.id),
                ] {
                    if let Some(value) = value {
                        qb.push(format!(" AND {column} = ")).push_bind(value.clone());
                    }
                }
                if let Some(since) = filter.since {
                    qb.push(" AND received_at >= ").push_bind(since);
                }
                if let Some(until) = filter.until {
                    qb.push(" AND received_at < ").push_bind(until);
                }
                if let Some((at, id)) = after {
                    qb.push(" AND (received_at, id) < (")
                        .push_bind(at)
                        .push(", ")
                        .push_bind(id)
                        .push(")");
                }
                qb.push(" ORDER BY received_at DESC, id DESC LIMIT ")
                    .push_bind(limit.max(0));
                let rows: Vec<(String, String, String, String, String, bool, i64, String)> = qb
                    .build_query_as()
                    .fetch_all(self.reader())
                    .await
                    .map_err(map_err)?;
                Ok(rows
                    .into_iter()
                    .map(
                        |(id, vendor, format, mode, status, test, received_at, receipt)| {
                            DeliverySummary {
                                id,
                                vendor,
                                format,
                                mode,
                                status,
                                test,
                                received_at,
                                receipt,
                            }
                        },
                    )
                    .collect())
            }

            async fn records_by_id(
                &self,
                vendor: &str,
                record_id: &str,
            ) -> StoreResult<Vec<StoredRecord>> {
                let rows: Vec<(String, String, StoredBody, i64)> = sqlx::query_as(
                    "SELECT reporting_period, client_id, body, updated_at FROM records \
                     WHERE vendor = $1 AND record_id = $2 ORDER BY reporting_period DESC",
                )
                .bind(vendor)
                .bind(record_id)
                .fetch_all(self.reader())
                .await
                .map_err(map_err)?;
                self.unpacked(
                    |u| {
                        rows.iter()
                            .map(|(reporting_period, client_id, body, updated_at)| {
                                Ok(StoredRecord {
                                    reporting_period: reporting_period.clone(),
                                    client_id: client_id.clone(),
                                    body: u.text(body)?,
                                    updated_at: *updated_at,
                                })
                            })
                            .collect()
                    },
                )
                .await
            }

            async fn record_items(
                &self,
                vendor: &str,
                record_id: &str,
            ) -> StoreResult<Vec<RecordItem>> {
                #[allow(clippy::type_complexity)]
                let rows: Vec<(i64, String, String, String, String, StoredBody, i64, Option<String>)> =
                    sqlx::query_as(&format!(
                        "SELECT i.seq, i.recipient, i.kind, i.reporting_period, i.record_ref, \
                         {ITEM_BODY}, i.created_at, i.batch_id FROM {ITEMS_WITH_BODY} \
                         WHERE i.vendor = $1 AND i.record_id = $2 ORDER BY i.seq",
                    ))
                    .bind(vendor)
                    .bind(record_id)
                    .fetch_all(self.reader())
                    .await
                    .map_err(map_err)?;
                self.unpacked(
                    |u| {
                        rows.iter()
                            .map(
                                |(seq, recipient, kind, reporting_period, record_ref, body, created_at, batch_id)| {
                                    Ok(RecordItem {
                                        seq: *seq,
                                        recipient: recipient.clone(),
                                        kind: kind.clone(),
                                        reporting_period: reporting_period.clone(),
                                        record_ref: record_ref.clone(),
                                        body: u.text(body)?,
                                        created_at: *created_at,
                                        batch_id: batch_id.clone(),
                                    })
                                },
                            )
                            .collect()
                    },
                )
                .await
            }

            async fn set_lane_paused(&self, recipient: &str, paused: bool) -> StoreResult<()> {
                if paused {
                    sqlx::query(
                        "INSERT INTO push_lanes (recipient, owner, lease_until) VALUES ($1, $2, $3) \
                         ON CONFLICT (recipient) DO UPDATE SET owner = $2, lease_until = $3",
                    )
                    .bind(recipient)
                    .bind(PAUSED_LANE_OWNER)
                    .bind(i64::MAX)
                    .execute(self.writer())
                    .await
                    .map_err(map_err)?;
                } else {
                    sqlx::query(
                        "UPDATE push_lanes SET owner = NULL, lease_until = 0 \
                         WHERE recipient = $1 AND owner = $2",
                    )
                    .bind(recipient)
                    .bind(PAUSED_LANE_OWNER)
                    .execute(self.writer())
                    .await
                    .map_err(map_err)?;
                }
                Ok(())
            }

            async fn lane_paused(&self, recipient: &str) -> StoreResult<bool> {
                let owner: Option<Option<String>> =
                    sqlx::query_scalar("SELECT owner FROM push_lanes WHERE recipient = $1")
                        .bind(recipient)
                        .fetch_optional(self.reader())
                        .await
                        .map_err(map_err)?;
                Ok(owner.flatten().as_deref() == Some(PAUSED_LANE_OWNER))
            }
        }
    };
}

/// The free functions both backends share (writing chunks of records and items, reading the
/// head of a recipient's open items), as `shared::…` in the backend's module.
macro_rules! shared_fns {
    ($db:ident) => {
        mod shared_sql {
            use super::*;

        /// Inserts or replaces records with multi-row `INSERT … ON CONFLICT DO UPDATE` statements.
        pub(super) async fn insert_records(
            tx: &mut Transaction<'static, $db>,
            records: &[NewRecord],
            bodies: &BodyWriter,
            now: i64,
        ) -> StoreResult<()> {
            let records = last_versions(records);
            for (range, kept) in insert_blocks(records.len(), MAX_ROWS_PER_INSERT) {
                let chunk = &records[range];
                let mut bodies = bodies
                    .params(chunk.iter().map(|r| (r.body.as_str(), r.packed.as_ref())))?
                    .into_iter();
                let mut qb = QueryBuilder::<$db>::new(
                    "INSERT INTO records (vendor, record_id, reporting_period, program, client_id, \
                     delivery_id, body, updated_at, state) ",
                );
                qb.push_values(chunk, |mut row, r| {
                    row.push_bind(r.vendor.as_str())
                        .push_bind(r.record_id.as_str())
                        .push_bind(r.reporting_period.as_str())
                        .push_bind(r.program.as_str())
                        .push_bind(r.client_id.as_str())
                        .push_bind(r.delivery_id.as_str())
                        .push_bind(bodies.next().expect("a body a record"))
                        .push_bind(now)
                        .push_unseparated(", 'active'");
                });
                qb.push(
                    " ON CONFLICT (vendor, record_id, reporting_period) DO UPDATE SET \
                     program = excluded.program, client_id = excluded.client_id, \
                     delivery_id = excluded.delivery_id, body = excluded.body, \
                     updated_at = excluded.updated_at, state = 'active'",
                );
                qb.build()
                    .persistent(kept)
                    .execute(&mut **tx)
                    .await
                    .map_err(map_err)?;
            }
            Ok(())
        }

        /// The number of open items among the recipient's first `max_items` open ones (so at most
        /// `max_items`) and the oldest `created_at` among them.
        pub(super) async fn open_head<'c, E>(
            executor: E,
            recipient: &str,
            max_items: i64,
        ) -> StoreResult<(i64, Option<i64>)>
        where
            E: sqlx::Executor<'c, Database = $db>,
        {
            sqlx::query_as(
                "SELECT COUNT(*), MIN(created_at) FROM (\
                 SELECT created_at FROM items WHERE recipient = $1 AND batch_id IS NULL \
                 ORDER BY seq LIMIT $2) AS head",
            )
            .bind(recipient)
            .bind(max_items)
            .fetch_one(executor)
            .await
            .map_err(map_err)
        }

        /// How many batches the next round of sealing claims (up to `SEAL_CHUNK`, and no more
        /// than the call has left after `sealed`): 0 when the sealing is done.
        pub(super) async fn seal_round<'c, E>(
            executor: E,
            recipient: &str,
            rule: SealRule,
            now_ms: i64,
            sealed: i64,
        ) -> StoreResult<i64>
        where
            E: sqlx::Executor<'c, Database = $db>,
        {
            let (open, oldest) = open_head(
                executor,
                recipient,
                rule.max_items.saturating_mul(SEAL_CHUNK),
            )
            .await?;
            Ok(batches_to_seal(open, oldest, rule, now_ms)
                .min(SEAL_CHUNK)
                .min(rule.batches_per_call() - sealed)
                .max(0))
        }
        }
    };
}

pub(super) use {impl_delivery_tx, impl_store, shared_fns};
