-- Item bodies in a table of their own, keyed by the item's seq. Sealing a batch sets `batch_id`
-- on every item: with the body (about 1 KB) in the row, that rewrote each item whole, and so
-- wrote every item's page twice more (WAL and checkpoint). Now it rewrites rows of about 150
-- bytes. PostgreSQL keeps the body in `items`.
CREATE TABLE item_bodies (
    seq  INTEGER NOT NULL PRIMARY KEY,
    body TEXT    NOT NULL
);

INSERT INTO item_bodies (seq, body) SELECT seq, body FROM items;

ALTER TABLE items DROP COLUMN body;

-- Whatever deletes an item (erasure, retention) deletes its body with it.
CREATE TRIGGER items_delete_body AFTER DELETE ON items
BEGIN
    DELETE FROM item_bodies WHERE seq = old.seq;
END;
