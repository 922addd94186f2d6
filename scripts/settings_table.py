"""Print the README's configuration table from app.settings.SPEC (the one source of truth)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.settings import settings_table  # noqa: E402

print("| variable | default | meaning |")
print("|---|---|---|")
for name, default, doc in settings_table():
    shown = f"`{default}`" if default not in ("",) else "(empty)"
    if name in ("CELERY_BROKER_URL", "SESSIONS_REDIS_URL", "RATELIMIT_REDIS_URL"):
        shown = "`REDIS_URL`"
    print(f"| `{name}` | {shown} | {doc} |")
