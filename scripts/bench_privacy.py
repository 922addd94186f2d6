#!/usr/bin/env python3
"""Print what the server's privacy scrub costs (median of 5 runs): a full request and hostile strings."""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.ingest.privacy import DEFAULT_SENSITIVE_PARAMS, mask_string, scrub_event  # noqa: E402


def _median(fn, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    """Run the measurements and print one line each."""
    metadata = {f"k{i}": f"user{i}@example.com paid 4111 1111 1111 1111 at /p?token=t{i}" for i in range(60)}

    def full_request():
        for _ in range(1000):
            scrub_event({"url": "https://example.com/?page=1", "name": "n", "metadata": dict(metadata)},
                        DEFAULT_SENSITIVE_PARAMS)

    print(f"1000 events x 60 PII strings: {_median(full_request) * 1000:.0f} ms (median of 5)")
    for label, text in [("10 KB 'a...@'", "a" * 10_000 + "@"), ("10 KB digits", "1" * 10_000),
                        ("10 KB '?a=b&'", "?a=b&" * 2_000), ("80 KB URL", "https://x.test/?" + "q=abc&" * 13_000)]:
        print(f"{label}: {_median(lambda text=text: mask_string(text, DEFAULT_SENSITIVE_PARAMS)) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
