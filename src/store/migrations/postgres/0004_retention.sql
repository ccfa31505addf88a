-- Retention (docs/operations.md "Retention"): `records` becomes a table partitioned by month of
-- its reporting period and `items` one partitioned by month (UTC) of `created_at`, so that
-- purging drops whole partitions instead of deleting rows. A new `holdings` table (partitioned
-- like records) keeps what a recipient holds of a record once the items that told it are purged.
-- Each partitioned table has a DEFAULT partition as a safety net; the store's maintenance
-- (src/store/postgres.rs) creates the monthly partitions ahead of time and moves rows that land
-- in DEFAULT into a new monthly one. (0003 is push delivery's migration.)
--
-- Existing rows are copied (time and space proportional to the tables), so stop every instance
-- of the previous version before this migration runs. Columns, CHECK constraints, indexes and
-- other constraints of the old tables are carried over generically (also those added after
-- 0002); a unique index or constraint that does not include the partition key, or a foreign key
-- that references records or items, cannot be carried over and makes this migration fail.
--
-- Partition names: <table>_pYYYY_MM and <table>_default. Months created here: those of the
-- existing rows, plus (as the maintenance does) records and holdings from 12 months before to
-- 2 months after the current month (UTC) and items for this month and the next 2. Only periods
-- `YYYY-MM` of years 1000–9998 get a monthly partition; anything else stays in DEFAULT.

-- ---------------------------------------------------------------------------------------------
-- records, by reporting period (text 'YYYY-MM', collation "C": byte order).

CREATE TABLE records_new (LIKE records INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (reporting_period);
CREATE TABLE records_default PARTITION OF records_new DEFAULT;

DO $$
DECLARE
    m date;
    this_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
BEGIN
    FOR m IN
        SELECT DISTINCT to_date(reporting_period, 'YYYY-MM') FROM records
         WHERE reporting_period ~ '^[1-9][0-9]{3}-(0[1-9]|1[0-2])$' AND reporting_period < '9999'
        UNION
        SELECT (this_month + make_interval(months => k))::date FROM generate_series(-12, 2) AS k
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF records_new FOR VALUES FROM (%L) TO (%L)',
                       'records_p' || to_char(m, 'YYYY_MM'), to_char(m, 'YYYY-MM'),
                       to_char(m + interval '1 month', 'YYYY-MM'));
    END LOOP;
END $$;

INSERT INTO records_new SELECT * FROM records;
-- The primary key already includes the partition key.
ALTER TABLE records_new ADD CONSTRAINT records_new_pkey
    PRIMARY KEY (vendor, record_id, reporting_period);

-- Swap: the old table's indexes (records_vendor_client, records_scope, records_active_period
-- and any later ones) and constraints other than the primary key, CHECK and NOT NULL are
-- re-created on the new table from their definitions.
DO $$
DECLARE
    defs text[];
    d text;
BEGIN
    SELECT coalesce(array_agg(pg_get_indexdef(i.indexrelid) ORDER BY c.relname), '{}')
      INTO defs
      FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
     WHERE i.indrelid = 'records'::regclass
       AND NOT EXISTS (SELECT 1 FROM pg_constraint AS k WHERE k.conindid = i.indexrelid);
    SELECT defs || coalesce(array_agg(format('ALTER TABLE records ADD CONSTRAINT %I %s',
                                             conname, pg_get_constraintdef(oid))
                                      ORDER BY conname), '{}')
      INTO defs
      FROM pg_constraint
     WHERE conrelid = 'records'::regclass AND contype IN ('u', 'f', 'x');
    DROP TABLE records;
    ALTER TABLE records_new RENAME TO records;
    ALTER TABLE records RENAME CONSTRAINT records_new_pkey TO records_pkey;
    FOREACH d IN ARRAY defs LOOP
        EXECUTE d;
    END LOOP;
END $$;

-- ---------------------------------------------------------------------------------------------
-- items, by month (UTC) of created_at (unix ms). `seq` was an identity column; it now takes its
-- values from the sequence items_seq, continuing after the highest existing seq, so it stays
-- unique and increasing. The primary key must include the partition key: (seq, created_at).

CREATE TABLE items_new (LIKE items INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (created_at);
CREATE SEQUENCE items_seq AS BIGINT;
ALTER TABLE items_new ALTER COLUMN seq SET DEFAULT nextval('items_seq');
CREATE TABLE items_default PARTITION OF items_new DEFAULT;

DO $$
DECLARE
    m date;
    this_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
BEGIN
    FOR m IN
        SELECT DISTINCT date_trunc('month', to_timestamp(created_at / 1000.0) AT TIME ZONE 'UTC')::date
          FROM items
         WHERE created_at >= 0 AND created_at < 253370764800000  -- years 1970–9998
        UNION
        SELECT (this_month + make_interval(months => k))::date FROM generate_series(0, 2) AS k
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF items_new FOR VALUES FROM (%s) TO (%s)',
                       'items_p' || to_char(m, 'YYYY_MM'),
                       (extract(epoch FROM m::timestamp AT TIME ZONE 'UTC') * 1000)::bigint,
                       (extract(epoch FROM (m + interval '1 month')::timestamp AT TIME ZONE 'UTC')
                        * 1000)::bigint);
    END LOOP;
END $$;

INSERT INTO items_new SELECT * FROM items;
SELECT setval('items_seq', coalesce((SELECT max(seq) FROM items), 0) + 1, false);
ALTER TABLE items_new ADD CONSTRAINT items_new_pkey PRIMARY KEY (seq, created_at);

-- Swap, re-creating items_open, items_sealed, items_latest (and any later indexes and
-- constraints) as for records.
DO $$
DECLARE
    defs text[];
    d text;
BEGIN
    SELECT coalesce(array_agg(pg_get_indexdef(i.indexrelid) ORDER BY c.relname), '{}')
      INTO defs
      FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
     WHERE i.indrelid = 'items'::regclass
       AND NOT EXISTS (SELECT 1 FROM pg_constraint AS k WHERE k.conindid = i.indexrelid);
    SELECT defs || coalesce(array_agg(format('ALTER TABLE items ADD CONSTRAINT %I %s',
                                             conname, pg_get_constraintdef(oid))
                                      ORDER BY conname), '{}')
      INTO defs
      FROM pg_constraint
     WHERE conrelid = 'items'::regclass AND contype IN ('u', 'f', 'x');
    DROP TABLE items;
    ALTER TABLE items_new RENAME TO items;
    ALTER TABLE items RENAME CONSTRAINT items_new_pkey TO items_pkey;
    ALTER SEQUENCE items_seq OWNED BY items.seq;
    FOREACH d IN ARRAY defs LOOP
        EXECUTE d;
    END LOOP;
END $$;

-- ---------------------------------------------------------------------------------------------
-- holdings: what a recipient holds of a record after the items that told it were purged — the
-- last purged item per (record, recipient): its kind, record ref, consent and seq. Holders are
-- the latest of items and holdings by seq. Partitioned like records and dropped with them.

CREATE TABLE holdings (
    vendor           TEXT COLLATE "C" NOT NULL,
    record_id        TEXT COLLATE "C" NOT NULL,
    reporting_period TEXT COLLATE "C" NOT NULL,
    recipient        TEXT COLLATE "C" NOT NULL,
    kind             TEXT   NOT NULL
        CHECK (kind IN ('record', 'cancellation', 'revocation', 'erasure')),
    record_ref       TEXT   NOT NULL,
    consent_id       TEXT COLLATE "C",
    seq              BIGINT NOT NULL,
    PRIMARY KEY (vendor, record_id, reporting_period, recipient)
) PARTITION BY RANGE (reporting_period);
CREATE TABLE holdings_default PARTITION OF holdings DEFAULT;

DO $$
DECLARE
    m date;
    this_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
BEGIN
    FOR m IN
        SELECT (this_month + make_interval(months => k))::date FROM generate_series(-12, 2) AS k
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF holdings FOR VALUES FROM (%L) TO (%L)',
                       'holdings_p' || to_char(m, 'YYYY_MM'), to_char(m, 'YYYY-MM'),
                       to_char(m + interval '1 month', 'YYYY-MM'));
    END LOOP;
END $$;

-- ---------------------------------------------------------------------------------------------
-- The last purged audit event (one row at most): the kept chain starts after it.
CREATE TABLE audit_anchor (
    id        INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    seq       BIGINT  NOT NULL,
    hash      TEXT    NOT NULL,
    purged_at BIGINT  NOT NULL
);

-- Receipts are purged by age.
CREATE INDEX deliveries_received ON deliveries (received_at);
