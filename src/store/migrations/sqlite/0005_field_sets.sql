-- Field sets of routing audit events: the delivered fields with their actions, stored once and
-- referred to by the events' `fields_sha256` (hex SHA-256 of `fields`).
CREATE TABLE audit_field_sets (
    sha256 TEXT NOT NULL PRIMARY KEY,
    fields TEXT NOT NULL
) WITHOUT ROWID;
