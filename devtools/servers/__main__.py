#!/usr/bin/env python3
"""Start one real server (Redis, PostgreSQL, ClickHouse) in the foreground; Ctrl-C stops it.

``python -m devtools.servers redis|postgres|clickhouse --dir DIR [--port N]``
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path

from devtools.servers import start_clickhouse_server, start_postgres, start_redis


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
        with contextlib.suppress(BrokenPipeError):  # stdout piped into e.g. `head`: keep serving
            print(text, file=sys.stderr if err else sys.stdout, flush=True)

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
