"""One invocation of ``scripts/bench``: servers, baseline calibration, the runs, the document.

Order (default, 3 runs): start the servers; try the baseline under a few gunicorn settings and
keep the fastest; start stack ``b`` (Observer with ``SESSION_IDLE_TIMEOUT=5``) for each run's
delivery phase, on servers still fresh, and stop it; start stack ``a`` (default settings); per
run: sustained, open loop at 70 % of that run's end-to-end rate, 100,000 active sessions, the
baseline under its best and under Observer's gunicorn settings. A run that fails is reported as
such and the other runs go on. Medians are taken run by run.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from devtools import ROOT, load
from devtools.bench import baseline, phases, rig, scrub
from devtools.bench.measure import MARKER, Meter
from devtools.bench.result import SCHEMA
from devtools.bench.rig import log
from devtools.bench.stats import isnum, median_of, ratio
from devtools.servers import start_redis


@dataclass
class Config:
    """Phase lengths and load shape of one invocation (``--quick`` shortens them)."""

    runs: int = 3
    sustained_s: float = 20.0
    open_s: float = 15.0
    open_fraction: float = 0.7
    baseline_s: float = 10.0
    calibrate_s: float = 4.0
    sessions: int = 100_000
    delivery_sessions: int = 96
    connections: int = 8
    processes: int = 2
    batch: int = 50
    event_bytes: int = 400
    gzip: bool = False
    idle_timeout: int = 5
    keep: bool = False
    quick: bool = False
    only_scrub: bool = False

    @property
    def shape(self) -> load.Shape:
        return load.Shape(batch=self.batch, event_bytes=self.event_bytes, gzip=self.gzip)


QUICK = dict(runs=1, sustained_s=8.0, open_s=6.0, baseline_s=4.0, calibrate_s=2.0, sessions=20_000,
             delivery_sessions=32, quick=True)


def machine(extra: dict) -> dict:
    """What the figures were measured on."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    return {"cpus": os.cpu_count(), "model": model, "mem_gb": round(psutil.virtual_memory().total / 2 ** 30, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(), **extra}


def code_version() -> dict:
    """The commit measured and how many tracked files differ from it."""
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "--short", "HEAD"), "subject": git("log", "-1", "--format=%s"),
            "dirty_files": len(git("status", "--porcelain", "--untracked-files=no").splitlines())}


def meter_for(stack: rig.Stack, servers: rig.Servers | None, pids: dict) -> Meter:
    """The process kinds of figure 8: web, each worker, beat, the servers, this process."""
    meter = Meter()
    for name, p in stack.procs().items():
        meter.add(name, p.pid)
    if servers is not None:
        for name, p in (("broker redis", servers.broker), ("sessions redis", servers.sessions),
                        ("postgres", servers.pg), ("clickhouse", servers.ch)):
            meter.add(name, p.pid)
    for name, pid in pids.items():
        meter.add(name, int(pid))
    meter.add("bench (sink, pollers)", os.getpid(), tree=False)
    return meter


def one_run(ctx: phases.Ctx, i: int, cfg: Config, base: dict) -> dict:
    """Figures 1-4 and 6-8 of run ``i`` on stack ``a``."""
    s = phases.sustained(ctx, f"r{i}s-", cfg.sustained_s)
    e = s["e2e"]
    log(f"{ctx.label} sustained: accepted {e['accepted_eps']:,.0f} events/s, end to end {e['e2e_eps']:,.0f}, "
        f"caught up {e['catchup_s']:.2f} s after the load")
    rate = cfg.open_fraction * (e["e2e_eps"] if isnum(e["e2e_eps"]) and e["e2e_eps"] > 0 else e["accepted_eps"])
    o = phases.open_loop(ctx, f"r{i}o-", rate, cfg.open_s)
    log(f"{ctx.label} open loop: p50 {o['latency']['p50_ms']:.1f} ms, p99 {o['latency']['p99_ms']:.1f} ms; "
        f"queryable p95 {o['queryable']['p95_s']:.2f} s")
    m = phases.memory(ctx, f"r{i}m-", cfg.sessions)
    log(f"{ctx.label} memory: {m['bytes_per_session']:,.0f} bytes per session over {m['sessions']:,} sessions")
    m["markers"] = phases.markers(s["grown_keys"], e["stored_events"])
    measured = {}
    for web in dict.fromkeys((base["best"], baseline.OBSERVER_WEB)):
        measured[web] = baseline.measure(base["dir"], base["redis"], web, cfg.shape, cfg.baseline_s,
                                         cfg.connections, cfg.processes, prefix=f"{ctx.label} ")
    sc = scrub_figure(ctx)
    best, obs = measured[base["best"]], measured[baseline.OBSERVER_WEB]
    faster = max((best, obs), key=lambda b: b["eps"])
    return {"e2e": e, "latency": o["latency"], "queryable": o["queryable"], "inserts": s["inserts"], "redis": m,
            "cpu_per_1k_events": s["cpu_per_1k_events"], "cpu_pct": s["cpu_pct"], "scrub": sc,
            "baseline": {"best": best, "observer_settings": obs, "faster": faster["config"],
                         "faster_eps": faster["eps"], "ratio": ratio(e["e2e_eps"], faster["eps"])}}


def scrub_figure(ctx: phases.Ctx) -> dict:
    """Figure 9 on stack ``a``: web CPU per request, worst-case scrub body against plain."""
    web = ctx.stack.procs().get("web")
    if web is None:  # --target: the web's processes are not ours to meter
        return {"error": "no web process to meter (a --target stack)"}
    sc = guarded(f"{ctx.label} scrub", scrub.measure, ctx.stack.url, ctx.stack.key, web.pid)
    if "error" not in sc:
        log(f"{ctx.label} scrub: plain {sc['plain_ms']:.1f} ms, worst ({sc['worst_shape']}) {sc['worst_ms']:.1f} ms "
            f"CPU per request of {sc['body_bytes']:,} B: {sc['ratio']:.2f}x")
    st = ctx.stack
    tc = guarded(f"{ctx.label} tail", scrub.tail_cost, st.url, st.key, web.pid, st.sessions_url or st.broker_url,
                 st.prefix, st.project)
    if "error" not in tc:
        log(f"{ctx.label} tail: plain body {tc['quiet_ms']:.1f} ms with no one tailing, {tc['tailed_ms']:.1f} ms "
            f"with one client tailing ({tc['messages']} messages): {tc['ratio']:.2f}x")
    sc["tail"] = tc
    return sc


def guarded(label: str, fn, *args) -> dict:
    """``fn(*args)``, or its error (one broken run must not lose the others' figures)."""
    try:
        return fn(*args)
    except Exception as exc:
        log(f"{label} failed: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}


def deliveries(ctx: phases.Ctx, cfg: Config) -> list[dict]:
    """Figure 5 of every run."""
    out = []
    for i in range(1, cfg.runs + 1):
        ctx.label = f"run {i}/{cfg.runs}"
        d = guarded(f"{ctx.label} delivery", phases.delivery, ctx, f"r{i}d-", cfg.delivery_sessions)
        if "error" not in d:
            log(f"{ctx.label} delivery: p50 {d['p50_s']:.2f} s, p95 {d['p95_s']:.2f} s after the idle timeout "
                f"({d.get('delivered', 0)}/{d['sessions']} sessions)")
        out.append(d)
    return out


def run(cfg: Config, target: dict | None = None) -> dict:
    """Every run; returns the result document (not yet judged). ``target``: a running stack's
    URLs (rig.target_stack's arguments), ``sink_url`` and ``pids`` instead of our own stacks."""
    t_start, tag = time.time(), uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="observer-bench-"))
    servers = stack = base_redis = None
    runs: list[dict] = []
    target = dict(target or {})
    pids, sink_url = target.pop("pids", {}), target.pop("sink_url", "")
    try:
        if not target:
            log(f"starting servers under {tmp}")
            servers = rig.Servers(tmp)
            base_redis = servers.baseline_redis
            info = {"redis": servers.broker.extra.get("binary", ""), "postgres": "private server",
                    "redis_aof": "appendonly yes, appendfsync everysec (broker, sessions, baseline)"}
        else:
            base_redis = start_redis(tmp / "baseline", appendfsync="everysec", name="baseline-redis")
            info = {"target": target["url"]}
        if cfg.only_scrub:
            if not servers:
                raise SystemExit("--only-scrub starts its own stack (no --target)")
            stack = rig.start_stack(servers, "a", f"bench_{tag}", "obs:")
            ctx = phases.Ctx(stack=stack, meter=Meter(), **dict(shape=cfg.shape, connections=cfg.connections,
                                                                 processes=cfg.processes))
            for i in range(1, cfg.runs + 1):
                ctx.label = f"run {i}/{cfg.runs}"
                runs.append({"scrub": scrub_figure(ctx)})
            base = {"best": baseline.OBSERVER_WEB}
            return _document(cfg, t_start, info, stack, servers, base, runs)
        base = {"dir": tmp / "baseline-app", "redis": base_redis}
        base["best"] = baseline.calibrate(base["dir"], base_redis, cfg)
        delivered: list[dict] = []
        kw = dict(shape=cfg.shape, connections=cfg.connections, processes=cfg.processes)
        if servers:  # first, on fresh servers: the delivery figure on its own stack (idle timeout 5 s)
            log(f"starting stack b for the delivery figure: SESSION_IDLE_TIMEOUT={cfg.idle_timeout} ({rig.IDLE_WHY})")
            stack = guarded("stack b", rig.start_stack, servers, "b", f"bench_{tag}", "obsb:",
                            {"SESSION_IDLE_TIMEOUT": (str(cfg.idle_timeout), rig.IDLE_WHY)})
            if isinstance(stack, rig.Stack):
                delivered = deliveries(phases.Ctx(stack=stack, meter=Meter(), sink=servers.sink, **kw), cfg)
                stack.stop()
            log("starting Observer (stack a: default settings but the overrides below)")
            stack = rig.start_stack(servers, "a", f"bench_{tag}", "obs:")
        else:
            stack = rig.target_stack(**target)
        for k, (v, why) in stack.overrides.items():
            log(f"override {k}={v}: {why}")
        ctx = phases.Ctx(stack=stack, meter=meter_for(stack, servers, pids),
                         sink=servers.sink if servers else (rig.RemoteSink(sink_url) if sink_url else None), **kw)
        info["clickhouse"] = ctx.ch.version()
        log("warm-up (3 s, not measured)")
        load.run(ctx.plan("w-", seconds=3))
        for i in range(1, cfg.runs + 1):
            ctx.label = f"run {i}/{cfg.runs}"
            runs.append(guarded(ctx.label, one_run, ctx, i, cfg, base))
        if not servers:
            delivered = deliveries(ctx, cfg)
        for r, d in zip(runs, delivered, strict=False):
            r["delivery"] = d
    finally:
        if isinstance(stack, rig.Stack):
            stack.stop()
        if servers or base_redis:
            (servers or base_redis).stop()
        if cfg.keep:
            log(f"logs kept under {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return _document(cfg, t_start, info, stack, servers, base, runs)


def _document(cfg: Config, t_start: float, info: dict, stack, servers, base: dict, runs: list[dict]) -> dict:
    return {
        "schema": SCHEMA, "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
        "duration_s": time.time() - t_start, "machine": machine(info), "code": code_version(),
        "config": {**asdict(cfg), "overrides": {k: v for k, (v, _w) in stack.overrides.items()},
                   "delivery_overrides": {"SESSION_IDLE_TIMEOUT": str(cfg.idle_timeout)} if servers else {},
                   "marker_kind": MARKER, "baseline_best": baseline.label(base["best"]),
                   "generator": f"{cfg.processes} processes x {cfg.connections // cfg.processes} keep-alive "
                                "connections, 127.0.0.1"},
        "runs": runs, "median": median_of(runs),
    }
