"""Lua scripts live as ``.lua`` files beside the module that runs them; this reads them once."""
from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def load(anchor_file: str, name: str) -> str:
    """The source of ``<name>.lua`` in the folder of ``anchor_file`` (pass ``__file__``)."""
    return Path(anchor_file).with_name(name + ".lua").read_text(encoding="utf-8")
