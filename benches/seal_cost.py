#!/usr/bin/env python3
"""What sealing costs on SQLite: batches as `batch_id` on every item against `seq` ranges.

BENCHMARKS.md (session of 2026-12-07 09:01) and docs/architecture.md ("Next: batches as `seq`
ranges") quote this. It writes 3 items a record, in transactions of 1,000 records, into the
server's `items` schema (`items_open`, `items_sealed`, `items_latest`, and `item_bodies`). After
each transaction it seals every open item of each recipient:

- `batch_id`: one `UPDATE items SET batch_id = …`, as the store does today;
- `ranges`: `items` with one index `(recipient, seq)`, and a seal that inserts one batch row
  holding a `seq` range.

It prints µs a record for the inserts and for the seals. Python's own cost is in the inserts
(the same for both); the seals are one statement each. Run from the checkout, on the real disk:

    python3 benches/seal_cost.py                 # synchronous=FULL, as the server
    python3 benches/seal_cost.py --sync OFF      # the CPU alone
"""

import argparse
import os
import sqlite3
import time

ITEMS = """
CREATE TABLE items (seq INTEGER PRIMARY KEY AUTOINCREMENT, recipient TEXT NOT NULL,
    kind TEXT NOT NULL, vendor TEXT NOT NULL, record_id TEXT NOT NULL,
    reporting_period TEXT NOT NULL, record_ref TEXT NOT NULL, created_at INTEGER NOT NULL,
    batch_id TEXT, consent_id TEXT);
CREATE INDEX items_latest ON items (vendor, record_id, reporting_period, recipient, seq);
CREATE TABLE item_bodies (seq INTEGER NOT NULL PRIMARY KEY, body BLOB NOT NULL);
"""
BATCH_ID = """
CREATE INDEX items_open ON items (recipient, seq) WHERE batch_id IS NULL;
CREATE INDEX items_sealed ON items (batch_id, seq) WHERE batch_id IS NOT NULL;
"""
RANGES = """
CREATE INDEX items_recipient ON items (recipient, seq);
CREATE TABLE batches (batch_id TEXT PRIMARY KEY, recipient TEXT NOT NULL,
    first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL);
"""
RECIPIENTS = ["statistik-nrw", "jobcenter-koeln", "jugendamt-koeln"]


def run(path, variant, sync, records):
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={sync}")
    db.executescript(ITEMS + (BATCH_ID if variant == "batch_id" else RANGES))
    body = os.urandom(300)  # a packed item body is about 200–250 bytes
    ref = "p1.k1." + "ab" * 32
    inserted = sealed = 0.0
    k = 0
    for chunk in range(records // 1000):
        rows = []
        for _ in range(1000):
            k += 1
            for r in RECIPIENTS:
                rows.append((r, "record", "klientonline-7", f"F-{k:08d}", "2026-11", ref, 1765000000000))
        t = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO items (recipient, kind, vendor, record_id, reporting_period, record_ref,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        last = db.execute("SELECT MAX(seq) FROM items").fetchone()[0]
        db.executemany(
            "INSERT INTO item_bodies (seq, body) VALUES (?, ?)",
            [(s, body) for s in range(last - len(rows) + 1, last + 1)],
        )
        db.execute("COMMIT")
        inserted += time.perf_counter() - t
        t = time.perf_counter()
        for r in RECIPIENTS:
            batch = f"b-{r}-{chunk}"
            db.execute("BEGIN IMMEDIATE")
            if variant == "batch_id":
                db.execute(
                    "UPDATE items SET batch_id = ? WHERE recipient = ? AND batch_id IS NULL",
                    (batch, r),
                )
            else:
                db.execute(
                    "INSERT INTO batches VALUES (?, ?,"
                    " (SELECT COALESCE(MAX(last_seq), 0) + 1 FROM batches WHERE recipient = ?),"
                    " (SELECT MAX(seq) FROM items WHERE recipient = ?))",
                    (batch, r, r, r),
                )
            db.execute("COMMIT")
        sealed += time.perf_counter() - t
    db.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    return inserted * 1e6 / records, sealed * 1e6 / records


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sync", default="FULL", choices=["FULL", "NORMAL", "OFF"])
    p.add_argument("--records", type=int, default=30000)
    p.add_argument("--db", default="target/seal-cost.db")
    a = p.parse_args()
    os.makedirs(os.path.dirname(a.db) or ".", exist_ok=True)
    for variant in ("batch_id", "ranges"):
        ins, seal = run(a.db, variant, a.sync, a.records)
        print(
            f"{variant:9s} synchronous={a.sync}: insert {ins:6.1f} µs a record (3 items),"
            f" seal {seal:5.1f} µs a record"
        )


if __name__ == "__main__":
    main()
