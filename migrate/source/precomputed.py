"""Neuroglancer precomputed volumes: the ``info`` file → what it states, level by level.

A volume is a folder ``<name>.precomputed`` (in a Cellmap dataset:
``<dataset>/neuroglancer/<group>/<name>.precomputed``) holding an ``info`` JSON file and one
folder per scale. :func:`read_volume` reads ``info`` strictly (``schemas.precomputed``);
:func:`precomputed_statement` says what it states as a
:class:`~migrate.source.statement.Statement`, and :func:`map_volume` makes the OME-NGFF axes
and datasets of it through the same :func:`~migrate.source.reconcile.reconcile` as the N5
conventions. Each stored scale is one level, in the stored order (``s0`` is ``scales[0]``).

``info`` lists are in **F order** (x, y, z); every value handed on is in **C order**
(z, y, x), reversed once here with :func:`~migrate.source.axes.f_to_c`.

Coordinates. Precomputed places voxel ``i`` of scale ``k`` at the *corner*
``(voxel_offset_k + i) × resolution_k``: it covers ``[(o_k + i) r_k, (o_k + i + 1) r_k)``,
centred at ``(o_k + i + ½) r_k``. OME-NGFF places voxel *centres* at ``translation + i ×
scale``. The N5 images of a dataset migrate with their COSEM translation (s0 at 0), which
moves every one of them by ``−r_0 / 2`` relative to the corner-based grid the portal drew
them on (Neuroglancer drew N5 voxel ``i`` over ``[i r_0, (i + 1) r_0)``, centred at
``(i + ½) r_0``; it is now centred at ``i r_0``). Moving the precomputed volume by the same
amount keeps the dataset's images aligned: ``translation_k = r_k × (o_k + ½) − r_0 / 2``
and ``scale_k = r_k``, which puts s0 of a volume at ``voxel_offset`` 0 at 0, like the N5 EM,
and a coarser scale at offset 0 where a windowed-mean N5 level is: ``(r_k − r_0) / 2``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from migrate.errors import MetadataError, StoreError
from migrate.source.axes import f_to_c
from migrate.source.discover import non_finite_number, read_json_object
from migrate.source.image import SourceLevel
from migrate.source.parse import parse_attrs
from migrate.source.reconcile import MappedImage, MappingOptions, reconcile
from migrate.source.statement import LevelStatement, Ref, Statement
from migrate.storage import Store, join_key
from schemas.precomputed import PrecomputedInfo, PrecomputedScale

INFO = "info"
SUFFIX = ".precomputed"
NEUROGLANCER = "neuroglancer"
"""The folder of a Cellmap dataset that holds ``<group>/<name>.precomputed`` volumes."""

MAX_CHUNK_BYTES = 2**30
"""A stored chunk (clipped to its scale) is decoded whole by TensorStore: larger ones are
refused before anything is read, whatever ``info`` declares."""

ITEMSIZE = {
    "uint8": 1, "int8": 1, "uint16": 2, "int16": 2,
    "uint32": 4, "int32": 4, "uint64": 8, "float32": 4,
}  # fmt: skip

ENCODING_TYPES = {
    "jpeg": ("uint8",),
    "png": ("uint8", "uint16"),
    "compressed_segmentation": ("uint32", "uint64"),
}
"""The data types each encoding holds (TensorStore's neuroglancer_precomputed driver);
``raw`` holds every type."""

AXES_F = ("x", "y", "z")
"""Precomputed volumes are x, y, z (F order) by the format; ``resolution`` is nanometres."""


@dataclass(frozen=True)
class PrecomputedVolume:
    """A precomputed volume as read from its ``info`` file."""

    path: str
    """The volume folder inside the root it was read from (a dataset folder), e.g.
    ``neuroglancer/em/fibsem-uint8.precomputed``."""
    info: PrecomputedInfo
    raw: Mapping[str, Any]
    """The parsed ``info`` JSON, kept verbatim for provenance."""
    location: str
    """Display path of ``info``, for messages."""
    levels: tuple[SourceLevel, ...]
    """One per scale, in the stored order, named ``s0, s1, …``; shapes in C order."""

    @property
    def is_label(self) -> bool:
        """A segmentation: ``type`` segmentation, or a compressed_segmentation scale."""
        return self.info.type == "segmentation" or any(
            scale.encoding == "compressed_segmentation" for scale in self.info.scales
        )


def default_image_path(path: str) -> str:
    """Where a volume goes inside the output: its path inside the dataset without the
    leading ``neuroglancer/`` and the ``.precomputed`` suffix
    (``neuroglancer/em/fibsem-uint8.precomputed`` → ``em/fibsem-uint8``)."""
    parts = path.split("/")
    if len(parts) > 1 and parts[0] == NEUROGLANCER:
        parts = parts[1:]
    parts[-1] = parts[-1].removesuffix(SUFFIX)
    return "/".join(parts)


def is_safe_component(name: str) -> bool:
    """A name from a listing that may become a component of an image path: not empty, not
    hidden (``.cellmap-migrate`` is DEST's own), no backslash or control character."""
    return (
        name != ""
        and not name.startswith(".")
        and "\\" not in name
        and not any(ord(char) < 32 for char in name)
    )


def is_volume_name(name: str) -> bool:
    """A folder name that names a precomputed volume: ``<name>.precomputed`` whose
    ``<name>`` can be an image path component (:func:`is_safe_component`)."""
    return name.endswith(SUFFIX) and is_safe_component(name.removesuffix(SUFFIX))


def find_volumes(store: Store) -> list[str]:
    """The precomputed volumes of a dataset folder: every ``neuroglancer/<group>/<name>
    .precomputed`` folder (sorted), from two listings' depth of ``neuroglancer/``. Meshes
    (``neuroglancer/mesh/<name>/``) have no ``.precomputed`` suffix and are not volumes;
    hidden names (``.x``) and names that cannot be image path components are passed over."""
    groups, _ = store.list_dir(NEUROGLANCER)
    safe = [group for group in groups if is_safe_component(group)]
    listings = store.map(lambda group: store.list_dir(join_key(NEUROGLANCER, group))[0], safe)
    return sorted(
        join_key(NEUROGLANCER, group, name)
        for group, names in zip(safe, listings, strict=True)
        for name in names
        if is_volume_name(name)
    )


def read_volume(store: Store, path: str) -> PrecomputedVolume:
    """Read and check the ``info`` file of the volume at ``path``. Raises MetadataError
    naming ``info`` and the field for anything that cannot be migrated (and StoreError when
    there is no ``info``); reads nothing else."""
    key = join_key(path, INFO)
    location = store.display(key)
    raw = read_json_object(store, key)
    if raw is None:
        raise StoreError(f"{location}: no such file: not a precomputed volume")
    bad = non_finite_number(raw)
    if bad is not None:
        raise MetadataError(location, bad[0], f"{bad[1]} is not a JSON number")
    info = parse_attrs(PrecomputedInfo, raw, location)
    check_info(info, location)
    levels = tuple(
        SourceLevel(
            name=f"s{index}",
            attrs=scale.to_json_dict(),
            location=location,
            shape=f_to_c(scale.size),
        )
        for index, scale in enumerate(info.scales)
    )
    return PrecomputedVolume(path=path, info=info, raw=raw, location=location, levels=levels)


def check_info(info: PrecomputedInfo, location: str) -> None:
    """What the schema cannot say alone: one channel, encodings that hold the data type,
    chunks of a bounded size (computed, never allocated)."""
    if info.num_channels != 1:
        raise MetadataError(
            location,
            "num_channels",
            f"{info.num_channels} channels: only single-channel volumes can be migrated (an "
            "OME-NGFF image here has axes z, y, x); split the channels into volumes first",
        )
    itemsize = ITEMSIZE[info.data_type]
    for index, scale in enumerate(info.scales):
        allowed = ENCODING_TYPES.get(scale.encoding)
        if allowed is not None and info.data_type not in allowed:
            raise MetadataError(
                location,
                f"scales[{index}].encoding",
                f"{scale.encoding!r} cannot hold data_type {info.data_type!r} (it holds "
                f"{', '.join(allowed)})",
            )
        chunk = _chunk(scale)
        clipped = math.prod(min(c, n) for c, n in zip(chunk, scale.size, strict=True))
        if clipped * itemsize > MAX_CHUNK_BYTES:
            raise MetadataError(
                location,
                f"scales[{index}].chunk_sizes[0]",
                f"chunks of {list(chunk)} {info.data_type} voxels are "
                f"{clipped * itemsize / 2**30:.1f} GiB each; at most "
                f"{MAX_CHUNK_BYTES // 2**30} GiB are read at once",
            )


def _chunk(scale: PrecomputedScale) -> tuple[int, int, int]:
    """The chunk shape TensorStore reads a scale with (its first ``chunk_sizes``), F order."""
    return scale.chunk_sizes[0]


def chunk_shape(scale: PrecomputedScale) -> tuple[int, ...]:
    """The stored chunk shape of a scale, C order (z, y, x)."""
    return f_to_c(_chunk(scale))


def translation(scale: PrecomputedScale, s0: PrecomputedScale) -> tuple[float, ...]:
    """The OME-NGFF translation of ``scale``: ``resolution × (voxel_offset + ½) −
    resolution_0 / 2`` per axis, C order (see the module docstring)."""
    return f_to_c(
        tuple(
            r * (o + 0.5) - r0 / 2
            for r, o, r0 in zip(scale.resolution, scale.voxel_offset, s0.resolution, strict=True)
        )
    )


def precomputed_statement(volume: PrecomputedVolume) -> Statement:
    """What the ``info`` file states about every level (C order): axes z, y, x in
    nanometres, each scale's resolution, and the translation of the corner → centre rule."""
    where = volume.location
    s0 = volume.info.scales[0]
    rule = "resolution × (voxel_offset + ½) − resolution_0 / 2"
    levels = tuple(
        LevelStatement(
            scale=f_to_c(scale.resolution),
            scale_ref=Ref(where, f"scales[{index}].resolution"),
            translation=translation(scale, s0),
            translation_ref=Ref(
                where,
                f"scales[{index}].voxel_offset, scales[{index}].resolution and "
                f"scales[0].resolution: {rule}",
            ),
            factor=None,  # stored scales are kept as they are; no downsampling rule applies
        )
        for index, scale in enumerate(volume.info.scales)
    )
    return Statement(
        convention="precomputed",
        name="precomputed",
        axes=f_to_c(AXES_F),
        axes_ref=Ref(where, "axes x, y, z (the precomputed format's)"),
        units=("nanometer",) * 3,
        unit_refs=tuple(Ref(where, "resolution (nanometres, the format's unit)") for _ in AXES_F),
        levels=levels,
        sources={
            "axes": f"precomputed {where}: x, y, z (the format's axes)",
            "units": f"precomputed {where}: nanometer (the format's unit of resolution)",
            "scale": f"precomputed {where}: scales[i].resolution",
            "translation": (
                f"precomputed {where}: {rule} (corner-based voxels → OME-NGFF voxel centres, "
                "aligned with the dataset's N5 images)"
            ),
        },
    )


def map_volume(
    volume: PrecomputedVolume, options: MappingOptions, registry: Statement | None = None
) -> MappedImage:
    """The OME-NGFF axes and datasets of a volume (C order), through :func:`reconcile`, with
    what the ``registry`` states of it when it has an entry there (e.g. that it is stored
    mirrored)."""
    return reconcile(
        [precomputed_statement(volume)],
        volume.levels,
        options,
        where=volume.location,
        registry=registry,
    )
