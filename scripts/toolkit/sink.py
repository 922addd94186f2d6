"""The UFSE sink (scripts/ufse_sink.py) as a separate process, ready when /_received answers."""
from __future__ import annotations

import sys
from pathlib import Path

from toolkit import checks
from toolkit.proc import Proc

SINK = Path(__file__).resolve().parents[1] / "ufse_sink.py"


def sink_proc(port: int, secret: str, log_dir: Path, env: dict, *, echo: bool = False,
              quiet: bool = False) -> Proc:
    """A Proc (not started) running the sink on 127.0.0.1:port, verifying with ``secret``."""
    argv = [sys.executable, SINK, "--port", port, "--secret", secret] + (["--quiet"] if quiet else [])
    return Proc("sink", argv, env=env, cwd=log_dir, log_path=Path(log_dir) / "sink.log",
                ready=checks.http_answers(f"http://127.0.0.1:{port}/_received"), echo=echo,
                url=f"http://127.0.0.1:{port}/ufse", port=port, stop_signals=((15, 10.0),))
