"""Rewrite the configuration table in README.md from app.settings.SPEC."""
import re
import subprocess
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]
table = subprocess.run([sys.executable, str(root / "scripts/settings_table.py")], capture_output=True, text=True, check=True).stdout
readme = (root / "README.md").read_text()
new = re.sub(r"(\(`python scripts/settings_table.py`\):\n\n)(\|.*?\n)+", lambda m: m.group(1) + table, readme, count=1, flags=re.S)
(root / "README.md").write_text(new)
print("README configuration table updated" if new != readme else "README already current")
