"""Lua scripts live beside their module as .lua files, with their KEYS/ARGV contract on top."""
from __future__ import annotations

from pathlib import Path

import app
from app.storage import lua

APP = Path(app.__file__).parent


def test_load_reads_the_file_beside_the_anchor():
    from app.sessions import store

    source = lua.load(store.__file__, "claim")
    assert source == (APP / "sessions" / "claim.lua").read_text(encoding="utf-8")
    assert lua.load(store.__file__, "claim") is source, "read once"


def test_every_script_states_its_contract_and_no_python_module_holds_lua():
    scripts = sorted(APP.rglob("*.lua"))
    assert scripts
    for path in scripts:
        head = path.read_text(encoding="utf-8").splitlines()[0]
        assert head.startswith("-- KEYS:"), f"{path} starts with its KEYS/ARGV comment"
    for module in APP.rglob("*.py"):
        assert "redis.call(" not in module.read_text(encoding="utf-8"), f"Lua source in {module}"
