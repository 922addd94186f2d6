"""The configuration and metrics tables of docs/CONFIGURATION.md, generated from the code (the one
source of truth).

``python -m devtools.settings_table`` prints the settings table (from ``app.settings.SPEC``:
name, default, type, meaning); ``--metrics`` prints the metrics table (from the metric objects
of ``app.observability.metrics``: name, type, labels, help); ``--write`` (alias ``--write-readme``)
writes both into docs/CONFIGURATION.md, and ``tests/deploy/test_readme_tables.py`` keeps them equal.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from app.settings import DERIVED, SPEC, ConfigError, Settings

FROM_REDIS_URL = ("CELERY_BROKER_URL", "SESSIONS_REDIS_URL", "RATELIMIT_REDIS_URL")


def _refusal(name: str, parse, probe: str) -> str:
    """What the parser says about a value it refuses ('' when it takes it)."""
    try:
        parse(name, probe)
    except ConfigError as exc:
        return str(exc).split(": ", 1)[1]
    return ""


def value_type(name: str, default: str | None, parse) -> str:
    """The setting's type as its parser defines it (the parsed default, and the parser's own
    words for a value it refuses: minimums, URL schemes, choices)."""
    value = parse(name, default if default is not None else "redis://127.0.0.1:6379/0")
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        minimum = re.search(r"must be >= (\S+),", _refusal(name, parse, "-1"))
        kind = "integer" if isinstance(value, int) else "number"
        return f"{kind} >= {minimum.group(1)}" if minimum else kind
    if isinstance(value, tuple):
        item = parse(name, "1") if _refusal(name, parse, "1") == "" else ()
        return "comma-separated numbers" if item and isinstance(item[0], float) else "comma-separated list"
    said = _refusal(name, parse, "no-such-value")
    if said.startswith("expected a URL with scheme"):
        return "URL: " + said.split("scheme ", 1)[1].split(",")[0]
    if said.startswith("expected one of"):
        return "one of " + said[len("expected one of "):].split(", got")[0]
    if said.startswith("expected a rate"):
        return "rate (N/second, N/minute...)"
    return "string"


def settings_rows() -> list[tuple[str, str, str, str]]:
    """(name, default as shown, type, meaning) for every setting, in SPEC order."""
    rows = []
    for name, (default, parse, doc) in SPEC.items():
        shown = "`REDIS_URL`" if name in FROM_REDIS_URL else (f"`{default}`" if default else "(empty)")
        rows.append((name, shown, value_type(name, default, parse), doc))
    for name, rule in DERIVED.items():  # implied by the settings above: shown, never set
        doc = " ".join((getattr(Settings, name.lower()).__doc__ or "").split())
        rows.append((name, f"= {rule}", "derived", f"not settable: {doc}"))
    return rows


def settings_markdown() -> str:
    """The settings table as Markdown."""
    lines = ["| variable | default | type | meaning |", "|---|---|---|---|"]
    lines += [f"| `{n}` | {d} | {t} | {m} |" for n, d, t, m in settings_rows()]
    return "\n".join(lines) + "\n"


def metrics_rows() -> list[tuple[str, str, str, str]]:
    """(exposed name, type, labels, help) of every metric defined in app.observability.metrics."""
    from prometheus_client.metrics import MetricWrapperBase

    from app.observability import metrics

    rows = []
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            name = obj._name + ("_total" if obj._type == "counter" else "")
            rows.append((name, obj._type, ", ".join(obj._labelnames), obj._documentation))
    return rows


def metrics_markdown() -> str:
    """The metrics table as Markdown."""
    lines = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    lines += [f"| `{n}` | {t} | {('`' + labels + '`') if labels else ''} | {doc} |"
              for n, t, labels, doc in metrics_rows()]
    return "\n".join(lines) + "\n"


MARKERS = (("`python -m devtools.settings_table` prints it:\n\n", settings_markdown),
           ("`python -m devtools.settings_table --metrics` prints it:\n\n", metrics_markdown))


TABLES_FILE = Path("docs") / "CONFIGURATION.md"  # relative to the repository root


def write_tables(path: Path) -> bool:
    """Rewrite the file's two tables from the code; True when something changed."""
    text = path.read_text()
    new = text
    for marker, table in MARKERS:
        if marker not in new:
            raise SystemExit(f"{path}: no table introduced by {marker.strip()!r}")
        replacement = marker + table()  # a function below, so backslashes are not read as escapes
        new = re.sub(re.escape(marker) + r"(\|.*?\n)+", lambda _m, r=replacement: r, new, count=1, flags=re.S)
    if new != text:
        path.write_text(new)
    return new != text



if __name__ == "__main__":
    if sys.argv[1:] in (["--write"], ["--write-readme"]):
        from devtools import ROOT

        print(f"{TABLES_FILE} tables updated" if write_tables(ROOT / TABLES_FILE) else f"{TABLES_FILE} already current")
    else:
        print(metrics_markdown() if sys.argv[1:] == ["--metrics"] else settings_markdown(), end="")
