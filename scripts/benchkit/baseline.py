"""Figure 7: the bare parse-and-push baseline (``baseline_app.py``) under the same load.

gunicorn with ``-c gunicorn.conf.py`` (Observer's settings file) and the worker class and counts
varied: ``calibrate`` tries a few and keeps the fastest; every run then measures that one and
Observer's own settings (gthread, 2 x 4), while Observer's stack idles.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchkit import cpu, load
from benchkit.rig import ROOT, log
from benchkit.stats import pct
from toolkit import checks, net, observer, procfile
from toolkit.proc import Proc


@dataclass(frozen=True)
class WebConfig:
    """gunicorn settings for the baseline: worker class, processes, threads per process."""

    worker_class: str
    workers: int
    threads: int = 1

    @property
    def label(self) -> str:
        t = f" x {self.threads} threads" if self.worker_class == "gthread" else ""
        return f"{self.worker_class} {self.workers}{t}"


OBSERVER_WEB = WebConfig("gthread", 2, 4)  # gunicorn.conf.py's defaults (WEB_CONCURRENCY, WEB_THREADS)
BASELINE_CANDIDATES = (WebConfig("sync", 2), WebConfig("sync", 3), WebConfig("sync", 4),
                       OBSERVER_WEB, WebConfig("gthread", 3, 2), WebConfig("gthread", 4, 2))


def start_baseline(dir: Path, redis_url: str, cfg: WebConfig) -> Proc:
    """gunicorn -c gunicorn.conf.py serving benchkit.baseline_app with ``cfg``; ready at /health."""
    port = net.free_port()
    env = observer.clean_environ(inherit_settings=False)
    env.update(PYTHONPATH=f"{ROOT / 'scripts'}:{ROOT}", HOST="127.0.0.1", PORT=str(port),
               WEB_CONCURRENCY=str(cfg.workers), WEB_THREADS=str(cfg.threads), BASELINE_REDIS_URL=redis_url)
    argv = [str(procfile.venv_bin() / "gunicorn"), "-c", "gunicorn.conf.py", "-k", cfg.worker_class,
            "benchkit.baseline_app:create_app()"]
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    p = Proc("baseline", argv, env=env, cwd=ROOT, log_path=d / "baseline.log",
             ready=checks.http_ok(f"http://127.0.0.1:{port}/health"), ready_timeout=60,
             stop_signals=((15, 10.0),), port=port, url=f"http://127.0.0.1:{port}")
    return p.start()


def baseline(dir: Path, redis, cfg: WebConfig, shape: load.Shape, seconds: float,
             connections: int, processes: int, label: str = "", warmup: float = 1.0) -> dict:
    """The parse-and-push app under ``cfg`` and the same closed-loop load (``redis``: its Proc)."""
    import redis as redis_lib

    p = start_baseline(dir, redis.url, cfg)
    r = redis_lib.Redis.from_url(redis.url)
    try:
        plan = load.Plan(port=p.port, key="baseline", tag="b-", shape=shape, connections=connections,
                         processes=processes, seconds=warmup)
        if warmup:
            load.run(plan)
        meter = cpu.Meter()
        meter.add("baseline web", p.pid)
        meter.add("baseline redis", redis.pid)
        c0 = meter.sample()
        out = load.run(load.Plan(**{**plan.__dict__, "seconds": seconds}))
        spent = cpu.delta(c0, meter.sample())
        spent["load generator"] = out.cpu_s
    finally:
        p.stop()
        r.unlink("baseline:events")
    lat = out.latencies_ms()
    eps = out.accepted_events / seconds
    log(f"{label}baseline {cfg.label}: {eps:,.0f} events/s, p99 {pct(lat, 99):.1f} ms"
        + (f", errors {out.errors}" if out.errors else ""))
    return {"config": cfg.label, "eps": eps, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "errors": out.errors, "cpu_per_1k_events": cpu.per_1k(spent, out.accepted_events)}


def calibrate(dir: Path, redis, cfg) -> WebConfig:
    """The fastest baseline gunicorn setting among a few (short rounds, same load; ``cfg``: the
    runner's Config)."""
    cands = BASELINE_CANDIDATES if not cfg.quick else (WebConfig("sync", 2), WebConfig("sync", 4), OBSERVER_WEB)
    best, best_eps = OBSERVER_WEB, -1.0
    for c in cands:
        r = baseline(dir, redis, c, cfg.shape, cfg.calibrate_s, cfg.connections, cfg.processes,
                            label="calibration: ", warmup=0.5)
        if r["eps"] > best_eps:
            best, best_eps = c, r["eps"]
    log(f"baseline: best gunicorn setting {best.label} ({best_eps:,.0f} events/s)")
    return best
