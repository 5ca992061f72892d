"""An independent N5 reader for tests (numpy, numcodecs and the standard library only).

It is the yardstick for both the fixture writer (``migrate.example.fixture``) and the converter,
so it shares no code with either. It follows the saalfeldlab/n5 spec:

* array ``attributes.json``: ``dimensions``, ``blockSize`` (F order), ``dataType``,
  ``compression``;
* block (i, j, k) (F order) is the file ``i/j/k``: ``mode:u16 BE``, ``ndim:u16 BE``,
  ``dims:u32 BE x ndim`` (F order), ``num_elements:u32 BE`` when mode is 1 (varlength), then
  the compressed big-endian payload in F order over the block dims;
* each block's own header dims are trusted (truncated and full-size edge blocks both work);
  a missing block reads as zeros.

Arrays are returned in **C order** (the reversed N5 dims, z, y, x for 3-D).
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "BlockHeader",
    "block_files",
    "decompress",
    "read_attributes",
    "read_block",
    "read_block_header",
    "read_n5_array",
]


@dataclass(frozen=True)
class BlockHeader:
    """Parsed N5 block header; ``dims`` in F order (as stored), ``size`` = header bytes."""

    mode: int
    dims: tuple[int, ...]
    num_elements: int
    size: int


def read_attributes(path: Path) -> dict[str, Any]:
    """``attributes.json`` of the group or array directory ``path``."""
    attrs = json.loads((Path(path) / "attributes.json").read_text())
    if not isinstance(attrs, dict):
        raise ValueError(f"{path}/attributes.json: not a JSON object")
    return attrs


def parse_block_header(raw: bytes, where: str = "<block>") -> BlockHeader:
    """Parse the header at the start of the block bytes ``raw``."""
    if len(raw) < 4:
        raise ValueError(f"{where}: {len(raw)} bytes, too short for an N5 block header")
    mode, ndim = struct.unpack_from(">HH", raw, 0)
    if mode not in (0, 1):
        raise ValueError(f"{where}: unsupported N5 block mode {mode}")
    dims = struct.unpack_from(f">{ndim}I", raw, 4)
    size = 4 + 4 * ndim
    num = math.prod(dims)
    if mode == 1:
        (num,) = struct.unpack_from(">I", raw, size)
        size += 4
    return BlockHeader(mode=mode, dims=tuple(dims), num_elements=num, size=size)


def read_block_header(path: Path) -> BlockHeader:
    """Header of the block file ``path``."""
    return parse_block_header(Path(path).read_bytes(), str(path))


def decompress(payload: bytes, compression: dict[str, Any]) -> bytes:
    """Decompress an N5 block payload according to the array's ``compression`` attribute."""
    ctype = compression.get("type")
    if ctype == "raw":
        return payload
    if ctype == "gzip":
        if compression.get("useZlib", False):
            return zlib.decompress(payload)
        return gzip.decompress(payload)
    if ctype == "bzip2":
        return bz2.decompress(payload)
    if ctype == "xz":
        return lzma.decompress(payload, format=lzma.FORMAT_XZ)
    if ctype == "blosc":
        from numcodecs import Blosc

        return bytes(Blosc().decode(payload))
    if ctype == "zstd":
        from numcodecs import Zstd

        return bytes(Zstd().decode(payload))
    raise NotImplementedError(f"N5 compression {ctype!r} is not supported by this reader")


def read_block(path: Path, attrs: dict[str, Any]) -> npt.NDArray[Any]:
    """Decode the block file ``path`` of an array with attributes ``attrs``; C order values.

    The returned shape is the block header's dims reversed (not the array's block size).
    """
    raw = Path(path).read_bytes()
    header = parse_block_header(raw, str(path))
    ndim = len(attrs["dimensions"])
    if len(header.dims) != ndim:
        raise ValueError(f"{path}: header has {len(header.dims)} dims, array has {ndim}")
    dtype = np.dtype(attrs["dataType"]).newbyteorder(">")
    data = decompress(raw[header.size :], attrs["compression"])
    expected = header.num_elements * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{path}: payload is {len(data)} bytes, header implies {expected}")
    if header.num_elements != math.prod(header.dims):
        raise ValueError(f"{path}: varlength block with {header.num_elements} elements")
    values = np.frombuffer(data, dtype=dtype).reshape(header.dims[::-1])
    return values.astype(dtype.newbyteorder("="))


def block_files(array_dir: Path) -> dict[tuple[int, ...], Path]:
    """Every block file under ``array_dir``, keyed by its grid position in **F order**."""
    out: dict[tuple[int, ...], Path] = {}
    for p in Path(array_dir).rglob("*"):
        if not p.is_file() or p.name == "attributes.json":
            continue
        parts = p.relative_to(array_dir).parts
        if not all(part.isdigit() for part in parts):
            raise ValueError(f"{p}: not an N5 block path")
        out[tuple(int(part) for part in parts)] = p
    return out


def read_n5_array(array_dir: Path) -> npt.NDArray[Any]:
    """The whole N5 array at ``array_dir``, C order (shape = reversed ``dimensions``).

    Raises if a block file lies outside the block grid or has the wrong number of dims.
    """
    attrs = read_attributes(array_dir)
    dims_f = [int(d) for d in attrs["dimensions"]]
    block_f = [int(b) for b in attrs["blockSize"]]
    grid_f = [-(-d // b) for d, b in zip(dims_f, block_f, strict=True)]
    out = np.zeros(dims_f[::-1], dtype=np.dtype(attrs["dataType"]))
    for pos_f, path in block_files(array_dir).items():
        if len(pos_f) != len(dims_f) or any(p >= g for p, g in zip(pos_f, grid_f, strict=True)):
            raise ValueError(f"{path}: block {pos_f} outside the grid {grid_f}")
        block = read_block(path, attrs)
        origin_c = [p * b for p, b in zip(pos_f, block_f, strict=True)][::-1]
        extent = [
            min(n, size - o) for n, size, o in zip(block.shape, out.shape, origin_c, strict=True)
        ]
        dst = tuple(slice(o, o + e) for o, e in zip(origin_c, extent, strict=True))
        out[dst] = block[tuple(slice(0, e) for e in extent)]
    return out
