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
                insert_records(&mut self.tx, records, now).await?;
                insert_items(&mut self.tx, items, now).await
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
                sqlx::query_scalar(
                    "SELECT body FROM records \
                     WHERE vendor = $1 AND record_id = $2 AND reporting_period = $3",
                )
                .bind(vendor)
                .bind(record_id)
                .bind(period)
                .fetch_optional(self.reader())
                .await
                .map_err(map_err)
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
                let rows: Vec<(i64, String)> = sqlx::query_as(
                    "SELECT seq, body FROM items WHERE batch_id = $1 AND seq > $2 \
                     ORDER BY seq LIMIT $3",
                )
                .bind(batch_id)
                .bind(after_seq)
                .bind(limit.max(0))
                .fetch_all(self.reader())
                .await
                .map_err(map_err)?;
                Ok(rows
                    .into_iter()
                    .map(|(seq, body)| BatchItem { seq, body })
                    .collect())
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
                sqlx::query_scalar(&format!(
                    "SELECT r.body FROM records AS r \
                     WHERE r.state = 'active' AND r.reporting_period = $1 \
                     AND {LATEST_KIND} = 'record' ORDER BY r.vendor, r.record_id"
                ))
                .bind(period)
                .bind(recipient)
                .fetch_all(self.reader())
                .await
                .map_err(map_err)
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
                Ok(rows.into_iter().map(audit_row).collect())
            }

            async fn audit_by_subject(&self, subject: &str) -> StoreResult<Vec<AuditRow>> {
                let rows: Vec<AuditTuple> = sqlx::query_as(&format!(
                    "SELECT {AUDIT_SELECT} FROM audit WHERE subject = $1 ORDER BY seq"
                ))
                .bind(subject)
                .fetch_all(self.reader())
                .await
                .map_err(map_err)?;
                Ok(rows.into_iter().map(audit_row).collect())
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
                let mut dtx = $dtx {
                    tx: self.begin_write().await?,
                };
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
        }
    };
}

pub(super) use {impl_delivery_tx, impl_store};
