"""Console output of supervised processes: one line each, prefixed by time and process name."""
from __future__ import annotations

import json
import re
import sys
import threading
import time

_COLORS = ["36", "33", "32", "35", "34", "96", "93", "92", "95", "94"]
_lock = threading.Lock()
_colors: dict[str, str] = {}
_width = [9]
_SERIOUS = ("warning", "warn", "error", "critical", "fatal")
# Warnings and errors in the other formats the stack prints: gunicorn "[ERROR]", Celery's plain
# "[...: WARNING/MainProcess]", the app's text format "... ERROR logger:", Tornado/Flower
# "[W 261207 ...", Python's warnings ("...: SecurityWarning: ...") and tracebacks.
_SERIOUS_TEXT = re.compile(
    r"\[(WARNING|ERROR|CRITICAL)\]|: (WARNING|ERROR|CRITICAL)/| (WARNING|ERROR|CRITICAL) [\w.]+: "
    r"|^\[[WEC] \d{6} |\b\w*Warning: |^Traceback \(most recent call last\)|^  File \""
    r"|^[\w.]*(Error|Exception|Exit)(: |$)")


def important(line: str) -> bool:
    """True for a warning or an error (what `make run` shows; the rest stays in the log file)."""
    if line.startswith("{"):
        try:
            level = json.loads(line).get("level")
        except (ValueError, AttributeError):
            level = None
        if isinstance(level, str):
            return level.lower() in _SERIOUS
    return bool(_SERIOUS_TEXT.search(line))


def emit(name: str, line: str, color: str | None = None) -> None:
    """Print ``HH:MM:SS name | line`` (coloured per name on a terminal)."""
    with _lock:
        _width[0] = max(_width[0], len(name))
        if color is None:
            color = _colors.setdefault(name, _COLORS[len(_colors) % len(_COLORS)])
        prefix = f"{time.strftime('%H:%M:%S')} {name:<{_width[0]}} | "
        if sys.stdout.isatty():
            prefix = f"\033[{color}m{prefix}\033[0m"
        try:
            sys.stdout.write(prefix + line + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):  # stdout piped into `head` or closed: keep going
            pass


def note(msg: str) -> None:
    """A message of the toolkit itself, on stderr."""
    print(f"[toolkit] {msg}", file=sys.stderr, flush=True)
