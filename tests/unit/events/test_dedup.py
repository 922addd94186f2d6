"""The ownership rule of app.events.dedup (pure logic)."""
from __future__ import annotations

from app.events.dedup import owned_events

W = 86_400_000


def _b(bid, received, *eids, project="p"):
    return {"batch_id": bid, "project": project, "received_at": received,
            "events": [{"event_id": e, "session_id": "s"} for e in eids]}


def _ids(owned):
    return {b: [e["event_id"] for e in evs] for b, evs in owned.items()}


def test_in_one_flush_the_earliest_receipt_owns_then_the_smaller_batch_id():
    got = owned_events([_b("b2", 200, "x", "y"), _b("b1", 100, "x"), _b("b0", 200, "y", "z")], {}, W)
    assert _ids(got) == {"b2": [], "b1": ["x"], "b0": ["y", "z"]}


def test_a_stored_carrier_within_the_window_wins_even_if_received_later():
    stored = {("p", "x"): [(500, "old")]}
    assert _ids(owned_events([_b("new", 100, "x", "y")], stored, W)) == {"new": ["y"]}


def test_a_redelivered_batch_keeps_what_it_stored():
    stored = {("p", "x"): [(100, "b1")]}
    assert _ids(owned_events([_b("b1", 100, "x")], stored, W)) == {"b1": ["x"]}


def test_two_stored_carriers_the_read_rule_decides():
    stored = {("p", "x"): [(100, "b9"), (100, "b1")]}
    got = owned_events([_b("b9", 100, "x"), _b("b1", 100, "x")], stored, W)
    assert _ids(got) == {"b9": [], "b1": ["x"]}


def test_carriers_older_than_the_window_do_not_count():
    stored = {("p", "x"): [(1_000, "old")]}
    assert _ids(owned_events([_b("new", 1_000 + W + 1, "x")], stored, W)) == {"new": ["x"]}
    assert _ids(owned_events([_b("new", 1_000 + W, "x")], stored, W)) == {"new": []}


def test_projects_do_not_share_event_ids():
    got = owned_events([_b("a", 100, "x", project="p"), _b("b", 50, "x", project="q")], {}, W)
    assert _ids(got) == {"a": ["x"], "b": ["x"]}


def test_only_events_nobody_stored_are_written():
    from app.events.dedup import split

    stored = {("p", "x"): [(100, "b1")], ("p", "y"): [(90, "b0")]}
    got = split([_b("b1", 100, "x", "y", "z")], stored, W)
    owned, new = got["b1"]
    assert [e["event_id"] for e in owned] == ["x", "z"] and [e["event_id"] for e in new] == ["z"]
