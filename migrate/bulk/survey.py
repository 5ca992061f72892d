"""The dry run of a bulk migration: one survey row per dataset, then totals. Writes nothing.

Each row comes from the single-dataset plan (:func:`migrate.api.prepare` with a read-only
DEST), so the survey sees exactly what ``convert`` would do: the images and levels found,
their metadata conventions and problems, the state at DEST, and what would be written.
Counts of source blocks and of output chunks are of the block (chunk, shard) grids: empty
blocks are absent on disk and all-zero chunks are not written, so they are upper bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from migrate.api import check_conflicts, check_datasets, check_dest_root, prepare
from migrate.bulk.select import Dataset
from migrate.copy.engine import check_images
from migrate.dest import lease, records
from migrate.dest.state import ImageState, read_root, read_state
from migrate.errors import ConflictError, MigrationError
from migrate.storage import S3Options, Store
from migrate.target.layout import all_documents
from migrate.target.plan import PlanOptions
from schemas.plan import ImagePlan, LevelPlan, Plan

S3_DELETE_BATCH = 1000
"""Objects one S3 DeleteObjects request removes (the unit records, after each image)."""


@dataclass
class SurveyRow:
    """What a dataset holds and what migrating it would write (all counts are totals)."""

    name: str
    source: str
    dest: str
    images: int = 0
    precomputed: int = 0
    """Of the images, how many are precomputed volumes (the others are N5 images)."""
    levels: int = 0
    voxels: int = 0
    bytes: int = 0
    """Uncompressed voxel bytes at the source."""
    source_blocks: int = 0
    """Blocks in the source grids (an upper bound on the objects: empty blocks are absent)."""
    conventions: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    state: str = "new"
    """At DEST: new, partial, complete, different, foreign; ``refused`` when the plan fails."""
    objects_to_write: int = 0
    """Chunk (or shard) objects at most, metadata documents and unit records."""
    requests: int = 0
    """Write requests at most: the objects, plus the batched deletes of the unit records."""
    refusal: str | None = None
    """Why ``convert`` would refuse this dataset (None: it would migrate)."""
    registry: dict[str, int] | None = None
    """With a registry manifest for the dataset: how many images are ``mirrored``,
    ``restyled`` (display settings → ``omero``), ``reclassified`` (label or not, against
    the name rule), ``in_conflict`` with the N5, ``absent`` from the manifest, and how many
    of its sources have no image here (``unmatched``)."""

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


def _grid_count(shape: tuple[int, ...], block: tuple[int, ...]) -> int:
    return math.prod(-(-n // b) for n, b in zip(shape, block, strict=True))


def conventions(image: ImagePlan) -> set[str]:
    """The source metadata conventions an image's values came from or were checked against."""
    found: set[str] = set()
    for text in image.sources.values():
        if "COSEM" in text:
            found.add("cosem")
        if "Neuroglancer" in text:
            found.add("neuroglancer")
        if text.startswith("precomputed"):
            found.add("precomputed")
    return found


def problems(plan: Plan) -> list[str]:
    """Conflicts, warnings, translations that follow a rule rather than the source, and
    arrays that belong to no multiscale image."""
    found: list[str] = []
    for image in plan.images:
        found += [f"{image.source_path}: CONFLICT: {c}" for c in image.conflicts]
        found += [f"{image.source_path}: {w}" for w in image.warnings]
        translation = image.sources.get("translation", "")
        if "rule" in translation and "no downsampling rule used" not in translation:
            found.append(f"{image.source_path}: translation is a guess ({translation})")
    found += [
        f"{orphan}: array outside any multiscale group (skipped)" for orphan in plan.orphan_arrays
    ]
    return found


def registry_counts(plan: Plan) -> dict[str, int]:
    """What the registry changes in a planned dataset (see :attr:`SurveyRow.registry`)."""
    from migrate.source.reconcile import REGISTRY_CONFLICT
    from migrate.target.plan import is_label_image

    patterns = tuple(plan.settings.get("label_patterns") or ())
    listed = [image for image in plan.images if image.registry_source is not None]
    return {
        "mirrored": sum(1 for image in plan.images if image.levels[0].mirror is not None),
        "restyled": len(listed),
        "reclassified": sum(
            1
            for image in listed
            if (image.kind == "label")
            != is_label_image(image.source_path, image.levels[0].dtype, patterns)
        ),
        "in_conflict": sum(
            1
            for image in plan.images
            if any(c.startswith(REGISTRY_CONFLICT) for c in image.conflicts)
        ),
        "absent": len(plan.images) - len(listed),
        "unmatched": len(plan.registry_unmatched),
    }


def _level_writes(level: LevelPlan, remaining_units: int) -> int:
    """Chunk (or shard) objects the remaining units of a level write, at most."""
    objects = _grid_count(level.shape, level.shard or level.chunks)
    return -(-objects * remaining_units // max(level.unit_count, 1))


def dest_state(states: list[ImageState]) -> str:
    """One word for a dataset from its images' states at DEST."""
    values = {state.value for state in states}
    for word in ("foreign", "different"):
        if word in values:
            return word
    if values <= {"complete"} and values:
        return "complete"
    if values <= {"new"}:
        return "new"
    return "partial"


def survey_plan(
    name: str, plan: Plan, dest: Store, *, overwrite: bool = False, into_existing: bool = False
) -> SurveyRow:
    """The survey row of one planned dataset; reads DEST's metadata and unit records only."""
    row = SurveyRow(name, plan.dataset or plan.source, plan.dest, images=len(plan.images))
    row.precomputed = sum(1 for image in plan.images if image.format == "precomputed")
    found: set[str] = set()
    for image in plan.images:
        found |= conventions(image)
        for level in image.levels:
            row.levels += 1
            row.voxels += math.prod(level.shape)
            row.bytes += level.nbytes
            row.source_blocks += level.source_block_count
    row.conventions = sorted(found)
    row.problems = problems(plan)
    if plan.registry_dataset is not None:
        row.registry = registry_counts(plan)
    root = read_root(dest)
    at_dest = read_state(dest, plan, root)  # DEST's state, read once
    plan = at_dest.plan_at_dest(plan)
    states = [at_dest.image_state(plan, image) for image in plan.images]
    row.state = dest_state(states)
    unit_records = 0
    for image, state in zip(plan.images, states, strict=True):
        if state is ImageState.COMPLETE:
            continue
        fingerprint = plan.image_fingerprint(image)
        generation = at_dest.image(image.dest_path).generation
        for level in image.levels:
            done = (
                len(records.done_units(dest, fingerprint, image.dest_path, level.name, generation))
                if state is ImageState.PARTIAL
                else 0
            )
            remaining = level.unit_count - done
            row.objects_to_write += _level_writes(level, remaining)
            unit_records += remaining
    if row.state != "complete":
        row.objects_to_write += len(all_documents(plan)) + unit_records
    row.requests = row.objects_to_write + -(-unit_records // S3_DELETE_BATCH)
    try:  # convert's own message
        check_conflicts(plan)
    except ConflictError as exc:
        row.refusal = str(exc)
        return row
    try:  # the refusals convert would meet, with its own messages (nothing is written)
        check_dest_root(dest, plan, into_existing=into_existing, root=root)
        check_datasets(dest, plan, at_dest, into_existing=into_existing)
        check_images(dest, plan, overwrite, at_dest)
    except MigrationError as exc:
        row.refusal = str(exc)
    holder = lease.live_holder(at_dest.lease)
    if holder is not None:
        row.problems.append(f"DEST is being written right now ({holder.describe()})")
    return row


def survey(
    dataset: Dataset,
    options: PlanOptions,
    s3: S3Options | None,
    overwrite: bool = False,
    into_existing: bool = False,
) -> SurveyRow:
    """The survey row of one dataset; a plan that cannot be made is a refused row."""
    try:
        prepared = prepare(
            dataset.source, dataset.dest, options, read_only_dest=True, s3=s3,
            strict_image_paths=False,
        )  # fmt: skip
    except MigrationError as exc:
        return SurveyRow(
            dataset.name, dataset.source, dataset.dest, state="refused", refusal=str(exc)
        )
    return survey_plan(
        dataset.name, prepared.plan, prepared.dest, overwrite=overwrite, into_existing=into_existing
    )


TOTALS = ("images", "levels", "voxels", "bytes", "source_blocks", "objects_to_write", "requests")


def totals(rows: list[SurveyRow]) -> dict[str, int]:
    return {name: sum(int(getattr(row, name)) for row in rows) for name in TOTALS} | {
        "datasets": len(rows),
        "refused": sum(1 for row in rows if row.refusal),
    }
