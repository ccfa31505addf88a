-- Record lifecycle, consent-aware holders, consent withdrawals and the audit hash chain.

-- Which delivery wrote the current version of a record, and whether it is still active or was
-- cancelled (dropped from a later full delivery). Rows from before this migration count as active
-- and written by an unknown delivery ('').
ALTER TABLE records ADD COLUMN delivery_id TEXT NOT NULL DEFAULT '';
ALTER TABLE records ADD COLUMN state TEXT NOT NULL DEFAULT 'active'
    CHECK (state IN ('active', 'cancelled'));

-- Full-delivery cancellation: a vendor's active records of one program and period.
CREATE INDEX records_scope ON records (vendor, program, reporting_period) WHERE state = 'active';
-- Aggregates: the active records of one period.
CREATE INDEX records_active_period ON records (reporting_period) WHERE state = 'active';

-- The consent an item was sent under (NULL under a statute).
ALTER TABLE items ADD COLUMN consent_id TEXT;

-- The latest item per (recipient, record): equality on the record key and the recipient, then the
-- highest seq. Serves holders, client holders, erasure and current records.
CREATE INDEX items_latest ON items (vendor, record_id, reporting_period, recipient, seq);

-- Recorded consent withdrawals; the earliest date wins.
CREATE TABLE withdrawals (
    vendor       TEXT NOT NULL,
    client_id    TEXT NOT NULL,
    consent_id   TEXT NOT NULL,
    withdrawn_on TEXT NOT NULL,
    PRIMARY KEY (vendor, client_id, consent_id)
);

-- The audit trail as a hash chain. `seq` is assigned by the store (last + 1, under the write
-- lock), so the chain has no gaps; hash = hex(SHA-256(prev_hash || body)).
CREATE TABLE audit (
    seq       INTEGER NOT NULL PRIMARY KEY,
    at_ms     INTEGER NOT NULL,
    kind      TEXT    NOT NULL,
    subject   TEXT,
    body      TEXT    NOT NULL,
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
);

-- Disclosure reports: a subject's events in order.
CREATE INDEX audit_subject ON audit (subject, seq) WHERE subject IS NOT NULL;
