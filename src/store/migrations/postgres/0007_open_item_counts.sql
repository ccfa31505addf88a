-- Open items (not yet in a batch) per recipient, kept as a counter so that counting them (the
-- outbox depth, every second per recipient and instance) reads no items at all: before this, a
-- `COUNT(*) FROM items WHERE recipient = $1 AND batch_id IS NULL` took over a second once about
-- 200,000 items were open (issue 15).
--
-- Statement-level triggers on `items` write one delta row per recipient and statement into
-- `open_item_deltas` (insert-only: concurrent deliveries never wait for each other on it), in the
-- same transaction as the items. Reading the count folds the deltas into `open_item_counts`
-- (DELETE … RETURNING, then an upsert, in one statement: see `open_count` in
-- src/store/postgres.rs). Statements on a partition directly (partition maintenance moving rows
-- out of DEFAULT) fire no trigger of the parent and change no count; partitions are dropped only
-- when they hold no open item. (0006 is left to another change.)

CREATE TABLE open_item_counts (
    recipient TEXT PRIMARY KEY,
    n BIGINT NOT NULL
);

CREATE TABLE open_item_deltas (
    id BIGSERIAL PRIMARY KEY,
    recipient TEXT NOT NULL,
    delta BIGINT NOT NULL
);
CREATE INDEX open_item_deltas_recipient ON open_item_deltas (recipient);

CREATE FUNCTION open_items_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO open_item_deltas (recipient, delta)
    SELECT recipient, COUNT(*) FROM new_items WHERE batch_id IS NULL GROUP BY recipient;
    RETURN NULL;
END $$;

CREATE FUNCTION open_items_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO open_item_deltas (recipient, delta)
    SELECT recipient, -COUNT(*) FROM old_items WHERE batch_id IS NULL GROUP BY recipient;
    RETURN NULL;
END $$;

CREATE FUNCTION open_items_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO open_item_deltas (recipient, delta)
    SELECT recipient, SUM(d) FROM (
        SELECT recipient, 1 AS d FROM new_items WHERE batch_id IS NULL
        UNION ALL
        SELECT recipient, -1 AS d FROM old_items WHERE batch_id IS NULL
    ) AS changes
    GROUP BY recipient HAVING SUM(d) <> 0;
    RETURN NULL;
END $$;

CREATE TRIGGER items_open_insert AFTER INSERT ON items
    REFERENCING NEW TABLE AS new_items
    FOR EACH STATEMENT EXECUTE FUNCTION open_items_inserted();
CREATE TRIGGER items_open_delete AFTER DELETE ON items
    REFERENCING OLD TABLE AS old_items
    FOR EACH STATEMENT EXECUTE FUNCTION open_items_deleted();
CREATE TRIGGER items_open_update AFTER UPDATE ON items
    REFERENCING OLD TABLE AS old_items NEW TABLE AS new_items
    FOR EACH STATEMENT EXECUTE FUNCTION open_items_updated();

-- The items open now (one count, while this migration runs).
INSERT INTO open_item_counts (recipient, n)
SELECT recipient, COUNT(*) FROM items WHERE batch_id IS NULL GROUP BY recipient;
