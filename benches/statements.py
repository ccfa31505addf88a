#!/usr/bin/env python3
"""Where a server's database time goes, statement by statement.

sqlx logs every statement it runs at debug level (target `sqlx::query`), with the time from
sending it to its last row. Run the ingest bench with that log kept, then sum it up per
statement text:

    WEICHE_LOG=info,sqlx::query=debug WEICHE_BENCH_KEEP_LOGS=target/bench-logs \\
        cargo bench --bench ingest
    python3 benches/statements.py target/bench-logs/server-*.log

The times are wall-clock times as the server saw them. On SQLite's one writer connection they
are close to its CPU time; on readers and on PostgreSQL they include waiting for a core, a lock
or the disk. BENCHMARKS.md (session of 2026-12-07 14:57) quotes this.
"""

import collections
import json
import re
import signal
import sys


def main(paths, top=25):
    for path in paths:
        per = collections.defaultdict(lambda: [0, 0.0, 0])
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if '"elapsed_secs"' not in line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                text = event.get("db.statement") or event.get("summary") or ""
                text = re.sub(r"\s+", " ", text).strip()[:110]
                row = per[text]
                row[0] += 1
                row[1] += float(event.get("elapsed_secs", 0.0))
                row[2] += int(event.get("rows_returned") or event.get("rows_affected") or 0)
        total = sum(r[1] for r in per.values())
        print(f"== {path}: {total:.2f} s in {sum(r[0] for r in per.values())} statements")
        for text, (calls, secs, rows) in sorted(per.items(), key=lambda kv: -kv[1][1])[:top]:
            share = secs / total * 100 if total else 0.0
            print(f"{secs:8.2f} s {share:5.1f} % {calls:6d} calls {rows:8d} rows  {text}")


if __name__ == "__main__":
    # Piped into `head`: stop quietly when the reader has what it wants.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
