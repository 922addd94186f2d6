"""Reading the deployment files as Docker would, without a Docker engine.

``compose_services`` loads docker-compose.yml with its anchors and merge keys and interpolates
``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}`` the way Compose does;
``docker_context`` lists the files a ``docker build .`` would send, by .dockerignore's rules
(Go ``filepath.Match`` patterns, ``**``, a directory excludes what is under it, ``!`` re-includes).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("migrate", "web", "worker_events", "worker_sessions", "worker_forward",
                "worker_maintenance", "beat", "flower")
WORKERS = ("worker_events", "worker_sessions", "worker_forward", "worker_maintenance")
_VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$\$")


class MissingVariable(ValueError):
    """A ``${VAR:?message}`` whose variable is unset or empty."""


def interpolate(value, env: dict):
    """Compose's variable substitution, applied to every string of ``value``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        have = env.get(name)
        if op in (":-", "-"):
            return have if (have if op == ":-" else have is not None) else arg
        if op in (":?", "?"):
            if not have if op == ":?" else have is None:
                raise MissingVariable(f"{name}: {arg}")
            return have
        return have or ""
    return _VAR.sub(sub, value)


def compose_file() -> dict:
    """docker-compose.yml as YAML (anchors and ``<<`` merges resolved), not interpolated."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def compose_services(env: dict) -> dict[str, dict]:
    """Every service of docker-compose.yml, interpolated with ``env``."""
    return interpolate(compose_file()["services"], env)


def _patterns() -> list[tuple[bool, str]]:
    out = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        out.append((negate, pattern))
    return out


def _segment(glob: str) -> str:
    """One path segment of a Go filepath.Match pattern as a regex (``*`` and ``?`` stop at /)."""
    out, i = "", 0
    while i < len(glob):
        c = glob[i]
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[" and "]" in glob[i + 1:]:
            j = glob.index("]", i + 1)
            out += "[" + glob[i + 1:j].replace("!", "^", 1) + "]"
            i = j
        else:
            out += re.escape(c)
        i += 1
    return out


def _match(pattern: str, path: str) -> bool:
    """Docker's rule: the pattern matches the path or one of its parent directories."""
    regex = "/".join(".*" if part == "**" else _segment(part) for part in pattern.split("/"))
    regex = "^" + regex.replace(".*/", "(?:.*/)?") + "$"
    segments = path.split("/")
    return any(re.match(regex, "/".join(segments[:i])) for i in range(1, len(segments) + 1))


def ignored(path: str, patterns: list[tuple[bool, str]] | None = None) -> bool:
    """True when .dockerignore keeps ``path`` (relative, with /) out of the build context."""
    out = False
    for negate, pattern in patterns if patterns is not None else _patterns():
        if _match(pattern, path):
            out = not negate
    return out


def docker_context() -> list[str]:
    """Relative paths of the files ``docker build .`` sends from this checkout."""
    patterns = _patterns()
    files = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = os.path.relpath(dirpath, ROOT)
        rel_dir = "" if rel_dir == "." else rel_dir
        # Docker still walks an excluded directory when a "!" pattern could re-include below it;
        # here the only "!" patterns re-include files of a directory that is itself walked.
        dirnames[:] = [d for d in dirnames if not ignored(f"{rel_dir}/{d}".lstrip("/"), patterns)]
        files += [f"{rel_dir}/{f}".lstrip("/") for f in filenames
                  if not ignored(f"{rel_dir}/{f}".lstrip("/"), patterns)]
    return sorted(files)


def local_argv(argv: list[str], tmp: Path, name: str, ports: dict) -> list[str]:
    """Container paths under /tmp and listening addresses rewritten for this host."""
    out = []
    for arg in argv:
        if arg.startswith("/tmp/"):  # noqa: S108 -- a container path to rewrite; nothing is created there
            arg = str(tmp / f"{name}-{arg[5:]}")
        elif arg.startswith("--port="):
            arg = f"--port={ports[name]}"
        out.append(arg)
    if "--port" in out:
        out[out.index("--port") + 1] = str(ports[name])
    if "--host" in out:
        out[out.index("--host") + 1] = "127.0.0.1"
    if name == "flower":
        out.append("--address=127.0.0.1")
    return out

