"""Redis memory by key kind: what an active session costs, and what batch markers cost over time.

A key's *kind* is its name with the variable parts left out: ``obs:s:{b3}:live:proj:sid`` is
``s:live`` (hash tags such as ``{b3}`` and ids dropped), so the figures follow whatever layout
``app/storage/redis.py`` documents today. ``MEMORY USAGE`` of a sample of each kind gives bytes
per key; ``INFO memory`` gives the whole server's ``used_memory`` before and after.

Which kind is the batch marker, and how long it lives, is read from the code at run time
(``app/sessions/store.py``, ``app/settings.py``): both are being changed by the performance work,
and a figure computed from a hard-coded key name would silently measure nothing.
"""
from __future__ import annotations

import random
import re
import statistics
import tempfile
from pathlib import Path

_WORD = re.compile(r"^[a-z][a-z_-]{0,19}$")
_TAG = re.compile(r"^\{[^}]*\}$")


def kind_of(key: str, prefix: str) -> str:
    """``s:live`` for ``{prefix}s:{b3}:live:<project>:<sid>``; ``(other) x`` outside the prefix."""
    if prefix and key.startswith(prefix):
        rest, outside = key[len(prefix):], False
    else:
        rest, outside = key, True
    words = []
    for part in rest.split(":"):
        if _TAG.match(part):
            continue
        if not _WORD.match(part) or len(words) == 2:
            break
        words.append(part)
    name = ":".join(words) or "?"
    return f"(other) {name}" if outside else name


def used_memory(r) -> int:
    return int(r.info("memory")["used_memory"])


def scan_kinds(r, prefix: str, match: str = "*", sample: int = 40, seed: int = 1) -> dict[str, dict]:
    """Keys per kind, with a reservoir sample of each measured: bytes each, TTL, type."""
    rng = random.Random(seed)  # noqa: S311 -- a reproducible sample, not a secret
    counts: dict[str, int] = {}
    picks: dict[str, list[str]] = {}
    for key in r.scan_iter(match=match, count=2000):
        key = key.decode() if isinstance(key, bytes) else key
        k = kind_of(key, prefix)
        n = counts.get(k, 0) + 1
        counts[k] = n
        bucket = picks.setdefault(k, [])
        if len(bucket) < sample:
            bucket.append(key)
        else:
            j = rng.randrange(n)
            if j < sample:
                bucket[j] = key
    out = {}
    for k, keys in picks.items():
        sizes, ttls, types = [], [], set()
        for key in keys:
            size = r.memory_usage(key, samples=0)
            if size is None:  # expired meanwhile
                continue
            sizes.append(int(size))
            ttls.append(int(r.ttl(key)))
            t = r.type(key)
            types.add(t.decode() if isinstance(t, bytes) else t)
        out[k] = {"keys": counts[k], "bytes_each": statistics.mean(sizes) if sizes else float("nan"),
                  "ttl_s": statistics.median(ttls) if ttls else float("nan"), "type": ",".join(sorted(types))}
    return out


def zset_bytes(r) -> tuple[int, int]:
    """(members, bytes) over every sorted set (the shared idle indexes and outboxes)."""
    members = size = 0
    for key in r.scan_iter(count=2000, _type="zset"):
        members += int(r.zcard(key))
        size += int(r.memory_usage(key, samples=0) or 0)
    return members, size


def grown(before: dict[str, dict], after: dict[str, dict]) -> dict[str, dict]:
    """Kinds whose key count grew: {kind: after's figures + 'new' keys}."""
    out = {}
    for k, a in after.items():
        new = a["keys"] - before.get(k, {}).get("keys", 0)
        if new > 0:
            out[k] = dict(a, new=new)
    return out


def projected(new_keys: int, events: int, ttl_s: float, bytes_each: float) -> dict:
    """Steady-state memory of keys written per event and kept ``ttl_s``, per 1,000 events/s."""
    per_s = new_keys / events * 1000 if events else float("nan")
    total = per_s * ttl_s * bytes_each
    return {"per_s_per_1k_eps": per_s, "ttl_s": ttl_s, "bytes_each": bytes_each,
            "bytes_per_1k_eps": total, "mb_per_1k_eps": total / 1e6}


# ----------------------------------------------------------------------- read from the code

def marker_names(root: Path) -> list[str]:
    """Key-dict entries the session store builds batch markers from (``['applied']`` today).

    Read from ``app/sessions/store.py``: the ``k['...']`` names used in its marker function, or
    failing that any key-layout entry whose name says marker/applied/seen.
    """
    path = Path(root) / "app" / "sessions" / "store.py"
    try:
        src = path.read_text()
    except OSError:
        return []
    m = re.search(r"def _?\w*marker\w*\(.*?(?=\n    def |\Z)", src, re.S)
    if m:
        names = re.findall(r"""k\[['"](\w+)['"]\]""", m.group(0))
        if names:
            return sorted(set(names))
    return sorted({n for n in re.findall(r"""['"](\w+)['"]\s*:\s*f['"]\{base\}""", src)
                   if re.search(r"marker|applied|seen", n)})


def marker_ttl_setting() -> tuple[str, float]:
    """(setting name, default seconds) of the batch-marker TTL, from app.settings' SPEC."""
    from app.settings import SPEC, load_settings

    names = [n for n in SPEC if "MARKER" in n and "TTL" in n]
    if not names:
        return "", float("nan")
    with tempfile.NamedTemporaryFile("w", suffix=".env") as empty:
        s = load_settings(environ={"OBSERVER_ENV_FILE": empty.name})
    return names[0], float(s[names[0]])


def is_marker_kind(kind: str, names: list[str]) -> bool:
    return any(n in kind.split(":") for n in names)
