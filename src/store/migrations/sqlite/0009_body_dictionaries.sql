-- Dictionaries of packed bodies (store/codec.rs): record and item bodies written after a
-- dictionary exists are zstd frames (BLOBs) that name their dictionary by `id`, zstd's dictionary
-- id. Rows are never changed or deleted, so every packed body stays readable. A dictionary is
-- trained from bodies whose rare values were masked: it holds keys, codes and values that at
-- least 20 of the sampled bodies share, nothing that points to one client.
CREATE TABLE body_dictionaries (
    id         INTEGER NOT NULL PRIMARY KEY,
    dict       BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);
