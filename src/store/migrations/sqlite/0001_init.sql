-- Weiche store, SQLite backend: deliveries with receipts, canonical records, per-recipient output
-- items and the batches pull recipients fetch. Times are INTEGER unix milliseconds, bodies TEXT.

-- One row per committed delivery. NULL idempotency keys never conflict (SQL NULL semantics).
CREATE TABLE deliveries (
    id              TEXT    NOT NULL PRIMARY KEY,
    vendor          TEXT    NOT NULL,
    idempotency_key TEXT,
    content_hash    TEXT    NOT NULL,
    format          TEXT    NOT NULL,
    mode            TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    test            INTEGER NOT NULL CHECK (test IN (0, 1)),
    received_at     INTEGER NOT NULL,
    receipt         TEXT    NOT NULL,
    UNIQUE (vendor, idempotency_key)
);

-- A vendor's receipts, newest first, keyset-paginated by (received_at, id).
CREATE INDEX deliveries_vendor_received ON deliveries (vendor, received_at, id);

-- The current version of each canonical record (insert or replace by the primary key).
CREATE TABLE records (
    vendor           TEXT    NOT NULL,
    record_id        TEXT    NOT NULL,
    reporting_period TEXT    NOT NULL,
    program          TEXT    NOT NULL,
    client_id        TEXT    NOT NULL,
    body             TEXT    NOT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (vendor, record_id, reporting_period)
);

-- Erasure and disclosure look-ups by client.
CREATE INDEX records_vendor_client ON records (vendor, client_id);

-- Sealed batches. `seal_no` orders a recipient's batches in the order they were sealed.
CREATE TABLE batches (
    batch_id   TEXT    NOT NULL PRIMARY KEY,
    recipient  TEXT    NOT NULL,
    seal_no    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    item_count INTEGER NOT NULL CHECK (item_count > 0),
    periods    TEXT    NOT NULL,
    state      TEXT    NOT NULL CHECK (state IN ('ready', 'acknowledged')),
    acked_at   INTEGER,
    findings   TEXT,
    UNIQUE (recipient, seal_no)
);

-- Output items, one per recipient and record event, in one increasing sequence. `created_at`
-- (for the seal rule's maximum age) is the writing process's clock when the item was put. AUTOINCREMENT so
-- that a sequence number is never reused, even after old items are purged. `batch_id` is NULL
-- while the item is open. (No foreign key to batches: purging old batches would otherwise scan
-- items for every deleted batch; the store's seal code is the only writer of `batch_id`.)
CREATE TABLE items (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient        TEXT    NOT NULL,
    kind             TEXT    NOT NULL
        CHECK (kind IN ('record', 'cancellation', 'revocation', 'erasure')),
    vendor           TEXT    NOT NULL,
    record_id        TEXT    NOT NULL,
    reporting_period TEXT    NOT NULL,
    record_ref       TEXT    NOT NULL,
    body             TEXT    NOT NULL,
    created_at       INTEGER NOT NULL,
    batch_id         TEXT
);

-- Two partial indexes: a new item enters only the small index of open items, and moves to the
-- index of sealed items when it is sealed. A recipient's open items in order (sealing, counting):
CREATE INDEX items_open ON items (recipient, seq) WHERE batch_id IS NULL;
-- A batch's items in order (keyset pages of `seq > ?`):
CREATE INDEX items_sealed ON items (batch_id, seq) WHERE batch_id IS NOT NULL;
