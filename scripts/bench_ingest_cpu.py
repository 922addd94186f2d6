#!/usr/bin/env python3
"""CPU cost of the ingest API's own work per batch, old path against new, in one process.

Per 50-event batch (~400 B events as the SDK sends them): parse the body, parse_batch,
validate, scrub, then build the broker message (metadata JSON strings, batch_id, and the
Celery body kombu encodes; kombu's part is the same code on both sides). No HTTP, no Redis.

    old   app/ingest and batch_id_for as they were before the fast path (read from git: the
          parent of the commit that added app/ingest/fastpath.py, or --old-rev), imported
          as a private package
    slow  this tree with fast=False: marshmallow alone, stdlib JSON, no prefilters (what the
          differential tests compare the fast path against)
    new   this tree as the API runs it

Prints the median of --repeats runs of --batches batches each, per stage, in us per batch and
us per event. Timings are printed, never asserted.

    .venv/bin/python scripts/bench_ingest_cpu.py
    .venv/bin/python scripts/bench_ingest_cpu.py --events 50 --repeats 9 --pii
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kombu.serialization import dumps as kombu_dumps  # noqa: E402

from app.ingest import body as new_body  # noqa: E402
from app.ingest import message as new_message  # noqa: E402
from app.ingest import privacy as new_privacy  # noqa: E402
from app.ingest import schemas as new_schemas  # noqa: E402

DAY_MS = 86_400_000
LIMITS = {"max_event_bytes": 10_240, "max_past_ms": 7 * DAY_MS, "max_future_ms": 3_600_000}
STAGES = ("parse", "parse_batch", "validate", "scrub", "message", "kombu")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=50, help="events per batch (default 50)")
    p.add_argument("--batches", type=int, default=200, help="batches per repeat (default 200)")
    p.add_argument("--repeats", type=int, default=7, help="repeats; the median is printed (default 7)")
    p.add_argument("--pii", action="store_true", help="put an email, a card number and a token in every event")
    p.add_argument("--old-rev", help="git revision of the old path (default: before app/ingest/fastpath.py)")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- the batch


def make_body(n: int, pii: bool, now_ms: int) -> bytes:
    """A body of n events in one session, a mix of the SDK's types, about 400 B each."""
    anon, sid = f"anon.{uuid.uuid4().hex[:16]}", f"s.{uuid.uuid4().hex[:20]}"
    page = "https://shop.example.com/products/12345?ref=home&utm_source=newsletter&utm_medium=email"
    shapes = [
        ("page_view", None, {"title": "Blue running shoes - Example Shop", "referrer": "https://www.google.com/",
                             "viewport": {"w": 1280, "h": 720}, "load_ms": 812.4}),
        ("click", None, {"selector": "main > div.product > button.btn.btn-primary:nth-child(2)",
                         "text": "Add to cart", "x": 412, "y": 318, "tags": ["promo", "summer"]}),
        ("network", None, {"method": "POST", "url": "https://api.example.com/v2/cart/items?locale=en-GB",
                           "status": 201, "duration_ms": 143.2, "size": 1834}),
        ("error", None, {"message": "TypeError: Cannot read properties of undefined (reading 'price')",
                         "source": "https://shop.example.com/static/app.3f9a1c.js", "line": 1234, "col": 56}),
        ("web_vital", None, {"metric": "LCP", "value": 1834.5, "rating": "needs-improvement",
                             "element": "img.hero-image"}),
        ("custom", "checkout_step", {"step": 2, "cart_value": 89.9, "currency": "EUR", "items": 3,
                                     "coupon": None, "express": False}),
    ]
    events = []
    for i in range(n):
        kind, name, meta = shapes[i % len(shapes)]
        meta = dict(meta)
        if pii:
            meta["note"] = f"contact jane.doe{i}@example.com, card 4111 1111 1111 1111, /cb?token=t{i}"
        event = {"event_id": str(uuid.uuid4()), "type": kind, "timestamp": now_ms - (n - i) * 250,
                 "session_id": sid, "url": page, "metadata": meta, "anonymous_id": anon}
        if name:
            event["name"] = name
        events.append(event)
    return json.dumps({"events": events, "sent_at": now_ms}, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- the old path


def _old_rev(rev: str | None) -> str:
    if rev:
        return rev
    added = subprocess.run(["git", "-C", str(ROOT), "log", "--diff-filter=A", "--format=%H", "--",
                            "app/ingest/fastpath.py"], capture_output=True, text=True, check=True).stdout.split()
    return f"{added[-1]}^" if added else "HEAD"


def _git_show(rev: str, path: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], capture_output=True, text=True,
                          check=True).stdout


def load_old(rev: str):
    """The old app/ingest as package ``old_ingest`` and the old view's batch_id_for, from git."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-old-ingest-"))
    pkg = tmp / "old_ingest"
    pkg.mkdir()
    names = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", rev, "app/ingest/"],
                           capture_output=True, text=True, check=True).stdout.split()
    for path in names:
        text = _git_show(rev, path)
        if path.endswith(".py"):
            text = text.replace("from app.ingest.", "from old_ingest.").replace("from app.ingest import", "from old_ingest import")
        (pkg / Path(path).name).write_text(text, encoding="utf-8")
    sys.path.insert(0, str(tmp))
    mods = {m: importlib.import_module(f"old_ingest.{m}") for m in ("body", "schemas", "privacy")}
    view = ast.parse(_git_show(rev, "app/api/ingest.py"))
    (func,) = [node for node in view.body if isinstance(node, ast.FunctionDef) and node.name == "batch_id_for"]
    namespace = {"json": json, "hashlib": hashlib}
    exec(compile(ast.Module(body=[func], type_ignores=[]), "old app/api/ingest.py", "exec"), namespace)  # noqa: S102
    return mods, namespace["batch_id_for"]


# --------------------------------------------------------------------------- the paths


def old_path(mods, batch_id_for):
    body, schemas, privacy = mods["body"], mods["schemas"], mods["privacy"]

    def run(raw: bytes, now_ms: int, t: list[float]) -> None:
        t0 = time.perf_counter()
        obj = body._parse(raw)
        t1 = time.perf_counter()
        events, _key = schemas.parse_batch(obj, max_events=1000)
        t2 = time.perf_counter()
        accepted, _rejected = schemas.validate_events(events, received_at_ms=now_ms, **LIMITS)
        t3 = time.perf_counter()
        for e in accepted:
            privacy.scrub_event(e, privacy.DEFAULT_SENSITIVE_PARAMS)
        t4 = time.perf_counter()
        out = []
        for e in accepted:
            e.pop("index", None)
            e["metadata"] = json.dumps(e["metadata"], separators=(",", ":"), ensure_ascii=False)
            out.append(e)
        batch = {"batch_id": batch_id_for("bench", out), "project": "bench", "request_id": "r", "received_at": now_ms,
                 "events": out}
        t5 = time.perf_counter()
        kombu_dumps(([batch], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}), serializer="json")
        t6 = time.perf_counter()
        for i, (a, b) in enumerate(zip((t0, t1, t2, t3, t4, t5), (t1, t2, t3, t4, t5, t6))):
            t[i] += b - a
    return run


def new_path(fast: bool):
    def run(raw: bytes, now_ms: int, t: list[float]) -> None:
        t0 = time.perf_counter()
        obj = new_body._parse(raw, fast=fast)
        t1 = time.perf_counter()
        events, _key = new_schemas.parse_batch(obj, max_events=1000, fast=fast)
        t2 = time.perf_counter()
        accepted, _rejected, plain = new_schemas.check_events(events, received_at_ms=now_ms, fast=fast, **LIMITS)
        t3 = time.perf_counter()
        for e in accepted:
            new_privacy.scrub_event(e, new_privacy.DEFAULT_SENSITIVE_PARAMS, fast=fast)
        t4 = time.perf_counter()
        out = []
        for e, is_plain in zip(accepted, plain):
            e.pop("index", None)
            e["metadata"] = new_message.metadata_json(e["metadata"], is_plain)
            out.append(e)
        batch = {"batch_id": new_message.batch_id_for("bench", out), "project": "bench", "request_id": "r",
                 "received_at": now_ms, "events": out}
        t5 = time.perf_counter()
        kombu_dumps(([batch], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}), serializer="json")
        t6 = time.perf_counter()
        for i, (a, b) in enumerate(zip((t0, t1, t2, t3, t4, t5), (t1, t2, t3, t4, t5, t6))):
            t[i] += b - a
    return run


def measure(runs: dict, raw: bytes, now_ms: int, batches: int, repeats: int) -> dict[str, list[float]]:
    """Per path, the median over repeats of the mean us per batch, per stage.

    The paths take turns within each repeat, so a noisy neighbour on a shared machine weighs
    on all of them alike.
    """
    for run in runs.values():  # warm-up: caches, lazily compiled regexes
        for _ in range(max(5, batches // 10)):
            run(raw, now_ms, [0.0] * len(STAGES))
    samples: dict[str, list[list[float]]] = {label: [] for label in runs}
    for _ in range(repeats):
        for label, run in runs.items():
            t = [0.0] * len(STAGES)
            for _ in range(batches):
                run(raw, now_ms, t)
            samples[label].append([x / batches * 1e6 for x in t])
    return {label: [statistics.median(r[i] for r in rs) for i in range(len(STAGES))] for label, rs in samples.items()}


def main(argv=None) -> int:
    """Measure old, slow and new paths and print one table."""
    args = parse_args(argv)
    now_ms = int(time.time() * 1000)
    raw = make_body(args.events, args.pii, now_ms)
    rev = _old_rev(args.old_rev)
    mods, old_batch_id_for = load_old(rev)
    rev_name = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True,
                              text=True).stdout.strip() or rev
    print(f"{args.events} events/batch, {len(raw) / args.events:.0f} B/event, pii={'yes' if args.pii else 'no'}, "
          f"median of {args.repeats} x {args.batches} batches; old = {rev_name}; python {sys.version.split()[0]}")
    runs = {"old": old_path(mods, old_batch_id_for), "slow": new_path(False), "new": new_path(True)}
    results = measure(runs, raw, now_ms, args.batches, args.repeats)
    print(f"{'us/batch':>8} " + " ".join(f"{s:>11}" for s in STAGES) + f" {'total':>9} {'us/event':>9}")
    for label, r in results.items():
        print(f"{label:>8} " + " ".join(f"{x:11.1f}" for x in r) + f" {sum(r):9.1f} {sum(r) / args.events:9.2f}")
    old, new = sum(results["old"]), sum(results["new"])
    print(f"new/old: {new / old:.2f} ({old / new:.1f}x less CPU per batch); without kombu's encoding: "
          f"{(new - results['new'][-1]) / (old - results['old'][-1]):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
