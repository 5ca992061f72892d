"""The dry run: render a plan and the metadata it would change, as text or JSON."""

from __future__ import annotations

import difflib
import json
from typing import Any

from migrate.storage import Store
from migrate.target.codecs import copy_path
from migrate.target.layout import all_documents, dumps
from migrate.target.transforms import level_transforms, ome_multiscale
from schemas.plan import Plan


def _existing_text(dest: Store | None, key: str) -> str | None:
    if dest is None:
        return None
    raw = dest.read(key)
    if raw is None:
        return None
    try:
        return dumps(json.loads(raw)).decode()
    except (UnicodeDecodeError, json.JSONDecodeError):
        return raw.decode("utf-8", errors="replace")


def metadata_diff(plan: Plan, dest: Store | None) -> list[str]:
    """A unified diff per metadata file: what DEST holds now → what the plan writes.

    Existing JSON is re-rendered in our layout first, so only real changes show.
    """
    lines: list[str] = []
    documents = all_documents(plan)
    existing = (
        dest.map(lambda key: _existing_text(dest, key), documents)
        if dest is not None
        else [None] * len(documents)
    )
    for (key, document), old in zip(documents.items(), existing, strict=True):
        new = dumps(document).decode()
        if old == new:
            continue
        lines.extend(
            difflib.unified_diff(
                [] if old is None else old.splitlines(keepends=True),
                new.splitlines(keepends=True),
                fromfile="/dev/null" if old is None else f"a/{key}",
                tofile=f"b/{key}",
            )
        )
    return [line if line.endswith("\n") else line + "\n" for line in lines]


def render_plan(plan: Plan, *, detailed: bool = True, fast: bool = True) -> str:
    """A human summary: per image, source → destination and each level's layout.

    ``detailed`` adds where each metadata value came from and one line per level, with how
    its chunks will be made (``fast`` False: ``--no-transplant``); without it each image is
    one line (what ``convert`` prints before it starts copying).
    """
    out = [
        f"source: {plan.source}" + (f" (only {plan.source_inner})" if plan.source_inner else ""),
        f"dest:   {plan.dest}",
        f"OME-NGFF {plan.ngff_version}, plan {plan.fingerprint}, {len(plan.images)} image(s)",
    ]
    root = plan.source.rstrip("/") + "/"
    for image in plan.images:
        units = sum(level.unit_count for level in image.levels)
        codecs = sorted({level.codec.describe() for level in image.levels})
        if not detailed:
            out.append(
                f"  {image.kind} {image.source_path} -> {image.dest_path}: "
                f"{len(image.levels)} level(s), {', '.join(codecs)}, {units} unit(s)"
            )
            out.extend(f"    warning: {warning}" for warning in image.warnings)
            continue
        out.append("")
        out.append(f"{image.kind} {image.source_path} -> {image.dest_path}")
        for what, where in image.sources.items():
            out.append(f"  {what}: from {where.replace(root, '')}")
        for level in image.levels:
            shard = f" shard {_shape(level.shard)}" if level.shard else ""
            out.append(
                f"  {level.name:>4}  shape {_shape(level.shape)}  chunks {_shape(level.chunks)}"
                f"{shard}  {level.dtype}  {level.codec.describe()}"
                f"  [{level.codec.reason}; {copy_path(level, fast=fast)}]"
                f"  {level.unit_count} unit(s)"
            )
        out.extend(f"  warning: {warning}" for warning in image.warnings)
        out.extend(f"  CONFLICT: {conflict}" for conflict in image.conflicts)
    gap = "\n" if detailed else ""
    for orphan in plan.orphan_arrays:
        out.append(f"{gap}not part of any multiscale image (skipped): {orphan}")
    return "\n".join(out) + "\n"


def plan_levels(plan: Plan, *, fast: bool = True) -> list[dict[str, Any]]:
    """One row per level of every image of ``plan``: where it goes, its shape, chunks
    (and shards), dtype, output codec, how its chunks are made (``fast`` False:
    ``--no-transplant``), its OME scale and translation and their units. Shapes, chunks,
    scales and translations in C order (the image's axes, z, y, x for 3-D)."""
    rows = []
    for image in plan.images:
        multiscale = ome_multiscale(image.attributes)
        transforms = level_transforms(multiscale)
        units = sorted({str(axis.get("unit") or "") for axis in multiscale["axes"]})
        for level in image.levels:
            scale, translation = transforms[level.name]
            rows.append(
                {
                    "image": image.dest_path,
                    "kind": image.kind,
                    "level": level.name,
                    "axes": [str(axis.get("name")) for axis in multiscale["axes"]],
                    "shape": list(level.shape),
                    "chunks": list(level.chunks),
                    "shard": list(level.shard) if level.shard else None,
                    "dtype": level.dtype,
                    "codec": level.codec.describe(),
                    "copy_path": copy_path(level, fast=fast),
                    "scale": list(scale),
                    "translation": list(translation),
                    "unit": ", ".join(unit for unit in units if unit) or None,
                    "units_of_work": level.unit_count,
                }
            )
    return rows


def render_plan_levels(plan: Plan, *, fast: bool = True) -> str:
    """The plan only (``--plan-only``): a few header lines, then one line per level (see
    :func:`plan_levels`), then the plan's warnings and conflicts."""
    rows = plan_levels(plan, fast=fast)
    table = [["image", "level", "shape", "chunks", "dtype", "codec", "copy path", "scale",
              "translation", "unit"]]  # fmt: skip
    for row in rows:
        chunks = _shape(row["chunks"]) + (
            f" in shards {_shape(row['shard'])}" if row["shard"] else ""
        )
        table.append([
            row["image"], row["level"], _shape(row["shape"]), chunks, row["dtype"], row["codec"],
            row["copy_path"], _numbers(row["scale"]), _numbers(row["translation"]),
            row["unit"] or "-",
        ])  # fmt: skip
    axes = {", ".join(row["axes"]) for row in rows}
    order = f" ({axes.pop()})" if len(axes) == 1 else " (each image's axes)"
    out = [
        f"source: {plan.source}" + (f" (only {plan.source_inner})" if plan.source_inner else ""),
        f"dest:   {plan.dest}",
        f"OME-NGFF {plan.ngff_version}, plan {plan.fingerprint}, {len(plan.images)} image(s), "
        f"{len(rows)} level(s); shapes, chunks, scales and translations in C order{order}",
        "",
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    out.extend(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    )
    for image in plan.images:
        out.extend(f"{image.dest_path}: warning: {warning}" for warning in image.warnings)
        out.extend(f"{image.dest_path}: CONFLICT: {conflict}" for conflict in image.conflicts)
    out.extend(f"not part of any multiscale image (skipped): {o}" for o in plan.orphan_arrays)
    return "\n".join(out) + "\n"


def _numbers(values: list[float]) -> str:
    return ", ".join(f"{value:.12g}" for value in values)


def _shape(shape: tuple[int, ...] | list[int] | None) -> str:
    return "x".join(str(n) for n in shape or ())


def plan_json(plan: Plan, diff: list[str]) -> dict[str, Any]:
    """The whole plan as one JSON document, with its fingerprint and metadata diff."""
    return {"fingerprint": plan.fingerprint, "plan": plan.to_json_dict(), "diff": "".join(diff)}
