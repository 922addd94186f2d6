"""The documents say what the code does: docs/CONFIGURATION.md's settings and metrics tables are the
generated ones (names, defaults, types, meanings; metric types and labels) and its process-level
defaults are the Procfile's and gunicorn.conf.py's; docs/OPERATIONS.md's Procfile block is the
Procfile; the README's first settings carry the code's defaults."""
from __future__ import annotations

import re

from devtools.settings_table import metrics_markdown, settings_markdown
from tests.deploy.deploykit import ROOT

README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "CONFIGURATION.md").read_text()
OPERATIONS = (ROOT / "docs" / "OPERATIONS.md").read_text()
FIX = "run `python -m devtools.settings_table --write`"


def _table_after(marker: str, text: str = CONFIGURATION) -> str:
    start = text.index(marker) + len(marker)
    lines = text[start:].lstrip("\n").splitlines()
    out = []
    for line in lines:
        if not line.startswith("|"):
            break
        out.append(line)
    return "\n".join(out) + "\n"


def test_settings_table_is_the_code():
    assert _table_after("`python -m devtools.settings_table` prints it:") == settings_markdown(), FIX


def test_metrics_table_is_the_code():
    assert _table_after("`python -m devtools.settings_table --metrics` prints it:") == metrics_markdown(), FIX


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
        assert name in rows, f"{name} (default {default}) is not in docs/CONFIGURATION.md's process-level table"
        assert rows[name] == f"`{default}`", (name, rows[name], default)


def test_procfile_block_is_the_procfile():
    block = OPERATIONS[OPERATIONS.index("`Procfile` (honcho, foreman; every process runs until stopped, "
                                    "the release step runs before them):"):]
    block = block[block.index("```\n") + 4:]
    block = block[:block.index("```")]
    shown = [re.sub(r":\s+", ": ", line, count=1) for line in block.strip().splitlines()]
    procfile = [line for line in (ROOT / "Procfile").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert shown == procfile


def test_readme_first_settings_are_the_code():
    """The README's short configuration table: every row a real setting, with the code's default."""
    from app.settings import SPEC
    from devtools.settings_table import settings_rows

    shown = {name: default for name, default, _type, _meaning in settings_rows()}
    table = _table_after("The settings to set first:", README)
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    assert rows
    for cells in rows:
        name = cells[0].strip("`")
        assert name in SPEC, f"README names {name}, which is not a setting"
        assert cells[1] == shown[name], (name, cells[1], shown[name])


def test_install_instructions_name_nothing_unpublished():
    sdk_readme = (ROOT / "sdk" / "README.md").read_text()
    for text in (README, sdk_readme):
        assert not re.search(r"npm (install|i|add) observer-sdk\b", text)
        assert "npm pack" in text
    assert "pk_live_" not in sdk_readme and "obs_pk_" in sdk_readme
