"""devtools.bench.scrub (figure 9): its bodies are the same size, within the API's limits, and
each shape is one the scrubber has work to do on (pure logic; the figure itself needs a stack)."""
from __future__ import annotations

import json

import pytest

from app.ingest.privacy import DEFAULT_SENSITIVE_PARAMS, mask_string
from app.settings import defaults as settings_defaults
from devtools.bench import scrub


@pytest.mark.parametrize("shape", list(scrub.SHAPES))
def test_every_body_has_the_plain_body_s_size_and_passes_the_api_limits(shape):
    defaults = settings_defaults()
    plain, worst = scrub.body(scrub.PLAIN, "t"), scrub.body(scrub.SHAPES[shape], "t")
    assert len(worst) == len(plain) <= defaults.max_body_bytes  # not a 413
    events = json.loads(worst)["events"]
    assert len(events) == scrub.EVENTS <= defaults.max_events_per_request
    assert max(len(json.dumps(e, separators=(",", ":"))) for e in events) <= defaults.max_event_bytes
    assert len({e["session_id"] for e in events}) == 1  # one new session a body: the session limits stay far


def test_the_plain_body_holds_nothing_to_scrub_and_each_shape_something():
    assert mask_string(scrub.PLAIN * 10, DEFAULT_SENSITIVE_PARAMS)[1] == 0
    for unit in scrub.SHAPES.values():
        assert any(c.isdigit() or c == "@" for c in unit)
