"""Every lock installs into an empty virtualenv exactly as the Makefile installs it.

``--require-hashes --no-deps`` then ``pip check`` (devtools.locks): pip resolves nothing itself, so
the install depends on the lock alone and a lock that misses a dependency fails at once. The
negative case removes one dependency from a real lock and shows the same install failing.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devtools import locks

ROOT = Path(__file__).resolve().parents[2]
REQ = ROOT / "requirements"


def _venv(tmp_path: Path) -> str:
    """A fresh, empty virtualenv; returns its interpreter."""
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True, timeout=120)
    return str(tmp_path / "venv" / "bin" / "python")


def _install(python: str, lock: Path) -> None:
    # --no-compile: what is checked is which distributions a lock installs, not their bytecode
    r = subprocess.run([python, "-m", "pip", *locks.install_args(str(lock), compile_bytecode=False)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.parametrize("name", ["local.txt", "dev.txt", "chdb.txt"], ids=["local", "dev", "chdb"])
def test_each_lock_installs_alone_and_is_complete(tmp_path, name):
    """The Makefile installs chdb.txt beside local.txt or dev.txt; each is checked alone here, so
    chDB's 530 MB are written once, not once per lock that goes with it."""
    python = _venv(tmp_path)
    _install(python, REQ / name)
    assert locks.check(python) == []


def test_the_runtime_lock_is_complete_and_fails_with_one_line_removed(tmp_path):
    """runtime.txt without vine (kombu's and celery's dependency): the install itself succeeds
    (--no-deps), and the check names what is missing. Then the whole lock into the same venv adds
    only the missing line, and the check passes: the runtime lock's set is complete (one venv for
    both halves: the runtime lock is also installed by tests/deploy/test_runtime_venv.py)."""
    text = (REQ / "runtime.txt").read_text()
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("vine=="))
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith((" ", "\t")))
    broken = tmp_path / "runtime-without-vine.txt"
    broken.write_text("".join(lines[:start] + lines[end:]))
    assert "vine==" not in broken.read_text()
    python = _venv(tmp_path)
    _install(python, broken)
    found = locks.check(python)
    assert any("requires vine, which is not installed" in line for line in found), found
    r = subprocess.run([python, "-m", "devtools.locks", "check"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and "requires vine" in r.stderr

    _install(python, REQ / "runtime.txt")
    assert locks.check(python) == []
    r = subprocess.run([python, "-c", "import vine, kombu, celery"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_only_chdbs_unused_dataframe_dependencies_are_allowed_missing():
    out = ("chdb-core 26.9.0 requires pandas, which is not installed.\n"
           "chdb-core 26.9.0 requires pyarrow, which is not installed.\n"
           "kombu 5.7.0 requires vine, which is not installed.\n"
           "celery 5.6.3 has requirement click<9,>=8.1.2, but you have click 7.0.\n")
    assert locks.problems(out) == ["kombu 5.7.0 requires vine, which is not installed.",
                                   "celery 5.6.3 has requirement click<9,>=8.1.2, but you have click 7.0."]
    assert locks.problems("No broken requirements found.\n") == []
