-- Packed bodies (store/codec.rs): a record's, item's or audit event's body is JSON text or one
-- zstd frame compressed with a dictionary the store trained from its own first bodies. The
-- dictionaries are kept for as long as the database: every packed body names its dictionary.
CREATE TABLE body_dictionaries (
    id         BIGINT PRIMARY KEY,   -- zstd's dictionary id, as in the frames' headers
    dict       BYTEA  NOT NULL,
    created_at BIGINT NOT NULL
);

-- Bodies become bytes; the text stored so far stays as it was (UTF-8).
ALTER TABLE records ALTER COLUMN body TYPE BYTEA USING convert_to(body, 'UTF8');
ALTER TABLE items ALTER COLUMN body TYPE BYTEA USING convert_to(body, 'UTF8');
ALTER TABLE audit ALTER COLUMN body TYPE BYTEA USING convert_to(body, 'UTF8');
