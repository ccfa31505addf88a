-- A client's audit events are found through runs, not through an index entry per event: one row
-- per run of consecutive events about the same subject (a record's routing decisions, one per
-- recipient, are one run). The runs are not written with the events: a background pass indexes
-- the events after `audit_index_state.indexed_upto` in large sorted batches, and reads of a
-- subject's events scan the few events after it. The subject pseudonyms are random, so every index entry lands on a
-- random page; an entry per event dirtied three pages a record, an entry per run one.
CREATE TABLE audit_subject_runs (
    subject   TEXT COLLATE "C" NOT NULL,
    first_seq BIGINT NOT NULL,
    last_seq  BIGINT NOT NULL CHECK (last_seq >= first_seq),
    PRIMARY KEY (subject, first_seq)
);

INSERT INTO audit_subject_runs (subject, first_seq, last_seq)
    SELECT subject, seq, seq FROM audit WHERE subject IS NOT NULL;

DROP INDEX audit_subject;

CREATE TABLE audit_index_state (
    id           INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    indexed_upto BIGINT NOT NULL
);

INSERT INTO audit_index_state (id, indexed_upto) SELECT 1, COALESCE(MAX(seq), 0) FROM audit;
