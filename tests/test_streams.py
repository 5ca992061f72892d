"""The stream checks verify applies to every stored chunk (migrate.target.streams), on
streams written by other encoders than the tool's own (Python's gzip and zlib, numcodecs'
zstd and blosc): a whole stream passes, a cut or lengthened one is named."""

from __future__ import annotations

import gzip
import struct
import zlib
from typing import Any

import google_crc32c
import numpy as np
import pytest
from numcodecs import Blosc, Zstd

from migrate.target.streams import EMPTY, check_chunk, check_shard

VALUES = (np.arange(4096, dtype=">u2") % 251).tobytes()
NBYTES = len(VALUES)


def none() -> None:
    return None


def given() -> bytes:
    return VALUES


ENCODERS: dict[str, Any] = {
    "raw": lambda data: data,
    "gzip": lambda data: gzip.compress(data, 6),
    "zlib": lambda data: zlib.compress(data, 6),
    "zstd": lambda data: Zstd(level=3).encode(data),
    "zstd-checksum": lambda data: Zstd(level=3, checksum=True).encode(data),
    "blosc": lambda data: Blosc(cname="zstd", clevel=5, shuffle=1).encode(data),
}


def codec(name: str) -> str:
    return name.split("-")[0]


@pytest.mark.parametrize("name", list(ENCODERS))
@pytest.mark.parametrize("decoded", [none, given], ids=["decoded here", "values given"])
def test_a_whole_stream_passes(name: str, decoded: Any) -> None:
    assert check_chunk(codec(name), ENCODERS[name](VALUES), NBYTES, decoded) is None


@pytest.mark.parametrize("name", list(ENCODERS))
@pytest.mark.parametrize("cut", [1, 4, 8, 9, 20])
def test_a_cut_stream_is_named(name: str, cut: int) -> None:
    stored = ENCODERS[name](VALUES)[:-cut]
    for decoded in (none, given):
        assert check_chunk(codec(name), stored, NBYTES, decoded) is not None, (name, cut)


@pytest.mark.parametrize("name", list(ENCODERS))
def test_bytes_after_the_end_are_named(name: str) -> None:
    stored = ENCODERS[name](VALUES) + b"\x00\x01\x02"
    for decoded in (none, given):
        assert check_chunk(codec(name), stored, NBYTES, decoded) is not None, name


def test_the_messages_say_what_is_wrong() -> None:
    whole = gzip.compress(VALUES)
    assert check_chunk("gzip", whole[:-1], NBYTES, given) == (
        "not a whole gzip stream: it does not end with the trailer of the chunk's size"
    )
    wrong_crc = whole[:-8] + bytes([whole[-8] ^ 1]) + whole[-7:]
    assert check_chunk("gzip", wrong_crc, NBYTES, given) == (
        "not a whole gzip stream: the CRC-32 at its end is not the chunk's"
    )
    assert check_chunk("zstd", Zstd().encode(VALUES) + b"xyz", NBYTES, none) == (
        "3 byte(s) after the end of the zstd frame"
    )
    assert (
        check_chunk("raw", VALUES[:-2], NBYTES, none)
        == f"{NBYTES - 2} bytes stored, the chunk has {NBYTES}"
    )
    other = (np.arange(2048, dtype=">u2")).tobytes()
    assert check_chunk("blosc", Blosc().encode(other), NBYTES, none) == (
        f"a blosc stream of {NBYTES // 2} bytes, the chunk has {NBYTES}"
    )


def test_values_that_are_not_the_streams_fail_the_crc() -> None:
    """The values TensorStore decoded stand in for decoding: a stream whose trailer is not
    theirs does not pass."""
    other = bytes(NBYTES)
    assert check_chunk("gzip", gzip.compress(VALUES), NBYTES, lambda: other) is not None
    assert check_chunk("zlib", zlib.compress(VALUES), NBYTES, lambda: other) is not None


def shard(payloads: list[bytes | None]) -> bytes:
    """A shard (index at the end) built by hand, independently of the tool's writer."""
    entries: list[int] = []
    offset = 0
    for payload in payloads:
        if payload is None:
            entries += [EMPTY, EMPTY]
            continue
        entries += [offset, len(payload)]
        offset += len(payload)
    table = struct.pack(f"<{len(entries)}Q", *entries)
    body = b"".join(p for p in payloads if p is not None)
    return body + table + struct.pack("<I", google_crc32c.value(table))


def test_a_whole_shard_passes_and_its_faults_are_named() -> None:
    chunk = gzip.compress(VALUES)
    whole = shard([chunk, None, chunk, chunk])
    assert check_shard("gzip", whole, 4, NBYTES, lambda n: None) == []
    flipped = whole[:-1] + bytes([whole[-1] ^ 1])
    assert check_shard("gzip", flipped, 4, NBYTES, lambda n: None) == [
        "not a whole shard: the crc32c of its index does not match"
    ]
    longer = shard([chunk, None, chunk + b"\x00", chunk])
    assert check_shard("gzip", longer, 4, NBYTES, lambda n: None) == [
        "inner chunk 2: not a whole gzip stream: it does not end with the trailer of the "
        "chunk's size"
    ]
    assert check_shard("gzip", whole[-20:], 4, NBYTES, lambda n: None) == [
        "not a whole shard: 20 bytes, its index alone takes 68"
    ]
    # an entry pointing past the shard's data, and two entries sharing bytes
    table = struct.pack("<8Q", 0, len(chunk), EMPTY, EMPTY, 10, len(chunk), 0, 10**6)
    odd = chunk + chunk + table + struct.pack("<I", google_crc32c.value(table))
    assert check_shard("gzip", odd, 4, NBYTES, lambda n: None) == [
        "inner chunk 2: not a gzip stream (no gzip header)",
        "inner chunk 3: outside the shard's data",
        "not a whole shard: two inner chunks overlap",
    ]
