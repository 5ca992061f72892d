"""Neuroglancer precomputed volumes for tests and examples, written with TensorStore.

A Cellmap dataset may hold, beside ``<dataset>.n5``, volumes at
``<dataset>/neuroglancer/<group>/<name>.precomputed`` (JPEG FIB-SEM volumes of the first
COSEM datasets). :func:`write_volume` writes one with TensorStore's
``neuroglancer_precomputed`` driver: any encoding (``raw``, ``jpeg``, ``png``,
``compressed_segmentation``), unsharded or sharded (``neuroglancer_uint64_sharded_v1``), any
``voxel_offset``, every scale from the arrays it is given (no downsampling here: a scale's
voxels are whatever the caller says, e.g. the levels of an N5 image of
:mod:`migrate.example.fixture`, so both can be compared voxel for voxel).

Everything in this module's Python API is in **C order** (z, y, x); the ``info`` file on
disk is in F order (x, y, z), as the format says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from migrate.example.fixture import ImageSpec, level_data, level_factors, level_scale

Encoding = Literal["raw", "jpeg", "png", "compressed_segmentation"]


def sharding(
    shard_bits: int = 1, minishard_bits: int = 1, preshift_bits: int = 0
) -> dict[str, Any]:
    """A ``neuroglancer_uint64_sharded_v1`` spec (identity hash, gzip'd data and indexes)."""
    return {
        "@type": "neuroglancer_uint64_sharded_v1",
        "preshift_bits": preshift_bits,
        "hash": "identity",
        "minishard_bits": minishard_bits,
        "shard_bits": shard_bits,
        "minishard_index_encoding": "gzip",
        "data_encoding": "gzip",
    }


@dataclass(frozen=True, eq=False)
class ScaleSpec:
    """One stored scale. All tuples in C order (z, y, x)."""

    data: npt.NDArray[Any]
    """The scale's voxels, C order; its shape is the scale's ``size``."""
    resolution: tuple[float, float, float]
    """Voxel size (nm), C order."""
    voxel_offset: tuple[int, int, int] = (0, 0, 0)
    chunk: tuple[int, int, int] = (16, 16, 16)
    encoding: Encoding = "raw"
    sharding: dict[str, Any] | None = None
    key: str | None = None
    """The scale's folder; default: TensorStore's (the resolution, e.g. ``4_4_5.24``)."""
    block: tuple[int, int, int] = (8, 8, 8)
    """``compressed_segmentation_block_size``, C order."""


@dataclass(frozen=True, eq=False)
class VolumeSpec:
    """A precomputed volume: its path inside the dataset folder, type and scales."""

    path: str
    """e.g. ``neuroglancer/em/fibsem-uint8.precomputed``."""
    scales: Sequence[ScaleSpec]
    type: Literal["image", "segmentation"] = "image"
    extra_info: dict[str, Any] = field(default_factory=dict)
    """Keys added to ``info`` after writing (real volumes carry ``mesh`` and others)."""

    @property
    def data_type(self) -> str:
        return str(self.scales[0].data.dtype)


def write_volume(dataset_dir: Path, spec: VolumeSpec) -> Path:
    """Write ``spec`` under ``dataset_dir`` with TensorStore; return the volume folder."""
    import json

    import tensorstore as ts

    folder = Path(dataset_dir) / spec.path
    if folder.exists():
        raise FileExistsError(f"{folder} already exists")
    for scale in spec.scales:
        metadata: dict[str, Any] = {
            "size": list(reversed(scale.data.shape)),
            "resolution": list(reversed(scale.resolution)),
            "voxel_offset": list(reversed(scale.voxel_offset)),
            "chunk_size": list(reversed(scale.chunk)),
            "encoding": scale.encoding,
        }
        if scale.sharding is not None:
            metadata["sharding"] = scale.sharding
        if scale.key is not None:
            metadata["key"] = scale.key
        if scale.encoding == "compressed_segmentation":
            metadata["compressed_segmentation_block_size"] = list(reversed(scale.block))
        store = ts.open(
            {
                "driver": "neuroglancer_precomputed",
                "kvstore": {"driver": "file", "path": str(folder) + "/"},
                "multiscale_metadata": {
                    "type": spec.type,
                    "data_type": spec.data_type,
                    "num_channels": 1,
                },
                "scale_metadata": metadata,
            },
            create=True,
            open=True,
        ).result()
        view = store[..., 0].translate_to[0, 0, 0]
        view.write(np.ascontiguousarray(scale.data).T).result()
    if spec.extra_info:
        info_path = folder / "info"
        info = json.loads(info_path.read_text())
        info.update(spec.extra_info)
        info_path.write_text(json.dumps(info))
    return folder


def read_scale(volume: Path, scale_index: int) -> npt.NDArray[Any]:
    """A whole scale read back with TensorStore, C order (z, y, x), from its voxel_offset."""
    import tensorstore as ts

    array = ts.open(
        {
            "driver": "neuroglancer_precomputed",
            "kvstore": {"driver": "file", "path": str(volume) + "/"},
            "scale_index": scale_index,
        },
        read=True,
        open=True,
    ).result()
    return np.asarray(array[..., 0].read().result()).T


def volume_of_image(
    image: ImageSpec,
    path: str,
    *,
    encoding: Encoding = "raw",
    chunk: tuple[int, int, int] = (16, 16, 16),
    sharded: dict[str, Any] | None = None,
    crop: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None,
    dtype: str | None = None,
    type: Literal["image", "segmentation"] = "image",
) -> VolumeSpec:
    """A volume holding the voxels of the N5 image ``image`` (:mod:`migrate.example.fixture`),
    one scale per level, at the level's voxel size (C order throughout).

    Without ``crop`` every scale is the whole level, at ``voxel_offset`` 0. ``crop =
    (offset, size)`` keeps, of level k, the box starting at ``offset // factor**k`` (which
    must divide) of ``ceil(size / factor**k)`` voxels, placed at that ``voxel_offset``: the
    same voxels, at the same corner-based positions, as the N5 level. ``dtype`` casts the
    values (e.g. ``uint8`` for JPEG)."""
    scales = []
    for level in range(image.levels):
        factors = level_factors(image, level)
        data = level_data(image, level)
        offset = (0, 0, 0)
        if crop is not None:
            start, size = crop
            if any(o % f for o, f in zip(start, factors, strict=True)):
                raise ValueError(f"crop offset {start} is not a multiple of {factors}")
            offset = tuple(o // f for o, f in zip(start, factors, strict=True))  # type: ignore[assignment]
            extent = tuple(-(-n // f) for n, f in zip(size, factors, strict=True))
            box = tuple(slice(o, o + n) for o, n in zip(offset, extent, strict=True))
            if any(s.stop > n for s, n in zip(box, data.shape, strict=True)):
                raise ValueError(f"crop {crop} leaves level {level} {data.shape}")
            data = data[box]
        if dtype is not None:
            data = data.astype(dtype)
        scales.append(
            ScaleSpec(
                data=data,
                resolution=level_scale(image, level),  # type: ignore[arg-type]
                voxel_offset=offset,
                chunk=chunk,
                encoding=encoding,
                sharding=sharded,
            )
        )
    return VolumeSpec(path=path, scales=scales, type=type)
