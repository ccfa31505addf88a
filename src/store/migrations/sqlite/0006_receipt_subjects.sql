-- Erasure reaches receipts: the client of each record a receipt has an entry about (error,
-- warning, note), as its keyed subject pseudonym (the audit trail's, never the client id), so an
-- erasure finds the entries to scrub without reading receipts. Goes with its delivery row.
-- Receipts stored before this migration have no rows here (docs/security.md, "Erasure").
CREATE TABLE receipt_subjects (
    delivery_id TEXT    NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    record      INTEGER NOT NULL,
    subject     TEXT    NOT NULL,
    PRIMARY KEY (delivery_id, record)
) WITHOUT ROWID;

-- Erasure: a subject's entries.
CREATE INDEX receipt_subjects_subject ON receipt_subjects (subject);
