"""Planning Neuroglancer precomputed volumes, and plans of a whole dataset folder. Pure.

A volume becomes one image (``image``, or ``label`` for a segmentation) whose levels are its
stored scales in the stored order, read with TensorStore's ``neuroglancer_precomputed``
driver: no re-downsampling, the chunks of the first ``chunk_sizes`` entry (or
``--chunks``/``--shard``). Its image path inside the output is its path inside the dataset
without ``neuroglancer/`` and ``.precomputed`` (``em/fibsem-uint8``) unless ``--image-path``
says otherwise, under ``--prefix``. All shapes, chunks and unit boxes are in **C order**
(z, y, x).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from migrate import __version__
from migrate.errors import MetadataError, MigrationError
from migrate.source.discover import Discovery
from migrate.source.precomputed import (
    ITEMSIZE,
    PrecomputedVolume,
    chunk_shape,
    default_image_path,
    is_safe_component,
    map_volume,
)
from migrate.source.reconcile import MappingOptions, parse_trust, trust_for
from migrate.source.registry import (
    LoadedManifest,
    Matched,
    MatchKey,
    match_sources,
    n5_image_key,
    registry_statement,
    unmatched_sources,
)
from migrate.storage import join_key
from migrate.target.codecs import CodecChoice
from migrate.target.plan import (
    LevelBlocks,
    PlanOptions,
    _group_attributes,
    _output_grid,
    build_plan,
    check_grid_options,
    dataset_record,
    display_of,
    grow_unit,
    is_label_image,
    level_grids,
    plan_groups,
    with_completion_mark,
)
from schemas.ngff import Provenance
from schemas.plan import CodecPlan, ImagePlan, LevelPlan, NgffVersion, Plan, PrecomputedLevel

LOSSY = frozenset({"jpeg"})


def precomputed_codec(encoding: str, choice: CodecChoice, version: NgffVersion) -> CodecPlan:
    """The output codec of a precomputed scale. No precomputed encoding but ``raw`` has a
    Zarr codec (JPEG is lossy, png and compressed_segmentation are precomputed's own), so
    ``--codec keep`` writes the decoded values losslessly as zstd level 3 (raw stays raw);
    ``--codec`` chooses otherwise. Chunks are always decoded and re-encoded (TensorStore)."""
    if choice == "keep":
        if encoding == "raw":
            return CodecPlan(
                name="raw", endian="little", transplant=False,
                reason="kept from source (precomputed raw: uncompressed)",
            )  # fmt: skip
        what = "lossy JPEG" if encoding in LOSSY else f"precomputed {encoding}"
        return CodecPlan(
            name="zstd", level=3, endian="little", transplant=False,
            reason=f"{what} has no Zarr codec; its decoded values are written losslessly as "
            "zstd level 3 (--codec chooses another)",
        )  # fmt: skip
    if choice == "gzip":
        return CodecPlan(
            name="gzip", level=6, endian="little", transplant=False,
            reason=f"precomputed {encoding} decoded and re-encoded as requested (--codec gzip)",
        )  # fmt: skip
    if choice == "zstd":
        return CodecPlan(
            name="zstd", level=3, endian="little", transplant=False,
            reason=f"precomputed {encoding} decoded and re-encoded as requested (--codec zstd)",
        )  # fmt: skip
    return CodecPlan(
        name="blosc", cname="zstd", level=5, shuffle=1, blocksize=0, endian="little",
        transplant=False,
        reason=f"precomputed {encoding} decoded and re-encoded as requested (--codec blosc)",
    )  # fmt: skip


def volume_image_path(volume_path: str, options: PlanOptions) -> str:
    """The image path of a volume inside the output, under ``--prefix``: its
    ``--image-path`` or :func:`~migrate.source.precomputed.default_image_path`."""
    explicit = dict(options.image_paths).get(volume_path)
    path = explicit or default_image_path(volume_path)
    if not explicit and not all(is_safe_component(part) for part in path.split("/")):
        raise MigrationError(
            f"{volume_path}: its image path {path!r} would be hidden or hold characters an "
            f"image path cannot; say where it goes with --image-path {volume_path}=PATH"
        )
    return join_key(options.prefix, path)


def volume_key(volume_path: str) -> MatchKey:
    """The registry match key of the volume at ``volume_path`` (inside its dataset)."""
    return ("dataset", volume_path.strip("/"))


def plan_volume_image(
    volume: PrecomputedVolume,
    dataset_url: str,
    options: PlanOptions,
    manifest: LoadedManifest | None = None,
    matched: Matched | None = None,
) -> ImagePlan:
    """The plan of one precomputed volume: every stored scale one level (C order); with its
    entry in the registry (``matched``, from ``manifest``), reconciled with it, mirrored as
    it says, drawn as the portal drew it and classified by what it says the volume is."""
    n5_trust, registry_trust = trust_for(parse_trust(options.trust), volume.path)
    statement = None
    if matched is not None:
        statement = registry_statement(
            matched, volume.levels, allow_unknown_units=options.allow_unknown_units
        )
    mapped = map_volume(
        volume,
        MappingOptions(
            downsampling=options.downsampling,
            trust=n5_trust,
            trust_registry=registry_trust,
            allow_unknown_units=options.allow_unknown_units,
        ),
        statement,
    )
    info = volume.info
    dest_path = volume_image_path(volume.path, options)
    integer = info.data_type.startswith(("int", "uint"))
    if volume.is_label and not integer:
        raise MetadataError(
            volume.location, "data_type", f"a segmentation of {info.data_type} cannot be a label"
        )
    levels = []
    for index, (scale, source) in enumerate(zip(info.scales, volume.levels, strict=True)):
        shape = source.shape
        blocks = chunk_shape(scale)
        chunks, shard = _output_grid(blocks, shape, options)
        scale_path = join_key(volume.path, scale.key)
        compression = {"type": "precomputed", "encoding": scale.encoding}
        if scale.sharding is not None:
            compression["sharding"] = scale.sharding.type
        levels.append(
            LevelPlan(
                name=source.name,
                source_path=scale_path,
                dest_path=join_key(dest_path, source.name),
                shape=shape,
                dtype=info.data_type,
                source_blocks=blocks,
                source_compression=compression,
                chunks=chunks,
                shard=shard,
                codec=precomputed_codec(scale.encoding, options.codec, options.ngff_version),
                unit_shape=grow_unit(
                    shard or chunks, shape, ITEMSIZE[info.data_type], options.unit_bytes
                ),
                attributes={
                    "cellmap-migrate": Provenance(
                        version=__version__,
                        source=dataset_url,
                        path=scale_path,
                        source_attributes=scale.to_json_dict(),
                        format="precomputed",
                    ).to_json_dict()
                },
                precomputed=PrecomputedLevel(
                    volume=volume.path, scale_index=index, scale=scale.to_json_dict()
                ),
                mirror=mapped.mirror,
            )
        )
    label = volume.is_label or is_label_image(
        dest_path, info.data_type, options.label_patterns, matched
    )
    kind: Literal["image", "label"] = "label" if label else "image"
    provenance = Provenance(
        version=__version__,
        source=dataset_url,
        path=volume.path,
        source_attributes=dict(volume.raw),
        settings=options.recorded_for_volume(volume.path, manifest),
        format="precomputed",
    )
    if matched is not None:
        entry = matched.source.to_json_dict()
        provenance = provenance.model_copy(update={"registry_source": entry})
    return ImagePlan(
        source_path=volume.path,
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
        ),
        sources=dict(mapped.sources),
        warnings=mapped.warnings,
        conflicts=mapped.conflicts,
        source_format="precomputed",
        source_root=dataset_url,
        registry_source=matched.source.name if matched is not None else None,
    )


def check_image_paths(images: Sequence[ImagePlan], where: Callable[[ImagePlan], str]) -> None:
    """Refuse a precomputed volume written to the path of another image, or inside its
    group, or around it, naming both sources (``where``: what an image is read from)."""
    for volume in (image for image in images if image.format == "precomputed"):
        for other in images:
            if other is volume:
                continue
            a, b = volume.dest_path, other.dest_path
            if a == b or a.startswith(b + "/") or b.startswith(a + "/"):
                how = f"both be written to {a}" if a == b else f"be nested ({a}, {b})"
                raise MigrationError(
                    f"{where(volume)} and {where(other)} would {how} in DEST; say where "
                    f"the precomputed volume goes with --image-path {volume.source_path}=PATH"
                )


def _describe(image: ImagePlan, n5_root: str | None, dataset_url: str | None) -> str:
    if image.format == "precomputed":
        return f"{(dataset_url or '').rstrip('/')}/{image.source_path}"
    return f"{(n5_root or '').rstrip('/')}/{image.source_path}"


def build_dataset_plan(
    discovery: Discovery | None,
    n5_root: str | None,
    volumes: Sequence[PrecomputedVolume],
    dataset_url: str,
    source_inner: str,
    dest_url: str,
    options: PlanOptions,
) -> Plan:
    """The plan of a dataset folder (its N5 images, from ``discovery`` of ``n5_root``, and
    its precomputed ``volumes``) or of one volume (``source_inner`` is its path, there is no
    discovery). N5 images are planned exactly as :func:`build_plan` plans them, so their
    fingerprints are those of ``convert <dataset>.n5``. ``source`` is the N5 root when the
    plan reads one, else the dataset folder."""
    if options.shard is not None and options.ngff_version != "0.5":
        raise MigrationError("--shard needs --ngff-version 0.5 (Zarr v3); 0.4 has no sharding")
    grids = level_grids(discovery.images) if discovery is not None else []
    for volume in volumes:  # every level the plan writes takes --chunks/--shard, or none
        grids += [
            LevelBlocks(volume.path, level.name, level.shape, chunk_shape(scale))
            for level, scale in zip(volume.levels, volume.info.scales, strict=True)
        ]
    check_grid_options(grids, options)
    n5_images: tuple[ImagePlan, ...] = ()
    orphans: tuple[str, ...] = ()
    if discovery is not None and n5_root is not None and (discovery.images or not volumes):
        n5 = build_plan(discovery, n5_root, "", dest_url, options)
        n5_images, orphans = n5.images, n5.orphan_arrays
    if not n5_images and not volumes:
        raise MetadataError(
            dataset_url, None, "no N5 multiscale image and no precomputed volume found"
        )
    manifest = options.manifest_for(dataset_url.rstrip("/").rsplit("/", 1)[-1])
    keys = [volume_key(volume.path) for volume in volumes]
    matches = match_sources(manifest, keys) if manifest is not None else {}
    precomputed = tuple(
        plan_volume_image(volume, dataset_url, options, manifest, matches.get(key))
        for volume, key in zip(volumes, keys, strict=True)
    )
    images = n5_images + precomputed
    keys += [n5_image_key(image.source_path) for image in n5_images]
    check_image_paths(images, lambda image: _describe(image, n5_root, dataset_url))
    plan = Plan(
        tool_version=__version__,
        source=n5_root if n5_images and n5_root else dataset_url,
        source_inner=source_inner,
        dest=dest_url,
        ngff_version=options.ngff_version,
        settings=options.settings(manifest),
        images=images,
        groups=plan_groups(images, options.ngff_version),
        orphan_arrays=orphans,
        dataset=dataset_url,
        registry_dataset=None if manifest is None else dataset_record(manifest),
        registry_unmatched=() if manifest is None else tuple(unmatched_sources(manifest, keys)),
    )
    return with_completion_mark(plan)
