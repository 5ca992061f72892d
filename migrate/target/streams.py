"""Is a stored chunk one whole stream of the codec its array declares? Pure checks on bytes.

Readers differ in what damage they forgive: TensorStore's Zarr v2 gzip and zlib readers take
a stream whose trailer (and even the last byte of deflate data) is cut off, and its Zarr v3
gzip and zstd readers a stream with bytes after its end, where zarr-python refuses both. A
chunk is proven here to be exactly one complete stream, so that every reader reads it:

- ``raw``: exactly the chunk's bytes;
- ``gzip`` (RFC 1952): the gzip header, and a trailer at the very end whose CRC-32 and size
  are those of the chunk's bytes;
- ``zlib`` (RFC 1950): the zlib header, and an Adler-32 of the chunk's bytes at the very end;
- ``zstd``: one frame whose blocks, walked by their headers (the block sizes, nothing
  decoded), end exactly at the end, with the chunk's size as content size when stated;
- ``blosc``: a header stating the chunk's size, and its compressed size equal to the
  stored size;
- a shard (``sharding_indexed``, index at the end): the index's crc32c, every entry inside
  the shard and no two overlapping, and every inner chunk checked as above.

The chunk's decoded bytes (all of them, in the stored byte order; C order) come from the
caller when it has them (TensorStore decoded them while reading the voxels: the check then
costs one CRC over them); otherwise a gzip or zlib stream is decoded here with libdeflate.
"""

from __future__ import annotations

import functools
import itertools
import struct
from collections.abc import Callable
from typing import Any

import deflate
import google_crc32c
from isal import isal_zlib

Buffer = bytes | bytearray | memoryview
Decoded = Callable[[], "Buffer | None"]
"""Returns the chunk's decoded bytes when the caller has them, else None."""

EMPTY = 2**64 - 1
"""Shard index entry (offset and nbytes) of an inner chunk that is not stored."""


def _u32le(data: Any, offset: int) -> int:
    value: int = struct.unpack_from("<I", data, offset)[0]
    return value


def _gzip(stored: memoryview, nbytes: int, decoded: Decoded) -> str | None:
    if len(stored) < 18 or bytes(stored[:3]) != b"\x1f\x8b\x08" or stored[3] & 0xE0:
        return "not a gzip stream (no gzip header)"
    if _u32le(stored, len(stored) - 4) != nbytes & 0xFFFFFFFF:
        return "not a whole gzip stream: it does not end with the trailer of the chunk's size"
    values = decoded()
    if values is None:
        try:
            values = deflate.gzip_decompress(stored, nbytes)
        except deflate.DeflateError as exc:
            return f"not a whole gzip stream ({exc})"
    if isal_zlib.crc32(values) != _u32le(stored, len(stored) - 8):
        return "not a whole gzip stream: the CRC-32 at its end is not the chunk's"
    return None


def _zlib(stored: memoryview, nbytes: int, decoded: Decoded) -> str | None:
    if (
        len(stored) < 6
        or stored[0] & 0x0F != 8
        or stored[0] >> 4 > 7
        or stored[1] & 0x20
        or (stored[0] * 256 + stored[1]) % 31
    ):
        return "not a zlib stream (no zlib header)"
    values = decoded()
    if values is None:
        try:
            values = deflate.zlib_decompress(stored, nbytes)
        except deflate.DeflateError as exc:
            return f"not a whole zlib stream ({exc})"
    if isal_zlib.adler32(values) != struct.unpack_from(">I", stored, len(stored) - 4)[0]:
        return "not a whole zlib stream: the Adler-32 at its end is not the chunk's"
    return None


_ZSTD_MAGIC = 0xFD2FB528


def _zstd(stored: memoryview, nbytes: int) -> str | None:
    """One zstd frame (RFC 8878 §3.1.1), walked by its headers."""
    if len(stored) < 6 or _u32le(stored, 0) != _ZSTD_MAGIC:
        return "not a zstd frame (no zstd magic number)"
    descriptor = stored[4]
    if descriptor & 0x08:
        return "not a zstd frame (reserved bit set)"
    size_flag, single, checksum, dict_flag = (
        descriptor >> 6,
        descriptor >> 5 & 1,
        descriptor >> 2 & 1,
        descriptor & 3,
    )
    position = 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
    size_bytes = (1 if single else 0, 2, 4, 8)[size_flag]
    if position + size_bytes > len(stored):
        return "not a whole zstd frame: cut in its header"
    if size_bytes:
        stated = int.from_bytes(stored[position : position + size_bytes], "little")
        stated += 256 if size_bytes == 2 else 0
        if stated != nbytes:
            return f"a zstd frame of {stated} bytes, the chunk has {nbytes}"
    position += size_bytes
    while True:
        if position + 3 > len(stored):
            return "not a whole zstd frame: it ends before its last block"
        header = int.from_bytes(stored[position : position + 3], "little")
        kind, size = header >> 1 & 3, header >> 3
        if kind == 3:
            return "not a zstd frame (reserved block type)"
        position += 3 + (1 if kind == 1 else size)
        if header & 1:
            break
    position += 4 if checksum else 0
    if position > len(stored):
        return "not a whole zstd frame: cut in its last block"
    if position < len(stored):
        return f"{len(stored) - position} byte(s) after the end of the zstd frame"
    return None


def _blosc(stored: memoryview, nbytes: int) -> str | None:
    if len(stored) < 16:
        return "not a blosc stream (shorter than its header)"
    stated, compressed = _u32le(stored, 4), _u32le(stored, 12)
    if stated != nbytes:
        return f"a blosc stream of {stated} bytes, the chunk has {nbytes}"
    if compressed != len(stored):
        return f"a blosc stream of {compressed} stored bytes, {len(stored)} are stored"
    return None


def check_chunk(
    codec: str, stored: bytes | memoryview, nbytes: int, decoded: Decoded
) -> str | None:
    """Why ``stored`` is not exactly one complete ``codec`` stream (``raw``, ``gzip``,
    ``zlib``, ``zstd``, ``blosc``) of a chunk of ``nbytes`` bytes, or None when it is."""
    view = memoryview(stored).cast("B")
    if codec == "raw":
        if len(view) != nbytes:
            return f"{len(view)} bytes stored, the chunk has {nbytes}"
        return None
    if codec == "gzip":
        return _gzip(view, nbytes, decoded)
    if codec == "zlib":
        return _zlib(view, nbytes, decoded)
    if codec == "zstd":
        return _zstd(view, nbytes)
    if codec == "blosc":
        return _blosc(view, nbytes)
    raise AssertionError(f"no stream check for {codec}")  # pragma: no cover


def check_shard(
    codec: str,
    stored: bytes | memoryview,
    inner: int,
    nbytes: int,
    decoded: Callable[[int], Buffer | None],
) -> list[str]:
    """Why ``stored`` is not a whole shard of ``inner`` inner chunks of ``nbytes`` bytes each
    (``codec`` streams, index at the end: little-endian uint64 offset and size per inner
    chunk in C order, then its crc32c); ``decoded(i)`` gives inner chunk ``i``'s decoded
    bytes when the caller has them. Empty when it is."""
    view = memoryview(stored).cast("B")
    index_size = 16 * inner + 4
    if len(view) < index_size:
        return [f"not a whole shard: {len(view)} bytes, its index alone takes {index_size}"]
    end = len(view) - index_size
    index = view[end:]
    if google_crc32c.value(bytes(index[:-4])) != _u32le(index, 16 * inner):
        return ["not a whole shard: the crc32c of its index does not match"]
    entries = struct.unpack_from(f"<{2 * inner}Q", index)
    spans = []
    problems = []
    for number in range(inner):
        offset, size = entries[2 * number], entries[2 * number + 1]
        if offset == EMPTY and size == EMPTY:
            continue
        if offset + size > end:
            problems.append(f"inner chunk {number}: outside the shard's data")
            continue
        spans.append((offset, offset + size))
        problem = check_chunk(
            codec, view[offset : offset + size], nbytes, functools.partial(decoded, number)
        )
        if problem:
            problems.append(f"inner chunk {number}: {problem}")
    spans.sort()
    if any(start < stop for (_, stop), (start, _) in itertools.pairwise(spans)):
        problems.append("not a whole shard: two inner chunks overlap")
    return problems
