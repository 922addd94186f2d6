"""Install a hashed lock exactly as written, then prove it is complete with ``pip check``.

``--require-hashes --no-deps``: pip installs the lock's lines and resolves nothing itself. Without
``--no-deps`` a dependency required with an extra (pytest-cov's ``coverage[toml]``) is resolved
again by pip, to whatever release is newest that day, and refused under ``--require-hashes``: the
install then breaks on the day a release appears, not on the day the lock was written. With it, a
lock that misses a dependency installs "fine" and ``pip check`` is what fails, at once.

Usage: ``python -m devtools.locks check [PYTHON]`` (the venv's interpreter; default this one).
"""
from __future__ import annotations

import re
import subprocess
import sys

# Requirements left out on purpose: chdb-core's metadata asks for pandas and pyarrow (~860 MB)
# for its DataFrame output, which Observer never uses (plain SQL works without them).
ALLOWED_MISSING = {("chdb-core", "pandas"), ("chdb-core", "pyarrow")}
_MISSING = re.compile(r"^(\S+) \S+ requires (\S+?),? which is not installed\.$")


def install_args(lock: str, *, compile_bytecode: bool = True) -> list[str]:
    """pip's arguments that install ``lock`` exactly: hashed, nothing resolved by pip."""
    return ["install", "-q", "--disable-pip-version-check", "--require-hashes", "--no-deps", "-r", lock,
            *([] if compile_bytecode else ["--no-compile"])]


def problems(pip_check_output: str) -> list[str]:
    """The lines of ``pip check`` that are real problems (allowed omissions filtered out)."""
    out = []
    for line in pip_check_output.splitlines():
        line = line.strip()
        if not line or line.startswith("No broken requirements"):
            continue
        m = _MISSING.match(line)
        if m and (m.group(1).lower(), m.group(2).lower()) in ALLOWED_MISSING:
            continue
        out.append(line)
    return out


def check(python: str = sys.executable) -> list[str]:
    """Run ``pip check`` in ``python``'s environment; return its real problems."""
    r = subprocess.run([python, "-m", "pip", "check", "--disable-pip-version-check"],
                       capture_output=True, text=True, check=False)
    return problems(r.stdout + r.stderr)


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "check":
        print(__doc__, file=sys.stderr)
        return 2
    found = check(argv[1] if len(argv) > 1 else sys.executable)
    for line in found:
        print(f"pip check: {line}", file=sys.stderr)
    if found:
        print("pip check: the lock misses a dependency; run `make lock` after editing pyproject.toml",
              file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
