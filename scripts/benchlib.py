"""Shared helpers of the benchmark scripts (scripts/bench_ingest.py, scripts/bench_pipeline.py).

Everything here talks to 127.0.0.1 only and every wait is bounded in time. Processes are started
with the process toolkit (scripts/toolkit: servers, and ``ObserverStack`` for web, workers and
beat from the Procfile), each stopped by its PID and process group.
Benchmarks print figures; nothing here asserts a timing.
"""
from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable, Optional

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
if not BIN.exists():  # run with another interpreter: use the one running us
    BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

import services  # noqa: E402  (toolkit server functions)

LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- statistics

def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def median(values: Iterable[float]) -> float:
    vals = [v for v in values if v == v]  # drop NaN
    return statistics.median(vals) if vals else float("nan")


def fmt(v: float, digits: int = 1) -> str:
    if v != v:
        return "n/a"
    return f"{v:,.{digits}f}"


# --------------------------------------------------------------------------- PostgreSQL

class Postgres:
    """The shared PostgreSQL on 5432 with a fresh schema when it answers, else a private server."""

    def __init__(self, tmp: Path) -> None:
        self.svc = None
        self.schema = None
        if services.postgres_available(LOCAL_PG):
            import psycopg2

            try:
                self.schema = f"obs_bench_{uuid.uuid4().hex[:10]}"
                conn = psycopg2.connect(LOCAL_PG, connect_timeout=3)
                conn.autocommit = True
                conn.cursor().execute(f'CREATE SCHEMA "{self.schema}"')
                conn.close()
                self.url = f"{LOCAL_PG}?options=-csearch_path%3D{self.schema}"
                self.where = f"shared 127.0.0.1:5432, schema {self.schema}"
                return
            except psycopg2.Error as exc:
                log(f"postgres on 5432 answers but cannot be used ({exc}); starting a private one")
                self.schema = None
        self.svc = services.start_postgres(tmp / "postgres")
        self.url = self.svc.url
        self.where = f"private server pid {self.svc.pid} port {self.svc.port}"

    @property
    def pid(self) -> Optional[int]:
        return self.svc.pid if self.svc else None

    def close(self) -> None:
        if self.schema:
            import psycopg2

            try:
                from app.storage import postgres as pgpool  # close our pooled connections first

                for pool in list(pgpool._pools.values()):
                    pool.closeall()
                pgpool._pools.clear()
            except Exception:
                pass
            try:
                conn = psycopg2.connect(LOCAL_PG, connect_timeout=3)
                conn.autocommit = True
                conn.cursor().execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
                conn.close()
                log(f"dropped schema {self.schema}")
            except psycopg2.Error as exc:
                log(f"could not drop schema {self.schema}: {exc}")
            self.schema = None
        if self.svc:
            self.svc.stop()
            self.svc = None


# --------------------------------------------------------------------------- processes

def teardown(tmp: Path, keep: bool, *resources) -> None:
    """Stop what a benchmark started, in order (ObserverStack.stop, Proc.stop, sink.stop, pg.close),
    then remove its temp dir unless --keep."""
    import shutil

    for r in resources:
        if r is None:
            continue
        for method in ("stop_all", "stop", "close"):
            if hasattr(r, method):
                getattr(r, method)()
                break
    if keep:
        log(f"logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1,
               alive: Optional[Callable[[], None]] = None) -> float:
    """Poll ``check`` until true; returns the seconds waited; raises after ``timeout``."""
    t0 = time.monotonic()
    while True:
        if alive:
            alive()
        try:
            if check():
                return time.monotonic() - t0
        except Exception:
            pass
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what}: not reached within {timeout:.0f}s")
        time.sleep(interval)


def http_get(port: int, path: str, timeout: float = 3) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def web_env(tmp: Path, port: int, redis_url: str, database_url: str, clickhouse_url: str,
            web_concurrency: int, extra: Optional[dict] = None) -> dict[str, str]:
    empty = tmp / "empty.env"
    empty.write_text("")
    prom = tmp / "prom"
    prom.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBSERVER_", "CELERY_", "PROMETHEUS_"))}
    env.update({
        "PYTHONPATH": str(ROOT), "PORT": str(port), "HOST": "127.0.0.1",
        "OBSERVER_ENV_FILE": str(empty), "PROMETHEUS_MULTIPROC_DIR": str(prom),
        "REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url, "SESSIONS_REDIS_URL": redis_url,
        "RATELIMIT_REDIS_URL": redis_url, "DATABASE_URL": database_url, "CLICKHOUSE_URL": clickhouse_url,
        "RATE_LIMIT_DEFAULT": "1000000/second", "RATE_LIMIT_PER_IP": "1000000/second",
        "LOG_LEVEL": "WARNING", "LOG_FORMAT": "json", "WEB_CONCURRENCY": str(web_concurrency),
        "REDIS_KEY_PREFIX": f"bench{uuid.uuid4().hex[:6]}:",
    })
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env


def stack(tmp: Path, env: dict, tag: str, loglevel: str = "WARNING"):
    """An ObserverStack (not started) logging into ``tmp``; workers without mingle/gossip."""
    from toolkit.observer import ObserverStack

    return ObserverStack(tmp, env, tag=tag,
                         worker_args=("--loglevel", loglevel, "--without-mingle", "--without-gossip"))


def create_key(database_url: str, project: str = "bench") -> str:
    from app.keys.store import KeyStore

    _id, key = KeyStore(database_url).create(project)
    return key


# --------------------------------------------------------------------------- CPU accounting

class CpuMeter:
    """CPU seconds (user+sys) of named process trees, sampled with psutil."""

    def __init__(self) -> None:
        self.roots: dict[str, int] = {}
        self.single: set[str] = set()

    def add(self, name: str, pid: Optional[int], tree: bool = True) -> None:
        """Measure ``pid`` with its descendants (``tree``) or alone."""
        if pid:
            self.roots[name] = pid
            if not tree:
                self.single.add(name)

    def sample(self) -> dict[str, float]:
        import psutil

        out: dict[str, float] = {}
        for name, pid in self.roots.items():
            total = 0.0
            try:
                root = psutil.Process(pid)
                procs = [root] if name in self.single else [root] + root.children(recursive=True)
            except psutil.NoSuchProcess:
                procs = []
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
                    if name not in self.single:
                        total += getattr(t, "children_user", 0) + getattr(t, "children_system", 0)
            out[name] = total
        return out

    @staticmethod
    def delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        return {k: b.get(k, 0.0) - a.get(k, 0.0) for k in b}


def cpu_line(delta: dict[str, float], wall: float) -> str:
    """'web 95% redis 12% ...' as percent of one core over ``wall`` seconds (200% = both cores)."""
    parts = sorted(delta.items(), key=lambda kv: -kv[1])
    return "  ".join(f"{k} {100 * v / wall:.0f}%" for k, v in parts if wall > 0)


# --------------------------------------------------------------------------- load generation

_EVENT_TMPL = ('{"event_id":"%s","type":"click","timestamp":%d,"session_id":"%s",'
               '"url":"https://shop.test/cart?item=%d","metadata":{"button":"buy","price":12.5,"n":%d}}')


def make_body(session_id: str, n: int, gz: bool = False, seq: int = 0) -> bytes:
    """A POST /v1/events body of ``n`` fresh events in one session (cheap string templating)."""
    now = int(time.time() * 1000)
    events = ",".join(_EVENT_TMPL % (uuid.uuid4(), now, session_id, seq, i) for i in range(n))
    body = ('{"events":[' + events + ']}').encode()
    return gzip.compress(body, 1) if gz else body


def _client_proc(conn_ids: list[int], cfg: dict, start_at: float, out_q) -> None:
    """One load process: one thread per keep-alive connection, posting until the deadline."""
    t_cpu0 = os.times()
    lat: list[float] = []
    statuses: dict[str, int] = {}
    events_ok = [0]
    samples: dict[str, str] = {}
    lock = threading.Lock()
    deadline = start_at + cfg["seconds"]
    max_requests = cfg["max_requests"]

    def run(cid: int) -> None:
        my_lat: list[float] = []
        my_status: dict[str, int] = {}
        my_sample: dict[str, str] = {}
        ok_events = 0
        conn = None
        headers = {"Authorization": f"Bearer {cfg['key']}", "Content-Type": "application/json"}
        if cfg["gzip"]:
            headers["Content-Encoding"] = "gzip"
        sid = f"{cfg['run']}-c{cid}"
        seq = 0
        while time.time() < start_at:
            time.sleep(0.005)
        while time.time() < deadline and seq < max_requests:
            seq += 1
            body = make_body(f"{sid}-{seq % 50}", cfg["batch"], cfg["gzip"], seq)
            t0 = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", cfg["port"], timeout=30)
                conn.request("POST", "/v1/events", body=body, headers=headers)
                r = conn.getresponse()
                answer = r.read()
                status = str(r.status)
                if r.status != 202 and status not in my_sample:
                    my_sample[status] = answer[:300].decode(errors="replace")
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
                if conn is not None:
                    conn.close()
                conn = None
            my_lat.append(time.perf_counter() - t0)
            my_status[status] = my_status.get(status, 0) + 1
            if status == "202":
                ok_events += cfg["batch"]
        if conn is not None:
            conn.close()
        with lock:
            lat.extend(my_lat)
            for k, v in my_status.items():
                statuses[k] = statuses.get(k, 0) + v
            events_ok[0] += ok_events
            for k, v in my_sample.items():
                samples.setdefault(k, v)

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in conn_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=cfg["seconds"] + 60)
    t_cpu1 = os.times()
    cpu = (t_cpu1.user - t_cpu0.user) + (t_cpu1.system - t_cpu0.system)
    out_q.put({"lat": lat, "statuses": statuses, "events": events_ok[0], "cpu": cpu, "samples": samples})


def drive(port: int, key: str, *, seconds: float, batch: int, connections: int, processes: int,
          gz: bool = False, run: str = "r", max_requests: int = 1_000_000) -> dict:
    """Post to /v1/events from ``connections`` keep-alive connections spread over ``processes``
    processes for ``seconds``; returns rates, latency percentiles, statuses and client CPU."""
    processes = max(1, min(processes, connections))
    cfg = {"port": port, "key": key, "seconds": seconds, "batch": batch, "gzip": gz,
           "run": "".join(c if c.isalnum() else "_" for c in run) + "-" + uuid.uuid4().hex[:6], "max_requests": max_requests}
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    start_at = time.time() + 0.3
    groups = [list(range(i, connections, processes)) for i in range(processes)]
    ps = [ctx.Process(target=_client_proc, args=(g, cfg, start_at, q), daemon=True) for g in groups]
    for p in ps:
        p.start()
    results = []
    for _ in ps:
        results.append(q.get(timeout=seconds + 120))
    for p in ps:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
            p.join(5)
    lat = [x for r in results for x in r["lat"]]
    statuses: dict[str, int] = {}
    for r in results:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    ok = statuses.get("202", 0)
    samples: dict[str, str] = {}
    for r in results:
        for k, v in r["samples"].items():
            samples.setdefault(k, v)
    for k, v in samples.items():
        log(f"{run}: first {k} answer: {v}")
    events = sum(r["events"] for r in results)
    return {
        "requests": len(lat), "ok": ok, "rps": ok / seconds, "eps": events / seconds,
        "p50": pct(lat, 50) * 1000, "p95": pct(lat, 95) * 1000, "p99": pct(lat, 99) * 1000,
        "errors": {k: v for k, v in statuses.items() if k != "202"},
        "client_cpu": sum(r["cpu"] for r in results), "seconds": seconds,
    }


def post_json(conn: http.client.HTTPConnection, key: str, body: bytes) -> int:
    conn.request("POST", "/v1/events", body=body,
                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    return r.status


def scrape_metrics(port: int) -> dict[str, float]:
    """Prometheus text from the web's /metrics as {'name{labels}': value} (sums over processes)."""
    try:
        status, body = http_get(port, "/metrics", timeout=10)
    except OSError:
        return {}
    if status != 200:
        return {}
    out: dict[str, float] = {}
    for line in body.decode(errors="replace").splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = out.get(name, 0.0) + float(value)
    return out


def jdump(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def redis_llen(url: str, name: str) -> int:
    import redis as redis_lib

    try:
        return int(redis_lib.Redis.from_url(url, socket_timeout=3).llen(name))
    except Exception:
        return -1
