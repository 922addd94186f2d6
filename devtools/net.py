"""Ports on 127.0.0.1 and cheap reachability probes (used for messages, not as readiness)."""
from __future__ import annotations

import os
import socket
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

from devtools import console

LOCALHOST = "127.0.0.1"


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


def choose_port(port: int | None, strict: bool, what: str) -> int:
    if port is None:
        return free_port()
    if port_in_use(port):
        if strict:
            raise RuntimeError(f"{what}: port {port} is already in use")
        new = free_port()
        console.note(f"{what}: port {port} is in use, using {new} instead")
        return new
    return port


class Probe(NamedTuple):
    """``(ok, message)``, truthy only when ok: ``ok, msg = redis_available(url)`` and
    ``if redis_available(url):`` both work."""

    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok


def redis_available(url: str = "redis://127.0.0.1:6379/0", timeout: float = 1.0) -> Probe:
    """PING through redis-py (which sends AUTH first when the URL has a password)."""
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout).ping()
        return Probe(True, f"redis at {urlsplit(url).netloc.rpartition('@')[2]} answers PING")
    except (redis.RedisError, OSError, ValueError) as e:
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


def start_retrying_ports(build, *, strict: bool, grace: float = 2.0):
    """Start the Proc that ``build(first)`` makes; when the start failed because another process
    took one of its ports between choosing and binding it (the race of every "pick a free port"),
    build again on new ports, up to three times. ``first`` is False on a retry: choose anew.
    Ports checked: ``proc.port`` and ``proc.extra["ports"]``."""
    from devtools.proc import ProcError

    for attempt in range(3):
        proc = build(attempt == 0)
        try:
            return proc.start()
        except ProcError:
            proc.stop(grace=grace)
            ports = [proc.port, *proc.extra.get("ports", ())]
            if strict or attempt == 2 or not any(port_in_use(p) for p in ports if p):
                raise
    raise AssertionError("unreachable")
