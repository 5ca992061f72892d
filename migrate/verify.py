"""Verification: every voxel (or a random sample of work units) of DEST equals SRC, and the
metadata is valid OME-NGFF. Boxes are reported in **C order** (z, y, x)."""

from __future__ import annotations

import concurrent.futures as cf
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from migrate import resume
from migrate.errors import MigrationError
from migrate.stores import Store
from migrate.tsio import box_slices, open_dest_readonly, open_source, ts_error_text
from migrate.validate import validate_image, validate_labels_listing
from schemas.plan import ImagePlan


@dataclass
class VerifyResult:
    images: int = 0
    units_checked: int = 0
    bytes_compared: int = 0
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return vars(self)


def _compare(source: Any, dest: Any, box: tuple[tuple[int, int], ...]) -> tuple[int, str | None]:
    region = box_slices(box)
    a = source[region].read().result()
    b = dest[region].read().result()
    if np.array_equal(a, b):
        return int(a.nbytes), None
    diff = np.argwhere(a != b)
    lo = diff.min(axis=0) + [start for start, _ in box]
    hi = diff.max(axis=0) + [start for start, _ in box] + 1
    where = ", ".join(f"{int(s)}:{int(e)}" for s, e in zip(lo, hi, strict=True))
    return int(a.nbytes), f"{len(diff)} voxel(s) differ in box [{where}] (z, y, x order)"


def verify(
    source: Store, dest: Store, *, sample: float = 1.0, workers: int = 2, seed: int | None = None
) -> VerifyResult:
    """Compare every recorded image at DEST with SRC; collect every problem found."""
    records = resume.recorded_images(dest)
    if not records:
        raise MigrationError(
            f"{dest.display()}: no cellmap-migrate output found (nothing to verify)"
        )
    result = VerifyResult()
    rng = random.Random(seed)
    for record in records:
        image = ImagePlan.model_validate(record["image"])
        version = record["ngff_version"]
        result.images += 1
        if record["state"] != "complete":
            result.problems.append(f"{dest.display(image.dest_path)}: migration is not complete")
            continue
        result.problems.extend(validate_image(dest, image, version))
        if image.kind == "label":
            result.problems.extend(validate_labels_listing(dest, image, version))
        for level in image.levels:
            where = f"{image.dest_path}/{level.name}"
            try:
                src = open_source(source, level, workers)
                dst = open_dest_readonly(dest, level.dest_path, version, workers)
            except Exception as exc:
                result.problems.append(f"{where}: cannot open: {ts_error_text(exc)}")
                continue
            if tuple(src.shape) != tuple(dst.shape) or src.dtype != dst.dtype:
                result.problems.append(
                    f"{where}: shape/dtype {tuple(dst.shape)} {dst.dtype} != source "
                    f"{tuple(src.shape)} {src.dtype}"
                )
                continue
            units = list(range(level.unit_count))
            if sample < 1.0:
                units = sorted(rng.sample(units, max(1, round(sample * len(units)))))
            with cf.ThreadPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(_compare, src, dst, level.unit_box(u)): u for u in units}
                for future in cf.as_completed(futures):
                    try:
                        nbytes, problem = future.result()
                    except Exception as exc:
                        problem, nbytes = f"unit {futures[future]}: {ts_error_text(exc)}", 0
                    result.units_checked += 1
                    result.bytes_compared += nbytes
                    if problem:
                        result.problems.append(f"{where}: {problem}")
    return result
