"""The README says what the code does: its settings and metrics tables are the generated ones
(names, defaults, types, meanings; metric types and labels), its process-level defaults are the
Procfile's and gunicorn.conf.py's, its Procfile block is the Procfile."""
from __future__ import annotations

import re
import sys

from tests.deploy.deploykit import ROOT

sys.path.insert(0, str(ROOT / "scripts"))  # settings_table is a script (tests/conftest.py does the same)
from settings_table import metrics_markdown, settings_markdown  # noqa: E402

README = (ROOT / "README.md").read_text()
FIX = "run `python scripts/update_readme_settings.py`"


def _table_after(marker: str) -> str:
    start = README.index(marker) + len(marker)
    lines = README[start:].lstrip("\n").splitlines()
    out = []
    for line in lines:
        if not line.startswith("|"):
            break
        out.append(line)
    return "\n".join(out) + "\n"


def test_settings_table_is_the_code():
    assert _table_after("`python scripts/settings_table.py` prints it:") == settings_markdown(), FIX


def test_metrics_table_is_the_code():
    assert _table_after("`python scripts/settings_table.py --metrics` prints it:") == metrics_markdown(), FIX


def _process_table() -> dict[str, str]:
    table = _table_after("Process-level variables (read by `gunicorn.conf.py`, the Procfile and the tools):")
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1]
    return rows


def test_process_level_defaults_are_the_procfiles_and_gunicorns():
    rows = _process_table()
    code = dict(re.findall(r"\$\{(\w+):-([^}]*)\}", (ROOT / "Procfile").read_text()))
    code.update(re.findall(r"os\.environ\.get\('(\w+)', '([^']*)'\)", (ROOT / "gunicorn.conf.py").read_text()))
    code.update(re.findall(r'os\.environ\.get\("(\w+)", "([^"]*)"\)', (ROOT / "gunicorn.conf.py").read_text()))
    assert {"EVENTS_CONCURRENCY", "EVENTS_PREFETCH", "SESSIONS_CONCURRENCY", "FORWARD_CONCURRENCY",
            "FLOWER_PORT", "BEAT_SCHEDULE_FILE", "HOST", "WEB_CONCURRENCY", "WEB_THREADS",
            "WEB_GRACEFUL_TIMEOUT"} <= set(code)
    from app.settings import SPEC

    for name, default in code.items():
        if name in SPEC:  # an app setting (PORT): its default is the settings table's
            assert SPEC[name][0] == default, (name, default)
            continue
        assert name in rows, f"{name} (default {default}) is not in the README's process-level table"
        assert rows[name] == f"`{default}`", (name, rows[name], default)


def test_procfile_block_is_the_procfile():
    block = README[README.index("`Procfile` (honcho, foreman, Heroku-style platforms):"):]
    block = block[block.index("```\n") + 4:]
    block = block[:block.index("```")]
    shown = [re.sub(r":\s+", ": ", line, count=1) for line in block.strip().splitlines()]
    procfile = [line for line in (ROOT / "Procfile").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert shown == procfile


def test_install_instructions_name_nothing_unpublished():
    sdk_readme = (ROOT / "sdk" / "README.md").read_text()
    for text in (README, sdk_readme):
        assert not re.search(r"npm (install|i|add) observer-sdk\b", text)
        assert "npm pack" in text
    assert "pk_live_" not in sdk_readme and "obs_pk_" in sdk_readme
