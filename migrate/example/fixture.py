"""Realistic Cellmap/COSEM N5 datasets, written block by block with our own N5 encoder.

This module is the test-data generator of the project (and of ``scripts/make_fixture.py``).
It deliberately does **not** use TensorStore or zarr to write: every block file is produced
here exactly as the Java N5 library (saalfeldlab/n5) lays it out, so that the converter is
tested against bytes it did not write itself.

N5 on disk
----------
* ``<root>/attributes.json`` is ``{"n5": "2.5.0"}``; every group has an ``attributes.json``.
* An array ``<image>/sN/attributes.json`` holds ``dimensions``, ``blockSize`` (both in
  **F order**, x first), ``dataType`` and ``compression`` (written verbatim from the spec).
* The block at grid position (i, j, k) -- F order, i along x -- is the file ``sN/i/j/k``:
  ``mode:u16 BE (= 0)``, ``ndim:u16 BE``, ``dims:u32 BE x ndim`` (F order), then the
  compressed payload: the block's values, big-endian, in F order over the N5 dims, which is C
  order over the reversed dims -- i.e. ``c_order_array.astype(">u2").tobytes()``.
* Edge blocks are **truncated** (header dims = the part inside the array, as Java N5, z5
  and zarr's N5Store write them) or **full** (header dims = blockSize, the outside padded
  with 0, as TensorStore writes them), see :attr:`ImageSpec.edge_blocks`.
* Blocks whose values are all zero are not written (absent block = all zero).

Axis order
----------
Everything in this module's Python API -- shapes, block sizes, factors, voxel sizes,
offsets, boxes and returned arrays -- is in **C order** (z, y, x for 3-D). Only the JSON
written to disk uses F order where the N5 / Neuroglancer conventions demand it.

Default axis names (C order): 2-D ``(y, x)``, 3-D ``(z, y, x)``, 4-D ``(c, z, y, x)``,
5-D ``(t, c, z, y, x)`` (1-D ``(x,)``); :attr:`ImageSpec.axes` overrides them. Every axis
gets the unit :attr:`ImageSpec.unit` (real Cellmap data is 3-D and spatial only).

Voxel values
------------
:func:`level_data` is a pure function of ``(spec, level, global voxel coordinates)`` built
from integer hashing and integer arithmetic only, so any block can be generated on its own,
bit-identically, in bounded memory. ``gradient``, ``noise`` and ``labels`` are functions of
the *s0 (physical) voxel coordinate* ``index * factor**level``, so level n is exactly
``s0[::f**n]`` (a subsample of s0). ``sparse`` is gradient content in randomly chosen whole
blocks of each level and zero elsewhere.

This module only imports numpy, numcodecs and the standard library.
"""

from __future__ import annotations

import bz2
import itertools
import json
import lzma
import math
import os
import shutil
import struct
import zlib
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "DTYPES",
    "ImageSpec",
    "array_attributes",
    "axis_names",
    "block_path",
    "encode_block",
    "example_images",
    "group_attributes",
    "level_block_size",
    "level_data",
    "level_factors",
    "level_scale",
    "level_shape",
    "level_translation",
    "write_dataset",
    "write_image",
]

N5_VERSION = "2.5.0"

DTYPES: tuple[str, ...] = (
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "int32",
    "int64",
    "float32",
    "float64",
)

_DEFAULT_AXES: dict[int, tuple[str, ...]] = {
    1: ("x",),
    2: ("y", "x"),
    3: ("z", "y", "x"),
    4: ("c", "z", "y", "x"),
    5: ("t", "c", "z", "y", "x"),
}

_COMPRESSIONS = ("raw", "gzip", "bzip2", "xz", "blosc", "zstd", "lz4")

Box = tuple[slice, ...]
U64Array = npt.NDArray[np.uint64]
I64Array = npt.NDArray[np.int64]


def _default_compression() -> dict[str, Any]:
    return {"type": "gzip", "level": -1}


@dataclass(frozen=True)
class ImageSpec:
    """One multiscale image (a group of arrays ``s0 .. s{levels-1}``) inside an N5 root.

    All tuples are in **C order** (z, y, x for 3-D), whatever order the metadata on disk uses.

    Attributes:
        path: group path inside the N5 root, e.g. ``"em/fibsem-uint16"``.
        shape: shape of s0, C order. 1-D to 5-D; 3-D is typical.
        dtype: one of :data:`DTYPES`.
        block_size: N5 block shape, C order: one tuple for all levels, or a tuple of tuples,
            one per level (a shorter list repeats its last entry for the remaining levels).
            Block sizes are not clipped to the level shape (like real data).
        levels: number of levels; level n has shape ``ceil(s0 / factors**n)`` (min 1).
        factors: integer downsampling factor per axis per level, C order.
        voxel_size: s0 voxel spacing, C order.
        offset: s0 translation (physical position of voxel 0), C order.
        unit: unit written into the metadata for every axis (real data: ``"nm"``).
        compression: N5 ``compression`` attribute, written verbatim; see :func:`encode_block`.
        metadata: which multiscale convention(s) to write: COSEM (``transform`` and
            ``multiscales``), Neuroglancer-N5 (``axes/units/scales/pixelResolution``), or both.
        cosem_order: ``None`` omits the COSEM ``order`` key (as real data does; means C);
            ``"C"`` writes C-order lists with ``"order": "C"``; ``"F"`` writes every COSEM list
            (axes, units, scale, translate) in F order with ``"order": "F"``.
        downsampling: translation rule stated in the COSEM metadata. ``"windowed"``:
            ``offset + (f**n - 1) / 2 * voxel_size``; ``"subsample"``: ``offset``.
        edge_blocks: ``"truncated"`` (Java N5) or ``"full"`` (TensorStore, zero padded).
        content: ``"gradient"`` (EM-like smooth gradients plus noise), ``"noise"``,
            ``"labels"`` (a handful of ids in blobs, one per cell of 12..40 s0 voxels
            depending on the s0 shape, large zero regions; uint64 ids above 2**32 and
            2**63 too) or ``"sparse"`` (gradient in ~1/3 of the blocks, others all
            zero and therefore absent on disk).
        seed: changes every value (and the sparse/label layout).
        axes: axis names, C order; ``None`` uses the defaults listed in the module docstring.
        pyramid: how levels 1.. are made from s0 (in its stored order): ``"subsample"``
            (level n is ``s0[::f**n]``) or ``"mean"`` (each voxel the mean of its window of
            ``f**n`` s0 voxels per axis, a partial last window averaging what it holds,
            rounded half to even for integer types). The metadata is :attr:`downsampling`'s.
        stored_flip: per axis (C order), is s0 stored mirrored (stored voxel ``i`` holds the
            content of ``N - 1 - i``)? The pyramid is then made from the stored s0, like a
            prediction written upside down and downsampled as written. None: no axis.
    """

    path: str
    shape: tuple[int, ...]
    dtype: str = "uint16"
    block_size: tuple[int, ...] | tuple[tuple[int, ...], ...] = (64, 64, 64)
    levels: int = 3
    factors: tuple[int, ...] = (2, 2, 2)
    voxel_size: tuple[float, ...] = (5.24, 4.0, 4.0)
    offset: tuple[float, ...] = (0.0, 0.0, 0.0)
    unit: str = "nm"
    compression: Mapping[str, Any] = field(default_factory=_default_compression)
    metadata: Literal["cosem", "neuroglancer", "both"] = "both"
    cosem_order: Literal["C", "F"] | None = None
    downsampling: Literal["windowed", "subsample"] = "windowed"
    edge_blocks: Literal["truncated", "full"] = "truncated"
    content: Literal["gradient", "noise", "labels", "sparse"] = "gradient"
    seed: int = 0
    axes: tuple[str, ...] | None = None
    pyramid: Literal["subsample", "mean"] = "subsample"
    stored_flip: tuple[bool, ...] | None = None

    def __post_init__(self) -> None:
        """Coerce sequences to tuples and validate; errors name the field and the value."""
        where = f"ImageSpec(path={self.path!r})"
        parts = self.path.split("/")
        if not self.path or self.path.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"{where}: path must be a relative 'a/b' group path")
        shape = tuple(int(s) for s in self.shape)
        ndim = len(shape)
        if ndim < 1 or any(s < 1 for s in shape):
            raise ValueError(f"{where}: shape must be >= 1 per axis, got {self.shape!r}")
        object.__setattr__(self, "shape", shape)

        def _tuple(name: str, value: Sequence[Any], kind: type) -> tuple[Any, ...]:
            out = tuple(kind(v) for v in value)
            if len(out) != ndim:
                raise ValueError(
                    f"{where}: {name} has {len(out)} entries, shape has {ndim}: {value!r}"
                )
            return out

        factors = _tuple("factors", self.factors, int)
        if any(f < 1 for f in factors):
            raise ValueError(f"{where}: factors must be >= 1, got {factors!r}")
        object.__setattr__(self, "factors", factors)
        object.__setattr__(self, "voxel_size", _tuple("voxel_size", self.voxel_size, float))
        object.__setattr__(self, "offset", _tuple("offset", self.offset, float))
        if self.axes is None:
            if ndim not in _DEFAULT_AXES:
                raise ValueError(f"{where}: no default axis names for {ndim}-D; pass axes")
        else:
            object.__setattr__(self, "axes", _tuple("axes", self.axes, str))
        if self.dtype not in DTYPES:
            raise ValueError(f"{where}: dtype {self.dtype!r} is not one of {DTYPES}")
        if self.levels < 1:
            raise ValueError(f"{where}: levels must be >= 1, got {self.levels}")
        bs: tuple[tuple[int, ...], ...]
        if len(self.block_size) > 0 and isinstance(self.block_size[0], Sequence):
            bs = tuple(
                _tuple("block_size", b, int) for b in self.block_size if isinstance(b, Sequence)
            )
            if len(bs) != len(self.block_size) or len(bs) > self.levels:
                raise ValueError(
                    f"{where}: block_size per level needs 1..{self.levels} entries, "
                    f"got {self.block_size!r}"
                )
            object.__setattr__(self, "block_size", bs)
        else:
            bs = (_tuple("block_size", self.block_size, int),)
            object.__setattr__(self, "block_size", bs[0])
        if any(b < 1 for blk in bs for b in blk):
            raise ValueError(f"{where}: block sizes must be >= 1, got {self.block_size!r}")
        ctype = self.compression.get("type")
        if ctype not in _COMPRESSIONS:
            raise ValueError(f"{where}: compression type {ctype!r} is not one of {_COMPRESSIONS}")
        for name, value, allowed in (
            ("metadata", self.metadata, ("cosem", "neuroglancer", "both")),
            ("cosem_order", self.cosem_order, (None, "C", "F")),
            ("downsampling", self.downsampling, ("windowed", "subsample")),
            ("edge_blocks", self.edge_blocks, ("truncated", "full")),
            ("content", self.content, ("gradient", "noise", "labels", "sparse")),
            ("pyramid", self.pyramid, ("subsample", "mean")),
        ):
            if value not in allowed:
                raise ValueError(f"{where}: {name} must be one of {allowed}, got {value!r}")
        if self.stored_flip is not None:
            object.__setattr__(self, "stored_flip", _tuple("stored_flip", self.stored_flip, bool))

    def __hash__(self) -> int:
        """Hash (the compression mapping is hashed through its sorted JSON)."""
        return hash(
            (
                self.path,
                self.shape,
                self.dtype,
                self.block_size,
                self.levels,
                self.factors,
                self.voxel_size,
                self.offset,
                self.unit,
                json.dumps(dict(self.compression), sort_keys=True),
                self.metadata,
                self.cosem_order,
                self.downsampling,
                self.edge_blocks,
                self.content,
                self.seed,
                self.axes,
                self.pyramid,
                self.stored_flip,
            )
        )

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def name(self) -> str:
        """Last component of :attr:`path` (the COSEM multiscale ``name``)."""
        return self.path.rsplit("/", 1)[-1]


# --------------------------------------------------------------------------------------
# Geometry and metadata values (all C order)
# --------------------------------------------------------------------------------------


def _check_level(spec: ImageSpec, level: int) -> None:
    if not 0 <= level < spec.levels:
        raise ValueError(f"{spec.path}: level {level} outside 0..{spec.levels - 1}")


def axis_names(spec: ImageSpec) -> tuple[str, ...]:
    """Axis names of ``spec``, C order (e.g. ``("z", "y", "x")``)."""
    return spec.axes if spec.axes is not None else _DEFAULT_AXES[spec.ndim]


def level_factors(spec: ImageSpec, level: int) -> tuple[int, ...]:
    """Total downsampling factor of ``level`` relative to s0 (``factors**level``), C order."""
    _check_level(spec, level)
    return tuple(f**level for f in spec.factors)


def level_shape(spec: ImageSpec, level: int) -> tuple[int, ...]:
    """Shape of ``level``, C order: ``ceil(s0_shape / factors**level)``, at least 1."""
    return tuple(
        max(1, -(-s // f)) for s, f in zip(spec.shape, level_factors(spec, level), strict=True)
    )


def level_block_size(spec: ImageSpec, level: int) -> tuple[int, ...]:
    """N5 block size of ``level``, C order."""
    _check_level(spec, level)
    bs = spec.block_size
    if len(bs) > 0 and isinstance(bs[0], tuple):
        per_level = [b for b in bs if isinstance(b, tuple)]
        return per_level[min(level, len(per_level) - 1)]
    return tuple(int(b) for b in bs if isinstance(b, int))


def level_scale(spec: ImageSpec, level: int) -> tuple[float, ...]:
    """Voxel spacing of ``level``, C order: ``voxel_size * factors**level``."""
    return tuple(v * f for v, f in zip(spec.voxel_size, level_factors(spec, level), strict=True))


def level_translation(spec: ImageSpec, level: int) -> tuple[float, ...]:
    """Physical position of voxel 0 of ``level``, C order, per :attr:`ImageSpec.downsampling`.

    windowed: ``offset + (f**level - 1) / 2 * voxel_size``; subsample: ``offset``.
    """
    factors = level_factors(spec, level)
    if spec.downsampling == "subsample":
        return tuple(spec.offset)
    return tuple(
        o + (f - 1) / 2 * v for o, f, v in zip(spec.offset, factors, spec.voxel_size, strict=True)
    )


def _cosem_transform(spec: ImageSpec, level: int) -> dict[str, Any]:
    axes = list(axis_names(spec))
    units = [spec.unit] * spec.ndim
    scale = list(level_scale(spec, level))
    translate = list(level_translation(spec, level))
    if spec.cosem_order == "F":
        axes, units, scale, translate = axes[::-1], units[::-1], scale[::-1], translate[::-1]
    out: dict[str, Any] = {"axes": axes, "scale": scale, "translate": translate, "units": units}
    if spec.cosem_order is not None:
        out["order"] = spec.cosem_order
    return out


def group_attributes(spec: ImageSpec) -> dict[str, Any]:
    """The image group's ``attributes.json`` content (lists in the orders N5 readers expect)."""
    attrs: dict[str, Any] = {}
    if spec.metadata in ("neuroglancer", "both"):
        attrs["axes"] = list(axis_names(spec))[::-1]
        attrs["units"] = [spec.unit] * spec.ndim
        attrs["scales"] = [list(level_factors(spec, n))[::-1] for n in range(spec.levels)]
        attrs["pixelResolution"] = {"dimensions": list(spec.voxel_size)[::-1], "unit": spec.unit}
    if spec.metadata in ("cosem", "both"):
        attrs["multiscales"] = [
            {
                "name": spec.name,
                "datasets": [
                    {"path": f"s{n}", "transform": _cosem_transform(spec, n)}
                    for n in range(spec.levels)
                ],
            }
        ]
    return attrs


def array_attributes(spec: ImageSpec, level: int) -> dict[str, Any]:
    """``attributes.json`` of array ``s{level}`` (``dimensions``/``blockSize`` in F order)."""
    attrs: dict[str, Any] = {
        "dimensions": list(level_shape(spec, level))[::-1],
        "blockSize": list(level_block_size(spec, level))[::-1],
        "dataType": spec.dtype,
        "compression": dict(spec.compression),
    }
    if spec.metadata in ("neuroglancer", "both"):
        attrs["pixelResolution"] = {
            "dimensions": list(level_scale(spec, level))[::-1],
            "unit": spec.unit,
        }
    if spec.metadata in ("cosem", "both"):
        attrs["transform"] = _cosem_transform(spec, level)
    return attrs


# --------------------------------------------------------------------------------------
# Voxel values: integer hashing, exact and independent of how the array is tiled
# --------------------------------------------------------------------------------------

_M64 = (1 << 64) - 1


def _mix(h: U64Array) -> U64Array:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic, no warnings)."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _key(*parts: int) -> int:
    """A 64-bit key from small integers (pure Python, so no numpy overflow warnings)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (p & _M64)) * 0xBF58476D1CE4E5B9 & _M64
        h ^= h >> 29
    return h


def _hash(key: int, coords: Sequence[I64Array]) -> U64Array:
    """Hash of ``key`` and broadcastable non-negative integer coordinate arrays."""
    h: U64Array = np.full((1,) * len(coords), key & _M64, dtype=np.uint64)
    for c in coords:
        h = _mix(h ^ c.astype(np.uint64))
    return h


def _tri(x: I64Array, period: int) -> I64Array:
    """Triangle wave in [0, period]."""
    out: I64Array = np.abs(np.mod(x, 2 * period) - period)
    return out


_LABEL_IDS: dict[str, tuple[int, ...] | tuple[float, ...]] = {
    "uint8": (1, 2, 3, 5, 8, 13, 21, 255),
    "int8": (1, 2, 3, 5, 8, 13, 21, 127),
    "uint16": (1, 7, 42, 300, 1024, 4097, 20000, 65535),
    "int16": (1, 7, 42, 300, 1024, 4097, 20000, 32767),
    "uint32": (1, 7, 42, 65539, 1_000_000, 70_000_000, 2_000_000_000, 4_294_967_295),
    "int32": (1, 7, 42, 65539, 1_000_000, 70_000_000, 2_000_000_000, 2_147_483_647),
    "uint64": (1, 42, 70_000, 2**32 + 1, 2**33 + 17, 2**40 + 3, 2**53 + 1, 2**63 + 99),
    "int64": (1, 42, 70_000, 2**32 + 1, 2**33 + 17, 2**40 + 3, 2**53 + 1, 2**62 + 5),
    "float32": (1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0),
    "float64": (1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0),
}


def _u16_to_dtype(v: I64Array, dtype: str) -> npt.NDArray[Any]:
    """Map integers in [0, 65535] onto the plausible range of ``dtype`` (exactly)."""
    if dtype == "uint8":
        return (v >> 8).astype(np.uint8)
    if dtype == "int8":
        return ((v >> 8) - 128).astype(np.int8)
    if dtype == "uint16":
        return v.astype(np.uint16)
    if dtype == "int16":
        return (v - 32768).astype(np.int16)
    if dtype == "uint32":
        return (v * 65537).astype(np.uint32)
    if dtype == "int32":
        return ((v - 32768) * 65536).astype(np.int32)
    if dtype == "uint64":
        return v.astype(np.uint64) * np.uint64(0x0001000100010001)
    if dtype == "int64":
        return (v - 32768) * (1 << 47)
    if dtype == "float32":
        return (v.astype(np.float64) / 256.0).astype(np.float32)
    if dtype == "float64":
        return v.astype(np.float64) / 256.0 + 0.125
    raise ValueError(f"unsupported dtype {dtype!r}")


_PERIODS = (97, 131, 173, 211, 251)
_AMPLITUDES = (9000, 7000, 6000, 3000, 2000)


def _gradient(seed: int, p: Sequence[I64Array]) -> I64Array:
    """EM-like values in [14000, 65535]: smooth triangle-wave gradients plus 10-bit noise."""
    key = _key(seed, 1)
    v: I64Array = np.full((1,) * len(p), 14000, dtype=np.int64)
    for i, pi in enumerate(p):
        period = _PERIODS[i % len(_PERIODS)]
        phase = (key >> (8 * i)) % (2 * period)
        v = v + _AMPLITUDES[i % len(_AMPLITUDES)] * _tri(pi + phase, period) // period
    v = v + 6000 * _tri(p[0] + p[-1], 389) // 389
    noise = (_hash(_key(seed, 2), p) >> np.uint64(54)).astype(np.int64)
    return v + noise


def _labels(seed: int, dtype: str, p: Sequence[I64Array], cell: int) -> npt.NDArray[Any]:
    """Blobs (n-spheres, one per ``cell``-voxel cell) of a few ids; ~half of the regions of
    4 x 4 x 4 cells are empty.

    The region at the origin is always populated, so even tiny images hold labels.
    """
    cells = [pi // cell for pi in p]
    h = _hash(_key(seed, 3), cells)
    regions = [c // 4 for c in cells]
    populated = (_hash(_key(seed, 4), regions) % np.uint64(2)) == 0
    populated = populated | (sum(regions) == 0)  # the first region always has labels
    present = (h % np.uint64(3)) != 0
    radius = (cell // 4 + ((h >> np.uint64(8)) % np.uint64(cell // 4))).astype(np.int64)
    dist2: I64Array = np.zeros((1,) * len(p), dtype=np.int64)
    for i, pi in enumerate(p):
        jitter = ((h >> np.uint64(16 + 6 * i)) % np.uint64(9)).astype(np.int64) - 4
        d = pi % cell - (cell // 2 + jitter)
        dist2 = dist2 + d * d
    ids = np.array(_LABEL_IDS[dtype], dtype=dtype)
    which = ((h >> np.uint64(48)) % np.uint64(len(ids))).astype(np.intp)
    inside = present & populated & (dist2 <= radius * radius)
    return np.where(inside, ids[which], np.zeros((), dtype=dtype))


def _normalize_box(shape: tuple[int, ...], box: Box | None) -> tuple[tuple[int, int], ...]:
    if box is None:
        return tuple((0, s) for s in shape)
    if len(box) != len(shape):
        raise ValueError(f"box {box!r} has {len(box)} slices, the level has {len(shape)} axes")
    out = []
    for sl, s in zip(box, shape, strict=True):
        start, stop, step = sl.indices(s)
        if step != 1:
            raise ValueError(f"box slices must have step 1, got {sl!r}")
        out.append((start, max(start, stop)))
    return tuple(out)


_PIECE_VOXELS = 1 << 17  # level_data computes big boxes piece by piece (bounded temporaries)


def level_data(spec: ImageSpec, level: int, box: Box | None = None) -> npt.NDArray[Any]:
    """Exact voxel values of ``level`` (or of ``box`` inside it), C order, dtype ``spec.dtype``.

    ``box`` is a tuple of step-1 slices in C order (clipped like numpy slicing). The values
    are a deterministic function of ``(spec.seed, spec.content, level, global coordinates)``
    computed with integer arithmetic only, so any sub-box equals the same region of the whole
    level bit for bit. Memory: the result plus a few MB of temporaries, whatever the box.
    """
    shape = level_shape(spec, level)
    bounds = _normalize_box(shape, box)
    out_shape = tuple(stop - start for start, stop in bounds)
    out = np.empty(out_shape, dtype=spec.dtype)
    # piece shape: split leading axes until a piece holds at most _PIECE_VOXELS voxels (of
    # s0, for a level made of window means)
    budget = _PIECE_VOXELS
    if spec.pyramid == "mean" and level > 0:
        budget = max(1, budget // math.prod(level_factors(spec, level)))
    piece = [max(1, n) for n in out_shape]
    for axis in range(len(piece)):
        if math.prod(piece) <= budget:
            break
        piece[axis] = max(1, budget // math.prod(piece[axis + 1 :]))
    for corner in itertools.product(
        *(range(0, n, p) for n, p in zip(out_shape, piece, strict=True))
    ):
        sub = tuple(
            (b[0] + c, b[0] + min(c + p, n))
            for b, c, p, n in zip(bounds, corner, piece, out_shape, strict=True)
        )
        dst = tuple(slice(lo - b[0], hi - b[0]) for (lo, hi), b in zip(sub, bounds, strict=True))
        out[dst] = _values(spec, level, sub)
    return out


def _window_means(
    spec: ImageSpec, level: int, bounds: tuple[tuple[int, int], ...]
) -> npt.NDArray[Any]:
    """Values of the box ``bounds`` of a ``mean`` pyramid level: each voxel the mean of its
    window of s0 (stored order), a partial last window averaging the voxels it holds."""
    factors = level_factors(spec, level)
    s0_box = tuple(
        slice(start * f, min(stop * f, n))
        for (start, stop), f, n in zip(bounds, factors, spec.shape, strict=True)
    )
    values = level_data(spec, 0, s0_box).astype(np.float64)
    for axis, f in enumerate(factors):
        edges = np.arange(0, values.shape[axis], f)
        sums = np.add.reduceat(values, edges, axis=axis)
        counts = np.diff(np.append(edges, values.shape[axis])).astype(np.float64)
        view = [1] * values.ndim
        view[axis] = len(counts)
        values = sums / counts.reshape(view)
    if np.dtype(spec.dtype).kind in "iu":
        return np.rint(values).astype(spec.dtype)
    return values.astype(spec.dtype)


def _values(spec: ImageSpec, level: int, bounds: tuple[tuple[int, int], ...]) -> npt.NDArray[Any]:
    """Values of the box ``bounds`` ((start, stop) per axis, C order); may be broadcast."""
    if spec.pyramid == "mean" and level > 0:
        return _window_means(spec, level, bounds)
    factors = level_factors(spec, level)
    ndim = len(bounds)
    idx: list[I64Array] = []
    for axis, (start, stop) in enumerate(bounds):
        view = [1] * ndim
        view[axis] = stop - start
        idx.append(np.arange(start, stop, dtype=np.int64).reshape(view))
    phys = [c * f for c, f in zip(idx, factors, strict=True)]
    if spec.stored_flip is not None:  # stored s0 voxel i holds the content of N - 1 - i
        phys = [
            n - 1 - p if flip else p
            for p, flip, n in zip(phys, spec.stored_flip, spec.shape, strict=True)
        ]
    if spec.content == "gradient":
        return _u16_to_dtype(_gradient(spec.seed, phys), spec.dtype)
    if spec.content == "noise":
        v = (_hash(_key(spec.seed, 5), phys) >> np.uint64(48)).astype(np.int64)
        return _u16_to_dtype(v, spec.dtype)
    if spec.content == "labels":
        cell = max(12, min(40, min(spec.shape) // 2))  # s0 voxels; smaller for tiny images
        return _labels(spec.seed, spec.dtype, phys, cell)
    # sparse
    bs = level_block_size(spec, level)
    blocks = [c // b for c, b in zip(idx, bs, strict=True)]
    keep = (_hash(_key(spec.seed, 6, level), blocks) % np.uint64(3)) == 0
    values = _u16_to_dtype(_gradient(spec.seed, phys), spec.dtype)
    return np.where(keep, values, np.zeros((), dtype=spec.dtype))


# --------------------------------------------------------------------------------------
# N5 block encoding
# --------------------------------------------------------------------------------------


def _compress(payload: bytes, itemsize: int, compression: Mapping[str, Any]) -> bytes:
    """Compress big-endian block bytes as the N5 compression ``compression`` does."""
    ctype = compression.get("type")
    if ctype == "raw":
        return payload
    if ctype == "gzip":
        level = int(compression.get("level", -1))
        if compression.get("useZlib", False):
            return zlib.compress(payload, level)
        gz = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # RFC 1952 stream
        return gz.compress(payload) + gz.flush()
    if ctype == "bzip2":
        return bz2.compress(payload, int(compression.get("blockSize", 9)))
    if ctype == "xz":
        preset = int(compression.get("preset", 6))
        return lzma.compress(payload, format=lzma.FORMAT_XZ, preset=preset)
    if ctype == "blosc":
        from numcodecs import Blosc

        codec = Blosc(
            cname=str(compression.get("cname", "blosclz")),
            clevel=int(compression.get("clevel", 6)),
            shuffle=int(compression.get("shuffle", 1)),
            blocksize=int(compression.get("blocksize", 0)),
            typesize=itemsize,
        )  # "nthreads" only tunes the Java encoder; the blosc1 frame is the same
        return bytes(codec.encode(np.frombuffer(payload, dtype=f"u{itemsize}")))
    if ctype == "zstd":
        from numcodecs import Zstd

        return bytes(Zstd(level=int(compression.get("level", 3))).encode(payload))
    if ctype == "lz4":
        raise NotImplementedError(
            "N5 lz4 compression (Java LZ4BlockOutputStream frames) is not supported by the "
            "fixture writer; TensorStore cannot read it either"
        )
    raise ValueError(f"unknown N5 compression type {ctype!r} in {dict(compression)!r}")


def encode_block(data: npt.NDArray[Any], compression: Mapping[str, Any]) -> bytes:
    """Encode one N5 block file (mode 0) from ``data`` given in **C order**.

    The header dims are ``data.shape`` reversed (F order); the payload is ``data`` as
    big-endian bytes in C order (= F order over the N5 dims), compressed per ``compression``
    (``raw``, ``gzip`` (``level``, ``useZlib``), ``bzip2`` (``blockSize``), ``xz``
    (``preset``), ``blosc`` (``cname``, ``clevel``, ``shuffle``, ``blocksize``), ``zstd``
    (``level``)); ``lz4`` raises :class:`NotImplementedError`.
    """
    dims_f = data.shape[::-1]
    header = struct.pack(f">HH{len(dims_f)}I", 0, len(dims_f), *dims_f)
    be = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder(">"))
    return header + _compress(be.tobytes(order="C"), data.dtype.itemsize, compression)


def block_path(array_dir: Path, grid_index: Sequence[int]) -> Path:
    """File of the block at C-order grid index ``grid_index`` (the path is in F order)."""
    return Path(array_dir).joinpath(*(str(i) for i in reversed(tuple(grid_index))))


def _grid(shape: tuple[int, ...], block: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(-(-s // b) for s, b in zip(shape, block, strict=True))


def _write_block(spec: ImageSpec, level: int, array_dir: Path, grid_index: tuple[int, ...]) -> int:
    shape = level_shape(spec, level)
    bs = level_block_size(spec, level)
    box = tuple(
        slice(g * b, min((g + 1) * b, s)) for g, b, s in zip(grid_index, bs, shape, strict=True)
    )
    data = level_data(spec, level, box)
    if not data.any():
        return 0  # all zero: absent
    if spec.edge_blocks == "full" and data.shape != bs:
        full = np.zeros(bs, dtype=data.dtype)
        full[tuple(slice(0, n) for n in data.shape)] = data
        data = full
    encoded = encode_block(data, spec.compression)
    path = block_path(array_dir, grid_index)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded)
    return len(encoded)


def _write_json(path: Path, attrs: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(attrs, indent=2) + "\n")


def _ensure_group(directory: Path, attrs: Mapping[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    attr_file = directory / "attributes.json"
    if attr_file.exists():
        current = json.loads(attr_file.read_text())
        if all(current.get(k) == v for k, v in attrs.items()):
            return
        current.update(attrs)
        _write_json(attr_file, current)
    else:
        _write_json(attr_file, attrs)


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def write_image(
    n5_root: Path,
    spec: ImageSpec,
    *,
    workers: int | None = None,
    overwrite: bool = False,
) -> None:
    """Write the image ``spec`` (group, metadata and arrays s0..) under the N5 root ``n5_root``.

    Creates the root (``{"n5": "2.5.0"}``) and intermediate groups (``{}``) when missing.
    Blocks are generated and written one at a time (``workers`` threads, default
    ``min(8, cpu_count)``), so memory stays bounded whatever the image size. Refuses to write
    into an existing image group unless ``overwrite`` (which deletes it first).
    """
    root = Path(n5_root)
    # raises early (lz4, bad parameters), before anything is written
    encode_block(np.zeros((1,) * spec.ndim, dtype=spec.dtype), spec.compression)
    _ensure_group(root, {"n5": N5_VERSION})
    image_dir = root.joinpath(*spec.path.split("/"))
    parent = root
    for part in spec.path.split("/")[:-1]:
        parent = parent / part
        _ensure_group(parent, {})
    if image_dir.exists():
        if not overwrite:
            raise FileExistsError(f"{image_dir} already exists (pass overwrite=True to replace)")
        shutil.rmtree(image_dir)
    image_dir.mkdir(parents=True)
    _write_json(image_dir / "attributes.json", group_attributes(spec))
    n_workers = _default_workers() if workers is None else max(1, workers)
    for level in range(spec.levels):
        array_dir = image_dir / f"s{level}"
        array_dir.mkdir()
        _write_json(array_dir / "attributes.json", array_attributes(spec, level))
        grid = _grid(level_shape(spec, level), level_block_size(spec, level))
        indices: Iterator[tuple[int, ...]] = itertools.product(*(range(g) for g in grid))
        if n_workers == 1 or math.prod(grid) == 1:
            for gi in indices:
                _write_block(spec, level, array_dir, gi)
            continue
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            inflight: deque[Future[int]] = deque()
            for gi in indices:
                inflight.append(pool.submit(_write_block, spec, level, array_dir, gi))
                if len(inflight) >= 4 * n_workers:
                    inflight.popleft().result()
            while inflight:
                inflight.popleft().result()


# A minimal valid baseline JPEG (8x8 grey pixels).
_THUMBNAIL_JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb004300100b0c0e0c0a100e0d0e1211101318281a18"
    "1616183123251d283a333d3c3933383740485c4e404457453738506d51575f626768673e4d71797064785c"
    "656763ffc0000b080008000801011100ffc40014000100000000000000000000000000000000ffc4001410"
    "0100000000000000000000000000000000ffda0008010100003f003fffd9"
)


def write_dataset(
    root: Path,
    name: str,
    images: Sequence[ImageSpec],
    thumbnail: bool = True,
    *,
    workers: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a dataset ``<root>/<name>/<name>.n5`` holding ``images``; return the N5 root.

    With ``thumbnail``, also writes ``<root>/<name>/thumbnail.jpg`` (a tiny valid JPEG).
    """
    if not name or "/" in name:
        raise ValueError(f"dataset name must be a single path component, got {name!r}")
    dataset_dir = Path(root) / name
    n5_root = dataset_dir / f"{name}.n5"
    _ensure_group(n5_root, {"n5": N5_VERSION})
    if thumbnail:
        (dataset_dir / "thumbnail.jpg").write_bytes(_THUMBNAIL_JPEG)
    for spec in images:
        write_image(n5_root, spec, workers=workers, overwrite=overwrite)
    return n5_root


# --------------------------------------------------------------------------------------
# A realistic example dataset
# --------------------------------------------------------------------------------------

_SIZES: dict[str, tuple[tuple[int, int, int], int, int]] = {
    # s0 shape of the FIB-SEM images (z, y, x), base block edge, levels
    "tiny": ((37, 50, 61), 16, 3),
    "small": ((90, 130, 151), 32, 5),
    "medium": ((330, 500, 557), 64, 6),
}


def example_images(size: Literal["tiny", "small", "medium"] = "tiny") -> list[ImageSpec]:
    """A realistic Cellmap dataset (shapes C order; no block size divides any shape).

    * ``em/fibsem-uint16``: 5.24 x 4 x 4 nm, gzip level -1, no COSEM ``order`` key, both
      conventions, windowed translations, truncated edge blocks (Java-written), like
      jrc_hela-2.
    * ``em/fibsem-uint8``: the same volume as uint8, gzip, full-size edge blocks (as written
      by TensorStore).
    * ``lm/er_palm``: float32 on a coarser 3-D grid (20 x 16 x 16 nm, offset), blosc zstd
      with byte shuffle, COSEM metadata only with F-order lists (``"order": "F"``).
    * ``labels/mito_seg``: uint64 segmentation (ids up to 2**63 + 99) at 2x the EM spacing,
      subsampled (translation = offset), block size halving per level down to a minimum.
    * ``labels/mito_pred``: uint8 prediction, zstd, Neuroglancer metadata only, many all-zero
      (absent) blocks.

    tiny is well under 1 MB, small a few MB, medium roughly 200 MB on disk.
    """
    if size not in _SIZES:
        raise ValueError(f"size must be one of {tuple(_SIZES)}, got {size!r}")
    (z, y, x), b, levels = _SIZES[size]
    em_shape = (z, y, x)
    half = (-(-z // 2), -(-y // 2), -(-x // 2))
    seg_levels = max(2, levels - 1)
    seg_blocks = tuple((bb, bb, bb) for bb in (2 * b, b, max(8, b // 2)))[:seg_levels]
    return [
        ImageSpec(
            path="em/fibsem-uint16",
            shape=em_shape,
            dtype="uint16",
            block_size=(b, b, b),
            levels=levels,
            voxel_size=(5.24, 4.0, 4.0),
            compression={"type": "gzip", "level": -1},
            metadata="both",
            downsampling="windowed",
            content="gradient",
            seed=1,
        ),
        ImageSpec(
            path="em/fibsem-uint8",
            shape=em_shape,
            dtype="uint8",
            block_size=(b, b, b),
            levels=levels,
            voxel_size=(5.24, 4.0, 4.0),
            compression={"type": "gzip", "level": 6},
            metadata="both",
            edge_blocks="full",
            content="gradient",
            seed=1,
        ),
        ImageSpec(
            path="lm/er_palm",
            shape=(z // 3 + 1, y // 4 + 7, x // 4 + 5),
            dtype="float32",
            block_size=(b, b, b),
            levels=max(2, levels - 2),
            voxel_size=(20.0, 16.0, 16.0),
            offset=(100.0, 48.0, 48.0),
            compression={"type": "blosc", "cname": "zstd", "clevel": 5, "shuffle": 1},
            metadata="cosem",
            cosem_order="F",
            content="noise",
            seed=2,
        ),
        ImageSpec(
            path="labels/mito_seg",
            shape=half,
            dtype="uint64",
            block_size=seg_blocks,
            levels=seg_levels,
            voxel_size=(10.48, 8.0, 8.0),
            offset=(2.62, 2.0, 2.0),
            compression={"type": "gzip", "level": -1},
            metadata="both",
            downsampling="subsample",
            content="labels",
            seed=3,
        ),
        ImageSpec(
            path="labels/mito_pred",
            shape=em_shape,
            dtype="uint8",
            block_size=(b, b, b),
            levels=levels,
            voxel_size=(5.24, 4.0, 4.0),
            compression={"type": "zstd", "level": 3},
            metadata="neuroglancer",
            content="sparse",
            seed=4,
        ),
    ]
