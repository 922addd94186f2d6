"""ClickHouse: Debian's clickhouse-server (18.16), its config copied so all paths live in one dir."""
from __future__ import annotations

import signal
from pathlib import Path

from devtools.leftovers import stop_leftover
from devtools.net import LOCALHOST, choose_port, free_port, start_retrying_ports
from devtools.proc import Proc
from devtools.servers.clickhouse_config import copy_aux, write_config
from devtools.system import ensure_clickhouse_server


def _select_one(tcp_port: int):
    import logging

    # the driver logs every refused connection with a traceback; while starting that is normal
    logging.getLogger("clickhouse_driver.connection").setLevel(logging.CRITICAL)

    def ready() -> bool:
        from clickhouse_driver import Client

        client = Client(LOCALHOST, port=tcp_port, connect_timeout=1, send_receive_timeout=2)
        try:
            return client.execute("SELECT 1") == [(1,)]
        finally:
            client.disconnect()
    return ready


def start_clickhouse_server(dir: Path, tcp_port: int | None = None,
                            http_port: int | None = None, *, strict_port: bool = False,
                            config_source: Path = Path("/etc/clickhouse-server"),
                            timeout: float = 60.0, echo: bool = False) -> Proc:
    """Run clickhouse-server on ``dir``; ready once clickhouse-driver's ``SELECT 1`` answers.

    URL ``clickhouse://default:@127.0.0.1:TCP/default``; ``extra['http_port']``. ``stop()``
    then ``restart()`` bring it back on the same ports and data.
    """
    argv0 = ensure_clickhouse_server()
    dir = Path(dir).resolve()
    for sub in ("data", "log", "run"):
        (dir / sub).mkdir(parents=True, exist_ok=True)
    pid_file = dir / "clickhouse-server.pid"
    stop_leftover(pid_file, str(dir / "config.xml"))
    copy_aux(dir, Path(config_source))
    def build(first: bool) -> Proc:
        tp = choose_port(tcp_port if first else None, strict_port, "clickhouse tcp")
        hp = choose_port(http_port if first else None, strict_port, "clickhouse http")
        if hp == tp:
            hp = free_port()
        config = write_config(dir, tp, hp, Path(config_source))
        return Proc("clickhouse", argv0 + [f"--config-file={config}"], cwd=dir,
                    log_path=dir / "clickhouse-server.out", ready=_select_one(tp),
                    ready_timeout=timeout, stop_signals=((signal.SIGTERM, 20.0),),
                    url=f"clickhouse://default:@{LOCALHOST}:{tp}/default", port=tp, dir=dir,
                    pid_file=pid_file, echo=echo,
                    extra={"http_port": hp, "http_url": f"http://{LOCALHOST}:{hp}/",
                           "config": config, "binary": argv0, "ports": (hp,)})
    return start_retrying_ports(build, strict=strict_port)
