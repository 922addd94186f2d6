"""The pieces of an accepted batch's broker message: metadata as a JSON string, the batch's id."""

from __future__ import annotations

import hashlib
import json

import orjson


def metadata_json(metadata: dict, plain: bool) -> str:
    """``metadata`` as json.dumps(separators=(",", ":"), ensure_ascii=False) writes it.

    ``plain``: the fast path accepted the event, so orjson writes the same text (see
    app/ingest/fastpath.py); otherwise json writes it, as it always did.
    """
    if plain:
        try:
            return orjson.dumps(metadata).decode("utf-8")
        except TypeError:  # not expected for a plain event; json's text is the reference
            pass
    return json.dumps(metadata, separators=(",", ":"), ensure_ascii=False)


def batch_id_for(project: str, events: list[dict]) -> str:
    """Content hash of a batch: the same batch posted twice gets the same id downstream."""
    # The bytes hashed are json.dumps([project, events], sort_keys=True, separators=(",", ":"),
    # ensure_ascii=False) in UTF-8. For the view's events (str and int values, ASCII keys, so
    # orjson's sort is json's) orjson writes the same bytes (tests/unit/ingest/test_message.py),
    # and json itself writes what orjson refuses, so one batch has one id however it is hashed.
    try:
        canon = orjson.dumps([project, events], option=orjson.OPT_SORT_KEYS)
    except TypeError:  # lone surrogates (json keeps them, encoded with surrogatepass), huge ints
        text = json.dumps([project, events], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        canon = text.encode("utf-8", "surrogatepass")
    return hashlib.sha256(canon).hexdigest()[:32]
