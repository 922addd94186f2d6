#!/usr/bin/env python3
"""Copy a single-node install's ClickHouse data into a cluster and check that every row came along.

    python scripts/clickhouse_to_cluster.py --from clickhouse://old:9000/observer \\
        [--to clickhouse://node1:9000/observer] [--cluster observer]

``--from`` is the single node (a server URL, or ``chdb:///path`` with its owning worker
stopped); ``--to`` and ``--cluster`` default to ``CLICKHOUSE_URL`` and ``CLICKHOUSE_CLUSTER``.
Prints one line per table (rows and distinct keys on both sides) and exits 1 on any mismatch.
The procedure around it is in docs/SCALE-OUT.md, "ClickHouse cluster" (app/storage/clickhouse/cluster_move.py).
"""
from __future__ import annotations

import argparse
import sys
import time

from app.settings import load_settings
from app.storage.clickhouse import cluster_move
from app.storage.clickhouse.client import close_all, get_clickhouse


def main(argv=None) -> int:
    s = load_settings()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="source", required=True, help="the single node's URL (clickhouse:// or chdb://)")
    ap.add_argument("--to", dest="target", default=s.clickhouse_url, help="a cluster server's URL (CLICKHOUSE_URL)")
    ap.add_argument("--cluster", default=s.clickhouse_cluster, help="cluster name (CLICKHOUSE_CLUSTER)")
    args = ap.parse_args(argv)
    if not args.cluster:
        ap.error("--cluster (or CLICKHOUSE_CLUSTER) is required")
    if args.source == args.target:
        ap.error("--from and --to are the same URL")
    started = time.monotonic()
    try:
        reports = cluster_move.move(get_clickhouse(args.source), get_clickhouse(args.target, timeout=300),
                                    cluster=args.cluster, ttl_days=s.retention_days, dedup_window=s.dedup_window)
    finally:
        close_all()
    for report in reports:
        print(report.line())
    ok = all(r.ok for r in reports)
    print(f"{'moved' if ok else 'NOT moved'}: {sum(r.target_rows for r in reports)} rows in "
          f"{time.monotonic() - started:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
