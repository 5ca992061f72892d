"""The copy engine: run a plan's work units in parallel, record each, finalize metadata last.

Work units are chunk-aligned (shard-aligned) boxes in **C order** (z, y, x). Memory stays
bounded: at most ``2 × workers`` units are in flight, each at most ``unit_bytes`` of voxels.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from migrate import resume
from migrate.copiers import make_copier
from migrate.errors import PlanMismatchError, SourceDataError
from migrate.layout import (
    Documents,
    dumps,
    group_documents,
    image_final_documents,
    image_start_documents,
)
from migrate.progress import NullProgress, Progress
from migrate.stores import Store, join_key
from migrate.tsio import HandleCache, open_source, ts_error_text
from schemas.plan import ImagePlan, LevelPlan, Plan


@dataclass(frozen=True)
class EngineOptions:
    workers: int = 2
    overwrite: bool = False
    transplant: bool = True
    decode_check: bool = True


@dataclass
class ImageResult:
    dest_path: str
    state_before: str
    units_total: int = 0
    units_skipped: int = 0
    units_copied: int = 0
    bytes_read: int = 0
    failures: list[str] = field(default_factory=list)
    complete: bool = False


@dataclass
class RunResult:
    images: list[ImageResult]
    seconds: float

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
        }


def _write_if_changed(dest: Store, docs: Documents) -> None:
    for key, document in docs.items():
        data = dumps(document)
        if dest.read(key) != data:
            dest.write(key, data)


def _write_if_absent(dest: Store, docs: Documents) -> None:
    for key, document in docs.items():
        if dest.read(key) is None:
            dest.write(key, dumps(document))


def explain_difference(recorded: dict[str, Any] | None, plan: Plan, image: ImagePlan) -> str:
    """Which settings differ between what DEST was started with and this plan."""
    if recorded is None:
        return f"{image.dest_path} exists at DEST but was not written by cellmap-migrate"
    differences = []
    if recorded.get("ngff_version") != plan.ngff_version:
        differences.append(f"ngff version {recorded.get('ngff_version')} → {plan.ngff_version}")
    if recorded.get("tool_version") != plan.tool_version:
        differences.append(f"tool version {recorded.get('tool_version')} → {plan.tool_version}")
    old_levels = {lv["name"]: lv for lv in recorded.get("image", {}).get("levels", [])}
    for level in image.levels:
        old = old_levels.get(level.name)
        if old is None:
            differences.append(f"{level.name} is new")
            continue
        new = level.to_json_dict()
        for key in ("codec", "chunks", "shard", "dtype", "shape"):
            if old.get(key) != new.get(key):
                differences.append(
                    f"{level.name} {key} {_short(old.get(key))} → {_short(new.get(key))}"
                )
    if not differences and recorded.get("image", {}).get("attributes") != image.attributes:
        differences.append("metadata (scale/translation/axes/provenance) differs")
    return f"{image.dest_path} was started with other settings: " + "; ".join(
        differences or ["plan differs"]
    )


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "/".join(
            str(value[k]) for k in ("name", "cname", "level") if value.get(k) is not None
        )
    return str(value)


def bad_blocks(
    source: Store, level: LevelPlan, box: tuple[tuple[int, int], ...], workers: int
) -> list[str]:
    """The N5 keys (x/y/z) of the source blocks in ``box`` that cannot be decoded."""
    array = open_source(source, level, workers)
    ranges = [
        range(start // b, math.ceil(stop / b))
        for (start, stop), b in zip(box, level.source_blocks, strict=True)
    ]
    bad = []
    for position in np.ndindex(*(len(r) for r in ranges)):
        block = [r[p] for r, p in zip(ranges, position, strict=True)]
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
class _Task:
    image: int
    level: int
    unit: int


def prepare_dest(
    dest: Store, plan: Plan, options: EngineOptions
) -> tuple[list[ImageResult], list[int]]:
    """Check every image's state at DEST (refusing mismatches before anything is written),
    then write the metadata that must exist before chunks. Returns results and the indices
    of the images that still need copying."""
    results: list[ImageResult] = []
    todo: list[int] = []
    states = [resume.image_state(dest, plan, image) for image in plan.images]
    for image, record in zip(plan.images, states, strict=True):
        if (
            record.state in (resume.ImageState.DIFFERENT, resume.ImageState.FOREIGN)
            and not options.overwrite
        ):
            raise PlanMismatchError(
                explain_difference(record.recorded, plan, image) + "; use --overwrite to replace it"
            )
    for index, (image, record) in enumerate(zip(plan.images, states, strict=True)):
        result = ImageResult(image.dest_path, record.state.value)
        results.append(result)
        if record.state is resume.ImageState.COMPLETE:
            result.complete = True
            continue
        if record.state in (resume.ImageState.DIFFERENT, resume.ImageState.FOREIGN):
            dest.delete_prefix(image.dest_path)
            dest.delete_prefix(resume.image_state_key(image.dest_path))
        todo.append(index)
    if todo:
        for group in plan.groups:
            _write_if_absent(dest, group_documents(plan, group.path, {}))
    for index in todo:
        image = plan.images[index]
        if states[index].state is not resume.ImageState.PARTIAL:
            resume.record_start(dest, plan, image)
        _write_if_changed(dest, image_start_documents(plan, image))
    return results, todo


def run_plan(
    plan: Plan,
    source: Store,
    dest: Store,
    options: EngineOptions,
    progress: Progress | None = None,
) -> RunResult:
    """Migrate every image of ``plan``; resumable, metadata finalized last."""
    progress = progress or NullProgress()
    started = time.monotonic()
    results, todo = prepare_dest(dest, plan, options)
    fingerprints = {i: resume.image_fingerprint(plan, plan.images[i]) for i in todo}
    pending: dict[int, int] = {}
    tasks: list[Iterator[_Task]] = []
    for index in todo:
        image = plan.images[index]
        result = results[index]
        total_bytes = sum(level.nbytes for level in image.levels)
        done_bytes = 0
        remaining = 0
        for level_index, level in enumerate(image.levels):
            done = resume.done_units(dest, fingerprints[index], image.dest_path, level.name)
            result.units_total += level.unit_count
            result.units_skipped += len(done)
            done_bytes += level.nbytes * len(done) // max(level.unit_count, 1)
            missing = [u for u in range(level.unit_count) if u not in done]
            remaining += len(missing)
            tasks.append(iter([_Task(index, level_index, u) for u in missing]))
        pending[index] = remaining
        progress.start(
            image.dest_path, result.units_total, total_bytes, result.units_skipped, done_bytes
        )
    cache = HandleCache(source, dest, plan.ngff_version, options.workers)
    copier = make_copier(plan, source, dest, cache, options)

    def work(task: _Task) -> int:
        image = plan.images[task.image]
        level = image.levels[task.level]
        nbytes = copier(level, task.unit)
        resume.record_unit(dest, fingerprints[task.image], image.dest_path, level.name, task.unit)
        return nbytes

    queue = (task for it in tasks for task in it)
    window = max(1, 2 * options.workers)
    with cf.ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="copy") as pool:
        in_flight: dict[cf.Future[int], _Task] = {}
        try:
            for task in queue:
                while len(in_flight) >= window:
                    _drain(in_flight, plan, results, source, options, progress, pending)
                in_flight[pool.submit(work, task)] = task
            while in_flight:
                _drain(in_flight, plan, results, source, options, progress, pending)
        except BaseException:
            for future in in_flight:
                future.cancel()
            raise
    for index in todo:
        result = results[index]
        if not result.failures:
            image = plan.images[index]
            _write_if_changed(dest, image_final_documents(plan, image))
            resume.record_complete(
                dest,
                plan,
                image,
                {"units": result.units_total, "bytes": sum(lv.nbytes for lv in image.levels)},
            )
            result.complete = True
    if all(r.complete for r in results):
        for group in plan.groups:
            if group.attributes:
                _write_if_changed(dest, group_documents(plan, group.path, group.attributes))
    progress.close()
    return RunResult(results, time.monotonic() - started)


def _drain(
    in_flight: dict[cf.Future[int], _Task],
    plan: Plan,
    results: list[ImageResult],
    source: Store,
    options: EngineOptions,
    progress: Progress,
    pending: dict[int, int],
) -> None:
    done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
    for future in done:
        task = in_flight.pop(future)
        image = plan.images[task.image]
        level = image.levels[task.level]
        result = results[task.image]
        try:
            nbytes = future.result()
        except SourceDataError as exc:
            result.failures.append(str(exc))
            progress.message(f"error: {exc}")
            continue
        except Exception as exc:
            box = level.unit_box(task.unit)
            keys = bad_blocks(source, level, box, options.workers)
            message = (
                "; ".join(keys)
                if keys
                else f"{image.dest_path}/{level.name} unit {task.unit} {list(box)}: "
                f"{ts_error_text(exc)}"
            )
            result.failures.append(message)
            progress.message(f"error: {message}")
            continue
        result.units_copied += 1
        result.bytes_read += nbytes
        pending[task.image] -= 1
        progress.advance(image.dest_path, 1, nbytes)
