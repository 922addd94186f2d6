"""Read a request body into JSON under a hard size limit, before and after gzip."""

from __future__ import annotations

import json
import math
import sys
import zlib
from collections.abc import Iterator
from typing import IO

import orjson

from app.ingest.errors import MalformedJSON, PayloadTooLarge, UnsupportedMediaType

ACCEPTED_MEDIA_TYPES = frozenset({"application/json", "text/plain"})
_UTF8_CHARSETS = frozenset({"utf-8", "utf8"})
_IDENTITY = frozenset({"", "identity"})
_GZIP = frozenset({"gzip", "x-gzip"})
_CHUNK = 64 * 1024
# Bytes of an over-limit body read and discarded so the client can read its 413.
MAX_DRAIN = 16 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
# Digits -> "0" and "{" -> "[" in one C pass, to count containers and find long digit runs.
_PROBE = bytes.maketrans(b"0123456789{", b"0000000000[")
_LONG_DIGITS = b"0" * 19


def read_json_body(stream: IO[bytes], *, content_type: str | None, content_encoding: str | None,
                   content_length: int | None, max_bytes: int) -> object:
    """Return the parsed JSON body, refusing anything over max_bytes raw or inflated."""
    _check_content_type(content_type)
    gzipped = _is_gzip(content_encoding)
    if content_length is not None and content_length > max_bytes:
        raise PayloadTooLarge(details={"max_bytes": max_bytes})
    chunks = _read_chunks(stream, max_bytes)
    raw = _inflate(chunks, max_bytes) if gzipped else b"".join(chunks)
    return _parse(raw)


def drain(stream: IO[bytes], limit: int = MAX_DRAIN) -> int:
    """Read and discard up to ``limit`` bytes of what is left of a body; returns bytes read."""
    seen = 0
    while seen < limit:
        chunk = stream.read(min(_CHUNK, limit - seen))
        if not chunk:
            break
        seen += len(chunk)
    return seen


def _check_content_type(content_type: str | None) -> None:
    if not content_type:
        raise UnsupportedMediaType("A Content-Type header is required.")
    mime, _, params = content_type.partition(";")
    if mime.strip().lower() not in ACCEPTED_MEDIA_TYPES:
        raise UnsupportedMediaType()
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in _UTF8_CHARSETS:
            raise UnsupportedMediaType("Only the UTF-8 charset is accepted.")


def _is_gzip(content_encoding: str | None) -> bool:
    encoding = (content_encoding or "").strip().lower()
    if encoding in _GZIP:
        return True
    if encoding in _IDENTITY:
        return False
    raise UnsupportedMediaType("Content-Encoding must be identity or gzip.",
                               code="unsupported_content_encoding")


def _read_chunks(stream: IO[bytes], max_bytes: int) -> Iterator[bytes]:
    # A generator, so gzip inflation consumes each chunk before the next is read and
    # at most max_bytes + 1 raw bytes are ever read, whatever Content-Length claimed.
    total = 0
    while True:
        chunk = stream.read(min(_CHUNK, max_bytes + 1 - total))
        if not chunk:
            return
        total += len(chunk)
        if total > max_bytes:
            raise PayloadTooLarge(details={"max_bytes": max_bytes})
        yield chunk


def _inflate(chunks: Iterator[bytes], max_bytes: int) -> bytearray:
    # max_length keeps zlib from producing more than the budget, so a gzip bomb costs
    # at most max_bytes + 1 of output before it is refused.
    out = bytearray()
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    started = False
    try:
        for chunk in chunks:
            data = chunk
            while data:
                started = True
                if inflater.eof:
                    # Concatenated gzip members are valid gzip (RFC 1952 section 2.2).
                    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out += inflater.decompress(data, max_bytes + 1 - len(out))
                if len(out) > max_bytes:
                    raise PayloadTooLarge("The request body is over the size limit once inflated.",
                                          details={"max_bytes": max_bytes})
                data = inflater.unconsumed_tail or inflater.unused_data
    except zlib.error as exc:
        raise MalformedJSON("The gzip body is corrupt.") from exc
    if not started or not inflater.eof:
        raise MalformedJSON("The gzip body is truncated.")
    return out


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        # 1e400 parses as inf, which no JSON consumer downstream can represent.
        raise ValueError("number out of range")
    return value


def _parse(raw: bytes | bytearray, *, fast: bool = True) -> object:
    """The body as json.loads (below) reads it, by orjson when that gives the very same value."""
    if fast:
        probe = raw.translate(_PROBE)
        # orjson reads integers past 64 bits as floats (json: exact ints): any run of 19 digits
        # goes to json. json fails past about the recursion limit minus the caller's stack,
        # orjson only past 1024 levels: with at most half the limit of "[" and "{" bytes the
        # nesting is below both, so both read the body alike.
        if _LONG_DIGITS not in probe and probe.count(b"[") <= sys.getrecursionlimit() // 2:
            # What orjson refuses (invalid UTF-8, NaN, 1e400, control characters, and lone
            # surrogate escapes, which json reads) gets json's answer below, as before.
            try:
                return orjson.loads(raw[3:] if raw[:3] == _BOM else raw)
            except orjson.JSONDecodeError:
                pass
    return _parse_stdlib(raw)


def _parse_stdlib(raw: bytes | bytearray) -> object:
    try:
        # utf-8-sig: RFC 8259 lets a parser ignore a byte order mark, and some clients send one.
        text = raw.decode("utf-8-sig")
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except UnicodeDecodeError as exc:
        raise MalformedJSON("The request body is not valid UTF-8.") from exc
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and over-long integers; RecursionError, deep nesting.
        raise MalformedJSON() from exc
