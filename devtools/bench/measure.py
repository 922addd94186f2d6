"""What the phases read: ClickHouse (a phase's events by session-id prefix; parts per table from
``system.part_log``), Redis memory per key *kind* (the key name without hash tags and ids:
``obs:s:{b3}:live:p:sid`` is ``s:live``), and CPU seconds of process trees (psutil: a PID we
started, every descendant alive at the sample, and what its reaped children used).
"""
from __future__ import annotations

import logging
import re
import statistics
from urllib.parse import urlsplit

import psutil

from devtools.bench.stats import NAN

PART_LOG = "system.part_log (NEW_PART: one per INSERT and partition, views' target rows included)"
OTHERS = "(other processes on the machine)"
MARKER = "s:applied"  # app/sessions/store.py: {prefix}s:{bN}:applied:<batch>:<project>:<session>
_WORD = re.compile(r"^[a-z][a-z_-]{0,19}$")


class ClickHouse:
    """The bench's queries, on the app's pooled (thread-safe) ClickHouse client."""

    def __init__(self, url: str, project: str = "bench") -> None:
        from app.storage.clickhouse.client import ServerBackend

        logging.getLogger("clickhouse_driver").setLevel(logging.CRITICAL)
        self.ch = ServerBackend(url, pool_size=4, timeout=30)
        self.db = (urlsplit(url).path or "/default").lstrip("/") or "default"
        self.project = project

    def _where(self, prefix: str) -> tuple[str, dict]:
        return (f"FROM {self.db}.events WHERE project = %(p)s AND session_id LIKE %(like)s",
                {"p": self.project, "like": prefix.replace("_", "\\_") + "%"})

    def stored(self, prefix: str) -> int:
        """Events stored whose session id starts with ``prefix``."""
        sql, params = self._where(prefix)
        return int(self.ch.execute(f"SELECT count() {sql}", params)[0][0])

    def sessions(self, prefix: str) -> set[str]:
        """Distinct session ids starting with ``prefix`` that are queryable now."""
        sql, params = self._where(prefix)
        return {r[0] for r in self.ch.execute(f"SELECT DISTINCT session_id {sql}", params)}

    def version(self) -> str:
        return str(self.ch.execute("SELECT version()")[0][0])

    def inserts(self, t0: float, t1: float) -> dict:
        """Parts per MergeTree table of the database between wall times t0 and t1, cut to whole
        seconds (``event_time``'s resolution); every table listed, zeros when nothing was written."""
        s0, s1 = int(t0) + 1, int(t1)
        window = max(1, s1 - s0)
        names = self.ch.execute("SELECT name FROM system.tables WHERE database = %(db)s "
                                "AND engine LIKE '%%MergeTree%%'", {"db": self.db})
        tables = {n: {"inserts": 0, "rows": 0, "rows_per_insert": NAN, "inserts_per_s": 0.0} for (n,) in names}
        out = {"source": PART_LOG, "window_s": float(window), "tables": tables}
        try:
            self.ch.execute("SYSTEM FLUSH LOGS")
            rows = self.ch.execute(
                "SELECT table, count(), sum(rows) FROM system.part_log WHERE event_type = 1 AND database = %(db)s "
                "AND event_time >= toDateTime(%(s0)s) AND event_time < toDateTime(%(s1)s) GROUP BY table",
                {"db": self.db, "s0": s0, "s1": s1})
        except Exception as exc:  # a --target server without <part_log> in its config
            out["source"] = f"n/a ({str(exc)[:120]})"
            return out
        for name, parts, n in rows:
            tables[name] = {"inserts": int(parts), "rows": int(n), "rows_per_insert": n / parts,
                            "inserts_per_s": parts / window}
        return out


# ----------------------------------------------------------------------------- Redis

def kind_of(key: str, prefix: str) -> str:
    """``s:live`` for ``{prefix}s:{b3}:live:<project>:<sid>``; ``(other) x`` outside the prefix."""
    outside = not (prefix and key.startswith(prefix))
    words: list[str] = []
    for part in (key if outside else key[len(prefix):]).split(":"):
        if part.startswith("{") and part.endswith("}"):
            continue
        if not _WORD.match(part) or len(words) == 2:
            break
        words.append(part)
    name = ":".join(words) or "?"
    return f"(other) {name}" if outside else name


def used_memory(r) -> int:
    return int(r.info("memory")["used_memory"])


def scan_kinds(r, prefix: str, match: str = "*", sample: int = 40) -> dict[str, dict]:
    """Keys per kind; ``MEMORY USAGE`` and TTL of the first ``sample`` of each (SCAN's order is
    the hash table's, so they are a spread of the kind)."""
    counts: dict[str, int] = {}
    picks: dict[str, list] = {}
    for key in r.scan_iter(match=match, count=2000):
        k = kind_of(key.decode() if isinstance(key, bytes) else key, prefix)
        counts[k] = counts.get(k, 0) + 1
        if counts[k] <= sample:
            picks.setdefault(k, []).append(key)
    out = {}
    for k, keys in picks.items():
        pipe = r.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key, samples=0)
            pipe.ttl(key)
        got = pipe.execute()
        live = [(size, ttl) for size, ttl in zip(got[::2], got[1::2], strict=True) if size is not None]
        out[k] = {"keys": counts[k], "bytes_each": statistics.mean(s for s, _ in live) if live else NAN,
                  "ttl_s": statistics.median(t for _, t in live) if live else NAN}
    return out


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
    per_s = new_keys / events * 1000 if events else NAN
    total = per_s * ttl_s * bytes_each
    return {"per_s_per_1k_eps": per_s, "ttl_s": ttl_s, "bytes_each": bytes_each,
            "bytes_per_1k_eps": total, "mb_per_1k_eps": total / 1e6}


# ----------------------------------------------------------------------------- CPU

class Meter:
    """Named process trees (or single processes); ``sample()`` gives CPU seconds per name."""

    def __init__(self) -> None:
        self.kinds: dict[str, tuple[int, bool]] = {}

    def add(self, name: str, pid: int | None, tree: bool = True) -> None:
        if pid:
            self.kinds[name] = (int(pid), tree)

    def sample(self) -> dict[str, float]:
        return {name: _seconds(pid, tree) for name, (pid, tree) in self.kinds.items()}


def _seconds(pid: int, tree: bool) -> float:
    try:
        root = psutil.Process(pid)
        t = root.cpu_times()
        total = t.user + t.system
        if tree:
            total += t.children_user + t.children_system
            for p in root.children(recursive=True):
                try:
                    c = p.cpu_times()
                    total += c.user + c.system
                except psutil.Error:  # ended between the listing and the read
                    pass
        return total
    except psutil.Error:
        return NAN


def machine_seconds() -> float:
    """Busy CPU seconds of every core so far (all but idle and iowait)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + t.steal


def delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: b[k] - a.get(k, 0.0) for k in b}


def per_1k(spent: dict[str, float], events: float) -> dict[str, float]:
    """CPU seconds per 1,000 events, per name (NaN when no events)."""
    return {k: (v / events * 1000 if events else NAN) for k, v in spent.items()}


def others(machine_s: float, ours: dict[str, float]) -> float:
    """CPU seconds of the machine not spent by any kind measured (other jobs on a shared host)."""
    return max(0.0, machine_s - sum(v for v in ours.values() if v == v))
