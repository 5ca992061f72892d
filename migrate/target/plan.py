"""Planning: from discovered source metadata to a :class:`~schemas.plan.Plan`. Pure.

All shapes, chunks and unit boxes are in **C order** (z, y, x).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from migrate import __version__
from migrate.errors import MetadataError, MigrationError
from migrate.source.axes import f_to_c
from migrate.source.discover import Discovery
from migrate.source.image import SourceImage
from migrate.source.parse import parse_attrs
from migrate.source.reconcile import MappedImage, MappingOptions, map_image
from migrate.storage import join_key
from migrate.target.codecs import CodecChoice, choose_codec
from migrate.target.layout import PROVENANCE_KEY
from schemas.n5 import ITEMSIZE, N5ArrayAttributes
from schemas.ngff import (
    AttrsV05,
    ImageAttrsV04,
    ImageLabelV04,
    ImageLabelV05,
    LabelsAttrsV04,
    MultiscaleV04,
    MultiscaleV05,
    OmeV05,
    Provenance,
    ScaleTransform,
)
from schemas.plan import GroupPlan, ImagePlan, LevelPlan, NgffVersion, Plan

DEFAULT_UNIT_BYTES = 32 * 2**20
"""Target uncompressed size of one work unit; peak memory is about workers × 2 × this."""


@dataclass(frozen=True)
class PlanOptions:
    """Everything the user can choose that changes the output."""

    ngff_version: NgffVersion = "0.4"
    codec: CodecChoice = "keep"
    chunks: tuple[int, ...] | None = None
    shard: tuple[int, ...] | None = None
    prefix: str = ""
    downsampling: Literal["windowed", "subsample"] = "windowed"
    trust: Literal["cosem", "neuroglancer"] | None = None
    allow_unknown_units: bool = False
    label_patterns: tuple[str, ...] = ()
    unit_bytes: int = DEFAULT_UNIT_BYTES
    image_paths: tuple[tuple[str, str], ...] = ()
    """``--image-path VOLUME=PATH``: where a precomputed volume (its path inside the
    dataset) goes inside the output, instead of its default image path."""

    def settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "ngff_version": self.ngff_version,
            "codec": self.codec,
            "chunks": list(self.chunks) if self.chunks else None,
            "shard": list(self.shard) if self.shard else None,
            "prefix": self.prefix,
            "downsampling": self.downsampling,
            "trust": self.trust,
            "allow_unknown_units": self.allow_unknown_units,
            "label_patterns": list(self.label_patterns),
        }
        if self.image_paths:  # only when given: settings recorded before it stay valid
            settings["image_paths"] = dict(sorted(self.image_paths))
        return settings

    def recorded(self) -> dict[str, Any]:
        """What an N5 image's provenance records: every setting that changes its output bytes
        (:meth:`settings` and the work-unit size, which the fingerprint covers).
        ``image_paths`` places precomputed volumes only: see :meth:`recorded_for_volume`."""
        settings = {k: v for k, v in self.settings().items() if k != "image_paths"}
        return {**settings, "unit_bytes": self.unit_bytes}

    def recorded_for_volume(self, volume: str) -> dict[str, Any]:
        """What a precomputed volume's provenance records: :meth:`recorded`, and its own
        ``--image-path`` when one was given (``{"image_paths": {volume: path}}``)."""
        paths = {v: p for v, p in self.image_paths if v == volume}
        return {**self.recorded(), **({"image_paths": paths} if paths else {})}

    @classmethod
    def from_recorded(cls, recorded: Mapping[str, Any], where: str) -> PlanOptions:
        """The options of a :meth:`recorded` value read back from DEST; ``where`` names the
        file in errors."""
        expected = set(cls().recorded())
        if not isinstance(recorded, Mapping) or set(recorded) - {"image_paths"} != expected:
            got = sorted(recorded) if isinstance(recorded, Mapping) else recorded
            raise MetadataError(
                where,
                f"{PROVENANCE_KEY}.settings",
                f"expected the keys {sorted(expected)}, got {got}",
            )
        try:
            options = cls(
                ngff_version=recorded["ngff_version"],
                codec=recorded["codec"],
                chunks=tuple(recorded["chunks"]) if recorded["chunks"] else None,
                shard=tuple(recorded["shard"]) if recorded["shard"] else None,
                prefix=str(recorded["prefix"]),
                downsampling=recorded["downsampling"],
                trust=recorded["trust"],
                allow_unknown_units=bool(recorded["allow_unknown_units"]),
                label_patterns=tuple(recorded["label_patterns"]),
                unit_bytes=int(recorded["unit_bytes"]),
                image_paths=tuple(
                    (str(volume), str(path))
                    for volume, path in dict(recorded.get("image_paths") or {}).items()
                ),
            )
        except (TypeError, ValueError) as exc:
            raise MetadataError(where, f"{PROVENANCE_KEY}.settings", str(exc)) from exc
        paths = {"image_paths": dict(options.image_paths)} if options.image_paths else {}
        if {**options.recorded(), **paths} != dict(recorded):
            raise MetadataError(
                where,
                f"{PROVENANCE_KEY}.settings",
                f"not settings cellmap-migrate writes: {dict(recorded)}",
            )
        return options


def is_label_image(path: str, dtype: str, patterns: Sequence[str]) -> bool:
    """Segmentations: integer images named ``labels/…_seg``, or matched by ``--label``."""
    parts = path.split("/")
    integer = dtype.startswith(("int", "uint"))
    by_name = len(parts) >= 2 and parts[-2] == "labels" and parts[-1].endswith("_seg")
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
    source_blocks: tuple[int, ...], shape: tuple[int, ...], options: PlanOptions, where: str
) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """(chunks, shard) of one level, C order."""
    ndim = len(shape)
    if options.chunks is not None and len(options.chunks) != ndim:
        raise MigrationError(f"{where}: --chunks has {len(options.chunks)} values for {ndim} axes")
    chunks = options.chunks or source_blocks
    if options.shard is None:
        return chunks, None
    if len(options.shard) != ndim:
        raise MigrationError(f"{where}: --shard has {len(options.shard)} values for {ndim} axes")
    # A shard never needs to be larger than the level, rounded up to whole chunks.
    shard = tuple(
        min(s, math.ceil(max(n, 1) / c) * c)
        for s, c, n in zip(options.shard, chunks, shape, strict=True)
    )
    if any(s % c for s, c in zip(shard, chunks, strict=True)):
        raise MigrationError(
            f"{where}: --shard {list(options.shard)} is not a whole number of chunks {list(chunks)}"
        )
    return chunks, shard


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
) -> dict[str, Any]:
    ndim = len(mapped.axes)
    common: dict[str, Any] = {
        "name": "/" + dest_path,
        "axes": mapped.axes,
        "datasets": mapped.datasets,
        "coordinateTransformations": (ScaleTransform(scale=(1.0,) * ndim),),
    }
    if version == "0.4":
        return ImageAttrsV04(
            multiscales=(MultiscaleV04(**common),),
            image_label=ImageLabelV04() if kind == "label" else None,
            provenance=provenance,
        ).to_json_dict()
    return AttrsV05(
        ome=OmeV05(
            multiscales=(MultiscaleV05(**common),),
            image_label=ImageLabelV05() if kind == "label" else None,
        ),
        provenance=provenance,
    ).to_json_dict()


def plan_image(image: SourceImage, source_url: str, options: PlanOptions) -> ImagePlan:
    """The plan of one multiscale image (metadata mapping, codecs, chunks, work units)."""
    mapped = map_image(
        image,
        MappingOptions(
            downsampling=options.downsampling,
            trust=options.trust,
            allow_unknown_units=options.allow_unknown_units,
        ),
    )
    dest_path = join_key(options.prefix, image.path)
    levels = []
    for level in image.levels:
        attrs = parse_attrs(N5ArrayAttributes, level.attrs, level.location)
        shape = f_to_c(attrs.dimensions)
        blocks = f_to_c(attrs.blockSize)
        codec = choose_codec(attrs.compression, options.codec, options.ngff_version, level.location)
        chunks, shard = _output_grid(blocks, shape, options, level.location)
        itemsize = ITEMSIZE[attrs.dataType]
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
            )
        )
    kind: Literal["image", "label"] = (
        "label" if is_label_image(image.path, levels[0].dtype, options.label_patterns) else "image"
    )
    return ImagePlan(
        source_path=image.path,
        dest_path=dest_path,
        kind=kind,
        levels=tuple(levels),
        attributes=_group_attributes(
            mapped,
            kind,
            dest_path,
            _provenance(source_url, image.path, image.group_attrs, options.recorded()),
            options.ngff_version,
        ),
        sources=dict(mapped.sources),
        warnings=mapped.warnings,
        conflicts=mapped.conflicts,
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


def with_completion_mark(plan: Plan, previous: Mapping[str, str] | None = None) -> Plan:
    """``plan`` with the completion mark in its root group's attributes: this plan's images
    by fingerprint, plus the ``previous`` entries (images other runs finished at DEST) of
    images this plan does not write. A plan whose root is itself an image has no root group:
    that image's own mark is the only one."""
    complete = {**(previous or {}), **{i.dest_path: plan.image_fingerprint(i) for i in plan.images}}
    groups = []
    for group in plan.groups:
        if group.path == "":
            mark = {COMPLETE_KEY: dict(sorted(complete.items()))}
            attributes = {**group.attributes, "cellmap-migrate": mark}
            group = GroupPlan(path="", attributes=attributes)
        groups.append(group)
    return plan.model_copy(update={"groups": tuple(groups)})


def build_plan(
    discovery: Discovery, source_url: str, source_inner: str, dest_url: str, options: PlanOptions
) -> Plan:
    """The whole plan. Raises MetadataError / MigrationError on input that cannot be mapped."""
    if options.shard is not None and options.ngff_version != "0.5":
        raise MigrationError("--shard needs --ngff-version 0.5 (Zarr v3); 0.4 has no sharding")
    if not discovery.images:
        # not join_key: a URL keeps its leading "/" (or its "s3://")
        where = f"{source_url.rstrip('/')}/{source_inner}" if source_inner else source_url
        raise MetadataError(where, None, "no multiscale image (a group of s0…sN arrays) found")
    images = tuple(plan_image(image, source_url, options) for image in discovery.images)
    plan = Plan(
        tool_version=__version__,
        source=source_url,
        source_inner=source_inner,
        dest=dest_url,
        ngff_version=options.ngff_version,
        settings=options.settings(),
        images=images,
        groups=plan_groups(images, options.ngff_version),
        orphan_arrays=discovery.orphan_arrays,
    )
    return with_completion_mark(plan)
