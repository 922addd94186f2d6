"""A PII corpus through the real pipeline: nothing of it in ClickHouse or in what reaches UFSE.

HTTP -> gunicorn -> Celery -> ClickHouse 18.16 + Redis sessions -> beat -> UFSE sink. Emails,
Luhn-valid card numbers (with and without separators), the shared rules' vectors (phones,
national ids, search and one-time parameters) and false-positive corpus, secrets in query strings (in `url`
and inside metadata strings, nested five levels deep) and Authorization/Cookie metadata keys
must be gone everywhere; Luhn-invalid digit strings and JSON numbers must arrive unchanged.
"""
from __future__ import annotations

import json
import time
import uuid

import pytest
import requests

from app.ingest.privacy import RULES

pytestmark = pytest.mark.e2e


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        v = int(ch)
        if i % 2:
            v = v * 2 - 9 if v > 4 else v * 2
        total += v
    return total % 10 == 0


EMAILS = ["jane.doe@example.com", "bob+orders@mail.example.co.uk", "X_Y-Z%1@sub.domain.io"]
CARDS = ["4111111111111111", "5500 0000 0000 0004", "3782-822463-10005", "6011-1111-1111-1117",
         "4012 8888 8888 1881", "4000056655665556"]
SECRETS = ["tok_SECRET_9f8e7d", "hunter2pass", "AKIAEXAMPLEKEY42", "eyJhbGciOiJIUzI1NiJ9.payload.sig_abc",
           "sk_live_AUTHHEADER_51Hx", "cookie_secret_value_77", "sess_COOKIE_99", "client_secret_zzz"]
# Luhn-invalid digit strings (and short ones) that must pass untouched
KEEP_STRINGS = ["4111111111111112", "1234 5678 9012 3456", "order 9876543210986", "tel 0044-1234-567890",
                "12345", "ref 1111-2222-3333-4445"]
# JSON numbers, Luhn-valid ones included: numbers are never scrubbed
KEEP_NUMBERS = {"n_card_like": 4242424242424242, "n_float": 3.14159, "n_neg": -42, "n_big": 5105105105105100,
                "n_zero": 0}


def _corpus_events(sid: str) -> list[dict]:
    now = int(time.time() * 1000)
    deep = {"l1": {"l2": {"l3": {"l4": {"l5": {
        "contact": f"write to {EMAILS[2]} please",
        "cards": [f"paid with {CARDS[4]}", {"raw": CARDS[5]}],
        "link": f"https://api.test/v1?client_secret={SECRETS[7]}&x=1",
        "keep": KEEP_STRINGS[5], **KEEP_NUMBERS,
        "Cookie": f"sid={SECRETS[6]}",
    }}}}}}
    return [
        {"event_id": str(uuid.uuid4()), "type": "custom", "name": "shared_rules", "timestamp": now - 4000,
         "session_id": sid,
         "url": "https://shop.test/rules",
         "metadata": {"vectors": [v[0] for v in RULES["vectors"]], "keep": RULES["keep"]}},
        {"event_id": str(uuid.uuid4()), "type": "page_view", "timestamp": now - 3000, "session_id": sid,
         "url": f"https://shop.test/reset?token={SECRETS[0]}&page=2&password={SECRETS[1]}",
         "metadata": {"referrer": f"https://mail.test/?email={EMAILS[0]}", "keep": KEEP_STRINGS[0]}},
        {"event_id": str(uuid.uuid4()), "type": "error", "timestamp": now - 2000, "session_id": sid,
         "url": f"https://shop.test/pay?api_key={SECRETS[2]}",
         "metadata": {"message": f"card {CARDS[0]} declined for {EMAILS[1]}", "stack": f"at pay ({CARDS[1]})",
                      "request": f"GET /api/orders?access_token={SECRETS[3]} HTTP/1.1",
                      "headers": {"Authorization": f"Bearer {SECRETS[4]}", "cookie": f"sid={SECRETS[6]}",
                                  "Accept": "application/json"},
                      "keep": KEEP_STRINGS[1], "keep2": [KEEP_STRINGS[2], KEEP_STRINGS[3], KEEP_STRINGS[4]],
                      **KEEP_NUMBERS}},
        {"event_id": str(uuid.uuid4()), "type": "custom", "timestamp": now - 1000, "session_id": sid,
         "name": f"checkout {CARDS[2]}", "url": "https://shop.test/done",
         "metadata": {"Authorization": f"Basic {SECRETS[4]}", "amex": CARDS[2], "disc": CARDS[3], "deep": deep}},
    ]


def _forbidden() -> list[str]:
    out = list(EMAILS) + list(SECRETS)
    for c in CARDS:
        out += [c, c.replace(" ", "").replace("-", "")]
    return out


def _walk(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)
    else:
        yield node


def test_pii_never_reaches_clickhouse_or_ufse(make_stack):
    for c in CARDS:
        assert _luhn(c.replace(" ", "").replace("-", "")), c
    for s in KEEP_STRINGS:
        digits = "".join(ch for ch in s if ch.isdigit())
        assert len(digits) < 13 or not _luhn(digits), s
    stack = make_stack(engine="server")
    sid = f"pii-{uuid.uuid4().hex[:8]}"
    events = _corpus_events(sid)
    r = requests.post(f"{stack.url}/v1/events", json={"events": events},
                      headers={"Authorization": f"Bearer {stack.api_key}", "X-Request-ID": f"pii-req-{sid}"},
                      timeout=10)
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 4 and r.json()["rejected"] == []

    wid = f"{stack.project}:{sid}:1"
    try:
        got = stack.sink.wait_for(lambda d: any(x["headers"].get("webhook-id") == wid and x["status"] == 200
                                                for x in d), 45)
    except TimeoutError:
        raise AssertionError(f"{wid} never delivered\n{stack.logs()}") from None
    deliveries = [d for d in got if d["headers"].get("webhook-id") == wid]
    payload = deliveries[-1]["body"]
    assert len(payload["events"]) == 4

    from app.storage.clickhouse.client import get_clickhouse

    ch = get_clickhouse(stack.ch_url)
    tables = {t: ch.execute(f"SELECT * FROM {ch.database}.{t} FINAL")
              for t in ("events", "sessions", "session_batches")}
    ch_rows = tables["events"]
    assert len([r for r in ch_rows if sid in r]) == 4, ch_rows

    # -- nothing of the corpus anywhere: every ClickHouse row of every table, every raw delivery body
    haystacks = {"clickhouse": "\n".join(repr(r) for rows in tables.values() for r in rows)}
    for i, d in enumerate(deliveries):
        # the exact bytes the forwarder signs and sends (compact, ensure_ascii=False), and headers
        haystacks[f"ufse[{i}]"] = json.dumps(d["body"], separators=(",", ":"),
                                             ensure_ascii=False) + json.dumps(d["headers"])
    leaks = [(where, pii) for where, text in haystacks.items() for pii in _forbidden() if pii in text]
    assert not leaks, leaks
    for where, text in haystacks.items():
        for dropped in ("Authorization", "authorization", "Cookie", "cookie"):
            assert f'"{dropped}"' not in text, (where, dropped)

    # -- what must survive, unchanged, in ClickHouse and in UFSE
    # SELECT * returns the stored columns only: leave out MATERIALIZED/ALIAS ones (DESCRIBE's 3rd field)
    cols = [c for c, _type, kind, *_ in ch.execute(f"DESCRIBE TABLE {ch.database}.events")
            if kind not in ("MATERIALIZED", "ALIAS")]
    by_id = {dict(zip(cols, r, strict=True))["event_id"]: dict(zip(cols, r, strict=True)) for r in ch_rows}
    ufse_by_id = {e["event_id"]: e for e in payload["events"]}
    for e in events:
        stored = by_id[e["event_id"]]
        meta_ch = json.loads(stored["metadata"])
        meta_ufse = ufse_by_id[e["event_id"]]["metadata"]
        assert meta_ch == meta_ufse
        for meta in (meta_ch, meta_ufse):
            leaves = list(_walk(meta))
            for k, v in KEEP_NUMBERS.items():
                if k in e["metadata"]:
                    assert meta[k] == v and type(meta[k]) is type(v), (k, meta[k])
            for s in KEEP_STRINGS:
                if any(s in str(x) for x in _walk(e["metadata"])):
                    assert any(s in str(x) for x in leaves), (s, meta)

    rules_row, first, second, third = (by_id[e["event_id"]] for e in events)
    # the rules file's vectors and false-positive corpus, as the SDK's unit tests run them
    m0 = json.loads(rules_row["metadata"])
    assert m0["vectors"] == [v[1] for v in RULES["vectors"]]
    assert m0["keep"] == RULES["keep"]
    assert ufse_by_id[events[0]["event_id"]]["metadata"] == m0
    assert first["url"] == "https://shop.test/reset?token=[redacted]&page=2&password=[redacted]"
    assert json.loads(first["metadata"]) == {"referrer": "https://mail.test/?email=[redacted]", "keep": KEEP_STRINGS[0]}
    assert second["url"] == "https://shop.test/pay?api_key=[redacted]"
    m2 = json.loads(second["metadata"])
    assert m2["message"] == "card [card] declined for [email]"
    assert m2["stack"] == "at pay ([card])"
    assert m2["request"] == "GET /api/orders?access_token=[redacted] HTTP/1.1"
    assert m2["headers"] == {"Accept": "application/json"}
    assert m2["keep2"] == KEEP_STRINGS[2:5]
    assert third["name"] == "checkout [card]"
    m3 = json.loads(third["metadata"])
    assert "Authorization" not in m3 and m3["amex"] == "[card]" and m3["disc"] == "[card]"
    l5 = m3["deep"]["l1"]["l2"]["l3"]["l4"]["l5"]
    assert l5["contact"] == "write to [email] please"
    assert l5["cards"] == ["paid with [card]", {"raw": "[card]"}]
    assert l5["link"] == "https://api.test/v1?client_secret=[redacted]&x=1"
    assert l5["keep"] == KEEP_STRINGS[5] and "Cookie" not in l5
    assert {k: l5[k] for k in KEEP_NUMBERS} == KEEP_NUMBERS
    # UFSE carries the same scrubbed values (url and name too)
    assert ufse_by_id[events[1]["event_id"]]["url"] == first["url"]
    assert ufse_by_id[events[3]["event_id"]]["name"] == "checkout [card]"
    assert f"pii-req-{sid}" in payload["session"]["request_ids"]
