"""One invocation of ``scripts/bench``: servers, baseline calibration, the runs, the document.

Order (default, 3 runs): start the servers; try the baseline under a few gunicorn settings and
keep the fastest; start stack ``b`` (Observer with ``SESSION_IDLE_TIMEOUT=5``) for each run's
delivery phase, on servers still fresh, and stop it; start stack ``a`` (default settings); per
run: sustained, open loop at 70 % of that run's sustained rate, 100,000 active sessions, the
baseline under its best and under Observer's gunicorn settings. A phase that fails is reported
as such and the other runs go on. Medians are taken run by run.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from benchkit import baseline, chstats, cpu, load, redismem, rig, state, throughput
from benchkit.ctx import Ctx, quiet
from benchkit.result import SCHEMA
from benchkit.rig import log
from benchkit.stats import isnum, median_of, ratio

ROOT = rig.ROOT


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
    idle_timeout: int = 5
    keep: bool = False
    quick: bool = False

    @property
    def shape(self) -> load.Shape:
        return load.Shape(batch=self.batch, event_bytes=self.event_bytes)


QUICK = dict(runs=1, sustained_s=8.0, open_s=6.0, baseline_s=4.0, calibrate_s=2.0, sessions=20_000,
             delivery_sessions=32, quick=True)


@dataclass
class Target:
    """A running stack (``--target``): its URLs, and PIDs for CPU accounting when given."""

    url: str
    clickhouse_url: str
    database_url: str
    broker_url: str = ""
    sessions_url: str = ""
    sink_url: str = ""
    prefix: str = "obs:"
    idle_timeout: float = 1800.0
    pids: dict = field(default_factory=dict)


class RemoteSink:
    """The toolkit's sink process (``/_received``) read over HTTP, in place of the in-process one."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") + "/_received"

    def snapshot(self) -> list[dict]:
        with urllib.request.urlopen(self.url, timeout=10) as r:  # noqa: S310 -- the sink's http URL, given by the operator
            return json.loads(r.read())


def machine(extra: dict) -> dict:
    """What the figures were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
    except (OSError, StopIteration):
        mem = 0
    return {"cpus": os.cpu_count(), "model": model, "mem_gb": round(mem / 1024 / 1024, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(), **extra}


def code_version() -> dict:
    """The commit measured and whether the work tree differs from it."""
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "--short", "HEAD"), "subject": git("log", "-1", "--format=%s"),
            "dirty_files": len([s for s in git("status", "--porcelain", "--untracked-files=no").splitlines() if s])}


def add_meter(meter: cpu.Meter, stack: rig.Stack, servers: rig.Servers | None, pids: dict) -> None:
    """The process kinds of figure 8: web, each worker queue, beat, servers, this process."""
    for name, p in stack.procs().items():
        meter.add(name, p.pid)
    if servers is not None:
        meter.add("broker redis", servers.broker.pid)
        meter.add("sessions redis", servers.sessions.pid)
        meter.add("postgres", servers.pg.cpu_source())
        meter.add("clickhouse", servers.ch.pid)
    for name, pid in pids.items():
        meter.add(name, int(pid))
    meter.add("bench (sink, pollers)", os.getpid(), tree=False)


def capacity(stack: rig.Stack) -> dict[str, int]:
    """How many cores each process kind can use at most: its processes (``-c``, web's
    WEB_CONCURRENCY; threads share a GIL), 1 for Redis and beat, all for ClickHouse/PostgreSQL."""
    cores = os.cpu_count() or 1
    cap = {"broker redis": 1, "sessions redis": 1, "clickhouse": cores, "postgres": cores}
    for name, p in stack.procs().items():
        if name == "web":
            cap[name] = int((p.env or {}).get("WEB_CONCURRENCY") or 2)
        elif "worker" in p.argv and "-c" in p.argv:
            cap[name] = int(p.argv[p.argv.index("-c") + 1])
        else:
            cap[name] = 1
    return cap


def one_run(ctx: Ctx, i: int, cfg: Config, base: dict, markers_src: tuple) -> dict:
    """Figures 1-4, 6-8 of run ``i`` on stack ``a``."""
    names, setting = markers_src
    s = throughput.sustained(ctx, f"r{i}s-", cfg.sustained_s)
    e2e = s["e2e"]["e2e_eps"]
    log(f"{ctx.label} sustained: accepted {s['e2e']['accepted_eps']:,.0f} events/s, end to end {e2e:,.0f}, "
        f"caught up {s['e2e']['catchup_s']:.2f} s after the load")
    rate = cfg.open_fraction * (e2e if isnum(e2e) and e2e > 0 else s["e2e"]["accepted_eps"])
    o = throughput.open_loop(ctx, f"r{i}o-", rate, cfg.open_s)
    log(f"{ctx.label} open loop: p50 {o['latency']['p50_ms']:.1f} ms, p99 {o['latency']['p99_ms']:.1f} ms; "
        f"queryable p95 {o['queryable']['p95_s']:.2f} s")
    m = state.memory(ctx, f"r{i}m-", cfg.sessions, names)
    log(f"{ctx.label} memory: {m['bytes_per_session']:,.0f} bytes per session over {m['sessions']:,} sessions")
    events = s["e2e"]["stored_events"]
    m["markers"] = state.markers(s["grown_keys"], events, names, setting)
    m["ttl_kinds"] = state.ttl_kinds(s["grown_keys"], events, s["e2e"]["sessions_touched"])
    b_best = baseline.baseline(base["dir"], base["redis"], base["best"], cfg.shape, cfg.baseline_s,
                             cfg.connections, cfg.processes, label=f"{ctx.label} ")
    if base["best"] == baseline.OBSERVER_WEB:
        b_obs = dict(b_best)
    else:
        b_obs = baseline.baseline(base["dir"], base["redis"], baseline.OBSERVER_WEB, cfg.shape, cfg.baseline_s,
                                cfg.connections, cfg.processes, label=f"{ctx.label} ")
    faster = max((b_best, b_obs), key=lambda b: b["eps"])
    return {
        "e2e": s["e2e"], "latency": o["latency"], "queryable": o["queryable"], "inserts": s["inserts"],
        "redis": m, "cpu_per_1k_events": s["cpu_per_1k_events"], "cpu_pct": s["cpu_pct"],
        "baseline": {"best": b_best, "observer_settings": b_obs, "faster": faster["config"],
                     "faster_eps": faster["eps"], "ratio": ratio(e2e, faster["eps"])},
        "timeline": {"sustained": s["timeline"], "open_loop": o["timeline"]},
    }


def run(cfg: Config, target: Target | None = None) -> dict:
    """Every run; returns the result document (not yet judged)."""
    from toolkit.redis_server import start_redis

    t_start = time.time()
    tag = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="observer-bench-"))
    servers = stack = None
    base_redis = None
    runs: list[dict] = []
    info: dict = {}
    names = redismem.marker_names(ROOT)
    setting = redismem.marker_ttl_setting()
    log(f"batch markers per app/sessions/store.py: key kind(s) {names or 'none found'}; TTL per app/settings.py: "
        f"{setting[0] or '?'} = {setting[1]:,.0f} s")
    try:
        if target is None:
            log(f"starting servers under {tmp}")
            servers = rig.Servers(tmp, tag)
            base_redis = servers.baseline_redis
            info = {"redis": servers.broker.extra.get("binary", ""), "postgres": servers.pg.where,
                    "clickhouse": chstats.server_version(chstats.client(servers.ch.url)),
                    "redis_aof": "appendonly yes, appendfsync everysec (broker, sessions, baseline)"}
        else:
            base_redis = start_redis(tmp / "baseline", appendfsync="everysec", name="baseline-redis")
            info = {"target": target.url,
                    "clickhouse": chstats.server_version(chstats.client(target.clickhouse_url))}
        base = {"dir": tmp / "baseline-app", "redis": base_redis}
        base["best"] = baseline.calibrate(base["dir"], base_redis, cfg)
        db = f"bench_{tag}"
        deliveries: list[dict] = []
        if target is None:
            # First, on fresh servers: the delivery figure needs its own stack (idle timeout 5 s)
            stack = rig.start_stack_or_none(servers, "b", db=db, prefix="obsb:", extra=_idle(cfg), why=(
                f"starting stack b for the delivery figure: {rig.IDLE_OVERRIDE[0]}={cfg.idle_timeout} "
                f"({rig.IDLE_OVERRIDE[2]}), otherwise as stack a below"))
            if stack is not None:
                dctx = Ctx(stack=stack, meter=cpu.Meter(), shape=cfg.shape, connections=cfg.connections,
                           processes=cfg.processes, sink=servers.sink)
                deliveries = [_delivery(dctx, i, cfg) for i in range(1, cfg.runs + 1)]
                stack.stop()
            log("starting Observer (stack a: default settings but the overrides below)")
            stack = rig.start_stack(servers, "a", db=db, prefix="obs:")
        else:
            stack = target_stack(target)
        for k, (v, why) in stack.overrides.items():
            log(f"override {k}={v}: {why}")
        meter = cpu.Meter()
        add_meter(meter, stack, servers, target.pids if target else {})
        ctx = Ctx(stack=stack, meter=meter, shape=cfg.shape, connections=cfg.connections,
                  processes=cfg.processes, sink=(servers.sink if servers else None))
        log("warm-up (3 s, not measured)")
        load.run(ctx.plan("w-", seconds=3))
        quiet(ctx)
        for i in range(1, cfg.runs + 1):
            ctx.label = f"run {i}/{cfg.runs}"
            try:
                runs.append(one_run(ctx, i, cfg, base, (names, setting)))
            except Exception as exc:  # one broken run must not lose the others' figures
                log(f"{ctx.label} failed: {type(exc).__name__}: {exc}")
                runs.append({"error": f"{type(exc).__name__}: {exc}"[:500]})
        overrides = {k: v for k, (v, _w) in stack.overrides.items()}
        if target is not None:
            ctx.sink = RemoteSink(target.sink_url) if target.sink_url else None
            deliveries = [_delivery(ctx, i, cfg) for i in range(1, cfg.runs + 1)]
        for r, d in zip(runs, deliveries, strict=False):
            r["delivery"] = d
    finally:
        if stack is not None and target is None:
            stack.stop()
        if servers is not None:
            servers.stop()
        elif base_redis is not None:
            base_redis.stop()
        if cfg.keep:
            log(f"logs kept under {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    median = median_of(runs)
    return {
        "schema": SCHEMA, "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
        "duration_s": time.time() - t_start, "machine": machine(info), "code": code_version(),
        "config": {**asdict(cfg), "overrides": overrides,
                   "delivery_overrides": {rig.IDLE_OVERRIDE[0]: str(cfg.idle_timeout)} if target is None else {},
                   "marker_kinds": names, "marker_ttl_setting": list(setting),
                   "baseline_best": base["best"].label, "generator": f"{cfg.processes} processes x "
                   f"{cfg.connections // cfg.processes} keep-alive connections, 127.0.0.1"},
        "runs": runs, "median": median,
    }


def _idle(cfg: Config) -> dict:
    return {rig.IDLE_OVERRIDE[0]: (str(cfg.idle_timeout), rig.IDLE_OVERRIDE[2])}


def _delivery(ctx: Ctx, i: int, cfg: Config) -> dict:
    """Figure 5 of run ``i`` (its error instead, when the phase failed)."""
    ctx.label = f"run {i}/{cfg.runs}"
    try:
        d = state.delivery(ctx, f"r{i}d-", cfg.delivery_sessions)
    except Exception as exc:
        log(f"{ctx.label} delivery failed: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}
    log(f"{ctx.label} delivery: p50 {d['p50_s']:.2f} s, p95 {d['p95_s']:.2f} s after the idle timeout "
        f"({d['delivered']}/{d['sessions']} sessions)")
    return d


def target_stack(t: Target) -> rig.Stack:
    """A Stack for a running Observer: a fresh key through its PostgreSQL."""
    u = urlsplit(t.url)
    if u.hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit("--target: the bench drives load on loopback only (127.0.0.1)")
    key = rig.create_key(t.database_url, "bench")
    queues = ("events", "sessions", "forward", "maintenance")
    return rig.Stack(name="target", url=t.url.rstrip("/"), port=u.port or 80, key=key, project="bench",
                     clickhouse_url=t.clickhouse_url, broker_url=t.broker_url, sessions_url=t.sessions_url,
                     prefix=t.prefix, overrides={}, idle_timeout=t.idle_timeout, queues=queues)
