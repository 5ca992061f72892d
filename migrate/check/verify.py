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

The plan is made again by :mod:`migrate.check.replan`, the voxels compared by
:mod:`migrate.check.voxels`; boxes are reported in **C order** (z, y, x).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from migrate.check.compare import differences
from migrate.check.replan import Recorded, origin, plan_again
from migrate.check.validate import validate_image, validate_labels_listing
from migrate.check.voxels import compare_voxels
from migrate.copy.events import NullProgress, Progress
from migrate.copy.precomputed import image_source, sibling_store
from migrate.dest import lease, marks, records
from migrate.source.dataset import SourceLocation
from migrate.source.registry import Registry
from migrate.storage import Store, join_key
from migrate.target.layout import Documents, all_documents, array_documents, image_final_documents
from schemas.plan import LevelPlan, Plan

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
    notes: list[str] = field(default_factory=list)
    """What DEST holds beside the migration that is no part of it and no doubt about it: with
    ``into_existing`` only, files and folders that are not Zarr, outside every image and
    ``labels`` group (a DEST written ``convert --into-existing``)."""

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
                f"{image_source(source, image).display(image.source_path)} there)"
            )
            continue
        for level, docs in zip(image.levels, level_docs, strict=True):
            if all(raws[key] is None for key in docs):
                compared.update(docs)
                missing.add(level.dest_path)
                result.problems.append(
                    f"{dest.display(level.dest_path)}: level missing (the plan migrates "
                    f"{image_source(source, image).display(level.source_path)} there)"
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


_INDEX = "(0|[1-9][0-9]*)"
"""A chunk index as Zarr writes it: decimal ASCII digits, no sign, no leading zero."""


def chunk_key_pattern(version: str, ndim: int) -> re.Pattern[str]:
    """The canonical keys of a level's chunks (shards): ``z/y/x`` for 0.4 (nested, ``/``),
    ``c/z/y/x`` for 0.5 (the default encoding with ``/``); C order."""
    indices = "/".join([_INDEX] * ndim)
    return re.compile(indices if version == "0.4" else f"c/{indices}")


def _stray_keys(
    keys: Sequence[str], plan: Plan, level: LevelPlan, documents: Documents
) -> list[str]:
    """The keys in a level array that are neither its metadata (the plan's documents) nor a
    chunk (shard) of its grid in canonical form, relative to the array: ``0/0/00``, ``+1``,
    `` 1`` or ``0.0.0`` name no chunk a Zarr reader reads, though ``int()`` would take them."""
    grid = tuple(
        math.ceil(n / c) for n, c in zip(level.shape, level.shard or level.chunks, strict=True)
    )
    pattern = chunk_key_pattern(plan.ngff_version, len(grid))
    stray = []
    for key in keys:
        if join_key(level.dest_path, key) in documents:
            continue
        found = pattern.fullmatch(key)
        inside = found is not None and all(
            int(p) < g for p, g in zip(key.removeprefix("c/").split("/"), grid, strict=True)
        )
        if not inside:
            stray.append(key)
    return stray


def check_layout(
    plan: Plan,
    dest: Store,
    recorded: Sequence[Recorded],
    result: VerifyResult,
    *,
    into_existing: bool = False,
    list_levels: bool = True,
) -> None:
    """Report everything inside the migrated tree that the plan does not account for (extra
    images, levels, arrays, groups, files, keys outside a level's chunk grid), and every
    label name a ``labels`` group lists with no label image behind it.

    With ``into_existing`` (DEST was written ``convert --into-existing``), files and folders
    that are not Zarr, outside every image and ``labels`` group, are noted instead: the user
    said DEST held files of its own. ``list_levels`` False: the keys inside the level arrays
    are not listed here (``verify --listing`` lists them once, for the ledger, and checks
    them there)."""
    documents = all_documents(plan)

    def foreign(where: str, what: str) -> None:
        if into_existing:
            result.notes.append(
                f"{where}: {what} beside the migration, not written by cellmap-migrate (left "
                "alone: --into-existing)"
            )
        else:
            result.problems.append(
                f"{where}: {what} that the plan does not account for, outside every image "
                "(there before a convert --into-existing? then verify --into-existing)"
            )

    groups = {group.path for group in plan.groups} | {image.dest_path for image in plan.images}
    levels = {level.dest_path: level for image in plan.images for level in image.levels}
    marked = {r.dest_path: r for r in recorded}
    images_and_labels = {image.dest_path for image in plan.images} | {
        group.path for group in plan.groups if group.attributes and group.path
    }
    volumes = (  # the migrations of precomputed volumes, when SRC is an N5 tree
        {path for path, r in marked.items() if r.provenance.get("format") == "precomputed"}
        if plan.dataset is None
        else set()
    )
    prefix = str(plan.settings.get("prefix") or "")
    top = join_key(prefix, plan.source_inner)
    if plan.dataset is not None:  # a dataset folder: all of DEST; one volume: its image
        top = plan.images[0].dest_path if plan.source_inner else prefix
    frontier = [top]
    while frontier:
        listings = dest.map(dest.list_dir, frontier)
        next_frontier = []
        for path, (dirs, files) in zip(frontier, listings, strict=True):
            inside_image = path in images_and_labels
            for name in files:
                key = join_key(path, name)
                if key in documents:
                    continue
                if inside_image or name in _ZARR_METADATA:
                    result.problems.append(
                        f"{dest.display(key)}: a file the plan does not account for"
                    )
                else:
                    foreign(dest.display(key), "a file")
            for name in dirs:
                child = join_key(path, name)
                if not path and child == records.STATE_DIR:
                    continue  # resume records: unfinished images are reported as such
                if child in levels:
                    continue
                if child in groups:
                    next_frontier.append(child)
                    continue
                what = _describe(dest, child, marked)
                if child in volumes or any(v.startswith(child + "/") for v in volumes):
                    result.notes.append(  # an N5 SRC: the dataset's volumes are no part of it
                        f"{dest.display(child)}: {what}, holding the migration of precomputed "
                        "volumes, not part of SRC (not verified: verify the dataset folder to "
                        "prove it too)"
                    )
                    continue
                if what == _NOT_ZARR and not inside_image:
                    foreign(dest.display(child), what)
                    continue
                result.problems.append(
                    f"{dest.display(child)}: {what} that the plan does not account for"
                )
        frontier = next_frontier
    level_list = list(levels.values()) if list_levels else []
    listed = dest.map(lambda level: list(dest.list_keys(level.dest_path)), level_list)
    for level, keys in zip(level_list, listed, strict=True):
        stray = _stray_keys(keys, plan, level, documents)
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
        return f"an image (migrated from {origin(marked[path].provenance)})"
    if dest.read(join_key(path, ".zarray")) is not None:
        return "a Zarr array"
    v3 = marks.read_json(dest, join_key(path, "zarr.json"))
    if v3 is not None:
        return f"a Zarr {v3.get('node_type', 'node')}"
    if dest.read(join_key(path, ".zgroup")) is not None:
        attrs = marks.read_json(dest, join_key(path, ".zattrs")) or {}
        return "a Zarr image group" if "multiscales" in attrs else "a Zarr group"
    return _NOT_ZARR


_NOT_ZARR = "a folder (not Zarr)"
_ZARR_METADATA = {".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json"}


# --------------------------------------------------------------------------------------
# The proof
# --------------------------------------------------------------------------------------


def lease_problem(dest: Store) -> str | None:
    """Why DEST cannot be proven while its lease is there, or None when there is none: a
    lease says a writer is running, or died before it released it (its work unfinished)."""
    raw = dest.read(lease.LEASE_KEY)
    if raw is None:
        return None
    holder = lease.Holder.parse(raw)
    who = holder.describe() if holder else "unreadable"
    return (
        f"{dest.display(lease.LEASE_KEY)}: a convert holds DEST's lease ({who}): it may still "
        "be writing, or it died before it finished; wait for it to end, or run it again"
    )


def verify(
    source: Store,
    dest: Store,
    *,
    inner: str = "",
    sample: float = 1.0,
    workers: int = 2,
    seed: int | None = None,
    into_existing: bool = False,
    progress: Progress | None = None,
    registry: Registry | None = None,
    location: SourceLocation | None = None,
    replanned: tuple[Plan, list[Recorded]] | None = None,
) -> VerifyResult:
    """Prove that DEST is the migration of SRC (``source``, its part ``inner``; ``location``
    when SRC is a dataset folder or a precomputed volume, ``source`` being the dataset
    folder) with the settings DEST records (and the registry manifest it records, found in
    ``registry``); collect every problem found. A mirrored level is compared with its
    source read through the mirror.
    ``into_existing``: DEST was written ``convert --into-existing``, so files beside the
    migration are noted, not problems. ``replanned``: the plan made again and the images
    DEST records (:func:`~migrate.check.replan.plan_again`), when the caller has them.

    Raises MigrationError (one line) when SRC cannot be read or planned, or when DEST holds
    no migration of it."""
    progress = progress or NullProgress()
    plan, recorded = (
        replanned if replanned is not None else plan_again(source, inner, dest, registry, location)
    )
    source = sibling_store(source, plan.source)  # the N5 root of a dataset folder
    sharded = any(level.shard for image in plan.images for level in image.levels)
    result = VerifyResult(sample=sample, grid="shards" if sharded else "chunks")
    result.images = len(plan.images)
    result.levels = sum(len(image.levels) for image in plan.images)
    planned = {image.dest_path for image in plan.images}
    held = lease_problem(dest)
    if held:
        result.problems.append(held)
    for r in recorded:
        if not r.finished and r.dest_path in planned:
            result.problems.append(f"{dest.display(r.dest_path)}: migration is not complete")
    try:
        sound, missing = check_metadata(plan, source, dest, result)
        check_layout(plan, dest, recorded, result, into_existing=into_existing)
        for image in plan.images:
            if any(level.dest_path in sound for level in image.levels):
                result.problems.extend(validate_image(dest, image, plan.ngff_version))
                if image.kind == "label":
                    result.problems.extend(validate_labels_listing(dest, image, plan.ngff_version))
        tally = compare_voxels(
            plan,
            source,
            dest,
            sound,
            missing,
            sample=sample,
            workers=workers,
            rng=random.Random(seed),
            progress=progress,
        )
        result.units_checked = tally.units_checked
        result.units_total = tally.units_total
        result.voxels_compared = tally.voxels_compared
        result.bytes_compared = tally.bytes_compared
        result.problems.extend(tally.problems)
    finally:
        progress.close()
    return result
