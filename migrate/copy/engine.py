"""The copy engine: run a plan's work units in parallel, record each, finalize metadata last.

Work units are chunk-aligned (shard-aligned) boxes in **C order** (z, y, x). Memory stays
bounded: at most ``2 × workers`` units are in flight, each at most ``unit_bytes`` of voxels.

Running the units is pluggable: :func:`run_plan` prepares DEST, hands the remaining units to
a :class:`UnitExecutor` (default :func:`run_local`, threads in this process; see
``migrate.copy.distributed`` for a Dask cluster), counts the outcomes it reports, and finalizes.
Wherever a unit runs, :class:`UnitWorker` copies and records it.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import json
import math
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from migrate.copy import precomputed
from migrate.copy.events import NullProgress, Progress
from migrate.copy.options import EngineOptions
from migrate.copy.precomputed import image_source
from migrate.copy.tsio import (
    HandleCache,
    is_storage_error,
    level_n5_metadata,
    open_source_array,
    ts_error_text,
)
from migrate.dest import certificate, ledger, marks, ours, records
from migrate.dest.lease import LeaseLostError
from migrate.dest.state import DestState, DestWriter, ImageState, read_state
from migrate.errors import PlanMismatchError, SourceDataError, StoreError
from migrate.storage import Store, iocounts, join_key
from migrate.target import compare
from migrate.target.layout import (
    PROVENANCE_KEY,
    group_documents,
    image_final_documents,
    image_start_documents,
)
from migrate.target.plan import (
    COMPLETE_KEY,
    DATASET_KEY,
    EARLIER_VERSION,
    plan_groups,
    settings_changes,
)
from schemas.plan import ImagePlan, LevelPlan, Plan


@dataclass
class ImageResult:
    dest_path: str
    state_before: str
    units_total: int = 0
    units_skipped: int = 0
    units_copied: int = 0
    units_redone: int = 0
    """Units recorded as done whose source blocks changed since: copied again."""
    bytes_read: int = 0
    failures: list[str] = field(default_factory=list)
    complete: bool = False


@dataclass
class RunResult:
    images: list[ImageResult]
    seconds: float
    storage: iocounts.IOCounts | None = None
    """Stored bytes and objects this process moved during the run; None when the chunks
    were copied by other processes (a Dask cluster), which this process cannot count."""

    @property
    def failures(self) -> list[str]:
        return [f for image in self.images for f in image.failures]

    @property
    def complete(self) -> bool:
        return all(image.complete for image in self.images)

    def to_json(self) -> dict[str, Any]:
        return {
            "complete": self.complete,
            "seconds": round(self.seconds, 3),
            "images": [vars(image) for image in self.images],
            "storage": self.storage.to_json() if self.storage is not None else None,
        }


def recorded_attributes(dest: Store, image: ImagePlan) -> dict[str, Any] | None:
    """The image group attributes DEST records for the image at ``image.dest_path``: those
    of the finished image, else those its run started with (the resume record), else
    None."""
    finished = marks.group_attributes(dest, image.dest_path)
    if finished and PROVENANCE_KEY in finished:
        return finished
    started = marks.read_json(dest, records.image_state_key(image.dest_path, "plan.json"))
    attributes = (started or {}).get("image", {}).get("attributes")
    return attributes if isinstance(attributes, dict) else None


def _settings_of(attributes: dict[str, Any] | None) -> dict[str, Any] | None:
    provenance = (attributes or {}).get(PROVENANCE_KEY)
    settings = provenance.get("settings") if isinstance(provenance, dict) else None
    return settings if isinstance(settings, dict) else None


def explain_difference(dest: Store, plan: Plan, image: ImagePlan, state: ImageState) -> str:
    """What differs between the image at DEST and what this plan would write: the settings
    (old → new, as the options that give them, and the options that go on with DEST's),
    then the metadata fields."""
    if state is ImageState.FOREIGN:
        return (
            f"{dest.display(image.dest_path)} holds "
            f"{ours.describe_foreign(dest, image.dest_path)}, not written by cellmap-migrate;"
            " it is never replaced: choose another DEST or move it away"
        )
    recorded = recorded_attributes(dest, image)
    old_settings, new_settings = _settings_of(recorded), _settings_of(image.attributes)
    if old_settings is not None and "unit_bytes" in old_settings:
        where = dest.display(join_key(image.dest_path, ".zattrs"))
        return f"{where}: {PROVENANCE_KEY}.settings: {EARLIER_VERSION}"
    changes = (
        settings_changes(old_settings, new_settings)
        if old_settings is not None and new_settings is not None
        else []
    )
    wanted = {**image_start_documents(plan, image), **image_final_documents(plan, image)}
    own_group = {join_key(image.dest_path, name) for name in (".zattrs", "zarr.json")}
    differences: list[str] = []
    for key, document in wanted.items():
        if key in own_group:
            continue  # the image's attributes: compared field by field below
        existing = marks.read_json(dest, key)
        if existing is None:
            differences.append(f"{key} does not exist (DEST has other Zarr metadata)")
            continue
        differences += _settings_differences(key, existing, document)
        for name in sorted(set(document) | set(existing)):
            old, new = existing.get(name), document.get(name)
            if old != new and name != "attributes":
                differences.append(f"{key}: {name} {_compact(old)} → {_compact(new)}")
    if recorded is not None:  # the OME metadata (the settings are named above)
        attributes = {k: v for k, v in recorded.items() if k != PROVENANCE_KEY}
        planned = {k: v for k, v in image.attributes.items() if k != PROVENANCE_KEY}
        differences += [
            f"{image.dest_path} attributes: {text}"
            for text in compare.differences(attributes, planned)
        ]
    shown = "; ".join(differences[:4]) + (
        f"; … {len(differences) - 4} more" if len(differences) > 4 else ""
    )
    where = dest.display(image.dest_path)
    if changes:
        options = ", ".join(f"{old} → {new}" for old, new in changes)
        keep = " ".join(old for old, _ in changes if not old.startswith("no "))
        without = [old.removeprefix("no ") for old, _ in changes if old.startswith("no ")]
        going_on = " and ".join(
            part
            for part in (
                f"with {keep}" if keep else "",
                f"without {', '.join(without)}" if without else "",
            )
            if part
        )
        return (
            f"{where} was written with other settings: {options}"
            + (f" ({shown})" if differences else "")
            + f"; the same command {going_on} goes on with it"
        )
    if not differences:
        differences.append("the metadata (scale, translation, axes or provenance) differs")
        shown = differences[0]
    return (
        f"{where} was written from other source metadata or by another version of "
        f"cellmap-migrate: {shown}"
    )


def refusal(
    dest: Store,
    plan: Plan,
    image: ImagePlan,
    state: ImageState,
    overwrite: bool,
    found: DestState | None = None,
) -> str | None:
    """Why this image's state at DEST forbids the run, or None. Data cellmap-migrate did not
    write is refused with or without ``overwrite``; other settings without it. ``found`` is
    DEST's state, when read (it holds the image's attributes and start record)."""
    if state is ImageState.FOREIGN:
        return explain_difference(dest, plan, image, state)
    if state is not ImageState.DIFFERENT:
        return None
    at = found.image(image.dest_path) if found is not None else None
    clash = precomputed.format_clash(dest, image, at)
    if clash is not None:
        return clash
    levels = ours.recorded_levels(
        dest,
        image.dest_path,
        at.attributes if at is not None else None,
        at.started if at is not None else None,
    )
    strays = ours.foreign_keys(dest, image.dest_path, levels)
    if strays:
        return (
            f"{dest.display(image.dest_path)} holds cellmap-migrate output made with other "
            f"settings and {ours.describe_foreign(dest, image.dest_path, strays)}, which "
            "cellmap-migrate never deletes: move them away first"
        )
    if overwrite:
        return None
    return explain_difference(dest, plan, image, state) + "; use --overwrite to replace it"


def check_images(
    dest: Store, plan: Plan, overwrite: bool, found: DestState | None = None
) -> list[ImageState]:
    """Every image's state at DEST (``found``: its state, read once; read here when not
    given); raises PlanMismatchError (the first image's, in plan order) when one forbids the
    run. The dry run calls it too, so it predicts the refusal."""
    found = found if found is not None else read_state(dest, plan)
    states = [found.image_state(plan, image) for image in plan.images]
    refusals = [
        (image, state)
        for image, state in zip(plan.images, states, strict=True)
        if state in (ImageState.FOREIGN, ImageState.DIFFERENT)
    ]
    messages = dest.map(
        lambda pair: refusal(dest, plan, pair[0], pair[1], overwrite, found), refusals
    )
    for message in messages:
        if message is not None:
            raise PlanMismatchError(message)
    return states


def _settings_differences(key: str, existing: Any, document: Any) -> list[str]:
    """The recorded settings (``cellmap-migrate.settings`` of an image group) that differ,
    by name: ``registry``, ``codec``, …"""

    def settings(doc: Any) -> dict[str, Any]:
        attrs = doc.get("attributes", doc) if isinstance(doc, dict) else {}
        provenance = attrs.get(PROVENANCE_KEY) if isinstance(attrs, dict) else None
        found = provenance.get("settings") if isinstance(provenance, dict) else None
        return found if isinstance(found, dict) else {}

    old, new = settings(existing), settings(document)
    if not old or not new:
        return []
    return [
        f"{key}: settings.{name} {_compact(old.get(name))} → {_compact(new.get(name))}"
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    ]


def _compact(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= 80 else text[:77] + "..."


def bad_blocks(
    source: Store, level: LevelPlan, box: tuple[tuple[int, int], ...], workers: int
) -> list[str]:
    """The N5 keys (x/y/z) of the source blocks the output ``box`` reads that cannot be
    decoded (for a mirrored level, those of the mirrored box)."""
    array = open_source_array(source, level.source_path, level_n5_metadata(level), workers)
    box = level.source_box(box)
    ranges = [
        range(start // b, math.ceil(stop / b))
        for (start, stop), b in zip(box, level.source_blocks, strict=True)
    ]
    bad = []
    for block in itertools.product(*ranges):
        sub = tuple(
            slice(i * b, min((i + 1) * b, n))
            for i, b, n in zip(block, level.source_blocks, level.shape, strict=True)
        )
        try:
            array[sub].read().result()
        except Exception as exc:  # TensorStore reports decode failures as ValueError
            key = join_key(level.source_path, *(str(i) for i in reversed(block)))
            bad.append(f"{source.display(key)}: {ts_error_text(exc)}")
    return bad


@dataclass(frozen=True)
class WorkUnit:
    """One work unit: indices of the image, of its level, and of the unit (C-order linear),
    and the signature of its source blocks as listed before the copy (recorded with it)."""

    image: int
    level: int
    unit: int
    signature: str = ""


@dataclass(frozen=True)
class UnitOutcome:
    """What became of one work unit: copied (``nbytes`` of voxels read) or ``failure``."""

    unit: WorkUnit
    nbytes: int = 0
    failure: str | None = None


@dataclass(frozen=True)
class LevelWork:
    """The units of one level to copy, in C order: those that have source blocks and are not
    recorded as done yet, with the signatures of their source blocks
    (:func:`migrate.dest.records.unit_signatures`)."""

    image: int
    level: int
    units: Sequence[int]
    signatures: Mapping[int, str] = field(default_factory=dict)

    def signature(self, unit: int) -> str:
        return records.signature_of(self.signatures, unit)


@dataclass(frozen=True)
class Job:
    """The remaining work of a run, as handed to a :class:`UnitExecutor`."""

    plan: Plan
    source: Store
    dest: Store
    options: EngineOptions
    work: tuple[LevelWork, ...]
    progress: Progress
    generations: tuple[str, ...] = ()
    """Per image: the generation its unit records go under (see ``migrate.dest.records``)."""
    run_id: str | None = None
    """The id of the run's lease at DEST, when it holds one."""
    guard: Callable[[], None] | None = None
    """Raises once the run's lease is lost (called before each unit is started)."""


Report = Callable[[UnitOutcome], None]


class UnitExecutor(Protocol):
    """Runs every unit of ``job`` (each copied and recorded by a :class:`UnitWorker`) and
    calls ``report`` once per unit, from the calling thread, as outcomes arrive."""

    def __call__(self, job: Job, report: Report) -> None: ...


class UnitWorker:
    """Copies work units of one plan in this process and records each one at DEST; the
    threads of a process share one (TensorStore handles are opened once per level)."""

    def __init__(
        self,
        plan: Plan,
        source: Store,
        dest: Store,
        options: EngineOptions,
        generations: Sequence[str] = (),
        guard: Callable[[], None] | None = None,
        run_id: str | None = None,
    ) -> None:
        self.plan = plan
        self.guard = guard
        self.run_id = run_id or ""
        """The lease id of the run these units are copied for (kept in each unit's ledger
        entries)."""
        self.source = source
        self.dest = dest
        self.options = options
        self.fingerprints = [plan.image_fingerprint(image) for image in plan.images]
        self.generations = tuple(generations) or ("",) * len(plan.images)
        from migrate.copy.copiers import make_copier  # numpy and the codecs: only with work to do

        cache = HandleCache(source, dest, plan.ngff_version, options.workers)
        self.copier = make_copier(plan, source, dest, cache, options)

    def copy(self, task: WorkUnit) -> int:
        """Copy one unit, then record it as done; returns the voxel bytes it covered."""
        if self.guard is not None:
            self.guard()  # a run whose lease was taken copies nothing more
        image = self.plan.images[task.image]
        level = image.levels[task.level]
        nbytes, entries = self.copier(level, task.unit)
        records.record_unit(
            self.dest,
            self.fingerprints[task.image],
            image.dest_path,
            level.name,
            task.unit,
            signature=task.signature,
            generation=self.generations[task.image],
            entries=entries,
            run=self.run_id,
        )
        return nbytes

    def failure(self, task: WorkUnit, exc: Exception) -> str:
        """The message reported for a unit whose copy raised ``exc``: the source blocks that
        cannot be decoded, when that is the cause.

        Raises StoreError instead when storage could not be reached or used (connection,
        credentials, throttling beyond the retries): every other unit would fail the same
        way, so the run stops with one message and the next run resumes."""
        image = self.plan.images[task.image]
        level = image.levels[task.level]
        if isinstance(exc, LeaseLostError):
            raise exc
        if isinstance(exc, SourceDataError):
            return str(exc)
        if is_storage_error(exc):
            if isinstance(exc, StoreError):
                raise StoreError(f"{exc}; run the same command again to resume") from exc
            raise StoreError(
                f"cannot use storage ({self.source.url} → {self.dest.url}) while copying "
                f"{image.dest_path}/{level.name} unit {task.unit}: {ts_error_text(exc)}; "
                "run the same command again to resume"
            ) from exc
        box = level.unit_box(task.unit)
        store = image_source(self.source, image)
        keys = (
            precomputed.bad_chunks(store, level, level.source_box(box))
            if level.precomputed is not None
            else bad_blocks(self.source, level, box, self.options.workers)
        )
        return (
            "; ".join(keys)
            if keys
            else f"{image.dest_path}/{level.name} unit {task.unit} {list(box)}: "
            f"{ts_error_text(exc)}"
        )

    def run(self, task: WorkUnit) -> UnitOutcome:
        """Copy and record one unit; a failure is returned, not raised."""
        try:
            return UnitOutcome(task, self.copy(task))
        except Exception as exc:
            return UnitOutcome(task, failure=self.failure(task, exc))


def prepare_dest(
    dest: Store,
    plan: Plan,
    options: EngineOptions,
    run_id: str = "",
    found: DestState | None = None,
    writer: DestWriter | None = None,
    restart: bool = False,
) -> tuple[list[ImageResult], list[int], list[str], list[ImageState]]:
    """Check every image's state at DEST (refusing mismatches before anything is written),
    then write the metadata that must exist before chunks. Returns results, the indices
    of the images that still need copying, every image's record generation (``run_id``
    for the images this run starts) and every image's state. ``found`` is DEST's state
    (read here when not given); ``restart`` starts partial images under this run's own
    generation, so that no record written before counts (after ``--break-lease`` took the
    lease of a run that may still write)."""
    found = found if found is not None else read_state(dest, plan)
    writer = writer if writer is not None else DestWriter(dest, found)
    results: list[ImageResult] = []
    todo: list[int] = []
    states = check_images(dest, plan, options.overwrite, found)
    for index, (image, state) in enumerate(zip(plan.images, states, strict=True)):
        result = ImageResult(image.dest_path, state.value)
        results.append(result)
        if state is ImageState.COMPLETE:
            result.complete = True
            if found.image(image.dest_path).started is not None:
                records.forget_image(dest, image.dest_path)  # killed right after finalizing
            continue
        if state is ImageState.DIFFERENT:  # only ever cellmap-migrate's (check_images)
            dest.delete_prefix(image.dest_path)
            dest.delete_prefix(records.image_state_key(image.dest_path))
            ledger.forget(dest, image)
            writer.forget(image.dest_path)
        todo.append(index)
    if todo and found.certificate is not None:
        # what is written now was not proven: the proofs of these images are withdrawn
        certificate.withdraw(dest, found.certificate, [plan.images[i].dest_path for i in todo])
    if todo or found.completion_mark != _planned_mark(plan):
        remove_dead_temporaries(dest, plan, [plan.images[i] for i in todo])
    if todo:
        dest.map(lambda g: writer.write_if_absent(group_documents(plan, g.path, {})), plan.groups)
    # Our record of an image comes before its first metadata file (else a run killed in
    # between would find output it did not write); the files themselves in any order.
    generations = [run_id] * len(plan.images)
    resumed = [] if restart else [i for i in todo if states[i] is ImageState.PARTIAL]
    for index in resumed:
        generations[index] = found.image(plan.images[index].dest_path).generation
    starting = [plan.images[i] for i in todo if i not in resumed]
    dest.map(lambda image: records.record_start(dest, plan, image, run_id), starting)
    documents = [item for i in todo for item in image_start_documents(plan, plan.images[i]).items()]
    dest.map(lambda item: writer.write_one_if_changed(*item), documents)
    return results, todo, generations, states


def with_started_units(
    dest: Store, plan: Plan, partial: Sequence[int], found: DestState
) -> tuple[Plan, list[str]]:
    """``plan`` with each partially copied image (indices ``partial``) cut into the work units
    its first run cut it into, as its start record (in ``found``, DEST's state) says: unit
    records are per unit index, so a run resumed with another ``--unit-mib`` goes on with
    those units (the unit size changes no output byte and is not part of the image's
    identity). Returns the plan and the images whose units this changed. A record whose
    units are not whole chunks (shards) of the level is refused (PlanMismatchError)."""
    images = list(plan.images)
    changed: list[str] = []
    for index in partial:
        key = records.image_state_key(plan.images[index].dest_path, "plan.json")
        record = found.image(plan.images[index].dest_path).started
        image = images[index]
        levels = (record or {}).get("image", {}).get("levels")
        started = {
            level.get("name"): level.get("unit_shape")
            for level in (levels if isinstance(levels, list) else [])
            if isinstance(level, dict)
        }
        cut = []
        for level in image.levels:
            shape = started.get(level.name)
            grid = level.shard or level.chunks
            if not (
                isinstance(shape, list)
                and len(shape) == len(grid)
                and all(
                    type(n) is int and n > 0 and n % g == 0
                    for n, g in zip(shape, grid, strict=True)
                )
            ):
                raise PlanMismatchError(
                    f"{dest.display(key)}: image.levels[{level.name}].unit_shape is "
                    f"{_compact(shape)}, not whole chunks {list(grid)} of the level; "
                    "use --overwrite to start the image again"
                )
            cut.append(level.model_copy(update={"unit_shape": tuple(shape)}))
        if tuple(cut) != image.levels:
            images[index] = image.model_copy(update={"levels": tuple(cut)})
            changed.append(image.dest_path)
    if changed:
        plan = plan.model_copy(update={"images": tuple(images)})
    return plan, changed


def _planned_mark(plan: Plan) -> dict[str, str]:
    """The completion mark this plan writes last (empty when its root is an image)."""
    root = next((group for group in plan.groups if group.path == ""), None)
    provenance = (root.attributes if root else {}).get(PROVENANCE_KEY, {})
    return dict(provenance.get(COMPLETE_KEY, {}))


def remove_dead_temporaries(dest: Store, plan: Plan, images: list[ImagePlan]) -> int:
    """Remove the temporary files killed writers left where this run writes: under the
    images it copies, in its resume records, beside its group documents. A file whose
    writer may still run (another host, a live process) is left alone."""
    prefixes = [(image.dest_path, True) for image in images]
    prefixes += [(records.image_state_key(image.dest_path), True) for image in images]
    prefixes += [(group.path, False) for group in plan.groups]
    removed = dest.map(
        lambda item: dest.remove_dead_temporaries(item[0], recursive=item[1]), prefixes
    )
    return sum(removed)


def unit_chunk_keys(plan: Plan, level: LevelPlan, unit: int) -> list[str]:
    """The DEST keys of every chunk (or shard) inside work unit ``unit`` of ``level``."""
    grid = level.shard or level.chunks
    ranges = [
        range(start // g, math.ceil(stop / g))
        for (start, stop), g in zip(level.unit_box(unit), grid, strict=True)
    ]
    prefix = "" if plan.ngff_version == "0.4" else "c"
    return [
        join_key(level.dest_path, prefix, *(str(i) for i in position))
        for position in itertools.product(*ranges)
    ]


def recheck_done(
    plan: Plan,
    source: Store,
    dest: Store,
    levels: list[tuple[int, int]],
    done_by_level: dict[tuple[int, str], set[int]],
    generations: list[str],
) -> tuple[dict[tuple[int, int], Mapping[int, str]], dict[tuple[int, int], set[int]]]:
    """List every level's source blocks once: the signature of each unit that has blocks,
    and the done units whose recorded signature differs (their source changed since they
    were copied). The chunks those units wrote are deleted, so that their copy starts from
    nothing."""
    level_plans = [plan.images[i].levels[j] for i, j in levels]
    stores = [image_source(source, plan.images[i]) for i, _ in levels]
    signatures = source.map(
        lambda item: (
            precomputed.unit_signatures(item[0], item[1])
            if item[1].precomputed is not None
            else records.unit_signatures(item[0], item[1])
        ),
        list(zip(stores, level_plans, strict=True)),
    )
    changed: dict[tuple[int, int], set[int]] = {}
    for (i, j), level, current in zip(levels, level_plans, signatures, strict=True):
        done = done_by_level.get((i, level.name), set())
        if not done:
            continue
        image = plan.images[i]
        recorded = records.recorded_signatures(
            dest, plan.image_fingerprint(image), image.dest_path, level.name, done, generations[i]
        )
        stale = {
            unit
            for unit, sig in recorded.items()
            if unit < level.unit_count and sig != records.signature_of(current, unit)
        }
        if stale:
            changed[i, j] = stale
            keys = [key for unit in sorted(stale) for key in unit_chunk_keys(plan, level, unit)]
            dest.map(dest.delete_prefix, keys)
    return dict(zip(levels, signatures, strict=True)), changed


Guard = Callable[[], None]


def run_plan(
    plan: Plan,
    source: Store,
    dest: Store,
    options: EngineOptions,
    progress: Progress | None = None,
    executor: UnitExecutor | None = None,
    guard: Guard | None = None,
    run_id: str | None = None,
    finishing: Callable[[], None] | None = None,
    *,
    found: DestState | None = None,
    confirm: Guard | None = None,
    restart: bool = False,
) -> RunResult:
    """Migrate every image of ``plan``; resumable, metadata finalized last. ``executor``
    runs the work units (default :func:`run_local`: threads in this process).
    ``finishing`` is called just before the last document, the completion mark that lists
    every image of the plan, is written: once that write returns, the run has finished.

    ``run_id`` is the id of the lease this run holds at DEST (see ``migrate.dest.lease``);
    ``guard`` raises once that lease is lost, as far as this process knows (cheap: it is
    called before and after every unit), and ``confirm`` reads the lease again and raises
    unless it is still this run's: it is called before every finalize step (an image's
    metadata, the groups, the completion mark), so a superseded run stops without
    finalizing anything. ``found`` is DEST's state, read under the lease, against which
    ``plan`` was made (:meth:`~migrate.dest.state.DestState.plan_at_dest`); when not given
    it is read here and the plan made against it. ``restart``: see :func:`prepare_dest`."""
    progress = progress or NullProgress()
    check = guard or (lambda: None)
    confirmed = confirm or check
    started = time.monotonic()
    counted = iocounts.totals()
    if found is None:  # a library call: read DEST's state here, and plan against it
        found = read_state(dest, plan)
        plan = found.plan_at_dest(plan)
    writer = DestWriter(dest, found)
    results, todo, generations, states = prepare_dest(
        dest, plan, options, run_id or uuid.uuid4().hex, found, writer, restart
    )
    partial = [i for i in todo if states[i] is ImageState.PARTIAL]
    plan, recut = with_started_units(dest, plan, partial, found)
    for path in recut:
        progress.message(
            f"note: {path} goes on with the work units it was started with (the unit size "
            "of the run that started it); --unit-mib applies to the images a run starts"
        )
    fingerprints = {i: plan.image_fingerprint(plan.images[i]) for i in todo}
    # only a resumed image has records (an image started now has none yet)
    resumed = [
        (i, level.name)
        for i in todo
        if states[i] is ImageState.PARTIAL
        and generations[i] == found.image(plan.images[i].dest_path).generation
        for level in plan.images[i].levels
    ]
    done_sets = dest.map(
        lambda item: records.done_units(
            dest,
            fingerprints[item[0]],
            plan.images[item[0]].dest_path,
            item[1],
            generations[item[0]],
        ),
        resumed,
    )
    done_by_level = dict(zip(resumed, done_sets, strict=True))
    level_indices = [(i, j) for i in todo for j in range(len(plan.images[i].levels))]
    signatures, changed = recheck_done(
        plan, source, dest, level_indices, done_by_level, generations
    )
    work: list[LevelWork] = []
    for index in todo:
        image = plan.images[index]
        result = results[index]
        total_bytes = sum(level.nbytes for level in image.levels)
        done_bytes = 0
        for level_index, level in enumerate(image.levels):
            stale = changed.get((index, level_index), set())
            done = done_by_level.get((index, level.name), set()) - stale
            current = signatures[index, level_index]
            # a unit none of whose source blocks is stored is all zero: nothing to copy or
            # record (empty chunks are not stored), so work follows the blocks, never the
            # level's declared size
            missing = tuple(unit for unit in current if unit not in done)
            result.units_total += level.unit_count
            result.units_skipped += level.unit_count - len(missing)
            result.units_redone += len(stale)
            done_bytes += (
                level.nbytes * (level.unit_count - len(missing)) // max(level.unit_count, 1)
            )
            work.append(LevelWork(index, level_index, missing, current))
        progress.start(
            image.dest_path, result.units_total, total_bytes, result.units_skipped, done_bytes
        )

    redone = sum(len(units) for units in changed.values())
    if redone:
        progress.message(f"{redone} unit(s) redone: their source changed since they were copied")

    def report(outcome: UnitOutcome) -> None:
        check()
        image = plan.images[outcome.unit.image]
        result = results[outcome.unit.image]
        if outcome.failure is not None:
            result.failures.append(outcome.failure)
            progress.message(f"error: {outcome.failure}")
            return
        result.units_copied += 1
        result.bytes_read += outcome.nbytes
        progress.advance(image.dest_path, 1, outcome.nbytes)

    try:
        if any(len(w.units) for w in work):
            job = Job(
                plan, source, dest, options, tuple(work), progress, tuple(generations), run_id,
                check,
            )  # fmt: skip
            (executor or run_local)(job, report)
    finally:
        progress.close()  # also on Ctrl-C or a storage failure: leave the terminal tidy

    def finalize(index: int) -> None:
        """The ledger, then the OME metadata with the completion mark (in order), then the
        records go."""
        image = plan.images[index]
        confirmed()
        ledger.gather(dest, plan, image, generations[index])
        confirmed()
        if finishing is not None and image.dest_path == "":  # the root: its mark is the last
            finishing()
        writer.write_if_changed(image_final_documents(plan, image))
        records.forget_image(dest, image.dest_path)
        results[index].complete = True

    dest.map(finalize, [i for i in todo if not results[i].failures])
    if all(r.complete for r in results):
        # the groups (labels lists), then, last of all, the root with the completion mark
        groups = [group for group in plan.groups if group.attributes and group.path != ""]
        root = [group for group in plan.groups if group.path == "" and group.attributes]
        documents = [group_documents(plan, g.path, g.attributes) for g in [*groups, *root]]
        if any(writer.pending(docs) for docs in documents):
            confirmed()
        dest.map(writer.write_if_changed, documents[: len(groups)])
        for docs in documents[len(groups) :]:
            if finishing is not None:
                finishing()
            writer.write_if_changed(docs)
    elif any(group.path == "" for group in plan.groups):
        confirmed()
        _mark_finished_images(writer, plan, results)
    storage = iocounts.totals() - counted if executor is None else None
    return RunResult(results, time.monotonic() - started, storage)


def _mark_finished_images(writer: DestWriter, plan: Plan, results: list[ImageResult]) -> None:
    """When some images failed: list the label images this run finished in their ``labels``
    groups (with those the groups list already), then add every image this run finished to
    DEST's completion mark. The root keeps its other attributes."""
    found = writer.state
    finished = [image for image, r in zip(plan.images, results, strict=True) if r.complete]
    labels = [image for image in finished if image.kind == "label"]
    if labels:
        paths = [group.path for group in plan.groups]
        existing = marks.labels_of({path: found.attributes(path) for path in paths})
        for group in plan_groups(labels, plan.ngff_version, existing):
            if group.attributes and group.path != "":
                writer.write_if_changed(group_documents(plan, group.path, group.attributes))
    mark = found.completion_mark
    for image in finished:
        mark[image.dest_path] = plan.image_fingerprint(image)
    attributes = dict(found.attributes("") or {})
    provenance: dict[str, Any] = {COMPLETE_KEY: dict(sorted(mark.items()))}
    if plan.registry_dataset is not None:
        provenance[DATASET_KEY] = plan.registry_dataset
    attributes[PROVENANCE_KEY] = provenance
    writer.write_if_changed(group_documents(plan, "", attributes))


def job_units(job: Job) -> Iterator[WorkUnit]:
    """Every unit of ``job`` in plan order (image by image, level by level), each with the
    signature of its source blocks that its record will carry."""
    return (
        WorkUnit(w.image, w.level, unit, w.signature(unit)) for w in job.work for unit in w.units
    )


def job_worker(job: Job) -> UnitWorker:
    """The :class:`UnitWorker` that copies and records ``job``'s units in this process
    (every in-process executor makes its worker here, so they record units alike)."""
    return UnitWorker(
        job.plan, job.source, job.dest, job.options, job.generations, job.guard, job.run_id
    )


def run_local(job: Job, report: Report) -> None:
    """The embedded engine: ``options.workers`` threads, at most twice that many units in
    flight, in plan order (image by image, level by level)."""
    worker = job_worker(job)
    queue = job_units(job)
    window = max(1, 2 * job.options.workers)
    with cf.ThreadPoolExecutor(max_workers=job.options.workers, thread_name_prefix="copy") as pool:
        in_flight: dict[cf.Future[int], WorkUnit] = {}
        try:
            for task in queue:
                while len(in_flight) >= window:
                    _drain(in_flight, worker, report)
                if job.guard is not None:
                    job.guard()  # a run whose lease was taken starts no further unit
                in_flight[pool.submit(worker.copy, task)] = task
            while in_flight:
                _drain(in_flight, worker, report)
        except BaseException:
            for future in in_flight:
                future.cancel()
            raise


def _drain(in_flight: dict[cf.Future[int], WorkUnit], worker: UnitWorker, report: Report) -> None:
    done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
    for future in done:
        task = in_flight.pop(future)
        try:
            nbytes = future.result()
        except Exception as exc:
            report(UnitOutcome(task, failure=worker.failure(task, exc)))
            continue
        report(UnitOutcome(task, nbytes))
