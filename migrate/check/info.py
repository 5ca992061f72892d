"""What a tree holds, N5 or OME-Zarr, local or S3: its multiscale images, per level the shape,
dtype, chunks, codec, voxel size and translation, and where each value came from.

The N5 side is read the way ``convert --dry-run`` reads it (discovery, the metadata mapping
and the plan of each image, with its warnings and conflicts); the Zarr side from the
OME-NGFF metadata of the groups and arrays (0.4: Zarr v2, 0.5: Zarr v3). Nothing is ever
written. Shapes, chunks, voxel sizes and translations are in **C order** (z, y, x).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from migrate.dest import certificate, records
from migrate.errors import MetadataError, MigrationError
from migrate.source.dataset import SourceLocation, locate
from migrate.source.discover import (
    ATTRIBUTES,
    discover,
    normalize_url,
    read_json_object,
    split_n5_url,
)
from migrate.source.image import SourceImage
from migrate.source.precomputed import find_volumes, read_volume
from migrate.source.units import KNOWN_UNITS
from migrate.storage import S3Options, Store, join_key, open_store
from migrate.target.layout import PROVENANCE_KEY
from migrate.target.plan import PlanOptions, plan_image
from migrate.target.precomputed import plan_volume_image
from schemas.plan import ImagePlan

Shape = tuple[int, ...]


@dataclass(frozen=True)
class LevelInfo:
    """One scale level; every tuple in C order (z, y, x)."""

    name: str
    shape: Shape
    dtype: str
    chunks: Shape
    """The stored chunk (N5: block) shape; inside shards for sharded Zarr."""
    shard: Shape | None
    codec: str
    scale: tuple[float, ...] | None
    translation: tuple[float, ...] | None
    objects: int | None = None
    """Objects stored under the level (``--sizes``), metadata included."""
    stored_bytes: int | None = None
    key: str | None = None
    """Where the level's objects are, when not ``<image path>/<name>`` (a precomputed
    scale's folder)."""


@dataclass(frozen=True)
class ValueSource:
    """Where a metadata value came from: the convention (COSEM, Neuroglancer or OME) and
    the file and field."""

    convention: str
    detail: str


@dataclass(frozen=True)
class ImageInfo:
    path: str
    """Relative to the location ``info`` was given; empty when that is the image itself
    (the text then names it by the last part of the location)."""
    kind: str
    """``image`` or ``label``."""
    axes: tuple[str, ...]
    units: tuple[str | None, ...]
    levels: tuple[LevelInfo, ...]
    sources: dict[str, ValueSource]
    warnings: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    """Conflicts and errors: what the dry run would refuse or what breaks the metadata."""


@dataclass(frozen=True)
class TreeInfo:
    url: str
    format: str
    """``N5``, ``OME-NGFF 0.4`` or ``OME-NGFF 0.5``."""
    images: tuple[ImageInfo, ...]
    notes: tuple[str, ...] = ()
    """Tree-level findings (arrays outside any image, unfinished migrations)."""
    problems: tuple[str, ...] = ()
    sizes: bool = False
    proofs: tuple[str, ...] = ()
    """What the certificate at DEST says was proven (an output of cellmap-migrate that
    ``verify`` proved), one line per proof."""

    @property
    def errors(self) -> list[str]:
        """Everything that makes the tree unusable as it is (the first one is reported
        as the command's error)."""
        return [*self.problems, *(p for image in self.images for p in image.problems)]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def tree_info(url: str, *, sizes: bool = False, s3: S3Options | None = None) -> TreeInfo:
    """Describe the N5 tree, N5 group, OME-Zarr tree, dataset folder (its N5 images and
    precomputed volumes) or precomputed volume at ``url``. Reads only metadata and listings
    (``sizes``: also lists every object under each level)."""
    location = locate(
        normalize_url(url.removeprefix("file://")),
        lambda where: open_store(where, read_only=True, s3=s3),
    )
    if location.kind != "n5":
        return dataset_info(location, sizes=sizes, s3=s3)
    n5_root, inner = split_n5_url(url.removeprefix("file://").rstrip("/"))
    if n5_root.endswith(".n5"):
        store = open_store(n5_root, read_only=True, s3=s3)
        return n5_info(store, inner, sizes=sizes)
    store = open_store(url, read_only=True, s3=s3)
    if store.read(ATTRIBUTES) is not None and not _is_zarr(store, ""):
        return n5_info(store, "", sizes=sizes)
    if not _is_zarr(store, ""):
        if not store.exists_prefix(""):
            raise MigrationError(f"{store.display()}: no such file, directory or S3 prefix")
        raise MetadataError(
            store.display(), None, "neither an N5 tree (attributes.json) nor a Zarr group "
            "(zarr.json, .zgroup, .zattrs)"
        )  # fmt: skip
    return zarr_info(store, sizes=sizes)


def _is_zarr(store: Store, path: str) -> bool:
    names = ("zarr.json", ".zgroup", ".zattrs")
    return any(store.map(lambda name: store.read(join_key(path, name)) is not None, names))


def _sizes(store: Store, path: str) -> tuple[int, int]:
    """(objects, stored bytes) under ``path``: a listing of every object."""
    count = total = 0
    for _key, size, _stamp in store.list_stats(path):
        count += 1
        total += size
    return count, total


def _with_sizes(store: Store, images: list[ImageInfo]) -> list[ImageInfo]:
    """The images with each level's objects and stored bytes (listed many at a time)."""
    work = [(image, level) for image in images for level in image.levels]
    counted = store.map(
        lambda item: _sizes(store, item[1].key or join_key(item[0].path, item[1].name)), work
    )
    by_level = {(i.path, lv.name): c for (i, lv), c in zip(work, counted, strict=True)}
    return [
        dataclasses.replace(
            image,
            levels=tuple(
                dataclasses.replace(
                    level,
                    objects=by_level[image.path, level.name][0],
                    stored_bytes=by_level[image.path, level.name][1],
                )
                for level in image.levels
            ),
        )
        for image in images
    ]


# --------------------------------------------------------------------------------------
# N5
# --------------------------------------------------------------------------------------


def describe_n5_compression(compression: Any) -> str:
    """An N5 ``compression`` object in a few words: ``gzip level -1``, ``blosc zstd …``."""
    if not isinstance(compression, dict):
        return "?"
    kind = str(compression.get("type", "?"))
    skip = {"type"}
    if kind == "gzip" and compression.get("useZlib"):
        kind, skip = "zlib", {"type", "useZlib"}
    if kind == "blosc" and "cname" in compression:
        kind, skip = f"blosc {compression['cname']}", {"type", "cname"}
    params = [f"{key} {value}" for key, value in compression.items() if key not in skip]
    return " ".join([kind, *params])


def describe_precomputed(compression: dict[str, Any]) -> str:
    """A precomputed scale's encoding in a few words: ``precomputed jpeg, sharded``."""
    sharded = ", sharded" if compression.get("sharding") else ""
    return f"precomputed {compression.get('encoding', '?')}{sharded}"


def _convention(text: str) -> str:
    for name in ("COSEM", "Neuroglancer", "OME", "precomputed"):
        if text.startswith(name):
            return name
    return "rule"


def _multiscale(attributes: dict[str, Any]) -> dict[str, Any]:
    """The first ``multiscales`` entry of OME attributes (0.4 top level, 0.5 under ``ome``)."""
    ome = attributes.get("ome", attributes)
    multiscales = ome.get("multiscales") or [{}]
    first: dict[str, Any] = multiscales[0]
    return first


def _transforms(dataset: dict[str, Any]) -> tuple[tuple[float, ...] | None, ...]:
    """(scale, translation) of one OME dataset entry."""
    scale = translation = None
    for transform in dataset.get("coordinateTransformations") or []:
        if transform.get("type") == "scale":
            scale = tuple(float(v) for v in transform.get("scale", ()))
        elif transform.get("type") == "translation":
            translation = tuple(float(v) for v in transform.get("translation", ()))
    return scale, translation


def _planned_image(plan: ImagePlan, root: str) -> ImageInfo:
    multiscale = _multiscale(plan.attributes)
    axes = multiscale.get("axes", [])
    datasets = {d["path"]: d for d in multiscale.get("datasets", [])}
    levels = []
    for level in plan.levels:
        scale, translation = _transforms(datasets.get(level.name, {}))
        levels.append(
            LevelInfo(
                name=level.name,
                shape=tuple(level.shape),
                dtype=level.dtype,
                chunks=tuple(level.source_blocks),
                shard=None,
                codec=describe_precomputed(level.source_compression)
                if level.precomputed is not None
                else describe_n5_compression(level.source_compression),
                scale=scale,
                translation=translation,
                key=level.source_path if level.precomputed is not None else None,
            )
        )
    return ImageInfo(
        path=plan.source_path,
        kind=plan.kind,
        axes=tuple(str(axis.get("name")) for axis in axes),
        units=tuple(axis.get("unit") for axis in axes),
        levels=tuple(levels),
        sources={
            what: ValueSource(_convention(text), text.replace(root, ""))
            for what, text in plan.sources.items()
        },
        warnings=tuple(plan.warnings),
        problems=tuple(f"CONFLICT: {conflict}" for conflict in plan.conflicts),
    )


def _unplanned_image(image: SourceImage, error: MigrationError) -> ImageInfo:
    """An image whose metadata cannot be mapped: its levels as the arrays state them."""
    levels = []
    for level in image.levels:
        attrs = dict(level.attrs)
        blocks = attrs.get("blockSize")
        levels.append(
            LevelInfo(
                name=level.name,
                shape=tuple(level.shape),
                dtype=str(attrs.get("dataType", "?")),
                chunks=tuple(reversed(blocks)) if isinstance(blocks, list) else (),
                shard=None,
                codec=describe_n5_compression(attrs.get("compression")),
                scale=None,
                translation=None,
            )
        )
    return ImageInfo(
        path=image.path, kind="image", axes=(), units=(), levels=tuple(levels), sources={},
        problems=(f"error: {error}",),
    )  # fmt: skip


def n5_info(store: Store, inner: str, *, sizes: bool = False) -> TreeInfo:
    """The images under ``inner`` of an N5 tree, mapped the way ``convert`` maps them
    (default options: ``--downsampling windowed``, no ``--trust``)."""
    discovery = discover(store, inner)
    options = PlanOptions()
    images: list[ImageInfo] = []
    for image in discovery.images:
        try:
            planned = plan_image(image, store.url, options)
            images.append(_planned_image(planned, store.url.rstrip("/") + "/"))
        except MigrationError as exc:
            images.append(_unplanned_image(image, exc))
    if sizes:
        images = _with_sizes(store, images)
    notes = tuple(
        f"not part of any multiscale image: {orphan}" for orphan in discovery.orphan_arrays
    )
    problems = () if images else (f"{store.display(inner)}: no multiscale image (s0…sN) found",)
    return TreeInfo(
        url=store.display(inner), format="N5", images=tuple(images), notes=notes,
        problems=problems, sizes=sizes,
    )  # fmt: skip


def dataset_info(
    location: SourceLocation, *, sizes: bool = False, s3: S3Options | None = None
) -> TreeInfo:
    """A dataset folder's N5 images and precomputed volumes, or one volume, mapped the way
    ``convert`` maps them (default options). A volume whose ``info`` cannot be read is an
    error naming the file and field."""
    assert location.dataset is not None
    dataset = open_store(location.dataset, read_only=True, s3=s3)
    images: list[ImageInfo] = []
    notes: tuple[str, ...] = ()
    n5_images = 0
    if location.kind == "dataset" and location.n5_root is not None:
        n5 = n5_info(open_store(location.n5_root, read_only=True, s3=s3), "", sizes=sizes)
        prefix = location.n5_root.rstrip("/").rsplit("/", 1)[-1]
        images += [dataclasses.replace(i, path=join_key(prefix, i.path)) for i in n5.images]
        notes, n5_images = n5.notes, len(n5.images)
    paths = [location.inner] if location.kind == "volume" else find_volumes(dataset)
    volumes = []
    root = dataset.url.rstrip("/") + "/"
    for path in paths:
        volume = read_volume(dataset, path)
        planned = plan_volume_image(volume, dataset.url, PlanOptions())
        volumes.append(_planned_image(planned, root))
    if sizes:
        volumes = _with_sizes(dataset, volumes)
    images += volumes
    problems = () if images else (f"{dataset.display()}: no multiscale image found",)
    kind = "precomputed" if location.kind == "volume" else "dataset"
    return TreeInfo(
        url=dataset.display(location.inner), format=kind, images=tuple(images),
        notes=(*notes, f"{n5_images} N5 image(s), {len(volumes)} precomputed volume(s)"),
        problems=problems, sizes=sizes,
    )  # fmt: skip


# --------------------------------------------------------------------------------------
# OME-Zarr
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    """A Zarr node: its format (2 or 3), type, user attributes, the array metadata, and the
    file its attributes live in."""

    zarr_format: int
    node_type: str
    attributes: dict[str, Any]
    array: dict[str, Any] = field(default_factory=dict)
    attributes_key: str = ""


def _zarr_node(store: Store, path: str) -> _Node | None:
    v3 = read_json_object(store, join_key(path, "zarr.json"))
    if v3 is not None:
        kind = str(v3.get("node_type"))
        return _Node(
            3, kind, dict(v3.get("attributes") or {}), v3 if kind == "array" else {},
            join_key(path, "zarr.json"),
        )  # fmt: skip
    zarray = read_json_object(store, join_key(path, ".zarray"))
    attrs_key = join_key(path, ".zattrs")
    if zarray is not None:
        return _Node(2, "array", read_json_object(store, attrs_key) or {}, zarray, attrs_key)
    attrs = read_json_object(store, attrs_key)
    if attrs is not None or store.read(join_key(path, ".zgroup")) is not None:
        return _Node(2, "group", attrs or {}, {}, attrs_key)
    return None


def _dtype_name(value: Any) -> str:
    import numpy as np

    try:
        return str(np.dtype(value).newbyteorder("=").name)
    except TypeError:
        return str(value)


def _describe_codec_config(codec: dict[str, Any]) -> str:
    name = str(codec.get("name") or codec.get("id") or "?")
    config = codec.get("configuration", codec)
    params = [f"{k} {v}" for k, v in config.items() if k not in ("id", "name")]
    if name == "blosc":
        cname = config.get("cname")
        params = [f"{k} {v}" for k, v in config.items() if k not in ("id", "name", "cname")]
        name = f"blosc {cname}" if cname else name
    return " ".join([name, *params])


def _v3_layout(meta: dict[str, Any]) -> tuple[Shape, Shape | None, str]:
    """(chunks, shard or None, codec) of a Zarr v3 array's metadata, C order."""
    grid = tuple(meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape", ()))
    codecs: list[dict[str, Any]] = list(meta.get("codecs") or [])
    shard: Shape | None = None
    if len(codecs) == 1 and codecs[0].get("name") == "sharding_indexed":
        config = codecs[0].get("configuration", {})
        shard, grid = grid, tuple(config.get("chunk_shape", ()))
        codecs = list(config.get("codecs") or [])
    parts = []
    for codec in codecs:
        name = codec.get("name")
        if name == "bytes":
            endian = codec.get("configuration", {}).get("endian")
            parts.append(f"bytes {endian}-endian" if endian else "bytes")
        elif name != "transpose":
            parts.append(_describe_codec_config(codec))
    return grid, shard, " + ".join(parts) or "raw"


def _v2_layout(meta: dict[str, Any]) -> tuple[Shape, str]:
    compressor = meta.get("compressor")
    codec = _describe_codec_config(compressor) if isinstance(compressor, dict) else "raw"
    dtype = str(meta.get("dtype", ""))
    if dtype[:1] in "<>":
        codec += ", big-endian" if dtype[0] == ">" else ", little-endian"
    return tuple(meta.get("chunks", ())), codec


def _zarr_image(store: Store, path: str, node: _Node, arrays: dict[str, _Node | None]) -> ImageInfo:
    """One OME multiscale image from its group's attributes and its arrays' metadata."""
    where = store.display(node.attributes_key)
    ome = node.attributes.get("ome", node.attributes)
    multiscale = _multiscale(node.attributes)
    axes = [a if isinstance(a, dict) else {"name": a} for a in multiscale.get("axes", [])]
    problems: list[str] = []
    version = ome.get("version") or multiscale.get("version")
    expected = "0.4" if node.zarr_format == 2 else "0.5"
    if version != expected:
        field_name = "multiscales[0].version" if node.zarr_format == 2 else "ome.version"
        problems.append(f"{where}: {field_name}: {version!r}, expected {expected!r}")
    for axis in axes:
        unit = axis.get("unit")
        if unit is not None and unit not in KNOWN_UNITS:
            problems.append(f"{where}: axis {axis.get('name')!r} unit {unit!r} is not OME-NGFF's")
    levels = []
    for index, dataset in enumerate(multiscale.get("datasets", [])):
        name = str(dataset.get("path"))
        array = arrays.get(name)
        scale, translation = _transforms(dataset)
        if array is None or array.node_type != "array":
            problems.append(
                f"{where}: multiscales[0].datasets[{index}].path: {name!r} is not a Zarr array"
            )
            continue
        meta = array.array
        shape = tuple(int(n) for n in meta.get("shape", ()))
        if node.zarr_format == 3:
            chunks, shard, codec = _v3_layout(meta)
            dtype = str(meta.get("data_type"))
        else:
            (chunks, codec), shard = _v2_layout(meta), None
            dtype = _dtype_name(meta.get("dtype"))
        for what, values in (("scale", scale), ("translation", translation)):
            if values is not None and len(values) != len(shape):
                problems.append(
                    f"{where}: multiscales[0].datasets[{index}].coordinateTransformations: "
                    f"{what} has {len(values)} values for {len(shape)} axes"
                )
        if len(axes) != len(shape):
            problems.append(f"{where}: multiscales[0].axes: {len(axes)} axes for {name}'s "
                            f"{len(shape)} dimensions")  # fmt: skip
        if scale is None:
            problems.append(
                f"{where}: multiscales[0].datasets[{index}].coordinateTransformations: no scale"
            )
        levels.append(LevelInfo(name, shape, dtype, chunks, shard, codec, scale, translation))
    file = node.attributes_key
    prefix = "ome." if node.zarr_format == 3 else ""
    sources = {
        "axes": ValueSource("OME", f"OME {prefix}multiscales[0].axes ({file})"),
        "units": ValueSource("OME", f"OME {prefix}multiscales[0].axes[].unit ({file})"),
        "scale": ValueSource(
            "OME", f"OME {prefix}multiscales[0].datasets[].coordinateTransformations scale ({file})"
        ),
        "translation": ValueSource(
            "OME",
            f"OME {prefix}multiscales[0].datasets[].coordinateTransformations translation ({file})",
        ),
    }
    provenance = node.attributes.get(PROVENANCE_KEY)
    if isinstance(provenance, dict) and provenance.get("source"):
        sources["provenance"] = ValueSource(
            "cellmap-migrate",
            f"cellmap-migrate {provenance.get('version', '?')}, migrated from "
            f"{str(provenance.get('source')).rstrip('/')}/{provenance.get('path', '')}",
        )
    return ImageInfo(
        path=path,
        kind="label" if "image-label" in ome else "image",
        axes=tuple(str(axis.get("name")) for axis in axes),
        units=tuple(axis.get("unit") for axis in axes),
        levels=tuple(levels),
        sources=sources,
        problems=tuple(problems),
    )


def _labels_listing(store: Store, images: list[ImageInfo], nodes: dict[str, _Node]) -> list[str]:
    """A label image must be listed by its parent group's ``labels``."""
    problems = []
    for image in images:
        if image.kind != "label":
            continue
        parent, _, name = image.path.rpartition("/")
        node = nodes.get(parent)
        attrs = node.attributes.get("ome", node.attributes) if node else {}
        if name not in (attrs.get("labels") or []):
            key = node.attributes_key if node else join_key(parent, ".zattrs")
            problems.append(f"{store.display(key)}: labels: does not list label image {name!r}")
    return problems


def zarr_info(store: Store, *, sizes: bool = False) -> TreeInfo:
    """Every OME multiscale image under the root of ``store`` (a Zarr group), the groups
    of one depth read together."""
    images: list[ImageInfo] = []
    groups: dict[str, _Node] = {}
    formats: set[int] = set()
    frontier = [""]
    while frontier:
        nodes = store.map(lambda path: _zarr_node(store, path), frontier)
        found: list[tuple[str, _Node]] = []
        walk: list[str] = []
        for path, node in zip(frontier, nodes, strict=True):
            if node is None or node.node_type == "array":
                continue
            formats.add(node.zarr_format)
            groups[path] = node
            if _multiscale(node.attributes).get("datasets"):
                found.append((path, node))
            else:
                walk.append(path)
        levels = [
            (path, str(dataset.get("path")))
            for path, node in found
            for dataset in _multiscale(node.attributes).get("datasets", [])
        ]
        arrays = dict(
            zip(levels, store.map(lambda item: _zarr_node(store, join_key(*item)), levels),
                strict=True)
        )  # fmt: skip
        for path, node in found:
            mine = {name: array for (p, name), array in arrays.items() if p == path}
            images.append(_zarr_image(store, path, node, mine))
        listings = store.map(lambda path: store.list_dir(path)[0], walk)
        frontier = [
            join_key(path, name)
            for path, names in zip(walk, listings, strict=True)
            for name in names
            if not name.startswith(".")
        ]
    images.sort(key=lambda image: image.path)
    if sizes:
        images = _with_sizes(store, images)
    notes = [
        f"migration not complete: {record['image'].get('dest_path', '?')} (run the same "
        "convert command again to finish it)"
        for record in records.started_images(store)
        if isinstance(record.get("image"), dict)
    ]
    problems = _labels_listing(store, images, groups)
    if notes:  # the labels listings are written when every image is complete
        notes.extend(f"{problem} (yet)" for problem in problems)
        problems = []
    if not images:
        problems.append(f"{store.display()}: no OME-NGFF multiscale image found")
    version = {2: "0.4", 3: "0.5"}
    label = " + ".join(f"OME-NGFF {version[f]}" for f in sorted(formats)) or "Zarr"
    held = certificate.read(store)
    proofs = tuple(f"proven: {proof.describe()}" for proof in (held.proofs if held else []))
    return TreeInfo(
        url=store.display(), format=label, images=tuple(images), notes=tuple(notes),
        problems=tuple(problems), sizes=sizes, proofs=proofs,
    )  # fmt: skip


# --------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------


def _shape(shape: Shape | None) -> str:
    return " x ".join(str(n) for n in shape) if shape else "-"


def _numbers(values: tuple[float, ...] | None) -> str:
    return ", ".join(f"{v:g}" for v in values) if values is not None else "-"


def _units(image: ImageInfo) -> str:
    units = set(image.units)
    if len(units) == 1:
        return str(next(iter(units)) or "no unit")
    return ", ".join(f"{a} {u or 'no unit'}" for a, u in zip(image.axes, image.units, strict=False))


def _size(nbytes: int) -> str:
    for unit, factor in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= factor:
            return f"{nbytes / factor:.1f} {unit}"
    return f"{nbytes} B"


def _own_name(url: str) -> str:
    """The name of the image at ``url`` itself (``info`` of an image group, whose path
    relative to ``url`` is empty): the last part of ``url``."""
    return url.rstrip("/").rpartition("/")[2] or url


def render_info(info: TreeInfo) -> str:
    """The tree as text: per image its axes and units, where each value came from, a table
    of levels, and what is wrong."""
    out = [f"{info.format}: {info.url} ({len(info.images)} image(s))"]
    for image in info.images:
        axes = ", ".join(image.axes) or "?"
        out.append("")
        name = image.path or _own_name(info.url)
        out.append(f"{name}  {image.kind}  axes ({axes})  unit {_units(image)}")
        for what, source in image.sources.items():
            out.append(f"  {what + ':':<12} from {source.detail}")
        header = ["level", "shape (z, y, x)", "dtype", "chunks", "codec", "voxel size"]
        header.append("translation")
        if info.sizes:
            header += ["objects", "stored"]
        rows = [header]
        for level in image.levels:
            chunks = _shape(level.chunks)
            if level.shard:
                chunks += f" in shards {_shape(level.shard)}"
            row = [level.name, _shape(level.shape), level.dtype, chunks, level.codec,
                   _numbers(level.scale), _numbers(level.translation)]  # fmt: skip
            if info.sizes:
                row += [str(level.objects), _size(level.stored_bytes or 0)]
            rows.append(row)
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        out.extend(
            "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        )
        if info.sizes:
            total = sum(level.stored_bytes or 0 for level in image.levels)
            objects = sum(level.objects or 0 for level in image.levels)
            out.append(f"  on storage: {objects} object(s), {_size(total)}")
        out.extend(f"  warning: {warning}" for warning in image.warnings)
        out.extend(f"  {problem}" for problem in image.problems)
    if info.notes or info.problems or info.proofs:
        out.append("")
    out.extend(info.proofs)
    out.extend(info.notes)
    out.extend(info.problems)
    if info.sizes:
        total = sum(lv.stored_bytes or 0 for image in info.images for lv in image.levels)
        out.append(f"\non storage in all: {_size(total)} under the images' levels")
    return "\n".join(out) + "\n"
