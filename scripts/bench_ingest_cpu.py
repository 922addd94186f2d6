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

Prints the median of --repeats runs of --batches batches each, per stage, in CPU us per batch
and per event (this thread's CPU time). Timings are printed, never asserted.

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


def load_old(rev: str, tmp: Path):
    """The old app/ingest as package ``old_ingest`` (written under tmp) and the old view's batch_id_for."""
    pkg = tmp / "old_ingest"
    pkg.mkdir()
    names = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", rev, "app/ingest/"],
                           capture_output=True, text=True, check=True).stdout.split()
    for path in names:
        text = _git_show(rev, path)
        if path.endswith(".py"):
            text = text.replace("from app.ingest.", "from old_ingest.")
            text = text.replace("from app.ingest import", "from old_ingest import")
        (pkg / Path(path).name).write_text(text, encoding="utf-8")
    sys.path.insert(0, str(tmp))
    mods = {m: importlib.import_module(f"old_ingest.{m}") for m in ("body", "schemas", "privacy")}
    view = ast.parse(_git_show(rev, "app/api/ingest.py"))
    (func,) = [node for node in view.body if isinstance(node, ast.FunctionDef) and node.name == "batch_id_for"]
    namespace = {"json": json, "hashlib": hashlib}
    exec(compile(ast.Module(body=[func], type_ignores=[]), "old app/api/ingest.py", "exec"), namespace)  # noqa: S102
    return mods, namespace["batch_id_for"]


# --------------------------------------------------------------------------- the paths
#
# A path is one function per stage, each taking the previous stage's outputs for all the
# batches of a repeat, so the clock is read once per stage and repeat.

_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def _kombu(batches: list[dict]) -> list:
    return [kombu_dumps(([b], {}, _EMBED), serializer="json") for b in batches]


def old_path(mods, batch_id_for, now_ms: int) -> list:
    body, schemas, privacy = mods["body"], mods["schemas"], mods["privacy"]

    def validate(batches):
        return [schemas.validate_events(events, received_at_ms=now_ms, **LIMITS)[0] for events in batches]

    def scrub(batches):
        for accepted in batches:
            for e in accepted:
                privacy.scrub_event(e, privacy.DEFAULT_SENSITIVE_PARAMS)
        return batches

    def message(batches):
        out = []
        for accepted in batches:
            for e in accepted:
                e.pop("index", None)
                e["metadata"] = json.dumps(e["metadata"], separators=(",", ":"), ensure_ascii=False)
            out.append({"batch_id": batch_id_for("bench", accepted), "project": "bench", "request_id": "r",
                        "received_at": now_ms, "events": accepted})
        return out

    return [lambda raws: [body._parse(r) for r in raws],
            lambda objs: [schemas.parse_batch(o, max_events=1000)[0] for o in objs],
            validate, scrub, message, _kombu]


def new_path(fast: bool, now_ms: int) -> list:
    def validate(batches):
        return [new_schemas.check_events(events, received_at_ms=now_ms, fast=fast, **LIMITS) for events in batches]

    def scrub(batches):
        for accepted, _rejected, _plain in batches:
            for e in accepted:
                new_privacy.scrub_event(e, new_privacy.DEFAULT_SENSITIVE_PARAMS, fast=fast)
        return batches

    def message(batches):
        out = []
        for accepted, _rejected, plain in batches:
            for e, is_plain in zip(accepted, plain, strict=True):
                e.pop("index", None)
                e["metadata"] = new_message.metadata_json(e["metadata"], is_plain)
            out.append({"batch_id": new_message.batch_id_for("bench", accepted), "project": "bench",
                        "request_id": "r", "received_at": now_ms, "events": accepted})
        return out

    return [lambda raws: [new_body._parse(r, fast=fast) for r in raws],
            lambda objs: [new_schemas.parse_batch(o, max_events=1000, fast=fast)[0] for o in objs],
            validate, scrub, message, _kombu]


def _messages(stages: list, raw: bytes) -> list[dict]:
    data: list = [raw]
    for stage in stages[:-1]:
        data = stage(data)
    return data


def run_once(stages: list, raw: bytes, batches: int) -> list[float]:
    """CPU seconds of this thread per stage, for ``batches`` batches."""
    data: list = [raw] * batches
    spent = []
    for stage in stages:
        started = time.thread_time()
        data = stage(data)
        spent.append(time.thread_time() - started)
    return spent


def measure(paths: dict, raw: bytes, batches: int, repeats: int) -> dict[str, list[float]]:
    """Per path, the median over repeats of the CPU us per batch, per stage.

    CPU time of this thread, not wall time, so a busy neighbour on a shared machine costs
    less in the figures; the paths also take turns within each repeat.
    """
    for stages in paths.values():  # warm-up: caches, lazily compiled regexes
        run_once(stages, raw, max(5, batches // 10))
    samples: dict[str, list[list[float]]] = {label: [] for label in paths}
    for _ in range(repeats):
        for label, stages in paths.items():
            samples[label].append([x / batches * 1e6 for x in run_once(stages, raw, batches)])
    return {label: [statistics.median(r[i] for r in rs) for i in range(len(STAGES))] for label, rs in samples.items()}


def main(argv=None) -> int:
    """Measure old, slow and new paths and print one table."""
    args = parse_args(argv)
    now_ms = int(time.time() * 1000)
    raw = make_body(args.events, args.pii, now_ms)
    rev = _old_rev(args.old_rev)
    with tempfile.TemporaryDirectory(prefix="bench-old-ingest-") as tmp:
        mods, old_batch_id_for = load_old(rev, Path(tmp))
    rev_name = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True,
                              text=True).stdout.strip() or rev
    print(f"{args.events} events/batch, {len(raw) / args.events:.0f} B/event, pii={'yes' if args.pii else 'no'}, "
          f"median of {args.repeats} x {args.batches} batches; old = {rev_name}; python {sys.version.split()[0]}")
    paths = {"old": old_path(mods, old_batch_id_for, now_ms), "slow": new_path(False, now_ms),
             "new": new_path(True, now_ms)}
    messages = {label: _messages(stages, raw) for label, stages in paths.items()}
    same = messages["old"] == messages["slow"] == messages["new"]
    print(f"the three paths build the same broker message (batch_id {messages['new'][0]['batch_id']}): "
          f"{'yes' if same else 'NO'}")
    results = measure(paths, raw, args.batches, args.repeats)
    print(f"{'CPU us/batch':>12} " + " ".join(f"{s:>11}" for s in STAGES) + f" {'total':>9} {'us/event':>9}")
    for label, r in results.items():
        print(f"{label:>12} " + " ".join(f"{x:11.1f}" for x in r) + f" {sum(r):9.1f} {sum(r) / args.events:9.2f}")
    old, new = sum(results["old"]), sum(results["new"])
    print(f"new/old: {new / old:.2f} ({old / new:.1f}x less CPU per batch); without kombu's encoding: "
          f"{(new - results['new'][-1]) / (old - results['old'][-1]):.2f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
