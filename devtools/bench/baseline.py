"""Figure 7: the bare parse-and-push baseline (``baseline_app.py``) under the same closed loop.

gunicorn with ``-c gunicorn.conf.py`` (Observer's settings file), the worker class and counts
varied: ``calibrate`` tries a few and keeps the fastest; every run then measures that one and
Observer's own settings (gthread, 2 x 4), while Observer's stack idles.
"""
from __future__ import annotations

from pathlib import Path

import redis as redis_lib

from devtools import ROOT, checks, load, net, procfile
from devtools.bench.measure import Meter, delta, per_1k
from devtools.bench.rig import log
from devtools.bench.stats import pct
from devtools.proc import Proc
from devtools.stack import clean_environ

OBSERVER_WEB = ("gthread", 2, 4)  # gunicorn.conf.py's defaults (WEB_CONCURRENCY, WEB_THREADS)
CANDIDATES = (("sync", 2, 1), ("sync", 3, 1), ("sync", 4, 1), OBSERVER_WEB, ("gthread", 3, 2), ("gthread", 4, 2))
QUICK_CANDIDATES = (("sync", 2, 1), ("sync", 4, 1), OBSERVER_WEB)


def label(web: tuple) -> str:
    kind, workers, threads = web
    return f"{kind} {workers}" + (f" x {threads} threads" if kind == "gthread" else "")


def measure(dir: Path, redis: Proc, web: tuple, shape: load.Shape, seconds: float, connections: int,
            processes: int, prefix: str = "", warmup: float = 1.0) -> dict:
    """The baseline app under ``web`` = (worker class, processes, threads) and the closed loop."""
    port = net.free_port()
    env = clean_environ(inherit_settings=False)
    env.update(HOST="127.0.0.1", PORT=str(port), OPERATOR_PORT=str(net.free_port()),
               WEB_CONCURRENCY=str(web[1]), WEB_THREADS=str(web[2]),
               BASELINE_REDIS_URL=redis.url)
    argv = [procfile.venv_bin() / "gunicorn", "-c", "gunicorn.conf.py", "-k", web[0],
            "devtools.bench.baseline_app:create_app()"]
    Path(dir).mkdir(parents=True, exist_ok=True)
    p = Proc("baseline", argv, env=env, cwd=ROOT, log_path=Path(dir) / "baseline.log", ready_timeout=60,
             ready=checks.http_ok(f"http://127.0.0.1:{port}/health"), stop_signals=((15, 10.0),)).start()
    try:
        plan = load.Plan(port=port, key="baseline", tag="b-", shape=shape, connections=connections,
                         processes=processes, seconds=warmup)
        if warmup:
            load.run(plan)
        meter = Meter()
        meter.add("baseline web", p.pid)
        meter.add("baseline redis", redis.pid)
        c0 = meter.sample()
        out = load.run(load.Plan(**{**plan.__dict__, "seconds": seconds}))
        spent = delta(c0, meter.sample())
        spent["load generator"] = out.cpu_s
    finally:
        p.stop()
        redis_lib.Redis.from_url(redis.url).delete("baseline:events")
    lat = out.latencies_ms()
    eps = out.accepted_events / seconds
    log(f"{prefix}baseline {label(web)}: {eps:,.0f} events/s, p99 {pct(lat, 99):.1f} ms"
        + (f", errors {out.errors}" if out.errors else ""))
    return {"config": label(web), "eps": eps, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "errors": out.errors, "cpu_per_1k_events": per_1k(spent, out.accepted_events)}


def calibrate(dir: Path, redis: Proc, cfg) -> tuple:
    """The fastest setting among a few (short rounds, the same load; ``cfg``: the runner's Config)."""
    got = {web: measure(dir, redis, web, cfg.shape, cfg.calibrate_s, cfg.connections, cfg.processes,
                        prefix="calibration: ", warmup=0.5)["eps"]
           for web in (QUICK_CANDIDATES if cfg.quick else CANDIDATES)}
    best = max(got, key=got.get)
    log(f"baseline: best gunicorn setting {label(best)} ({got[best]:,.0f} events/s)")
    return best
