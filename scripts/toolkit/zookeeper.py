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

from toolkit.leftovers import stop_leftover
from toolkit.net import LOCALHOST, choose_port, port_in_use
from toolkit.proc import Proc, ProcError

ZOOKEEPER_APT_PACKAGE = "zookeeper"
ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")  # its manifest names every dependency
MAIN_CLASS = "org.apache.zookeeper.server.ZooKeeperServerMain"  # standalone: no quorum ports


def find_java() -> str | None:
    """A java binary (Debian's zookeeper package depends on a JRE)."""
    return shutil.which("java") or (os.access("/usr/bin/java", os.X_OK) and "/usr/bin/java") or None


def ensure_zookeeper() -> str:
    """The java binary; installs Debian's zookeeper when root and missing (like clickhouse-server)."""
    from toolkit.system import _apt_install, _is_root

    if not ZOOKEEPER_JAR.exists() and _is_root() and shutil.which("apt-get"):
        _apt_install(ZOOKEEPER_APT_PACKAGE)
    java = find_java()
    if ZOOKEEPER_JAR.exists() and java:
        return java
    raise RuntimeError("ZooKeeper is needed for the ClickHouse cluster and not installed; install it "
                       "with `sudo apt-get install -y zookeeper` (Debian ships 3.8)")


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
    for attempt in range(3):
        chosen = choose_port(port, strict_port, name)
        cfg = write_zoo_cfg(dir, chosen)
        # ZooKeeperServerMain logs through slf4j, which has no binding here: the log file
        # only holds the JVM's own messages (the four-letter words tell the state).
        argv = [java, f"-Xmx{int(heap_mb)}m", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
                "-Dzookeeper.admin.enableServer=false", "-cp", f"{dir}:{ZOOKEEPER_JAR}", MAIN_CLASS, cfg]
        proc = Proc(name, argv, cwd=dir, log_path=dir / "zookeeper.out", ready=_ready(chosen),
                    ready_timeout=timeout, stop_signals=((signal.SIGTERM, 10.0),), url=f"zk://{LOCALHOST}:{chosen}",
                    port=chosen, dir=dir, pid_file=pid_file, echo=echo, extra={"config": cfg, "java": java})
        try:
            return proc.start()
        except ProcError:
            proc.stop(grace=2)
            if strict_port or attempt == 2 or not port_in_use(chosen):
                raise
            port = None  # lost a race for the port: try another
    raise AssertionError("unreachable")

