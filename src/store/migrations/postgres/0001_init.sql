-- Weiche store, PostgreSQL backend: deliveries with receipts, canonical records, per-recipient
-- output items and the batches pull recipients fetch. Times are BIGINT unix milliseconds, bodies
-- TEXT. Key columns use the "C" collation: byte order, as on SQLite, and cheaper comparisons.

-- One row per committed delivery. NULL idempotency keys never conflict (SQL NULL semantics).
CREATE TABLE deliveries (
    id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    vendor          TEXT COLLATE "C" NOT NULL,
    idempotency_key TEXT COLLATE "C",
    content_hash    TEXT    NOT NULL,
    format          TEXT    NOT NULL,
    mode            TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    test            BOOLEAN NOT NULL,
    received_at     BIGINT  NOT NULL,
    receipt         TEXT    NOT NULL,
    UNIQUE (vendor, idempotency_key)
);

-- A vendor's receipts, newest first, keyset-paginated by (received_at, id).
CREATE INDEX deliveries_vendor_received ON deliveries (vendor, received_at, id);

-- The current version of each canonical record (insert or replace by the primary key).
CREATE TABLE records (
    vendor           TEXT COLLATE "C" NOT NULL,
    record_id        TEXT COLLATE "C" NOT NULL,
    reporting_period TEXT COLLATE "C" NOT NULL,
    program          TEXT   NOT NULL,
    client_id        TEXT COLLATE "C" NOT NULL,
    body             TEXT   NOT NULL,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (vendor, record_id, reporting_period)
);

-- Erasure and disclosure look-ups by client.
CREATE INDEX records_vendor_client ON records (vendor, client_id);

-- Sealed batches. `seal_no` orders a recipient's batches in the order they were sealed.
CREATE TABLE batches (
    batch_id   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    recipient  TEXT COLLATE "C" NOT NULL,
    seal_no    BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    item_count BIGINT NOT NULL CHECK (item_count > 0),
    periods    TEXT   NOT NULL,
    state      TEXT   NOT NULL CHECK (state IN ('ready', 'acknowledged')),
    acked_at   BIGINT,
    findings   TEXT,
    UNIQUE (recipient, seal_no)
);

-- Output items, one per recipient and record event, in one increasing sequence. `created_at`
-- (for the seal rule's maximum age) is the writing process's clock when the item was put. `batch_id` is
-- NULL while the item is open. (No foreign key to batches: purging old batches would otherwise
-- check items for every deleted batch; the store's seal code is the only writer of `batch_id`.)
CREATE TABLE items (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recipient        TEXT COLLATE "C" NOT NULL,
    kind             TEXT   NOT NULL
        CHECK (kind IN ('record', 'cancellation', 'revocation', 'erasure')),
    vendor           TEXT COLLATE "C" NOT NULL,
    record_id        TEXT COLLATE "C" NOT NULL,
    reporting_period TEXT COLLATE "C" NOT NULL,
    record_ref       TEXT   NOT NULL,
    body             TEXT   NOT NULL,
    created_at       BIGINT NOT NULL,
    batch_id         TEXT COLLATE "C"
);

-- Two partial indexes: a new item enters only the small index of open items, and moves to the
-- index of sealed items when it is sealed. A recipient's open items in order (sealing, counting):
CREATE INDEX items_open ON items (recipient, seq) WHERE batch_id IS NULL;
-- A batch's items in order (keyset pages of `seq > ?`):
CREATE INDEX items_sealed ON items (batch_id, seq) WHERE batch_id IS NOT NULL;
