-- The index of open items also holds what sealing reads of them: their reporting period (for the
-- batch's `periods`) and `created_at` (for the seal rule's maximum age). Sealing and counting the
-- open head then read the index alone, not every item's row (BENCHMARKS.md, session of
-- 2026-12-07 14:57).
DROP INDEX items_open;
CREATE INDEX items_open ON items (recipient, seq, reporting_period, created_at) WHERE batch_id IS NULL;
