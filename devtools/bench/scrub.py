"""Figure 9: ingest CPU per request for the privacy scrubber's worst-case body (issue 19, point 7)
against a plain body of the same size; figure 10: the same plain body's CPU while one client tails
the project (``flask tail``: the web publishes each request's verdicts) against no one tailing.

Every body carries 100 events of one session whose metadata holds ~9,500 characters: in the
worst-case bodies, phone- and card-like digit runs (several shapes, each the costliest found for
one part of the scrubber: Luhn windows, the international phone matcher, many short number
clusters); in the plain body, letters and spaces. Each body is posted ``requests`` times to the
stack's web, one request at a time, and the web's process tree CPU (psutil) is read before and
after (interleaved rounds, medians): CPU ms per request, and the ratio of the worst shape to
plain (gate: at most 3x).
"""
from __future__ import annotations

import json
import time
import uuid
from urllib.parse import urlsplit

from devtools import load
from devtools.bench.measure import Meter
from devtools.bench.stats import NAN

EVENTS, CHARS = 100, 9_500
# Costly shapes for each part of the scrubber (tests/unit/ingest/test_privacy_budget.py and the
# probes of issue 19 point 7), each repeated to CHARS: digit runs with exact checks to do and
# digit-dense text the scans must read to the end.
SHAPES = {
    "cards": "4111 1111 1111 1112 ",  # Luhn-invalid 16-digit cards: every window checked
    "phones": " +1234567890123456789012",  # a failing "+" start: ~100 us each for the regex
    "clusters": "4111111111111x ",  # many short number clusters, each a card candidate
    "timestamps": "2024-01-15T10:30:00.123Z ",  # no candidate: every scan reads 9,500 characters
    "national_ids": " 123-45-6789-",  # almost national ids, glued to a dash
    "ips": "192.168.100.123 ",
    "emails": "jane.doe@example.com ",
    "email_starts": "a@",  # an "@" every other character: the email pattern tried at each
    "dates": "2024-01-15 09:30:00 ",
}
PLAIN = "lorem ipsum dolor sit amet "
# CPU times come in clock ticks (10 ms): 8 requests a round keep a round's figure within ~1.3 ms.
ROUNDS, PER_ROUND = 5, 8


def body(unit: str, tag: str) -> bytes:
    text = (unit * (CHARS // len(unit) + 1))[:CHARS]
    now = int(time.time() * 1000)
    events = [{"event_id": str(uuid.uuid4()), "type": "custom", "name": "scrub", "timestamp": now,
               "session_id": f"{tag}-scrub", "url": "https://bench.example/p", "metadata": {"text": text}}
              for _ in range(EVENTS)]
    return json.dumps({"events": events}, separators=(",", ":")).encode()


def post(url: str, key: str, data: bytes) -> int:
    """One POST on a connection of its own (its setup is web CPU too, alike for every shape); 0 when it failed."""
    u = urlsplit(url)
    client = load.Client(u.hostname or "127.0.0.1", u.port or 80, key, timeout=60)
    try:
        return client.post(data)[0]
    finally:
        client.close()


def cpu_ms_per_request(url: str, key: str, meter: Meter, bodies: list[bytes]) -> tuple[float, list]:
    """Web CPU ms per request over ``bodies`` (posted one at a time), and the statuses."""
    before = meter.sample()["web"]
    statuses = [post(url, key, b) for b in bodies]
    spent = meter.sample()["web"] - before
    return spent / max(1, len(statuses)) * 1000, statuses


def measure(url: str, key: str, web_pid: int, rounds: int = ROUNDS, per_round: int = PER_ROUND,
            tag: str = "") -> dict:
    """Figure 9: {plain_ms, worst_ms, worst_shape, ratio, shapes: {name: ms}, body_bytes, requests}.

    Every shape (plain first) is posted ``per_round`` times in each of ``rounds`` interleaved
    rounds (each round in another order), after four warm-up posts of each that are not counted;
    a shape's figure is the median of its rounds (the machine's other load falls on all alike)."""
    import statistics

    tag = tag or uuid.uuid4().hex[:6]
    units = {"plain": PLAIN, **SHAPES}
    meter = Meter()
    meter.add("web", web_pid)
    for name, unit in units.items():  # warm-up: every gunicorn worker, every code path
        for i in range(4):
            post(url, key, body(unit, f"{tag}w{name[:2]}{i}"))
    per: dict[str, list[float]] = {name: [] for name in units}
    bad: list[int] = []
    names = list(units)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # each round starts elsewhere
            unit = units[name]
            # fresh event ids and sessions: no duplicate work skipped
            bodies = [body(unit, f"{tag}{name[:2]}{r}x{i}") for i in range(per_round)]
            ms, statuses = cpu_ms_per_request(url, key, meter, bodies)
            per[name].append(ms)
            bad += [s for s in statuses if s != 202]
    medians = {name: statistics.median(v) for name, v in per.items()}
    plain = medians.pop("plain")
    worst = max(medians, key=lambda k: medians[k])
    ok = not bad and plain > 0
    return {"plain_ms": plain, "worst_ms": medians[worst], "worst_shape": worst, "shapes": medians,
            "ratio": medians[worst] / plain if ok else NAN, "not_202": len(bad),
            "body_bytes": len(body(PLAIN, "x")), "requests": rounds * per_round}


def tail_cost(url: str, key: str, web_pid: int, redis_url: str, prefix: str, project: str,
              rounds: int = ROUNDS, per_round: int = PER_ROUND) -> dict:
    """Figure 10: {quiet_ms, tailed_ms, ratio, messages}: web CPU per plain request with no one
    tailing, then with one subscriber registered and reading (the web picks a registration up
    within a second), medians of ``rounds`` rounds each."""
    import statistics
    import threading

    import redis

    from app.accounting import tail
    from app.storage import redis_keys

    meter = Meter()
    meter.add("web", web_pid)
    tag = uuid.uuid4().hex[:6]
    quiet = [cpu_ms_per_request(url, key, meter, [body(PLAIN, f"{tag}q{r}x{i}") for i in range(per_round)])[0]
             for r in range(rounds)]
    r = redis.Redis.from_url(redis_url)
    sub = r.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(redis_keys.tail_channel(prefix, project))
    got, stop = [0], threading.Event()

    def read() -> None:
        while not stop.is_set():
            if sub.get_message(timeout=0.2):
                got[0] += 1

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    tail.register(r, prefix, project)
    time.sleep(1.5)
    try:
        tailed = [cpu_ms_per_request(url, key, meter, [body(PLAIN, f"{tag}t{r_}x{i}") for i in range(per_round)])[0]
                  for r_ in range(rounds)]
    finally:
        stop.set()
        reader.join(5)
        sub.close()
        r.hdel(redis_keys.tails(prefix), project)
    q, t = statistics.median(quiet), statistics.median(tailed)
    return {"quiet_ms": q, "tailed_ms": t, "ratio": t / q if q > 0 else NAN, "messages": got[0],
            "requests": rounds * per_round}
