-- Push delivery and the feedback loop.

-- One row per sealed group of a push recipient: the batch with the same id (its items are the
-- group's items, in seq order). The batch id is also the push's `Idempotency-Key`, the same for
-- every attempt. `next_at` is when the next attempt is due (unix ms).
CREATE TABLE push_groups (
    batch_id   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    recipient  TEXT COLLATE "C" NOT NULL,
    seal_no    BIGINT  NOT NULL,
    item_count BIGINT  NOT NULL,
    state      TEXT    NOT NULL
        CHECK (state IN ('pending', 'delivered', 'dead', 'discarded')),
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    BIGINT  NOT NULL,
    last_error TEXT,
    updated_at BIGINT  NOT NULL
);

-- A recipient's pending groups in order (the head is the next to send).
CREATE INDEX push_groups_pending ON push_groups (recipient, seal_no) WHERE state = 'pending';
-- Dead letters for administrators.
CREATE INDEX push_groups_dead ON push_groups (updated_at) WHERE state = 'dead';

-- One lane per push recipient: the process holding the lease sends that recipient's groups, one
-- at a time and in order. Claimed with FOR UPDATE SKIP LOCKED; a crashed holder's lease expires.
CREATE TABLE push_lanes (
    recipient   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    owner       TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0
);

-- Findings recipients sent with a batch acknowledgement, translated back to the vendor's
-- record; read by the vendor as its feedback, oldest first.
CREATE TABLE feedback (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vendor           TEXT COLLATE "C" NOT NULL,
    record_id        TEXT COLLATE "C" NOT NULL,
    reporting_period TEXT COLLATE "C" NOT NULL,
    recipient        TEXT COLLATE "C" NOT NULL,
    batch_id         TEXT COLLATE "C" NOT NULL,
    code             TEXT   NOT NULL,
    message          TEXT   NOT NULL,
    received_at      BIGINT NOT NULL
);

CREATE INDEX feedback_vendor ON feedback (vendor, seq);
-- Erasure: a record's feedback.
CREATE INDEX feedback_record ON feedback (vendor, record_id, reporting_period);
