-- Push delivery and the feedback loop.

-- One row per sealed group of a push recipient: the batch with the same id (its items are the
-- group's items, in seq order). The batch id is also the push's `Idempotency-Key`, the same for
-- every attempt. `next_at` is when the next attempt is due (unix ms).
CREATE TABLE push_groups (
    batch_id   TEXT    NOT NULL PRIMARY KEY,
    recipient  TEXT    NOT NULL,
    seal_no    INTEGER NOT NULL,
    item_count INTEGER NOT NULL,
    state      TEXT    NOT NULL
        CHECK (state IN ('pending', 'delivered', 'dead', 'discarded')),
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    INTEGER NOT NULL,
    last_error TEXT,
    updated_at INTEGER NOT NULL
);

-- A recipient's pending groups in order (the head is the next to send).
CREATE INDEX push_groups_pending ON push_groups (recipient, seal_no) WHERE state = 'pending';
-- Dead letters for administrators.
CREATE INDEX push_groups_dead ON push_groups (updated_at) WHERE state = 'dead';

-- One lane per push recipient: the process holding the lease sends that recipient's groups, one
-- at a time and in order (on SQLite the write lock serialises claims).
CREATE TABLE push_lanes (
    recipient   TEXT    NOT NULL PRIMARY KEY,
    owner       TEXT,
    lease_until INTEGER NOT NULL DEFAULT 0
);

-- Findings recipients sent with a batch acknowledgement, translated back to the vendor's
-- record; read by the vendor as its feedback, oldest first.
CREATE TABLE feedback (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    vendor           TEXT    NOT NULL,
    record_id        TEXT    NOT NULL,
    reporting_period TEXT    NOT NULL,
    recipient        TEXT    NOT NULL,
    batch_id         TEXT    NOT NULL,
    code             TEXT    NOT NULL,
    message          TEXT    NOT NULL,
    received_at      INTEGER NOT NULL
);

CREATE INDEX feedback_vendor ON feedback (vendor, seq);
-- Erasure: a record's feedback.
CREATE INDEX feedback_record ON feedback (vendor, record_id, reporting_period);
