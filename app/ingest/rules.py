"""The one set of privacy rules, ``privacy_rules.json``: the SDK's build and tests read the same file."""

from __future__ import annotations

import json
from pathlib import Path

RULES = json.loads((Path(__file__).with_name("privacy_rules.json")).read_text(encoding="utf-8"))
MASKS = RULES["masks"]
