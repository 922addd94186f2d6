"""SDK-like load: clients posting batches of unique events, retrying like the browser SDK.

A batch is retried (same event ids) on network errors, 429 and 5xx with exponential backoff
and full jitter, honouring Retry-After; an event is *acknowledged* once a 202 answered its
batch. Loops are bounded (a stop time, then a give-up time) and only 127.0.0.1 is targeted.
"""
from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import requests

BACKOFF_BASE, BACKOFF_MAX = 0.25, 8.0  # seconds: the SDK's first retry ceiling and its cap
REQUEST_TIMEOUT = 30.0  # a request longer than this counts as a hung request thread


@dataclass
class Scale:
    """How much load a case runs (full scale for scripts/faults, reduced for CI)."""

    clients: int = 6
    batch: int = 20  # events per request
    batches_per_session: int = 4
    interval: float = 0.1  # seconds between a client's batches (the default per-IP limit is 50/s)
    warmup: float = 5.0  # seconds of load before the fault
    tail: float = 5.0  # seconds of load after the fault ended
    give_up: float = 90.0  # seconds after stop that a client keeps retrying a batch
    fault_seconds: float = 15.0  # how long repeated faults (pool kills, two beats) go on
    maxmemory_headroom: int = 8 * 1024 * 1024  # case 7: bytes of broker memory above its use
    idle_timeout: int = 5  # SESSION_IDLE_TIMEOUT override (default 1800)
    hour_scale: float = 0.01  # RETRY_TIME_SCALE override of the "one hour" cases (8, 10, 11)
    name: str = "full"


FULL = Scale()
CI = Scale(clients=3, batch=5, batches_per_session=3, interval=0.15, warmup=3.0, tail=2.0, give_up=60.0,
           fault_seconds=6.0, maxmemory_headroom=3 * 1024 * 1024, idle_timeout=3, hour_scale=0.001, name="ci")
SCALES = {"full": FULL, "ci": CI}


@dataclass
class Stats:
    """What the clients saw."""

    sent: set = field(default_factory=set)
    acked: set = field(default_factory=set)
    statuses: Counter = field(default_factory=Counter)
    retry_after_missing: Counter = field(default_factory=Counter)  # 429/503 answered without it
    gave_up: int = 0
    batches: dict = field(default_factory=dict)  # first id -> (session_id, ids)
    requests: list = field(default_factory=list)  # (monotonic start, end, status) of every request


def event(session_id: str, i: int, **extra) -> dict:
    """One valid click event with a fresh UUID."""
    return {"event_id": str(uuid.uuid4()), "type": "click", "timestamp": int(time.time() * 1000),
            "session_id": session_id, "url": "https://faults.test/p", "metadata": {"i": i}, **extra}


class Load:
    """``clients`` threads posting until ``stop()``; ``join()`` waits for pending retries."""

    def __init__(self, base_url: str, key: str, scale: Scale, prefix: str) -> None:
        self.url, self.key, self.scale, self.prefix = f"{base_url}/v1/events", key, scale, prefix
        self.stats = Stats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._give_up_at = float("inf")
        self._threads = [threading.Thread(target=self._client, args=(c,), daemon=True, name=f"load-{c}")
                         for c in range(scale.clients)]

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """No new batches; pending ones keep retrying until the give-up time."""
        self._give_up_at = time.monotonic() + self.scale.give_up
        self._stop.set()

    def join(self) -> None:
        for t in self._threads:
            t.join(self.scale.give_up + REQUEST_TIMEOUT + 10)

    def _count(self, t0: float, status, ids=()) -> None:
        with self._lock:
            self.stats.requests.append((t0, time.monotonic(), status))
            self.stats.statuses[status] += 1
            self.stats.acked.update(ids)

    def post(self, http: requests.Session | None, events: list[dict]) -> None:
        """Post one batch until a 202, a permanent answer, or the give-up time."""
        http = http or requests.Session()
        ids = [e["event_id"] for e in events]
        with self._lock:
            self.stats.sent.update(ids)
            self.stats.batches[ids[0]] = (events[0]["session_id"], ids)
        for attempt in range(10_000):  # bounded by the give-up time below
            retry_after, t0 = None, time.monotonic()
            try:
                r = http.post(self.url, json={"events": events}, timeout=REQUEST_TIMEOUT,
                              headers={"Authorization": f"Bearer {self.key}"})
                status = r.status_code
                if status == 202 and r.json().get("accepted") == len(events):
                    return self._count(t0, 202, ids)
                if status in (429, 503):
                    raw = r.headers.get("Retry-After")
                    retry_after = float(raw) if raw else None
                    if raw is None:
                        with self._lock:
                            self.stats.retry_after_missing[status] += 1
                self._count(t0, status)
                if status < 500 and status not in (408, 429):
                    return None  # permanent: the SDK drops it (counted in statuses)
            except requests.Timeout:
                self._count(t0, "timeout")
            except requests.RequestException as exc:
                self._count(t0, type(exc).__name__)
            if time.monotonic() > self._give_up_at:
                with self._lock:
                    self.stats.gave_up += 1
                return None
            # Full-jitter exponential delay; never shorter than the server's Retry-After.
            ceiling = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** attempt)
            time.sleep(max(random.uniform(0, ceiling), retry_after or 0.0))  # noqa: S311 (jitter, not a secret)
        return None

    def _client(self, c: int) -> None:
        http = requests.Session()
        n = 0
        while not self._stop.is_set() and n < 100_000:  # bounded
            sid = f"{self.prefix}-c{c}-s{n // self.scale.batches_per_session}"
            self.post(http, [event(sid, i) for i in range(self.scale.batch)])
            n += 1
            self._stop.wait(self.scale.interval)
        http.close()
