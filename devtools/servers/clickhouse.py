"""ClickHouse: Debian's clickhouse-server (18.16), its config copied so all paths live in one dir."""
from __future__ import annotations

import logging
import signal
from pathlib import Path

from devtools.leftovers import stop_leftover
from devtools.net import LOCALHOST, choose_port, free_port, start_retrying_ports
from devtools.proc import Proc
from devtools.servers.clickhouse_config import ClusterNode, copy_aux, write_config
from devtools.system import ensure_clickhouse_server


def _answers(tcp_port: int, sql: str):
    """A readiness check: ``sql`` through clickhouse-driver returns ``[(1,)]``."""
    # the driver logs every refused connection with a traceback; while starting that is normal
    logging.getLogger("clickhouse_driver.connection").setLevel(logging.CRITICAL)

    def ready() -> bool:
        from clickhouse_driver import Client

        client = Client(LOCALHOST, port=tcp_port, connect_timeout=1, send_receive_timeout=3)
        try:
            return client.execute(sql) == [(1,)]
        finally:
            client.disconnect()
    return ready


def clickhouse_proc(dir: Path, name: str, tcp: int, http: int, config_source: Path, *, timeout: float,
                    echo: bool = False, ready_sql: str = "SELECT 1", cluster: ClusterNode | None = None,
                    extra: dict | None = None) -> Proc:
    """A clickhouse-server on ``dir`` (not started): a leftover one on it stopped, its data, log and
    run dirs made, the config copied from ``config_source`` and rewritten for these ports."""
    argv0 = ensure_clickhouse_server()
    for sub in ("data", "log", "run"):
        (dir / sub).mkdir(parents=True, exist_ok=True)
    pid_file = dir / "clickhouse-server.pid"
    stop_leftover(pid_file, str(dir / "config.xml"))
    copy_aux(dir, config_source)
    config = write_config(dir, tcp, http, config_source, cluster=cluster)
    return Proc(name, argv0 + [f"--config-file={config}"], cwd=dir, log_path=dir / "clickhouse-server.out",
                ready=_answers(tcp, ready_sql), ready_timeout=timeout, stop_signals=((signal.SIGTERM, 20.0),),
                url=f"clickhouse://default:@{LOCALHOST}:{tcp}/default", port=tcp, dir=dir, pid_file=pid_file,
                echo=echo, extra={"http_port": http, "http_url": f"http://{LOCALHOST}:{http}/", "config": config,
                                  "binary": argv0, **(extra or {})})


def start_clickhouse_server(dir: Path, tcp_port: int | None = None,
                            http_port: int | None = None, *, strict_port: bool = False,
                            config_source: Path = Path("/etc/clickhouse-server"),
                            timeout: float = 60.0, echo: bool = False) -> Proc:
    """Run clickhouse-server on ``dir``; ready once clickhouse-driver's ``SELECT 1`` answers.

    URL ``clickhouse://default:@127.0.0.1:TCP/default``; ``extra['http_port']``. ``stop()``
    then ``restart()`` bring it back on the same ports and data.
    """
    ensure_clickhouse_server()
    dir = Path(dir).resolve()

    def build(first: bool) -> Proc:
        tp = choose_port(tcp_port if first else None, strict_port, "clickhouse tcp")
        hp = choose_port(http_port if first else None, strict_port, "clickhouse http")
        if hp == tp:
            hp = free_port()
        return clickhouse_proc(dir, "clickhouse", tp, hp, Path(config_source), timeout=timeout, echo=echo,
                               extra={"ports": (hp,)})
    return start_retrying_ports(build, strict=strict_port)
