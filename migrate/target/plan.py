"""Planning: from discovered source metadata to a :class:`~schemas.plan.Plan`. Pure.

All shapes, chunks and unit boxes are in **C order** (z, y, x).
"""

from __future__ import annotations

import fnmatch
import json
import math
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from migrate import __version__
from migrate.errors import MetadataError, MigrationError, OptionError
from migrate.source.axes import f_to_c
from migrate.source.discover import Discovery
from migrate.source.image import SourceImage, ordered_levels
from migrate.source.parse import parse_attrs
from migrate.source.reconcile import (
    MappedImage,
    MappingOptions,
    map_image,
    parse_trust,
    trust_for,
)
from migrate.source.registry import (
    LoadedManifest,
    Matched,
    Registry,
    dataset_of,
    match_sources,
    n5_image_key,
    registry_statement,
    unmatched_sources,
)
from migrate.storage import join_key, path_problem
from migrate.target.codecs import CodecChoice, check_codec_options, choose_codec
from migrate.target.display import colour_hex, omero, registry_label
from migrate.target.layout import PROVENANCE_KEY
from schemas.n5 import ITEMSIZE, N5ArrayAttributes
from schemas.ngff import (
    AttrsV05,
    ImageAttrsV04,
    ImageLabelV04,
    ImageLabelV05,
    LabelsAttrsV04,
    LabelSource,
    MultiscaleV04,
    MultiscaleV05,
    Omero,
    OmeV05,
    Provenance,
)
from schemas.plan import GroupPlan, ImagePlan, LevelPlan, NgffVersion, Plan

DEFAULT_UNIT_BYTES = 32 * 2**20
"""Target uncompressed size of one work unit; peak memory is about workers × 2 × this."""


EARLIER_VERSION = (
    "recorded by an earlier cellmap-migrate (its settings hold unit_bytes), whose metadata "
    "this version writes differently (no multiscale-level identity transform, labels naming "
    "their image): it cannot be resumed or planned again here; convert it again with "
    "--overwrite"
)
"""What an image written before the unit size left the output's identity is told."""


@dataclass(frozen=True)
class PlanOptions:
    """Everything the user can choose that changes the output (and the work-unit size,
    which does not: see :meth:`recorded`)."""

    ngff_version: NgffVersion = "0.4"
    codec: CodecChoice = "keep"
    chunks: tuple[int, ...] | None = None
    shard: tuple[int, ...] | None = None
    prefix: str = ""
    downsampling: Literal["windowed", "subsample"] = "windowed"
    trust: tuple[str, ...] = ()
    """The ``--trust`` values as given (``cosem``, ``registry``, ``labels/*=n5``, …; see
    :func:`migrate.source.reconcile.parse_trust`)."""
    allow_unknown_units: bool = False
    label_patterns: tuple[str, ...] = ()
    codec_level: int | None = None
    blosc_cname: str | None = None
    blosc_shuffle: str | None = None
    unit_bytes: int = DEFAULT_UNIT_BYTES
    registry: Registry | None = None
    """The manifests of ``--registry`` (the one of the source's dataset is used)."""
    image_paths: tuple[tuple[str, str], ...] = ()
    """``--image-path VOLUME=PATH``: where a precomputed volume (its path inside the
    dataset) goes inside the output, instead of its default image path."""

    def __post_init__(self) -> None:
        """Options that cannot go together are a usage error (OptionError), before any I/O."""
        if self.shard is not None and self.ngff_version != "0.5":
            raise OptionError(
                f"--shard {_csv(self.shard)}: sharding needs --ngff-version 0.5 (Zarr v3); "
                "0.4 (Zarr v2) has no shards"
            )
        check_codec_options(self.codec, self.codec_level, self.blosc_cname, self.blosc_shuffle)

    def _trust_setting(self) -> str | list[str] | None:
        """``--trust`` as recorded: None, the value (as before per-image rules existed), or
        the list of values."""
        if not self.trust:
            return None
        return self.trust[0] if len(self.trust) == 1 else list(self.trust)

    def settings(self, manifest: LoadedManifest | None = None) -> dict[str, Any]:
        """The options as a plan records them; ``registry`` (the dataset's manifest: its
        name and digest) only when a manifest applies, and ``image_paths`` only when given,
        so plans without them keep their fingerprints."""
        settings: dict[str, Any] = {
            "ngff_version": self.ngff_version,
            "codec": self.codec,
            "codec_level": self.codec_level,
            "blosc_cname": self.blosc_cname,
            "blosc_shuffle": self.blosc_shuffle,
            "chunks": list(self.chunks) if self.chunks else None,
            "shard": list(self.shard) if self.shard else None,
            "prefix": self.prefix,
            "downsampling": self.downsampling,
            "trust": self._trust_setting(),
            "allow_unknown_units": self.allow_unknown_units,
            "label_patterns": list(self.label_patterns),
        }
        if manifest is not None:
            settings["registry"] = manifest.recorded()
        if self.image_paths:  # only when given: settings recorded before it stay valid
            settings["image_paths"] = dict(sorted(self.image_paths))
        return settings

    def recorded(self, manifest: LoadedManifest | None = None) -> dict[str, Any]:
        """What an N5 image's provenance records: every setting that changes its output bytes
        (:meth:`settings`). The work-unit size is not one of them: a run resumed with
        another ``--unit-mib`` goes on with the work units the image was started with.
        ``image_paths`` places precomputed volumes only: see :meth:`recorded_for_volume`."""
        return {k: v for k, v in self.settings(manifest).items() if k != "image_paths"}

    def recorded_for_volume(
        self, volume: str, manifest: LoadedManifest | None = None
    ) -> dict[str, Any]:
        """What a precomputed volume's provenance records: :meth:`recorded`, and its own
        ``--image-path`` when one was given (``{"image_paths": {volume: path}}``)."""
        paths = {v: p for v, p in self.image_paths if v == volume}
        return {**self.recorded(manifest), **({"image_paths": paths} if paths else {})}

    def manifest_for(self, dataset: str | None) -> LoadedManifest | None:
        """The registry manifest of the dataset named ``dataset`` (None: no dataset)."""
        if self.registry is None or dataset is None:
            return None
        return self.registry.for_dataset(dataset)

    @classmethod
    def from_recorded(
        cls, recorded: Mapping[str, Any], where: str, registry: Registry | None = None
    ) -> PlanOptions:
        """The options of a :meth:`recorded` value read back from DEST; ``where`` names the
        file in errors. A recorded registry must be among the manifests of ``registry``
        with the recorded digest (the caller checks that, with its own message)."""
        expected = set(cls().recorded())
        if isinstance(recorded, Mapping) and "unit_bytes" in recorded:
            raise MetadataError(where, f"{PROVENANCE_KEY}.settings", EARLIER_VERSION)
        keys = (
            set(recorded) - {"registry", "image_paths"} if isinstance(recorded, Mapping) else set()
        )
        if not isinstance(recorded, Mapping) or keys != expected:
            got = sorted(recorded) if isinstance(recorded, Mapping) else recorded
            raise MetadataError(
                where,
                f"{PROVENANCE_KEY}.settings",
                f"expected the keys {sorted(expected)}, got {got}",
            )
        trust = recorded["trust"]
        manifest = None
        try:
            if "registry" in recorded:
                if registry is None:
                    raise ValueError("a registry is recorded but none was given")
                manifest = registry.for_dataset(str(recorded["registry"]["dataset"]))
            options = cls(
                ngff_version=recorded["ngff_version"],
                codec=recorded["codec"],
                codec_level=recorded["codec_level"],
                blosc_cname=recorded["blosc_cname"],
                blosc_shuffle=recorded["blosc_shuffle"],
                chunks=tuple(recorded["chunks"]) if recorded["chunks"] else None,
                shard=tuple(recorded["shard"]) if recorded["shard"] else None,
                prefix=str(recorded["prefix"]),
                downsampling=recorded["downsampling"],
                trust=() if trust is None else (trust,) if isinstance(trust, str) else tuple(trust),
                allow_unknown_units=bool(recorded["allow_unknown_units"]),
                label_patterns=tuple(recorded["label_patterns"]),
                registry=registry,
                image_paths=tuple(
                    (str(volume), str(path))
                    for volume, path in dict(recorded.get("image_paths") or {}).items()
                ),
            )
            parse_trust(options.trust)
        except (TypeError, ValueError, KeyError, AttributeError, OptionError) as exc:
            raise MetadataError(where, f"{PROVENANCE_KEY}.settings", str(exc)) from exc
        paths = {"image_paths": dict(options.image_paths)} if options.image_paths else {}
        if {**options.recorded(manifest), **paths} != dict(recorded):
            raise MetadataError(
                where,
                f"{PROVENANCE_KEY}.settings",
                f"not settings cellmap-migrate writes: {dict(recorded)}",
            )
        return options


SETTING_OPTIONS = {
    "ngff_version": "--ngff-version",
    "codec": "--codec",
    "codec_level": "--codec-level",
    "blosc_cname": "--blosc-cname",
    "blosc_shuffle": "--blosc-shuffle",
    "chunks": "--chunks",
    "shard": "--shard",
    "prefix": "--prefix",
    "downsampling": "--downsampling",
    "trust": "--trust",
    "allow_unknown_units": "--allow-unknown-units",
    "label_patterns": "--label",
    "registry": "--registry",
    "image_paths": "--image-path",
    "unit_bytes": "--unit-mib",
}
"""The ``convert`` option of each recorded setting (``unit_bytes``: recorded by earlier
versions, whose outputs depended on it)."""


def setting_as_option(name: str, value: Any) -> str:
    """A recorded setting as the options that give it: ``--codec zstd``, ``--chunks
    64,64,64``, ``no --shard`` (the option left out), ``--label a --label b``."""
    option = SETTING_OPTIONS.get(name)
    if option is None:
        return f"{name} {json.dumps(value)}"
    if value is None or value is False or value == [] or (name == "prefix" and value == ""):
        return f"no {option}"
    if value is True:
        return option
    if name == "label_patterns" and isinstance(value, list):
        return " ".join(f"{option} {pattern}" for pattern in value)
    if name == "registry" and isinstance(value, dict):
        return f"{option} (the manifest of {value.get('dataset')}, digest {value.get('digest')})"
    if name == "image_paths" and isinstance(value, dict):
        return " ".join(f"{option} {volume}={path}" for volume, path in value.items())
    if name == "unit_bytes" and isinstance(value, int):
        return f"{option} {value / 2**20:g}"
    if isinstance(value, list):
        return f"{option} {','.join(str(v) for v in value)}"
    return f"{option} {value}"


def settings_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Each setting that differs between ``old`` (recorded at DEST) and ``new`` (this run),
    as (the options that gave the old value, the options that give the new one)."""
    return [
        (setting_as_option(name, old.get(name)), setting_as_option(name, new.get(name)))
        for name in [*new, *(key for key in old if key not in new)]
        if old.get(name) != new.get(name)
    ]


def _csv(values: Iterable[int]) -> str:
    return ",".join(str(v) for v in values)


def is_label_image(
    path: str, dtype: str, patterns: Sequence[str], registry: Matched | None = None
) -> bool:
    """Segmentations: integer images named ``labels/…_seg``, or matched by ``--label``; with
    a registry entry, its ``contentType`` decides instead of the name
    (:func:`migrate.target.display.registry_label`)."""
    parts = path.split("/")
    integer = dtype.startswith(("int", "uint"))
    by_name = len(parts) >= 2 and parts[-2] == "labels" and parts[-1].endswith("_seg")
    if registry is not None:
        by_name = registry_label(registry.source, dtype)
    by_pattern = any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns)
    if by_pattern and not integer:
        raise MigrationError(
            f"{path}: --label matches an image of dtype {dtype}; label images must be integers"
        )
    return integer and (by_name or by_pattern)


def grow_unit(
    base: tuple[int, ...], shape: tuple[int, ...], itemsize: int, target: int
) -> tuple[int, ...]:
    """Grow a chunk-aligned box by doubling along the fastest axes until it holds ~``target``
    bytes (never past the array's extent). Takes and returns C order."""
    unit = list(base)
    while True:
        grew = False
        for axis in reversed(range(len(unit))):
            if unit[axis] >= shape[axis]:
                continue
            if math.prod(unit) * itemsize * 2 > target:
                return tuple(unit)
            unit[axis] *= 2
            grew = True
        if not grew:
            return tuple(unit)


def _output_grid(
    source_blocks: tuple[int, ...], shape: tuple[int, ...], options: PlanOptions
) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """(chunks, shard) of one level, C order, for options :func:`check_grid_options` took.

    The shard rule: ``--shard`` holds a whole number of chunks on every axis; a level smaller
    than the shard along an axis gets a shard cut to its size, rounded up to whole chunks (one
    shard covers it; a shard never needs to be larger)."""
    chunks = options.chunks or source_blocks
    if options.shard is None:
        return chunks, None
    shard = tuple(
        min(s, math.ceil(max(n, 1) / c) * c)
        for s, c, n in zip(options.shard, chunks, shape, strict=True)
    )
    return chunks, shard


MAX_INDEX = 2**62 - 2
"""The largest index (and so extent) TensorStore handles along an axis."""
MAX_COUNT = 2**63 - 1
"""Byte sizes and chunk counts must fit a signed 64-bit integer (TensorStore, numpy, the
Zarr index width)."""
MAX_SHARD_CHUNKS = 2**24
"""Inner chunks one shard may hold: its index (16 bytes a chunk) is built in memory."""


def check_sizes(
    shape: tuple[int, ...],
    blocks: tuple[int, ...],
    chunks: tuple[int, ...],
    shard: tuple[int, ...] | None,
    itemsize: int,
    location: str,
) -> None:
    """Refuse a level whose declared sizes the output grid cannot hold, before anything is
    allocated or written for it: an extent or block size past TensorStore's largest index,
    more bytes or more chunks (shards) than a 64-bit count holds, a shard whose index would
    have more than :data:`MAX_SHARD_CHUNKS` entries. All C order (z, y, x); the message
    names the N5 field, whose lists are F order (x, y, z)."""
    ndim = len(shape)

    def field(name: str, axis: int) -> str:
        return f"{name}[{ndim - 1 - axis}]"

    for axis, (extent, block) in enumerate(zip(shape, blocks, strict=True)):
        if extent > MAX_INDEX:
            raise MetadataError(
                location,
                field("dimensions", axis),
                f"{extent} is more than an array can hold (at most {MAX_INDEX} = 2^62 - 2, "
                "TensorStore's largest index)",
            )
        if block > MAX_INDEX:
            raise MetadataError(
                location, field("blockSize", axis), f"{block} is more than {MAX_INDEX}"
            )
    if math.prod(shape) * itemsize > MAX_COUNT:
        raise MetadataError(
            location,
            "dimensions",
            f"{list(reversed(shape))} holds {math.prod(shape) * itemsize} bytes, more than a "
            f"64-bit size can count ({MAX_COUNT})",
        )
    for what, grid in (("chunks", chunks), ("shards", shard), ("blocks", blocks)):
        if grid is None:
            continue
        count = math.prod(math.ceil(n / g) for n, g in zip(shape, grid, strict=True))
        if count > MAX_COUNT:
            raise MetadataError(
                location,
                "dimensions",
                f"{list(reversed(shape))} makes {count} {what} of {list(reversed(grid))}, "
                f"more than a 64-bit count holds ({MAX_COUNT})",
            )
    if shard is not None:
        inner = math.prod(s // c for s, c in zip(shard, chunks, strict=True))
        if inner > MAX_SHARD_CHUNKS:
            raise MigrationError(
                f"{location}: --shard {list(shard)} (z, y, x) of chunks {list(chunks)} holds "
                f"{inner} chunks, more than a shard index may ({MAX_SHARD_CHUNKS}); use a "
                "smaller --shard"
            )


def _nearest_multiple(value: int, step: int) -> int:
    """The multiple of ``step`` nearest to ``value`` (at least ``step``)."""
    return max(step, round(value / step) * step)


def _divisor_near(value: int, near: int) -> int | None:
    """The divisor of ``value`` closest to ``near`` by ratio (the larger on a tie); None when
    even that one is off by more than a factor of 2 (or ``value`` is too large to factor
    quickly: this only makes a suggestion)."""
    if value > 2**40:
        return None
    divisors: set[int] = set()
    for d in range(1, math.isqrt(value) + 1):
        if value % d == 0:
            divisors.update((d, value // d))
    best = min(sorted(divisors, reverse=True), key=lambda d: abs(math.log(d / near)))
    return best if abs(math.log(best / near)) <= math.log(2) else None


@dataclass(frozen=True)
class LevelBlocks:
    """One level the plan writes: its image, name, shape and chunks (C order)."""

    image: str
    level: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    """The level's output chunks: ``--chunks``, or its source blocks (C order)."""


def level_grids(images: Sequence[SourceImage]) -> list[LevelBlocks]:
    """The shape and source blocks of every level of the N5 ``images`` (C order)."""
    grids: list[LevelBlocks] = []
    for image in images:
        for level in image.levels:
            attrs = parse_attrs(N5ArrayAttributes, level.attrs, level.location)
            shape = f_to_c(attrs.dimensions)
            grids.append(LevelBlocks(image.path, level.name, shape, f_to_c(attrs.blockSize)))
    return grids


def check_grid_options(grids: Sequence[LevelBlocks], options: PlanOptions) -> None:
    """Refuse ``--chunks`` / ``--shard`` values that a level (of ``grids``: every level the
    plan writes) cannot take, with one message that names the option, lists every such
    level and says what would work. Pure.

    Raises OptionError (a usage error): ``--chunks``/``--shard`` with another number of
    values than the images have axes, and a ``--shard`` that is not a whole number of some
    level's chunks on every axis."""
    for option, value in (("--chunks", options.chunks), ("--shard", options.shard)):
        if value is None:
            continue
        wrong = {g.image: len(g.shape) for g in grids if len(g.shape) != len(value)}
        if wrong:
            counts = sorted(set(wrong.values()))
            axes = f"{counts[0]} axes" if len(counts) == 1 else "other numbers of axes"
            names = ", ".join(wrong)
            raise OptionError(
                f"{option} {_csv(value)} has {len(value)} value(s) for the {axes} of "
                f"{names}: give one size per axis, C order (z, y, x), e.g. "
                f"{option} {_csv([value[0]] * counts[0])}"
            )
    if options.chunks is not None:
        grids = [LevelBlocks(g.image, g.level, g.shape, options.chunks) for g in grids]
    shard = options.shard
    if shard is None:
        return
    bad = [g for g in grids if any(s % c for s, c in zip(shard, g.chunks, strict=True))]
    if not bad:
        return
    groups: dict[tuple[str, tuple[int, ...]], list[str]] = {}
    for g in bad:
        groups.setdefault((g.image, g.chunks), []).append(g.level)
    listed = "; ".join(
        f"{image} {', '.join(levels)} (chunks {_csv(chunks)})"
        for (image, chunks), levels in groups.items()
    )
    steps = [math.lcm(*(g.chunks[axis] for g in grids)) for axis in range(len(shard))]
    multiples = (_nearest_multiple(s, c) for s, c in zip(shard, steps, strict=True))
    fixes = [f"--shard {_csv(multiples)}"]
    divisors = [_divisor_near(s, c) for s, c in zip(shard, bad[0].chunks, strict=True)]
    if all(d is not None for d in divisors):
        slower = (
            ""
            if options.chunks is not None
            else " (chunks other than the source blocks are copied through TensorStore)"
        )
        fixes.append(f"--chunks {_csv(d for d in divisors if d is not None)}{slower}")
    raise OptionError(
        f"--shard {_csv(shard)} (z, y, x) is not a whole number of chunks at {listed}: a "
        "shard must hold a whole number of chunks on every axis, at every level (a level "
        "smaller than the shard gets one shard of its size, rounded up to whole chunks); "
        "use " + " or ".join(fixes)
    )


def _provenance(
    source_root: str,
    path: str,
    attrs: Mapping[str, Any],
    settings: dict[str, Any] | None = None,
) -> Provenance:
    return Provenance(
        version=__version__,
        source=source_root,
        path=path,
        source_attributes=dict(attrs),
        settings=settings,
    )


def _group_attributes(
    mapped: MappedImage,
    kind: Literal["image", "label"],
    dest_path: str,
    provenance: Provenance,
    version: NgffVersion,
    display: Omero | None = None,
    label_source: str | None = None,
) -> dict[str, Any]:
    """The image group's attributes. No multiscale-level ``coordinateTransformations``: the
    identity scale it would hold says nothing (and ngff-zarr's validator refuses it)."""
    common: dict[str, Any] = {
        "name": "/" + dest_path,
        "axes": mapped.axes,
        "datasets": mapped.datasets,
    }
    source = LabelSource(image=label_source) if label_source is not None else None
    if version == "0.4":
        return ImageAttrsV04(
            multiscales=(MultiscaleV04(**common),),
            omero=display,
            image_label=ImageLabelV04(source=source) if kind == "label" else None,
            provenance=provenance,
        ).to_json_dict()
    return AttrsV05(
        ome=OmeV05(
            multiscales=(MultiscaleV05(**common),),
            omero=display,
            image_label=ImageLabelV05(source=source) if kind == "label" else None,
        ),
        provenance=provenance,
    ).to_json_dict()


def display_of(matched: Matched) -> Omero:
    """The ``omero`` of an image from its registry entry; an unknown colour is an error
    naming the manifest and the field."""
    if colour_hex(matched.source.displaySettings.color) is None:
        ref = matched.ref("displaySettings.color")
        raise MetadataError(
            ref.location,
            ref.field,
            f"{matched.source.displaySettings.color!r} is not a CSS colour name or RRGGBB",
        )
    return Omero.model_validate(omero(matched.source))


EM_GROUP = "em"
"""The N5 group of a Cellmap dataset's electron-microscopy images (``em/fibsem-uint16``)."""


def label_source_image(image_path: str, source_images: Sequence[str]) -> str | None:
    """What a label image's ``image-label.source.image`` names: the image its labels were
    made from, as a path relative to the label image. The rule: the dataset's EM image, an
    image directly under ``em/`` among ``source_images`` (the paths of the images migrated
    with it, inside the N5 root); with several, the first by name (``em/fibsem-uint16``
    before ``em/fibsem-uint8``); with none, None (the field is left out). Both paths are in
    the same output tree, so the prefix cancels out."""
    em = sorted(
        path for path in source_images if path.rpartition("/")[0] == EM_GROUP and path != image_path
    )
    if not em:
        return None
    return posixpath.relpath(em[0], image_path)


def plan_image(
    image: SourceImage,
    source_url: str,
    options: PlanOptions,
    manifest: LoadedManifest | None = None,
    matched: Matched | None = None,
    migrated_with: Sequence[str] = (),
) -> ImagePlan:
    """The plan of one multiscale image (metadata mapping, codecs, chunks, work units); with
    its entry in the registry (``matched``, from ``manifest``), reconciled with it, mirrored
    as it says, drawn as the portal drew it and classified by what it says the image is.
    ``migrated_with`` are the paths of the images planned with it (for a label image's
    source, :func:`label_source_image`)."""
    n5_trust, registry_trust = trust_for(parse_trust(options.trust), image.path)
    statement = None
    if matched is not None:
        statement = registry_statement(
            matched, ordered_levels(image), allow_unknown_units=options.allow_unknown_units
        )
    mapped = map_image(
        image,
        MappingOptions(
            downsampling=options.downsampling,
            trust=n5_trust,
            trust_registry=registry_trust,
            allow_unknown_units=options.allow_unknown_units,
        ),
        statement,
    )
    dest_path = join_key(options.prefix, image.path)
    levels = []
    for level in image.levels:
        attrs = parse_attrs(N5ArrayAttributes, level.attrs, level.location)
        shape = f_to_c(attrs.dimensions)
        blocks = f_to_c(attrs.blockSize)
        codec = choose_codec(
            attrs.compression,
            options.codec,
            options.ngff_version,
            level.location,
            level=options.codec_level,
            cname=options.blosc_cname,
            shuffle=options.blosc_shuffle,
        )
        chunks, shard = _output_grid(blocks, shape, options)
        itemsize = ITEMSIZE[attrs.dataType]
        check_sizes(shape, blocks, chunks, shard, itemsize, level.location)
        levels.append(
            LevelPlan(
                name=level.name,
                source_path=join_key(image.path, level.name),
                dest_path=join_key(dest_path, level.name),
                shape=shape,
                dtype=attrs.dataType,
                source_blocks=blocks,
                source_compression=attrs.compression.to_json_dict(),
                chunks=chunks,
                shard=shard,
                codec=codec,
                unit_shape=grow_unit(shard or chunks, shape, itemsize, options.unit_bytes),
                attributes={
                    "cellmap-migrate": _provenance(
                        source_url, join_key(image.path, level.name), level.attrs
                    ).to_json_dict()
                },
                mirror=mapped.mirror,
            )
        )
    label = is_label_image(image.path, levels[0].dtype, options.label_patterns, matched)
    kind: Literal["image", "label"] = "label" if label else "image"
    provenance = _provenance(source_url, image.path, image.group_attrs, options.recorded(manifest))
    if matched is not None:
        entry = matched.source.to_json_dict()
        provenance = provenance.model_copy(update={"registry_source": entry})
    return ImagePlan(
        source_path=image.path,
        dest_path=dest_path,
        kind=kind,
        levels=tuple(levels),
        attributes=_group_attributes(
            mapped,
            kind,
            dest_path,
            provenance,
            options.ngff_version,
            display_of(matched) if matched is not None else None,
            label_source_image(image.path, migrated_with) if kind == "label" else None,
        ),
        sources=dict(mapped.sources),
        warnings=mapped.warnings,
        conflicts=mapped.conflicts,
        registry_source=matched.source.name if matched is not None else None,
    )


def plan_groups(
    images: Sequence[ImagePlan],
    ngff_version: NgffVersion,
    existing_labels: Mapping[str, Sequence[str]] | None = None,
) -> tuple[GroupPlan, ...]:
    """Every ancestor group of every image, with ``labels`` lists where label images live
    (merged with ``existing_labels``: names a ``labels`` group at DEST lists already)."""
    existing_labels = existing_labels or {}
    image_paths = {image.dest_path for image in images}
    labels: dict[str, set[str]] = {}
    for image in images:
        if image.kind == "label":
            parent, _, name = image.dest_path.rpartition("/")
            labels.setdefault(parent, set()).add(name)
    paths: set[str] = set()
    for path in image_paths:
        parts = path.split("/")
        paths.update("/".join(parts[:i]) for i in range(len(parts)))
    groups = []
    for path in sorted(paths - image_paths):
        names = labels.get(path, set()) | set(existing_labels.get(path, ()))
        attributes: dict[str, Any] = {}
        if names and labels.get(path):
            listed = sorted(names)
            attributes = (
                LabelsAttrsV04(labels=tuple(listed)).to_json_dict()
                if ngff_version == "0.4"
                else AttrsV05(ome=OmeV05(labels=tuple(listed))).to_json_dict()
            )
        groups.append(GroupPlan(path=path, attributes=attributes))
    return tuple(groups)


COMPLETE_KEY = "complete"
"""Under the ``cellmap-migrate`` attribute of the DEST root group: the completion mark, every
image finished at DEST (dest path → image fingerprint). Written after every other document,
so a DEST whose mark does not list an image with its fingerprint is not complete."""


DATASET_KEY = "dataset"
"""Under the ``cellmap-migrate`` attribute of the DEST root group, with a registry: the
dataset's name, the digest of its manifest and the manifest's ``metadata`` verbatim."""


def with_completion_mark(plan: Plan, previous: Mapping[str, str] | None = None) -> Plan:
    """``plan`` with the completion mark in its root group's attributes: this plan's images
    by fingerprint, plus the ``previous`` entries (images other runs finished at DEST) of
    images this plan does not write. A plan whose root is itself an image has no root group:
    that image's own mark is the only one."""
    complete = {**(previous or {}), **{i.dest_path: plan.image_fingerprint(i) for i in plan.images}}
    groups = []
    for group in plan.groups:
        if group.path == "":
            mark: dict[str, Any] = {COMPLETE_KEY: dict(sorted(complete.items()))}
            if plan.registry_dataset is not None:
                mark[DATASET_KEY] = plan.registry_dataset
            attributes = {**group.attributes, "cellmap-migrate": mark}
            group = GroupPlan(path="", attributes=attributes)
        groups.append(group)
    return plan.model_copy(update={"groups": tuple(groups)})


def build_plan(
    discovery: Discovery, source_url: str, source_inner: str, dest_url: str, options: PlanOptions
) -> Plan:
    """The whole plan. Raises MetadataError / MigrationError on input that cannot be mapped."""
    problem = path_problem(options.prefix)
    if problem is not None:
        raise MigrationError(f"--prefix: {problem}: a prefix is a relative path of plain names")
    if not discovery.images:
        # not join_key: a URL keeps its leading "/" (or its "s3://")
        where = f"{source_url.rstrip('/')}/{source_inner}" if source_inner else source_url
        raise MetadataError(where, None, "no multiscale image (a group of s0…sN arrays) found")
    check_grid_options(level_grids(discovery.images), options)
    try:
        parse_trust(options.trust)
    except ValueError as exc:
        raise MigrationError(str(exc)) from None
    manifest = options.manifest_for(dataset_of(source_url))
    keys = [n5_image_key(image.path) for image in discovery.images]
    matches = match_sources(manifest, keys) if manifest is not None else {}
    paths = [image.path for image in discovery.images]
    images = tuple(
        plan_image(image, source_url, options, manifest, matches.get(key), paths)
        for image, key in zip(discovery.images, keys, strict=True)
    )
    plan = Plan(
        tool_version=__version__,
        source=source_url,
        source_inner=source_inner,
        dest=dest_url,
        ngff_version=options.ngff_version,
        settings=options.settings(manifest),
        images=images,
        groups=plan_groups(images, options.ngff_version),
        orphan_arrays=discovery.orphan_arrays,
        registry_dataset=None if manifest is None else dataset_record(manifest),
        registry_unmatched=() if manifest is None else tuple(unmatched_sources(manifest, keys)),
    )
    return with_completion_mark(plan)


def dataset_record(manifest: LoadedManifest) -> dict[str, Any]:
    """What DEST's root keeps of the dataset's manifest (see :data:`DATASET_KEY`)."""
    return {
        "name": manifest.manifest.name,
        "registry": manifest.digest,
        "metadata": manifest.manifest.metadata,
    }
