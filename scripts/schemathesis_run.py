#!/usr/bin/env python3
"""Property-based API testing of a running Observer with Schemathesis, driven from /openapi.json.

    .venv/bin/python scripts/schemathesis_run.py --url http://127.0.0.1:8000 --key obs_pk_...

Every operation of the spec gets generated requests, schema-valid ("positive") and schema-
invalid ("negative") ones, each sent to the running app with the key in
``Authorization: Bearer``. Each answer is checked:
  * no 5xx (Schemathesis' not_a_server_error),
  * status code, content type, documented headers and body conform to the spec
    (status_code_conformance, content_type_conformance, response_headers_conformance,
    response_schema_conformance),
  * every non-2xx answer has the one error shape {"error": {"code", "message", "request_id",
    "details"}} and an X-Request-ID header (checked here, whatever the spec says).
Rounds repeat (new random seeds) until at least --min-requests requests were sent (1,000 by
default). Prints the number of requests, a histogram of statuses and every distinct failure;
exits 1 on any failure, 2 when the spec cannot be loaded.

The app should run with generous rate limits (RATE_LIMIT_DEFAULT / RATE_LIMIT_PER_IP) or the
run is mostly 429s, which conform but exercise little.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import sys
import time

import requests

HTTP_ERROR_KEYS = {"code", "message", "request_id", "details"}


def _header(response, name: str) -> str | None:
    """A header of a requests or Schemathesis response (the latter maps lower-case names to lists)."""
    for k, v in response.headers.items():
        if k.lower() == name.lower():
            return v[0] if isinstance(v, list) else v
    return None


def _error_shape_problem(response) -> str | None:
    """Why an answer lacks X-Request-ID or, when non-2xx, the documented error shape; else None."""
    if not _header(response, "X-Request-ID"):
        return "no X-Request-ID header"
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        return f"body is not JSON: {response.content[:200]!r}"
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return f"body is not {{'error': {{...}}}}: {str(body)[:200]}"
    err = body["error"]
    if set(err) != HTTP_ERROR_KEYS:
        return f"error keys {sorted(err)} != {sorted(HTTP_ERROR_KEYS)}"
    if not isinstance(err["code"], str) or not isinstance(err["message"], str):
        return "error.code / error.message not strings"
    if err["request_id"] != _header(response, "X-Request-ID"):
        return "error.request_id differs from the X-Request-ID header"
    if b"Traceback" in response.content:
        return "a stack trace leaked"
    return None


def _failure_titles(exc: BaseException) -> list[str]:
    """Readable one-liners for a Schemathesis failure (a FailureGroup or a single failure)."""
    inner = getattr(exc, "exceptions", None)
    if inner:
        out = []
        for e in inner:
            out += _failure_titles(e)
        return out
    title = getattr(exc, "title", None) or type(exc).__name__
    message = getattr(exc, "message", None) or str(exc)
    return [f"{title}: {' '.join(str(message).split())[:300]}"]


def _recent_timestamps():
    """Map a positive case so many of its events carry a timestamp inside the accepted window and
    an http(s) URL.

    The spec can only say "epoch ms between 2000 and 2100" and "a string"; the server also wants
    "within 7 days before and 1 hour after receipt" and an absolute http(s) URL, so without this
    nearly every generated event would be rejected and 202 answers would hardly be exercised.
    Other fields stay as generated.
    """
    def fix(pair):
        case, offsets = pair
        body = getattr(case, "body", None)
        if isinstance(body, dict) and isinstance(body.get("events"), list):
            now = int(time.time() * 1000)
            for i, event in enumerate(body["events"]):
                offset = offsets[i % len(offsets)]
                if not isinstance(event, dict) or offset is None:
                    continue
                if isinstance(event.get("timestamp"), int):
                    event["timestamp"] = now - offset
                url = event.get("url")
                if isinstance(url, str) and url and not url.startswith(("http://", "https://")):
                    event["url"] = f"https://shop.test/{offset % 97}"
        return case
    return fix


def run(url: str, key: str, max_examples: int, min_requests: int, seed: int | None, timeout: float) -> int:
    import hypothesis
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis import checks as st_checks

    base = url.rstrip("/")
    try:
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json", wait_for_schema=30)
    except Exception as exc:  # noqa: BLE001 - any load problem ends the run
        print(f"cannot load {base}/openapi.json: {exc}", file=sys.stderr)
        return 2
    operations = []
    for result in schema.get_all_operations():
        op = result.ok()
        operations.append(op)
    checks = [st_checks.not_a_server_error, st_checks.status_code_conformance, st_checks.content_type_conformance,
              st_checks.response_headers_conformance, st_checks.response_schema_conformance]
    session = requests.Session()
    auth = {"Authorization": f"Bearer {key}"}
    statuses: collections.Counter = collections.Counter()
    per_op: collections.Counter = collections.Counter()
    error_codes: collections.Counter = collections.Counter()
    failures: dict[tuple[str, str], dict] = {}
    total = 0
    started = time.monotonic()

    def record_failure(label: str, title: str, case, response) -> None:
        slot = failures.setdefault((label, title), {"count": 0, "example": None})
        slot["count"] += 1
        if slot["example"] is None:
            slot["example"] = {"status": getattr(response, "status_code", None),
                               "curl": case.as_curl_command(headers=auth) if case is not None else None,
                               "body": (getattr(response, "content", b"") or b"")[:300]}

    def exercise(op, mode, round_seed) -> None:
        nonlocal total
        label = f"{op.method.upper()} {op.path}"

        strategy = op.as_strategy(generation_mode=mode)
        if mode == GenerationMode.POSITIVE and op.method.upper() == "POST":
            # None keeps the generated timestamp (mostly out of range) for some events
            offsets = st.lists(st.one_of(st.none(), st.integers(0, 6 * 86400 * 1000)), min_size=1, max_size=5)
            strategy = st.tuples(strategy, offsets).map(_recent_timestamps())

        @settings(max_examples=max_examples, deadline=None, database=None, derandomize=False,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
                  verbosity=hypothesis.Verbosity.quiet)
        @hypothesis.seed(round_seed)
        @given(case=strategy)
        def one(case) -> None:
            nonlocal total
            try:
                response = case.call(base_url=base, session=session, headers=auth, timeout=timeout)
            except requests.RequestException as exc:
                total += 1
                statuses["network-error"] += 1
                record_failure(label, f"network error: {type(exc).__name__}", case, None)
                return
            total += 1
            per_op[label] += 1
            statuses[response.status_code] += 1
            if response.status_code >= 400:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    error_codes[json.loads(response.content)["error"]["code"]] += 1
            problem = _error_shape_problem(response)
            if problem:
                record_failure(label, f"error shape: {problem}", case, response)
            try:
                case.validate_response(response, checks=checks, headers=auth)
            # FailureGroup is a BaseExceptionGroup, not an Exception
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - every failure is recorded, the run goes on
                for title in _failure_titles(exc):
                    record_failure(label, title, case, response)

        try:
            one()
        except Unsatisfiable:
            pass  # nothing to generate in this mode (e.g. no parameter can be made invalid)
        except Exception as exc:  # noqa: BLE001 - e.g. a strategy that cannot generate for this mode
            record_failure(label, f"generation error: {type(exc).__name__}: {str(exc)[:200]}", None, None)

    # Schemathesis leaves the schema's own URL out of the operations: check it directly.
    if not any(op.path == "/openapi.json" for op in operations):
        r = session.get(f"{base}/openapi.json", timeout=timeout)
        total += 1
        per_op["GET /openapi.json"] += 1
        statuses[r.status_code] += 1
        if r.status_code != 200 or not isinstance(r.json(), dict) or _error_shape_problem(r):
            failures[("GET /openapi.json", "not a 200 JSON document with X-Request-ID")] = {"count": 1, "example": None}

    rounds = 0
    base_seed = seed if seed is not None else int(time.time())
    while True:
        before = total
        for op in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                exercise(op, mode, base_seed + rounds)
        rounds += 1
        if total >= min_requests or total == before or rounds >= 50:
            break

    elapsed = time.monotonic() - started
    print(f"schemathesis {schemathesis.SCHEMATHESIS_VERSION} against {base} ({len(operations)} operations, "
          f"{rounds} round(s), max {max_examples} examples per operation and mode)")
    print(f"total requests: {total} in {elapsed:.1f}s")
    print("per operation: " + ", ".join(f"{k}={v}" for k, v in sorted(per_op.items())))
    print("status histogram: " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0]))))
    print("error codes: " + ", ".join(f"{k}: {v}" for k, v in sorted(error_codes.items())))
    server_errors = sum(v for k, v in statuses.items() if isinstance(k, int) and k >= 500)
    print(f"5xx answers: {server_errors}")
    failed = sum(slot["count"] for slot in failures.values())
    print(f"failures: {failed} ({len(failures)} distinct)")
    for (label, title), slot in sorted(failures.items()):
        print(f"  - [{slot['count']}x] {label}: {title}")
        if slot["example"]:
            print(f"      e.g. status {slot['example']['status']}: {slot['example']['body']!r}")
            if slot["example"]["curl"]:
                print(f"      {slot['example']['curl'][:600]}")
    if total < min_requests:
        print(f"only {total} requests, fewer than --min-requests {min_requests}")
        return 1
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="base URL of the running app, e.g. http://127.0.0.1:8000")
    p.add_argument("--key", required=True, help="an ingest API key (sent as Authorization: Bearer)")
    p.add_argument("--max-examples", type=int, default=500, help="examples per operation and generation mode (500)")
    p.add_argument("--min-requests", type=int, default=1000, help="repeat rounds until this many requests (1000)")
    p.add_argument("--seed", type=int, default=None, help="Hypothesis seed (default: time-based)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per request (10)")
    args = p.parse_args(argv)
    return run(args.url, args.key, args.max_examples, args.min_requests, args.seed, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
