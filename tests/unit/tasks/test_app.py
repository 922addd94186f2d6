"""The Celery app reads no setting at import; a bad one stops the process, naming the variable."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CHECK = """
import tasks.app, tasks.events, tasks.sessions, tasks.forward, tasks.maintenance
print("imported", flush=True)
from tasks.app import celery
print(celery.conf.broker_url)
"""


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "empty.env").write_text("")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "REDIS_", "OBSERVER_"))}
    base.update(OBSERVER_ENV_FILE=str(tmp_path / "empty.env"), PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, env=base, capture_output=True, text=True,
                          timeout=60)


def test_task_modules_import_without_settings_and_a_bad_one_stops_the_process(tmp_path):
    bad = _run(tmp_path, REDIS_URL="nonsense://x")
    assert bad.stdout.startswith("imported"), bad.stderr[-2000:]
    assert bad.returncode != 0 and "REDIS_URL: expected a URL" in bad.stderr, bad.stderr[-2000:]
    good = _run(tmp_path, CELERY_BROKER_URL="redis://127.0.0.1:1/3")
    assert good.returncode == 0 and good.stdout.split() == ["imported", "redis://127.0.0.1:1/3"], good.stderr[-2000:]
