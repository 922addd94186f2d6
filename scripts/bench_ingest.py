#!/usr/bin/env python3
"""Benchmark the ingest API alone: gunicorn -> validate/scrub -> one broker message per batch.

Starts its own Redis (no AOF) and uses PostgreSQL on 127.0.0.1:5432 in a fresh schema when it
answers (else a private PostgreSQL), runs ``flask migrate`` (ClickHouse skipped: the API never
talks to it), creates a key, starts gunicorn and drives POST /v1/events from keep-alive
``http.client`` connections in a few processes. No Celery worker runs: messages pile up in the
broker's Redis list, which is what the API's 202 promises.

Prints per round and medians: requests/s, events/s, latency p50/p95/p99 (ms), errors by status,
and CPU per process tree (percent of one core; the machine has ``nproc`` cores). Timings are
printed, never asserted. Everything started is stopped by PID; the schema is dropped.

    .venv/bin/python scripts/bench_ingest.py                  # 3 x 10 s, B=20, 8 connections
    .venv/bin/python scripts/bench_ingest.py --rounds 1 --seconds 5 --sizes 1,50 --no-gzip
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402
from benchlib import fmt, log  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="measured rounds at --batch (default 3)")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds per round (default 10)")
    ap.add_argument("--batch", type=int, default=20, help="events per request in the main rounds (default 20)")
    ap.add_argument("--connections", type=int, default=8, help="concurrent keep-alive connections (default 8)")
    ap.add_argument("--client-procs", type=int, default=2, help="client processes sharing the connections (default 2)")
    ap.add_argument("--web-concurrency", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "2")),
                    help="gunicorn worker processes (default 2)")
    ap.add_argument("--web-threads", type=int, default=int(os.environ.get("WEB_THREADS", "4")),
                    help="threads per gunicorn worker (default 4)")
    ap.add_argument("--sizes", default="1,50", help="extra single rounds with these batch sizes (default 1,50; '' = none)")
    ap.add_argument("--no-gzip", action="store_true", help="skip the gzip-body round")
    ap.add_argument("--warmup", type=float, default=2.0, help="unmeasured warm-up seconds (default 2)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir with the logs")
    return ap.parse_args(argv)


def print_round(label: str, r: dict, cpu: dict, wall: float) -> None:
    errs = ", ".join(f"{k}: {v}" for k, v in sorted(r["errors"].items())) or "none"
    print(f"{label:<14} req/s {fmt(r['rps']):>9}  events/s {fmt(r['eps'], 0):>9}  "
          f"p50 {fmt(r['p50'], 2):>7} ms  p95 {fmt(r['p95'], 2):>7} ms  p99 {fmt(r['p99'], 2):>7} ms  "
          f"ok {r['ok']}  errors {errs}", flush=True)
    per_req = 1000 * cpu.get("web", 0) / r["ok"] if r["ok"] else float("nan")
    print(f"{'':<14} cpu (% of one core): {bl.cpu_line(cpu, wall)}; web cpu {per_req:.2f} ms per accepted request",
          flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="observer-bench-ingest-"))
    redis = pg = procs = None  # procs: the ObserverStack (web only)
    summary: list[str] = []
    try:
        redis = bl.services.start_redis(tmp / "redis", appendonly=False)
        pg = bl.Postgres(tmp)
        log(f"redis pid {redis.pid} {redis.url}; postgres: {pg.where}")
        port = bl.services.free_port()
        env = bl.web_env(tmp, port, redis.url, pg.url, "clickhouse://default:@127.0.0.1:1/x",
                         args.web_concurrency, {"WEB_THREADS": args.web_threads,
                                                "OBSERVER_SKIP_CLICKHOUSE_MIGRATE": "1"})
        procs = bl.stack(tmp, env, tag=f"-{port}")
        procs.flask("migrate")
        key = bl.create_key(pg.url)
        web = procs.add_web().start()  # ready when /ready answers 200
        bl.wait_until(lambda: bl.http_get(port, "/ready")[0] == 200, 60, "gunicorn /ready",
                      alive=procs.check_alive)
        meter = bl.CpuMeter()
        meter.add("web", web.pid)
        meter.add("redis", redis.pid)
        meter.add("postgres", pg.pid)
        nproc = os.cpu_count()
        print(f"ingest benchmark: {nproc} cores, gunicorn {args.web_concurrency} x {args.web_threads} threads, "
              f"{args.connections} connections in {args.client_procs} client processes, "
              f"{args.seconds:g} s per round", flush=True)
        if args.warmup > 0:
            bl.drive(port, key, seconds=args.warmup, batch=args.batch, connections=args.connections,
                     processes=args.client_procs, run="warm")

        def one(label: str, batch: int, gz: bool = False) -> dict:
            procs.check_alive()
            c0 = meter.sample()
            t0 = time.monotonic()
            r = bl.drive(port, key, seconds=args.seconds, batch=batch, connections=args.connections,
                         processes=args.client_procs, gz=gz, run=label)
            wall = time.monotonic() - t0
            cpu = meter.delta(c0, meter.sample())
            cpu["client"] = r["client_cpu"]
            r["cpu"] = cpu
            r["wall"] = wall
            print_round(label, r, cpu, args.seconds)
            return r

        main_rounds = [one(f"B={args.batch} #{i + 1}", args.batch) for i in range(args.rounds)]
        med = {k: bl.median(r[k] for r in main_rounds) for k in ("rps", "eps", "p50", "p95", "p99")}
        cpu_keys = main_rounds[0]["cpu"].keys()
        med_cpu = {k: bl.median(r["cpu"][k] for r in main_rounds) for k in cpu_keys}
        errs: dict[str, int] = {}
        for r in main_rounds:
            for k, v in r["errors"].items():
                errs[k] = errs.get(k, 0) + v
        extra = []
        for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
            extra.append((f"B={size}", one(f"B={size}", size)))
        if not args.no_gzip:
            extra.append((f"B={args.batch} gzip", one(f"B={args.batch} gzip", args.batch, gz=True)))
        depth = bl.redis_llen(redis.url, "events")

        summary.append(f"=== ingest summary ({nproc} cores, shared; gunicorn {args.web_concurrency}x"
                       f"{args.web_threads}, {args.connections} connections, {args.client_procs} client procs) ===")
        summary.append(f"B={args.batch}, median of {args.rounds} x {args.seconds:g} s: "
                       f"{fmt(med['rps'])} req/s, {fmt(med['eps'], 0)} events/s, "
                       f"p50 {fmt(med['p50'], 2)} ms, p95 {fmt(med['p95'], 2)} ms, p99 {fmt(med['p99'], 2)} ms, "
                       f"errors {errs or 'none'}")
        web_ms = bl.median(1000 * r["cpu"].get("web", 0) / r["ok"] for r in main_rounds if r["ok"])
        summary.append(f"  cpu (% of one core, median): {bl.cpu_line(med_cpu, args.seconds)}; "
                       f"web cpu {web_ms:.2f} ms per request")
        for label, r in extra:
            summary.append(f"{label:<10} {fmt(r['rps'])} req/s, {fmt(r['eps'], 0)} events/s, "
                           f"p50 {fmt(r['p50'], 2)} ms, p95 {fmt(r['p95'], 2)} ms, p99 {fmt(r['p99'], 2)} ms, "
                           f"errors {r['errors'] or 'none'}; web cpu "
                           f"{1000 * r['cpu'].get('web', 0) / max(r['ok'], 1):.2f} ms/request; ratio req/s vs B={args.batch} median "
                           f"{r['rps'] / med['rps']:.2f}, events/s {r['eps'] / med['eps']:.2f}")
        sizes = [(args.batch, med["rps"])] + [(int(l.split("=")[1]), r["rps"]) for l, r in extra if "gzip" not in l]
        if len(sizes) >= 2:
            # linear fit of time per request = a + b * events (web CPU-bound): per-event cost
            xs = [s for s, _ in sizes]
            ys = [1000.0 / rps for _, rps in sizes if rps > 0]
            if len(ys) == len(xs):
                mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
                den = sum((x - mx) ** 2 for x in xs)
                if den:
                    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den
                    a = my - b * mx
                    summary.append(f"fit (server-wide ms per request = a + b*events): a = {a:.3f} ms fixed, "
                                   f"b = {b * 1000:.1f} us per event")
        summary.append(f"broker 'events' list after the run: {depth} messages (no workers; one per accepted request)")
        print("\n" + "\n".join(summary), flush=True)
        return 0
    finally:
        bl.teardown(tmp, args.keep, procs, pg, redis)


if __name__ == "__main__":
    sys.exit(main())
