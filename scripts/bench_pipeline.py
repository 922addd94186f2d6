#!/usr/bin/env python3
"""Benchmark the whole pipeline: HTTP -> events worker -> ClickHouse -> sessions -> beat -> forward -> UFSE.

Starts a private Redis (no AOF), PostgreSQL (127.0.0.1:5432 in a fresh schema when it answers,
else a private server), a ClickHouse 18.16 server in a temp dir, an in-process UFSE sink
(scripts/ufse_sink.py) and the full stack with the process toolkit (toolkit.observer, as tests/e2e/stack.py): gunicorn, one
Celery worker per queue from the Procfile (events, sessions, forward, maintenance when defined) and beat, with SESSION_IDLE_TIMEOUT=2,
SESSION_SWEEP_INTERVAL=0.5, EVENTS_FLUSH_INTERVAL=0.5.

Each round posts E events spread over S fresh sessions (round-robin, one session per request,
B events per request) from a few client threads as fast as they go, then measures:
- ingest rate (requests/s, events/s while posting),
- time from the first POST until all E events are visible in ClickHouse
  (``SELECT uniqExact(event_id)``) -> events/s stored,
- time until all S sessions reached the sink -> sessions/s forwarded, and per session the
  latency (delivery time - time its last POST was answered), p50/p95,
- ClickHouse INSERTs: events-table INSERTs (worker metric) vs batches (requests), and the
  server-wide InsertQuery count (system.events) -> inserts are batched across tasks,
- CPU per process tree (percent of one core) during the round.

Timings are printed (medians over rounds), never asserted. Everything started is stopped by PID.

    .venv/bin/python scripts/bench_pipeline.py                 # 20,000 events, 200 sessions, 3 rounds
    .venv/bin/python scripts/bench_pipeline.py --events 5000 --sessions 50 --rounds 1
"""
from __future__ import annotations

import argparse
import base64
import http.client
import os
import secrets
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402
from benchlib import fmt, log  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20000, help="events per round (default 20000)")
    ap.add_argument("--sessions", type=int, default=200, help="sessions per round (default 200)")
    ap.add_argument("--batch", type=int, default=20, help="events per request (default 20)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, fresh session ids each (default 3)")
    ap.add_argument("--clients", type=int, default=4, help="client threads posting (default 4)")
    ap.add_argument("--web-concurrency", type=int, default=2, help="gunicorn processes (default 2)")
    ap.add_argument("--events-concurrency", type=int, default=2, help="events worker processes (default 2)")
    ap.add_argument("--events-prefetch", type=int, default=250, help="events worker prefetch multiplier (default 250)")
    ap.add_argument("--sessions-concurrency", type=int, default=2, help="sessions worker processes (default 2)")
    ap.add_argument("--forward-concurrency", type=int, default=2, help="forward worker processes (default 2)")
    ap.add_argument("--idle-timeout", type=int, default=2, help="SESSION_IDLE_TIMEOUT (default 2)")
    ap.add_argument("--flush-interval", type=float, default=0.5, help="EVENTS_FLUSH_INTERVAL (default 0.5)")
    ap.add_argument("--round-timeout", type=float, default=180, help="max seconds to wait per round (default 180)")
    ap.add_argument("--celery-loglevel", default="WARNING", help="Celery worker/beat log level (default WARNING)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir with the logs")
    return ap.parse_args(argv)


def post_round(port: int, key: str, run: str, n_events: int, n_sessions: int, batch: int,
               clients: int, deadline: float) -> dict:
    """Post the round's requests; returns timing, statuses and the last answer time per session."""
    # plan: session s gets ceil(per-session events / batch) requests; interleave sessions
    per_session = [n_events // n_sessions + (1 if i < n_events % n_sessions else 0) for i in range(n_sessions)]
    reqs: list[tuple[int, int]] = []  # (session index, events)
    remaining = list(per_session)
    while any(remaining):
        for s in range(n_sessions):
            if remaining[s]:
                n = min(batch, remaining[s])
                reqs.append((s, n))
                remaining[s] -= n
    sids = [f"{run}-s{i:05d}" for i in range(n_sessions)]
    last_answer = [0.0] * n_sessions
    statuses: dict[str, int] = {}
    lat: list[float] = []
    lock = threading.Lock()
    nxt = [0]

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            while time.time() < deadline:
                with lock:
                    i = nxt[0]
                    nxt[0] += 1
                if i >= len(reqs):
                    return
                s, n = reqs[i]
                body = bl.make_body(sids[s], n, seq=i)
                attempts = 0
                while True:  # bounded retries of refused requests (429/503/connection errors)
                    attempts += 1
                    t0 = time.perf_counter()
                    try:
                        status = str(bl.post_json(conn, key, body))
                    except (OSError, http.client.HTTPException) as exc:
                        status = type(exc).__name__
                        conn.close()
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    done = time.time()
                    with lock:
                        lat.append(time.perf_counter() - t0)
                        statuses[status] = statuses.get(status, 0) + 1
                        if status == "202":
                            last_answer[s] = max(last_answer[s], done)
                    if status == "202" or attempts >= 5 or time.time() > deadline:
                        break
                    time.sleep(0.2)
        finally:
            conn.close()

    t0 = time.time()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, deadline - time.time() + 5))
    t1 = time.time()
    return {"t0": t0, "t1": t1, "requests": len(reqs), "statuses": statuses, "sids": sids,
            "last_answer": dict(zip(sids, last_answer)), "lat": lat, "per_session": dict(zip(sids, per_session))}


def main(argv=None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="observer-bench-pipeline-"))
    redis = pg = ch = sink = procs = None
    try:
        from ufse_sink import Sink

        t_start = time.monotonic()
        redis = bl.services.start_redis(tmp / "redis", appendonly=False)
        pg = bl.Postgres(tmp)
        ch = bl.services.start_clickhouse_server(tmp / "clickhouse")
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        sink = Sink(secret=None).start()  # signatures are checked by the e2e tests, not timed here
        db = f"obs_bench_{uuid.uuid4().hex[:8]}"
        ch_url = ch.url.rsplit("/", 1)[0] + f"/{db}"
        log(f"redis pid {redis.pid}; postgres: {pg.where}; clickhouse pid {ch.pid} {ch_url}; sink {sink.url}")
        port = bl.services.free_port()
        env = bl.web_env(tmp, port, redis.url, pg.url, ch_url, args.web_concurrency, {
            "UFSE_URL": sink.url + "ufse", "UFSE_SECRET": secret,
            "SESSION_IDLE_TIMEOUT": args.idle_timeout, "SESSION_SWEEP_INTERVAL": "0.5",
            "EVENTS_FLUSH_INTERVAL": args.flush_interval, "LOG_LEVEL": "WARNING",
        })
        env.update({"EVENTS_CONCURRENCY": str(args.events_concurrency), "EVENTS_PREFETCH": str(args.events_prefetch),
                    "SESSIONS_CONCURRENCY": str(args.sessions_concurrency),
                    "FORWARD_CONCURRENCY": str(args.forward_concurrency), "LOG_LEVEL": args.celery_loglevel})
        # web, one worker per queue (the Procfile's command lines) and beat, each checked ready
        procs = bl.stack(tmp, env, tag=f"-{port}", loglevel=args.celery_loglevel)
        procs.flask("migrate")
        key = bl.create_key(pg.url)
        procs.start()
        procs.wait_ready(90)
        web, w_ev, w_se, w_fw, beat = (procs.procs[n] for n in ("web", "events", "sessions", "forward", "beat"))
        from app.storage.clickhouse import get_clickhouse

        chc = get_clickhouse(ch_url)
        # workers start consuming shortly after /ready; give them a moment so round 1 is fair
        time.sleep(2)
        log(f"stack up in {time.monotonic() - t_start:.1f}s (logs in {tmp})")
        meter = bl.CpuMeter()
        for name, p in (("web", web), ("events", w_ev), ("sessions", w_se), ("forward", w_fw), ("beat", beat)):
            meter.add(name, p.pid)
        if "maintenance" in procs.procs:
            meter.add("maintenance", procs.procs["maintenance"].pid)
        meter.add("redis", redis.pid)
        meter.add("clickhouse", ch.pid)
        meter.add("postgres", pg.pid)
        meter.add("bench", os.getpid(), tree=False)  # the client threads + the sink run in this process

        def insert_queries() -> int:
            rows = chc.execute("SELECT value FROM system.events WHERE event = 'InsertQuery'")
            return int(rows[0][0]) if rows else 0

        nproc = os.cpu_count()
        print(f"pipeline benchmark: {nproc} cores; {args.events} events over {args.sessions} sessions, "
              f"B={args.batch}, {args.clients} client threads; web {args.web_concurrency}, events "
              f"{args.events_concurrency} (prefetch {args.events_prefetch}), sessions {args.sessions_concurrency}, "
              f"forward {args.forward_concurrency}; idle timeout {args.idle_timeout}s, sweep 0.5s, "
              f"flush interval {args.flush_interval}s", flush=True)
        results = []
        for rnd in range(1, args.rounds + 1):
            procs.check_alive()
            run = f"b{rnd}{uuid.uuid4().hex[:4]}"
            m0 = bl.scrape_metrics(port)
            iq0 = insert_queries()
            c0 = meter.sample()
            sink_n0 = len(sink.snapshot())
            deadline = time.time() + args.round_timeout
            p = post_round(port, key, run, args.events, args.sessions, args.batch, args.clients, deadline)
            post_s = p["t1"] - p["t0"]
            ok = p["statuses"].get("202", 0)
            sent_events = sum(p["per_session"].values())

            stored_at = None
            delivered: dict[str, dict] = {}
            split = 0
            # poll ClickHouse and the sink until both are complete (bounded by the round deadline)
            while time.time() < deadline:
                if stored_at is None:
                    n = chc.execute(f"SELECT uniqExact(event_id) FROM {db}.events WHERE startsWith(session_id, %(p)s)",
                                    {"p": run + "-"})[0][0]
                    if n >= sent_events:
                        stored_at = time.time()
                for d in sink.snapshot()[sink_n0:]:
                    body = d.get("body") or {}
                    sess = body.get("session") or {}
                    sid = sess.get("session_id", "")
                    if d["status"] != 200 or not sid.startswith(run + "-"):
                        continue
                    rec = delivered.setdefault(sid, {"first": d["received_at"], "last": d["received_at"],
                                                     "versions": set(), "events": 0})
                    if sess.get("version") not in rec["versions"]:
                        rec["versions"].add(sess.get("version"))
                        rec["events"] += int(sess.get("event_count") or 0)
                    rec["last"] = max(rec["last"], d["received_at"])
                sink_n0_done = all(delivered.get(s, {}).get("events", 0) >= p["per_session"][s] for s in p["sids"])
                if stored_at is not None and sink_n0_done:
                    break
                procs.check_alive()
                time.sleep(0.2)
            t_end = time.time()
            c1 = meter.sample()
            m1 = bl.scrape_metrics(port)
            iq1 = insert_queries()
            split = sum(1 for r in delivered.values() if len(r["versions"]) > 1)
            complete = [s for s in p["sids"] if delivered.get(s, {}).get("events", 0) >= p["per_session"][s]]
            lags = [delivered[s]["last"] - p["last_answer"][s] for s in complete]
            all_delivered_at = max((delivered[s]["last"] for s in complete), default=float("nan"))
            ev_inserts = m1.get('observer_clickhouse_insert_seconds_count{table="events"}', 0) - \
                m0.get('observer_clickhouse_insert_seconds_count{table="events"}', 0)
            ev_rows = m1.get('observer_clickhouse_rows_total{table="events"}', 0) - \
                m0.get('observer_clickhouse_rows_total{table="events"}', 0)
            sb_rows = m1.get('observer_clickhouse_rows_total{table="session_batches"}', 0) - \
                m0.get('observer_clickhouse_rows_total{table="session_batches"}', 0)
            r = {
                "post_s": post_s, "rps": ok / post_s, "eps_ingest": sent_events / post_s if ok else 0,
                "stored_s": (stored_at - p["t0"]) if stored_at else float("nan"),
                "stored_after_post_s": (stored_at - p["t1"]) if stored_at else float("nan"),
                "forwarded_s": (all_delivered_at - p["t0"]) if len(complete) == len(p["sids"]) else float("nan"),
                "sessions_ok": len(complete), "split": split,
                "lag_p50": bl.pct(lags, 50), "lag_p95": bl.pct(lags, 95), "lag_max": max(lags, default=float("nan")),
                "post_p50": bl.pct(p["lat"], 50) * 1000, "post_p95": bl.pct(p["lat"], 95) * 1000,
                "statuses": p["statuses"], "batches": ok, "ev_inserts": ev_inserts, "ev_rows": ev_rows,
                "sb_rows": sb_rows, "insert_queries": iq1 - iq0, "wall": t_end - p["t0"],
                "cpu": bl.CpuMeter.delta(c0, c1),
            }
            r["eps_stored"] = sent_events / r["stored_s"] if stored_at else float("nan")
            r["sps_forwarded"] = args.sessions / r["forwarded_s"] if r["forwarded_s"] == r["forwarded_s"] else float("nan")
            results.append(r)
            errs = {k: v for k, v in p["statuses"].items() if k != "202"}
            print(f"round {rnd}: posted {ok} requests / {sent_events} events in {fmt(post_s, 2)} s = "
                  f"{fmt(r['rps'])} req/s, {fmt(r['eps_ingest'], 0)} events/s (POST p50 {fmt(r['post_p50'], 1)} ms, "
                  f"p95 {fmt(r['post_p95'], 1)} ms; non-202 {errs or 'none'})", flush=True)
            print(f"  stored: all {sent_events} in ClickHouse {fmt(r['stored_s'], 2)} s after the first POST "
                  f"({fmt(r['stored_after_post_s'], 2)} s after the last) = {fmt(r['eps_stored'], 0)} events/s", flush=True)
            print(f"  forwarded: {r['sessions_ok']}/{args.sessions} sessions complete at the sink "
                  f"{fmt(r['forwarded_s'], 2)} s after the first POST = {fmt(r['sps_forwarded'], 1)} sessions/s; "
                  f"last POST -> delivery p50 {fmt(r['lag_p50'], 2)} s, p95 {fmt(r['lag_p95'], 2)} s, "
                  f"max {fmt(r['lag_max'], 2)} s (idle timeout {args.idle_timeout} s); split into >1 version: {split}",
                  flush=True)
            print(f"  ClickHouse: {fmt(r['ev_inserts'], 0)} events INSERTs for {r['batches']} batches "
                  f"({fmt(r['ev_rows'], 0)} rows, {fmt(r['ev_rows'] / r['ev_inserts'] if r['ev_inserts'] else float('nan'), 0)} rows/INSERT, "
                  f"{fmt(r['batches'] / r['ev_inserts'] if r['ev_inserts'] else float('nan'), 1)} batches/INSERT); "
                  f"server InsertQuery total {r['insert_queries']} (session_batches rows {fmt(sb_rows, 0)})", flush=True)
            print(f"  cpu over {fmt(r['wall'], 1)} s (% of one core): {bl.cpu_line(r['cpu'], r['wall'])}", flush=True)
            # let the queues drain fully before the next round
            time.sleep(1)

        med = lambda k: bl.median(r[k] for r in results)  # noqa: E731
        print(f"\n=== pipeline summary ({nproc} cores, shared; median of {len(results)} rounds; "
              f"{args.events} events / {args.sessions} sessions per round) ===", flush=True)
        print(f"ingest:    {fmt(med('rps'))} req/s, {fmt(med('eps_ingest'), 0)} events/s "
              f"(POST p50 {fmt(med('post_p50'), 1)} ms, p95 {fmt(med('post_p95'), 1)} ms)")
        print(f"stored:    all events visible in ClickHouse after {fmt(med('stored_s'), 2)} s "
              f"= {fmt(med('eps_stored'), 0)} events/s ({fmt(med('stored_after_post_s'), 2)} s after the last POST)")
        print(f"forwarded: all sessions at the sink after {fmt(med('forwarded_s'), 2)} s = "
              f"{fmt(med('sps_forwarded'), 1)} sessions/s; last POST -> delivery p50 {fmt(med('lag_p50'), 2)} s, "
              f"p95 {fmt(med('lag_p95'), 2)} s (idle timeout {args.idle_timeout} s, sweep 0.5 s)")
        print(f"batching:  {fmt(med('ev_inserts'), 0)} events INSERTs for {fmt(med('batches'), 0)} batches "
              f"(median {fmt(med('batches') / med('ev_inserts') if med('ev_inserts') else float('nan'), 1)} batches per INSERT); "
              f"server-wide InsertQuery {fmt(med('insert_queries'), 0)} per round")
        cpu_keys = results[0]["cpu"].keys()
        med_cpu = {k: bl.median(r["cpu"][k] / r["wall"] for r in results) for k in cpu_keys}
        print(f"cpu:       (% of one core, median) {bl.cpu_line(med_cpu, 1.0)}")
        bad = [r for r in results if r["sessions_ok"] < args.sessions or r["stored_s"] != r["stored_s"]]
        if bad:
            print(f"WARNING: {len(bad)} round(s) did not complete within {args.round_timeout:g} s")
        return 0
    finally:
        bl.teardown(tmp, args.keep, procs, sink, ch, pg, redis)


if __name__ == "__main__":
    sys.exit(main())
