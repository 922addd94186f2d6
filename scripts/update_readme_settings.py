"""Rewrite the README's configuration and metrics tables from the code (scripts/settings_table.py)."""
import re
from pathlib import Path

from settings_table import metrics_markdown, settings_markdown

root = Path(__file__).resolve().parents[1]
readme = (root / "README.md").read_text()
new = readme
for marker, table in (("`python scripts/settings_table.py` prints it:\n\n", settings_markdown()),
                      ("`python scripts/settings_table.py --metrics` prints it:\n\n", metrics_markdown())):
    if marker not in new:
        raise SystemExit(f"README.md: no table introduced by {marker.strip()!r}")
    replacement = marker + table  # a function, so backslashes in the table are not read as escapes
    new = re.sub(re.escape(marker) + r"(\|.*?\n)+", lambda _m, r=replacement: r, new, count=1, flags=re.S)
(root / "README.md").write_text(new)
print("README tables updated" if new != readme else "README already current")
