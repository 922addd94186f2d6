"""The Procfile's command lines, expanded the way a shell would (``${VAR:-default}``)."""
from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

from devtools import ROOT

_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")


def venv_bin() -> Path:
    """The bin directory holding celery/gunicorn/flask (repo .venv, else the running Python's)."""
    venv = ROOT / ".venv" / "bin"
    return venv if (venv / "celery").exists() else Path(sys.executable).parent


def read(path: Path = ROOT / "Procfile") -> dict[str, str]:
    """``{process type: command}`` of a Procfile, parsed by honcho (what an operator runs it with)."""
    from honcho.environ import parse_procfile

    return {name: command.strip() for name, command in parse_procfile(path.read_text()).processes.items()}


def argv(command: str, env: dict) -> list[str]:
    """Expand variables from ``env`` and split; console scripts resolve to the venv's."""
    expanded = _VAR.sub(lambda m: env.get(m.group(1) or m.group(3)) or (m.group(2) or ""), command)
    parts = shlex.split(expanded)
    tool = venv_bin() / parts[0]
    if tool.exists():
        parts[0] = str(tool)
    return parts
