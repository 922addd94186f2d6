"""ZooKeeper: Debian's zookeeper 3.8 (Java) as one standalone server on 127.0.0.1.

Its own data dir and config (``zoo.cfg`` in ``dir``), a free client port, no admin server
(``admin.enableServer=false``: it binds 8080 otherwise) and no JMX port. Ready once it answers
the ``srvr`` four-letter word with its mode: a client can connect then. ``stop()`` and
``restart()`` keep the port and the data (what a ZooKeeper outage test needs).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
from pathlib import Path

from devtools.leftovers import stop_leftover
from devtools.net import LOCALHOST, choose_port, start_retrying_ports
from devtools.proc import Proc

ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")  # its manifest names every dependency
MAIN_CLASS = "org.apache.zookeeper.server.ZooKeeperServerMain"  # standalone: no quorum ports


def find_java() -> str | None:
    """A java binary (Debian's zookeeper package depends on a JRE)."""
    return shutil.which("java") or (os.access("/usr/bin/java", os.X_OK) and "/usr/bin/java") or None


def ensure_zookeeper() -> str:
    """The java binary, or an error saying to install Debian's zookeeper (3.8)."""
    from devtools.system import require_debian_package

    java = find_java()
    require_debian_package(ZOOKEEPER_JAR.exists() and java is not None, "zookeeper", "the ClickHouse cluster")
    return java


def four_letter(port: int, word: str = "srvr", host: str = LOCALHOST, timeout: float = 1.0) -> str:
    """Send a four-letter word (``ruok``, ``srvr``, ``mntr``) and return the answer."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(word.encode())
        chunks = []
        while True:
            data = s.recv(4096)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode("utf-8", "replace")


def _ready(port: int):
    def ready() -> bool:
        return "Mode: standalone" in four_letter(port)
    return ready


def write_zoo_cfg(dir: Path, port: int, tick_ms: int = 2000) -> Path:
    """zoo.cfg for one standalone server on 127.0.0.1:port with its data under ``dir``."""
    cfg = dir / "zoo.cfg"
    cfg.write_text("\n".join([
        f"tickTime={int(tick_ms)}",
        f"dataDir={dir / 'data'}",
        f"clientPort={int(port)}",
        f"clientPortAddress={LOCALHOST}",
        "admin.enableServer=false",
        "4lw.commands.whitelist=ruok,srvr,mntr",
        "maxClientCnxns=0",
        "",
    ]))
    return cfg


def start_zookeeper(dir: Path, port: int | None = None, *, strict_port: bool = False,
                    heap_mb: int = 128, timeout: float = 60.0, name: str = "zookeeper",
                    echo: bool = False) -> Proc:
    """Run a standalone ZooKeeper on ``dir``; ready once ``srvr`` answers.

    URL ``zk://127.0.0.1:PORT``; ``extra['config']`` is the zoo.cfg. A small serial-GC heap:
    a test ensemble holds a few thousand znodes.
    """
    java = ensure_zookeeper()
    dir = Path(dir).resolve()
    (dir / "data").mkdir(parents=True, exist_ok=True)
    pid_file = dir / "zookeeper.pid"
    stop_leftover(pid_file, str(dir / "zoo.cfg"))
    def build(first: bool) -> Proc:
        chosen = choose_port(port if first else None, strict_port, name)
        cfg = write_zoo_cfg(dir, chosen)
        # ZooKeeperServerMain logs through slf4j, which has no binding here: the log file
        # only holds the JVM's own messages (the four-letter words tell the state).
        argv = [java, f"-Xmx{int(heap_mb)}m", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
                "-Dzookeeper.admin.enableServer=false", "-cp", f"{dir}:{ZOOKEEPER_JAR}", MAIN_CLASS, cfg]
        return Proc(name, argv, cwd=dir, log_path=dir / "zookeeper.out", ready=_ready(chosen),
                    ready_timeout=timeout, stop_signals=((signal.SIGTERM, 10.0),), url=f"zk://{LOCALHOST}:{chosen}",
                    port=chosen, dir=dir, pid_file=pid_file, echo=echo, extra={"config": cfg, "java": java})
    return start_retrying_ports(build, strict=strict_port)

