"""Unit tests for app.ingest.body: content negotiation, size limits, gzip, JSON strictness."""

import gzip
import io
import json
import tracemalloc
import zlib

import pytest

from app.ingest.body import read_json_body
from app.ingest.errors import (
    IngestError,
    InvalidBatch,
    MalformedJSON,
    NoAcceptableEvents,
    PayloadTooLarge,
    TooManyEvents,
    UnsupportedMediaType,
)

MiB = 1024 * 1024


class CountingStream(io.BytesIO):
    """A request stream that records the largest read asked of it and the bytes it gave."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.largest_read = 0
        self.bytes_given = 0

    def read(self, size: int = -1) -> bytes:
        assert size is not None and size >= 0, "the body must never be read unbounded"
        self.largest_read = max(self.largest_read, size)
        chunk = super().read(size)
        self.bytes_given += len(chunk)
        return chunk


def read(data: bytes, *, content_type="application/json", content_encoding=None,
         content_length=None, max_bytes=MiB):
    return read_json_body(CountingStream(data), content_type=content_type,
                          content_encoding=content_encoding, content_length=content_length,
                          max_bytes=max_bytes)


def gzip_bomb(inflated_bytes: int) -> bytes:
    """Compress inflated_bytes of spaces (valid JSON whitespace) without holding them in memory."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b" " * MiB
    out = [deflater.compress(block) for _ in range(inflated_bytes // MiB)]
    out.append(deflater.flush())
    return b"".join(out)


@pytest.mark.parametrize("content_type", [
    "application/json", "text/plain", "text/plain;charset=UTF-8", "application/json; charset=utf-8",
    'application/json; charset="utf8"', "Application/JSON", "text/plain; foo=bar",
])
def test_accepted_content_types(content_type):
    assert read(b'{"events": []}', content_type=content_type) == {"events": []}


@pytest.mark.parametrize("content_type", [
    None, "", "application/xml", "multipart/form-data", "text/plain; charset=latin-1",
    "application/json; charset=utf-16",
])
def test_refused_content_types(content_type):
    with pytest.raises(UnsupportedMediaType) as info:
        read(b"{}", content_type=content_type)
    assert (info.value.status, info.value.code) == (415, "unsupported_media_type")


@pytest.mark.parametrize("encoding", ["br", "deflate", "gzip, gzip", "compress"])
def test_refused_content_encodings(encoding):
    with pytest.raises(UnsupportedMediaType) as info:
        read(b"{}", content_encoding=encoding)
    assert (info.value.status, info.value.code) == (415, "unsupported_content_encoding")


@pytest.mark.parametrize("encoding", [None, "", "identity", "IDENTITY "])
def test_identity_encodings(encoding):
    assert read(b"[1]", content_encoding=encoding) == [1]


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", " GZIP"])
def test_gzip_body(encoding):
    body = {"events": [{"name": "é"}], "n": 1.5}
    assert read(gzip.compress(json.dumps(body).encode()), content_encoding=encoding) == body


def test_multi_member_gzip_is_read_whole():
    data = gzip.compress(b'{"a": ') + gzip.compress(b"[1, 2]}")
    assert read(data, content_encoding="gzip") == {"a": [1, 2]}


def test_declared_length_over_limit_refused_before_reading():
    stream = CountingStream(b"{}")
    with pytest.raises(PayloadTooLarge) as info:
        read_json_body(stream, content_type="application/json", content_encoding=None,
                       content_length=101, max_bytes=100)
    assert (info.value.status, info.value.code) == (413, "payload_too_large")
    assert stream.bytes_given == 0


def test_body_exactly_at_limit_is_read():
    body = b"[" + b" " * 98 + b"]"
    assert read(body, max_bytes=100) == []


def test_undeclared_oversize_body_read_at_most_limit_plus_one():
    stream = CountingStream(b" " * (3 * MiB))
    with pytest.raises(PayloadTooLarge):
        read_json_body(stream, content_type="application/json", content_encoding=None,
                       content_length=None, max_bytes=MiB)
    assert stream.bytes_given == MiB + 1
    assert stream.largest_read <= MiB + 1


def test_lying_content_length_does_not_raise_limit():
    with pytest.raises(PayloadTooLarge):
        read(b" " * 200, content_length=10, max_bytes=100)


def test_compressed_body_over_limit_refused():
    with pytest.raises(PayloadTooLarge):
        read(gzip.compress(bytes(range(256)) * 4000), content_encoding="gzip", max_bytes=1000)


def test_inflated_size_exactly_at_limit_accepted():
    body = b"[" + b" " * 998 + b"]"
    assert read(gzip.compress(body), content_encoding="gzip", max_bytes=1000) == []
    with pytest.raises(PayloadTooLarge):
        read(gzip.compress(body + b" "), content_encoding="gzip", max_bytes=1000)


@pytest.mark.parametrize("inflated", [100 * MiB, 1024 * MiB], ids=["100MiB", "1GiB"])
def test_gzip_bomb_refused_with_bounded_memory(inflated):
    bomb = gzip_bomb(inflated)
    assert len(bomb) < MiB  # the compressed body itself passes the raw limit
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge) as info:
            read(bomb, content_encoding="gzip", max_bytes=MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.code == "payload_too_large"
    assert "inflated" in info.value.message
    # The bomb's own bytes (~100 KiB) plus at most max_bytes+1 of output and zlib's window.
    assert peak < 8 * MiB, f"peak {peak} bytes"


# mtime=0 and ids: the same test names in every process (pytest-xdist compares collections).
@pytest.mark.parametrize("data", [
    gzip.compress(b'{"events": []}', mtime=0)[:-6],
    gzip.compress(b'{"events": []}', mtime=0)[:10],
    b"",
    b"not gzip at all",
    gzip.compress(b"{}", mtime=0) + b"garbage",
], ids=["truncated-trailer", "header-only", "empty", "not-gzip", "trailing-garbage"])
def test_truncated_or_corrupt_gzip_is_malformed(data):
    with pytest.raises(MalformedJSON) as info:
        read(data, content_encoding="gzip")
    assert (info.value.status, info.value.code) == (400, "malformed_json")


def test_corrupt_deflate_stream_is_malformed():
    data = bytearray(gzip.compress(b'{"events": [1, 2, 3, 4, 5, 6, 7, 8]}'))
    data[12:20] = b"\xff" * 8
    with pytest.raises(MalformedJSON):
        read(bytes(data), content_encoding="gzip")


@pytest.mark.parametrize("data", [
    b"", b"{", b'{"a": 1,}', b"\xff\xfe{}", b'{"a": "\xc3"}', b"NaN", b'{"a": Infinity}',
    b"[-Infinity]", b"[1e400]", b"[" + b"9" * 5000 + b"]", b"[" * 100_000 + b"]" * 100_000,
])
def test_malformed_json(data):
    with pytest.raises(MalformedJSON) as info:
        read(data)
    assert info.value.status == 400


def test_bom_is_ignored_and_duplicate_keys_keep_last():
    assert read(b'\xef\xbb\xbf{"a": 1, "a": 2}') == {"a": 2}


def test_large_but_finite_numbers_survive():
    assert read(b"[1e308, 12345678901234567890]") == [1e308, 12345678901234567890]


@pytest.mark.parametrize("cls, status, code", [
    (MalformedJSON, 400, "malformed_json"), (PayloadTooLarge, 413, "payload_too_large"),
    (TooManyEvents, 413, "too_many_events"), (UnsupportedMediaType, 415, "unsupported_media_type"),
    (InvalidBatch, 400, "invalid_batch"), (NoAcceptableEvents, 400, "no_acceptable_events"),
])
def test_error_classes_carry_status_code_and_message(cls, status, code):
    error = cls()
    assert isinstance(error, IngestError)
    assert (error.status, error.code, error.details) == (status, code, None)
    assert error.message and str(error) == error.message
    assert code in repr(error)


def test_error_details_and_code_override():
    rejections = [{"index": 0, "code": "not_an_object", "errors": {}}]
    assert NoAcceptableEvents(details=rejections).details == rejections
    error = UnsupportedMediaType("no", code="unsupported_content_encoding")
    assert (error.status, error.code, error.message) == (415, "unsupported_content_encoding", "no")
    assert UnsupportedMediaType().code == "unsupported_media_type"  # the class is not changed
