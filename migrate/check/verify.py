"""Verification: DEST is, file for file and voxel for voxel, the migration of SRC.

``verify`` reads SRC's own metadata, plans the migration again from it with the settings
recorded at DEST (the ``settings`` of each image's ``cellmap-migrate`` provenance), and then
proves, or reports each way it fails, that

- every metadata document the plan writes (``.zgroup``, ``.zattrs``, ``.zarray``,
  ``zarr.json``, the ``labels`` groups) is at DEST and equal, as parsed JSON, to what the
  plan renders (a difference names the file and the field);
- every image and level of SRC is at DEST, complete (its completion mark is the plan's
  fingerprint), and nothing else is inside the migrated tree: no extra image, level, array,
  group or file, and no key in an array that is not a chunk of the plan's grid;
- every voxel (or, with ``sample``, a random fraction of the chunks or shards) read from
  DEST with TensorStore's zarr driver equals the N5 source read with its n5 driver;
- each image is valid OME-NGFF for ``ome-zarr-models``, with OME-NGFF units.

Boxes are reported in **C order** (z, y, x).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from migrate.check.compare import differences
from migrate.check.inventory import marked_groups
from migrate.check.validate import validate_image, validate_labels_listing
from migrate.copy import resume
from migrate.copy.events import NullProgress, Progress
from migrate.copy.tsio import box_slices, open_dest_readonly, open_source, ts_error_text
from migrate.errors import VerificationError
from migrate.source.discover import discover
from migrate.storage import Store, join_key
from migrate.target.layout import (
    PROVENANCE_KEY,
    Documents,
    all_documents,
    array_documents,
    image_final_documents,
)
from migrate.target.plan import DEFAULT_UNIT_BYTES, PlanOptions, build_plan, grow_unit, plan_groups
from schemas.plan import LevelPlan, Plan

Box = tuple[tuple[int, int], ...]

MAX_FIELDS_PER_FILE = 8
"""Differences listed per metadata file; the rest are counted."""


@dataclass
class VerifyResult:
    """What was compared, and every problem found (none: DEST is proven)."""

    images: int = 0
    """Images of the plan (every image of SRC) checked at DEST."""
    levels: int = 0
    metadata_files: int = 0
    """Metadata documents read at DEST and compared with the plan's."""
    units_checked: int = 0
    """Boxes of voxels compared (with ``sample``: chunks or shards)."""
    units_total: int = 0
    """With ``sample``: the chunks (or shards) of the levels compared; else the boxes."""
    voxels_compared: int = 0
    bytes_compared: int = 0
    sample: float = 1.0
    grid: str = "chunks"
    """What ``sample`` picks from: ``chunks``, or ``shards`` for sharded output."""
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return vars(self)

    def summary(self) -> str:
        """One line: exactly what was proven, or how many problems stand in the way and
        what was checked."""
        megabytes = f"{self.bytes_compared / 1e6:.1f} MB"
        if self.sample < 1.0:
            voxels = (
                f"{self.units_checked} of {self.units_total} {self.grid} sampled "
                f"({self.voxels_compared:,} voxels, {megabytes}"
            )
        else:
            every = "" if self.problems else "all "
            voxels = f"{every}{self.voxels_compared:,} voxels compared ({megabytes}"
        counts = f"{self.images} image(s), {self.levels} level(s)"
        if not self.problems:
            return (
                f"verified {counts}, {voxels}, equal), {self.metadata_files} metadata file(s) "
                "equal to the plan: OK"
            )
        return (
            f"NOT verified: {len(self.problems)} problem(s); checked {counts}, {voxels}), "
            f"{self.metadata_files} metadata file(s)"
        )


# --------------------------------------------------------------------------------------
# What DEST records: where its images came from and with which settings
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """An image cellmap-migrate wrote (or started) at DEST, and its recorded provenance."""

    dest_path: str
    metadata_key: str
    provenance: dict[str, Any]
    finished: bool


def _recorded_images(dest: Store) -> list[Recorded]:
    found = [
        Recorded(
            path,
            join_key(path, ".zattrs" if version == "0.4" else "zarr.json"),
            dict(attrs[PROVENANCE_KEY]),
            True,
        )
        for batch in marked_groups(dest)
        for path, version, attrs in batch
    ]
    for record in resume.started_images(dest):
        image = record.get("image") or {}
        attributes = image.get("attributes") or {}
        found.append(
            Recorded(
                str(image.get("dest_path", "")),
                resume.image_state_key(str(image.get("dest_path", "")), "plan.json"),
                dict(attributes.get(PROVENANCE_KEY) or {}),
                False,
            )
        )
    return found


def _origin(provenance: dict[str, Any]) -> str:
    """The recorded source location of an image, for messages."""
    return "/".join(
        part.strip("/") if i else part.rstrip("/")
        for i, part in enumerate((str(provenance.get("source")), str(provenance.get("path"))))
        if part
    )


def _within(path: str, inner: str) -> bool:
    return not inner or path == inner or path.startswith(inner + "/")


def recorded_options(
    source: Store, inner: str, dest: Store, recorded: Sequence[Recorded]
) -> PlanOptions:
    """The options recorded by the images at DEST (``recorded``) that were migrated from
    SRC (its ``inner`` part), where SRC is the source they record, at the same location
    (the location is part of what they record, so a moved source plans differently).

    Raises VerificationError when DEST holds no such image, when they were migrated with
    different settings, or when the settings are not recorded."""
    if not recorded:
        raise VerificationError(
            f"{dest.display()}: no cellmap-migrate output found (nothing to verify)"
        )
    ours = [
        r
        for r in recorded
        if str(r.provenance.get("source")) == source.url
        and _within(str(r.provenance.get("path", "")), inner)
    ]
    if not ours:
        origins = sorted(
            {_origin(r.provenance) if inner else str(r.provenance.get("source")) for r in recorded}
        )
        shown = ", ".join(origins[:3]) + (
            f" and {len(origins) - 3} more" if len(origins) > 3 else ""
        )
        raise VerificationError(
            f"{source.display(inner)} is not the source of {dest.display()}: "
            f"its images were migrated from {shown}"
        )
    for r in ours:
        if not isinstance(r.provenance.get("settings"), dict):
            raise VerificationError(
                f"{dest.display(r.metadata_key)}: {PROVENANCE_KEY}.settings: missing (written by "
                "a cellmap-migrate that did not record its settings): verify cannot plan the "
                "same migration again; convert it again with --overwrite"
            )
    variants: dict[str, Recorded] = {}
    for r in ours:
        variants.setdefault(json.dumps(r.provenance["settings"], sort_keys=True), r)
    if len(variants) > 1:
        settings = [r.provenance["settings"] for r in variants.values()]
        differ = [k for k in settings[0] if any(s.get(k) != settings[0][k] for s in settings)]
        shown = "; ".join(
            f"{r.dest_path}: "
            + ", ".join(f"{k} {r.provenance['settings'].get(k)!r}" for k in differ)
            for r in variants.values()
        )
        raise VerificationError(
            f"{dest.display()}: its images of {source.display(inner)} were migrated with "
            f"different settings ({shown}); verify each part with its own SRC"
        )
    first = ours[0]
    return PlanOptions.from_recorded(first.provenance["settings"], dest.display(first.metadata_key))


def plan_again(source: Store, inner: str, dest: Store) -> tuple[Plan, list[Recorded]]:
    """The plan of the migration DEST records, made again from SRC's own metadata (and the
    label images DEST's ``labels`` groups list, as ``convert`` merges them); with every
    image cellmap-migrate finished or started at DEST."""
    discovery = discover(source, inner)
    recorded = _recorded_images(dest)
    options = recorded_options(source, inner, dest, recorded)
    plan = build_plan(discovery, source.url, inner, dest.url, options)
    existing: dict[str, tuple[str, ...]] = {}
    for group in plan.groups:
        if group.attributes:
            attrs: Any = resume.group_attributes(dest, group.path) or {}
            labels = attrs.get("labels") or attrs.get("ome", {}).get("labels") or []
            if isinstance(labels, list) and labels:
                existing[group.path] = tuple(str(name) for name in labels)
    if existing:
        plan = plan.model_copy(
            update={"groups": plan_groups(plan.images, plan.ngff_version, existing)}
        )
    return plan, recorded


# --------------------------------------------------------------------------------------
# Metadata and layout
# --------------------------------------------------------------------------------------


def _read_json(raw: bytes | None) -> tuple[bool, Any]:
    if raw is None:
        return False, None
    try:
        return True, json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return True, _INVALID


_INVALID = object()


def _compare_document(
    dest: Store, key: str, raw: bytes | None, expected: Any, result: VerifyResult
) -> bool:
    """Compare one document; True when it is present and equal."""
    present, actual = _read_json(raw)
    where = dest.display(key)
    if not present:
        result.problems.append(f"{where}: missing (the plan writes it)")
        return False
    result.metadata_files += 1
    if actual is _INVALID:
        result.problems.append(f"{where}: not valid JSON")
        return False
    found = differences(actual, expected)
    for difference in found[:MAX_FIELDS_PER_FILE]:
        result.problems.append(f"{where}: {difference}")
    if len(found) > MAX_FIELDS_PER_FILE:
        result.problems.append(
            f"{where}: … and {len(found) - MAX_FIELDS_PER_FILE} more difference(s)"
        )
    return not found


def _structure(document: Any) -> Any:
    """An array document without its user attributes (what TensorStore reads)."""
    if isinstance(document, dict) and "attributes" in document:
        return {k: v for k, v in document.items() if k != "attributes"}
    return document


def check_metadata(
    plan: Plan, source: Store, dest: Store, result: VerifyResult
) -> tuple[set[str], set[str]]:
    """Compare every document the plan writes with DEST's; returns the dest paths of the
    levels whose array metadata (shape, type, chunks, codecs) is as planned, and of the
    levels missing at DEST (reported as such)."""
    expected = all_documents(plan)
    raws = dict(zip(expected, dest.map(dest.read, list(expected)), strict=True))
    compared: set[str] = set()

    def compare(docs: Documents) -> None:
        for key, document in docs.items():
            compared.add(key)
            _compare_document(dest, key, raws[key], document, result)

    sound: set[str] = set()
    missing: set[str] = set()
    for image in plan.images:
        level_docs = [array_documents(plan, image, level) for level in image.levels]
        final = image_final_documents(plan, image)
        keys = [key for docs in (final, *level_docs) for key in docs]
        if all(raws[key] is None for key in keys):
            compared.update(keys)
            missing.update(level.dest_path for level in image.levels)
            result.problems.append(
                f"{dest.display(image.dest_path)}: image missing (the plan migrates "
                f"{source.display(image.source_path)} there)"
            )
            continue
        for level, docs in zip(image.levels, level_docs, strict=True):
            if all(raws[key] is None for key in docs):
                compared.update(docs)
                missing.add(level.dest_path)
                result.problems.append(
                    f"{dest.display(level.dest_path)}: level missing (the plan migrates "
                    f"{source.display(level.source_path)} there)"
                )
                continue
            compare(docs)
            structural = next(k for k in docs if k.endswith((".zarray", "zarr.json")))
            present, actual = _read_json(raws[structural])
            if present and differences(_structure(actual), _structure(docs[structural])) == []:
                sound.add(level.dest_path)
        compare({k: v for k, v in final.items() if k not in compared})
    compare({k: v for k, v in expected.items() if k not in compared})
    return sound, missing


_V2_CHUNK = re.compile(r"^[0-9]+(/[0-9]+)*$")


def _stray_keys(keys: Sequence[str], plan: Plan, level: LevelPlan) -> list[str]:
    """The keys in a level array that are neither its metadata nor a chunk (shard) of its
    grid, relative to the array."""
    grid = tuple(
        math.ceil(n / c) for n, c in zip(level.shape, level.shard or level.chunks, strict=True)
    )
    metadata = {".zarray", ".zattrs"} if plan.ngff_version == "0.4" else {"zarr.json"}
    stray = []
    for key in keys:
        if key in metadata:
            continue
        chunk = key if plan.ngff_version == "0.4" else key.removeprefix("c/")
        inside = (
            (plan.ngff_version == "0.4" or key.startswith("c/"))
            and _V2_CHUNK.match(chunk) is not None
            and len(parts := [int(p) for p in chunk.split("/")]) == len(grid)
            and all(p < g for p, g in zip(parts, grid, strict=True))
        )
        if not inside:
            stray.append(key)
    return stray


def check_layout(
    plan: Plan, dest: Store, recorded: Sequence[Recorded], result: VerifyResult
) -> None:
    """Report everything inside the migrated tree that the plan does not account for (extra
    images, levels, arrays, groups, files, keys outside a level's chunk grid), and every
    label name a ``labels`` group lists with no label image behind it."""
    documents = all_documents(plan)
    groups = {group.path for group in plan.groups} | {image.dest_path for image in plan.images}
    levels = {level.dest_path: level for image in plan.images for level in image.levels}
    marked = {r.dest_path: r for r in recorded}
    prefix = str(plan.settings.get("prefix") or "")
    top = join_key(prefix, plan.source_inner)
    frontier = [top]
    while frontier:
        listings = dest.map(dest.list_dir, frontier)
        next_frontier = []
        for path, (dirs, files) in zip(frontier, listings, strict=True):
            for name in files:
                key = join_key(path, name)
                if key not in documents:
                    result.problems.append(
                        f"{dest.display(key)}: a file the plan does not account for"
                    )
            for name in dirs:
                child = join_key(path, name)
                if not path and child == resume.STATE_DIR:
                    continue  # resume records: unfinished images are reported as such
                if child in levels:
                    continue
                if child in groups:
                    next_frontier.append(child)
                    continue
                result.problems.append(
                    f"{dest.display(child)}: {_describe(dest, child, marked)} that the plan does "
                    "not account for"
                )
        frontier = next_frontier
    level_list = list(levels.values())
    listed = dest.map(lambda level: list(dest.list_keys(level.dest_path)), level_list)
    for level, keys in zip(level_list, listed, strict=True):
        stray = _stray_keys(keys, plan, level)
        if stray:
            result.problems.append(
                f"{dest.display(level.dest_path)}: {len(stray)} key(s) that are not chunks of "
                f"the plan's grid (first: {stray[0]})"
            )
    images = {image.dest_path for image in plan.images} | set(marked)
    for group in plan.groups:
        attrs: Any = group.attributes
        for name in attrs.get("labels") or attrs.get("ome", {}).get("labels") or []:
            if join_key(group.path, name) not in images:
                result.problems.append(
                    f"{dest.display(group.path)}: labels lists {name!r}, but there is no "
                    "such label image"
                )


def _describe(dest: Store, path: str, marked: dict[str, Recorded]) -> str:
    if path in marked:
        return f"an image (migrated from {_origin(marked[path].provenance)})"
    if dest.read(join_key(path, ".zarray")) is not None:
        return "a Zarr array"
    v3 = resume.read_json(dest, join_key(path, "zarr.json"))
    if v3 is not None:
        return f"a Zarr {v3.get('node_type', 'node')}"
    if dest.read(join_key(path, ".zgroup")) is not None:
        attrs = resume.read_json(dest, join_key(path, ".zattrs")) or {}
        return "a Zarr image group" if "multiscales" in attrs else "a Zarr group"
    return "a folder (not Zarr)"


# --------------------------------------------------------------------------------------
# Voxels
# --------------------------------------------------------------------------------------


def _box(index: int, unit: tuple[int, ...], shape: tuple[int, ...]) -> Box:
    """Box number ``index`` (C-order linear index) of the grid of ``unit`` boxes over ``shape``."""
    counts = [-(-n // u) for n, u in zip(shape, unit, strict=True)]
    position = np.unravel_index(index, counts)
    return tuple(
        (int(p) * u, min((int(p) + 1) * u, n))
        for p, u, n in zip(position, unit, shape, strict=True)
    )


def boxes(level: LevelPlan, sample: float, rng: random.Random) -> tuple[list[Box], int]:
    """What to compare, C order, and of how many: the whole level in write-aligned boxes of
    about DEFAULT_UNIT_BYTES, or a random ``sample`` fraction of its chunks (or shards)."""
    itemsize = np.dtype(level.dtype).itemsize
    grid = level.shard or level.chunks
    unit = grid
    if sample >= 1.0:
        unit = grow_unit(grid, level.shape, itemsize, DEFAULT_UNIT_BYTES)
    count = math.prod(-(-n // u) for n, u in zip(level.shape, unit, strict=True))
    indices: Sequence[int] = range(count)
    if sample < 1.0:
        indices = sorted(rng.sample(range(count), max(1, round(sample * count))))
    return [_box(index, unit, level.shape) for index in indices], count


def _compare(source: Any, dest: Any, box: Box) -> tuple[int, int, str | None]:
    region = box_slices(box)
    a = source[region].read().result()
    b = dest[region].read().result()
    if np.array_equal(a, b):
        return int(a.size), int(a.nbytes), None
    diff = np.argwhere(a != b)
    lo = diff.min(axis=0) + [start for start, _ in box]
    hi = diff.max(axis=0) + [start for start, _ in box] + 1
    where = ", ".join(f"{int(s)}:{int(e)}" for s, e in zip(lo, hi, strict=True))
    return (
        int(a.size),
        int(a.nbytes),
        f"{len(diff)} voxel(s) differ in box [{where}] (z, y, x order)",
    )


def _open_pair(
    plan: Plan, source: Store, dest: Store, level: LevelPlan, workers: int
) -> tuple[Any, Any] | str:
    try:
        src = open_source(source, level, workers)
        dst = open_dest_readonly(dest, level.dest_path, plan.ngff_version, workers)
    except Exception as exc:
        return f"cannot open: {ts_error_text(exc)}"
    if tuple(src.shape) != tuple(dst.shape) or src.dtype != dst.dtype:
        return (
            f"shape/dtype {tuple(dst.shape)} {dst.dtype} != source {tuple(src.shape)} {src.dtype}"
        )
    return src, dst


def compare_voxels(
    plan: Plan,
    source: Store,
    dest: Store,
    sound: set[str],
    missing: set[str],
    result: VerifyResult,
    *,
    sample: float,
    workers: int,
    rng: random.Random,
    progress: Progress,
) -> None:
    """Compare the voxels of every level whose array metadata is as planned (``sound``);
    a level that is neither sound nor ``missing`` is reported as not compared."""
    for image in plan.images:
        work = [
            (level, *boxes(level, sample, rng))
            for level in image.levels
            if level.dest_path in sound
        ]
        for level in image.levels:
            if level.dest_path not in sound and level.dest_path not in missing:
                result.problems.append(
                    f"{level.dest_path}: voxels not compared: its array metadata is not the plan's"
                )
        if not work:
            continue
        total_bytes = sum(
            math.prod(stop - start for start, stop in box) * np.dtype(level.dtype).itemsize
            for level, level_boxes, _ in work
            for box in level_boxes
        )
        progress.start(image.dest_path, sum(len(b) for _, b, _ in work), total_bytes, 0, 0)
        for level, level_boxes, count in work:
            result.units_total += count
            pair = _open_pair(plan, source, dest, level, workers)
            if isinstance(pair, str):
                result.problems.append(f"{level.dest_path}: {pair}")
                progress.advance(image.dest_path, len(level_boxes), 0)
                continue
            src, dst = pair
            with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
                futures = {pool.submit(_compare, src, dst, box): box for box in level_boxes}
                for future in cf.as_completed(futures):
                    try:
                        voxels, nbytes, problem = future.result()
                    except Exception as exc:
                        box = list(futures[future])
                        voxels, nbytes, problem = 0, 0, f"box {box}: {ts_error_text(exc)}"
                    result.units_checked += 1
                    result.voxels_compared += voxels
                    result.bytes_compared += nbytes
                    progress.advance(image.dest_path, 1, nbytes)
                    if problem:
                        result.problems.append(f"{level.dest_path}: {problem}")


# --------------------------------------------------------------------------------------
# The proof
# --------------------------------------------------------------------------------------


def verify(
    source: Store,
    dest: Store,
    *,
    inner: str = "",
    sample: float = 1.0,
    workers: int = 2,
    seed: int | None = None,
    progress: Progress | None = None,
) -> VerifyResult:
    """Prove that DEST is the migration of SRC (``source``, its part ``inner``) with the
    settings DEST records; collect every problem found.

    Raises MigrationError (one line) when SRC cannot be read or planned, or when DEST holds
    no migration of it."""
    progress = progress or NullProgress()
    plan, recorded = plan_again(source, inner, dest)
    sharded = any(level.shard for image in plan.images for level in image.levels)
    result = VerifyResult(sample=sample, grid="shards" if sharded else "chunks")
    result.images = len(plan.images)
    result.levels = sum(len(image.levels) for image in plan.images)
    planned = {image.dest_path for image in plan.images}
    for r in recorded:
        if not r.finished and r.dest_path in planned:
            result.problems.append(f"{dest.display(r.dest_path)}: migration is not complete")
    try:
        sound, missing = check_metadata(plan, source, dest, result)
        check_layout(plan, dest, recorded, result)
        for image in plan.images:
            if any(level.dest_path in sound for level in image.levels):
                result.problems.extend(validate_image(dest, image, plan.ngff_version))
                if image.kind == "label":
                    result.problems.extend(validate_labels_listing(dest, image, plan.ngff_version))
        compare_voxels(
            plan,
            source,
            dest,
            sound,
            missing,
            result,
            sample=sample,
            workers=workers,
            rng=random.Random(seed),
            progress=progress,
        )
    finally:
        progress.close()
    return result
