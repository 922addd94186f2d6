"""Observer's benchmark: it starts what it measures (or targets a running stack), drives load from
127.0.0.1 for a bounded time and prints eight figures, medians of 3 runs by default:

 1 sustained end-to-end events/s (accepted over HTTP and stored in ClickHouse; catch-up time)
 2 ingest latency p50/p99 of 50-event batches at 70 % of that rate (open loop)
 3 accepted -> queryable p50/p95 (probe batches)
 4 rows per INSERT and INSERTs/s per ClickHouse table at full load (system.part_log)
 5 idle timeout passed -> delivered at UFSE p50/p95 (SESSION_IDLE_TIMEOUT=5 on a second stack)
 6 Redis bytes per active session at 100,000 sessions; batch-marker bytes per 1,000 events/s
 7 a bare parse-and-push baseline, best gunicorn setting and Observer's; Observer's ratio
 8 CPU seconds per 1,000 events per process kind
 9 web CPU per request: the privacy scrubber's worst-case body against a plain one of the same size

It writes var/bench/result.json (--out); docs/BENCHMARKS.md says how each figure is taken.

    scripts/bench                     # 3 runs (~10 min on 2 cores)
    scripts/bench --check             # the same, then the gate: exit 1 unless the targets hold
    scripts/bench --quick             # 1 short run, for development (~3 min)
    scripts/bench --quick --batch 200 # how cost grows: one load factor at a time
    scripts/bench --only-scrub --check  # figure 9 alone on its own stack (~1 min), gated on it alone
    scripts/bench --from var/bench/result.json --check    # judge a saved result again
    scripts/bench --target http://127.0.0.1:8000 --clickhouse-url clickhouse://... --database-url postgresql://...
"""
import argparse
import sys
from pathlib import Path

from devtools import ROOT


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, help="repeated runs (default 3; --quick: 1)")
    ap.add_argument("--quick", action="store_true", help="1 run, shorter phases, 20,000 sessions (development)")
    ap.add_argument("--check", action="store_true", help="exit 1 unless the gate targets hold on the median")
    ap.add_argument("--out", type=Path, help="result JSON (default var/bench/result.json)")
    ap.add_argument("--from", dest="from_file", type=Path, help="print (and --check) a saved result instead of running")
    ap.add_argument("--keep", action="store_true", help="keep the servers' data and every process log")
    ap.add_argument("--only-scrub", action="store_true", help="figure 9 alone (servers and one stack, no load phases)")
    g = ap.add_argument_group("phases and load")
    g.add_argument("--sustained", type=float, help="seconds of closed-loop load per run (default 20)")
    g.add_argument("--open", type=float, help="seconds of open-loop load per run (default 15)")
    g.add_argument("--sessions", type=int, help="active sessions of the memory figure (default 100000)")
    g.add_argument("--connections", type=int, help="keep-alive connections (default 8)")
    g.add_argument("--processes", type=int, help="load generator processes (default 2)")
    g.add_argument("--batch", type=int, help="events per request (default 50)")
    g.add_argument("--event-bytes", type=int, help="bytes per event, about (default 400)")
    g.add_argument("--gzip", action="store_true", help="gzip request bodies (Content-Encoding: gzip)")
    t = ap.add_argument_group("a running stack instead (--target)")
    t.add_argument("--target", help="base URL of a running Observer on 127.0.0.1")
    t.add_argument("--clickhouse-url", help="its CLICKHOUSE_URL (clickhouse://user:pass@host:9000/db)")
    t.add_argument("--database-url", help="its DATABASE_URL (the bench creates its key there)")
    t.add_argument("--broker-url", default="", help="its broker Redis (queue lengths between phases)")
    t.add_argument("--sessions-redis-url", default="", help="its sessions Redis (figure 6)")
    t.add_argument("--sink-url", default="", help="a devtools.sink process it forwards to (figure 5, via /_received)")
    t.add_argument("--prefix", default="obs:", help="its REDIS_KEY_PREFIX (default obs:)")
    t.add_argument("--idle-timeout", type=float, default=1800.0, help="its SESSION_IDLE_TIMEOUT")
    t.add_argument("--pid", action="append", default=[], metavar="KIND=PID",
                   help="a process tree to account CPU to (repeatable), e.g. web=1234")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    from devtools.bench import gate, report, result, runner

    cfg = runner.Config(**(runner.QUICK if args.quick else {}), keep=args.keep, only_scrub=args.only_scrub)
    for name, attr in (("runs", "runs"), ("sustained", "sustained_s"), ("open", "open_s"), ("sessions", "sessions"),
                       ("connections", "connections"), ("processes", "processes"), ("batch", "batch"),
                       ("event_bytes", "event_bytes"), ("gzip", "gzip")):
        if getattr(args, name):
            setattr(cfg, attr, getattr(args, name))
    if args.from_file:
        doc = result.read(args.from_file)
    else:
        target = None
        if args.target:
            if not (args.clickhouse_url and args.database_url):
                raise SystemExit("--target needs --clickhouse-url and --database-url")
            target = dict(url=args.target, clickhouse_url=args.clickhouse_url, database_url=args.database_url,
                          broker_url=args.broker_url, sessions_url=args.sessions_redis_url, prefix=args.prefix,
                          idle_timeout=args.idle_timeout, sink_url=args.sink_url,
                          pids=dict(p.split("=", 1) for p in args.pid))
        doc = runner.run(cfg, target)
    only = doc.get("config", {}).get("only_scrub")
    verdicts = gate.evaluate(doc["median"], [t for t in gate.TARGETS if t.path.startswith("scrub.")] if only
                             else gate.TARGETS)
    doc["check"] = gate.as_json(verdicts)
    if not args.from_file:
        print(f"result: {result.write(doc, args.out or ROOT / 'var' / 'bench' / 'result.json')}", file=sys.stderr)
    print("\n" + (report.scrub_line(doc) if only else report.summary(doc)) + "\n\n" + report.verdicts(verdicts))
    problems = [] if only else result.shape_problems(doc)
    if problems:
        print("\nresult shape problems: " + "; ".join(problems))
    if args.check:
        ok = gate.gate_passed(verdicts)
        print(f"\ngate: {'PASS' if ok else 'MISS'}")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
