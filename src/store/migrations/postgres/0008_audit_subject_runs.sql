-- A client's audit events are found through runs, not through an index entry per event: one row
-- per run of consecutive events about the same subject (a record's routing decisions, one per
-- recipient, are one run). The subject pseudonyms are random, so every index entry lands on a
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
