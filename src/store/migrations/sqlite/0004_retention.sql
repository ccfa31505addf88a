-- Retention (docs/operations.md "Retention"): what purging old records, items, receipts and
-- audit events needs. (0003 is push delivery's migration.)

-- What a recipient holds of a record after the items that told it were purged: the last purged
-- item per (record, recipient) — its kind, record ref, consent and seq. Holders are the latest
-- of items and holdings by seq. Purged with the record's reporting period.
CREATE TABLE holdings (
    vendor           TEXT    NOT NULL,
    record_id        TEXT    NOT NULL,
    reporting_period TEXT    NOT NULL,
    recipient        TEXT    NOT NULL,
    kind             TEXT    NOT NULL
        CHECK (kind IN ('record', 'cancellation', 'revocation', 'erasure')),
    record_ref       TEXT    NOT NULL,
    consent_id       TEXT,
    seq              INTEGER NOT NULL,
    PRIMARY KEY (vendor, record_id, reporting_period, recipient)
);
CREATE INDEX holdings_period ON holdings (reporting_period);

-- The last purged audit event (one row at most): the kept chain starts after it.
CREATE TABLE audit_anchor (
    id        INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    seq       INTEGER NOT NULL,
    hash      TEXT    NOT NULL,
    purged_at INTEGER NOT NULL
);

-- Receipts are purged by age.
CREATE INDEX deliveries_received ON deliveries (received_at);

-- Records are purged by reporting period: the index of active records by period becomes one of
-- all records by period and state (it serves the aggregates' look-up as before).
DROP INDEX records_active_period;
CREATE INDEX records_period ON records (reporting_period, state);
