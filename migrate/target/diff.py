"""The dry run: render a plan and the metadata it would change, as text or JSON."""

from __future__ import annotations

import difflib
import json
from typing import Any

from migrate.storage import Store
from migrate.target.codecs import copy_path
from migrate.target.layout import all_documents, dumps
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
    if plan.dataset is not None:
        volumes = sum(1 for image in plan.images if image.format == "precomputed")
        out.insert(0, f"dataset: {plan.dataset} ({volumes} precomputed volume(s))")
    roots = [plan.source.rstrip("/") + "/"]
    roots += [plan.dataset.rstrip("/") + "/"] if plan.dataset else []
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
            for root in roots:  # the N5 root first: it is inside the dataset folder
                where = where.replace(root, "")
            out.append(f"  {what}: from {where}")
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


def _shape(shape: tuple[int, ...] | None) -> str:
    return "x".join(str(n) for n in shape or ())


def plan_json(plan: Plan, diff: list[str]) -> dict[str, Any]:
    """The whole plan as one JSON document, with its fingerprint and metadata diff."""
    return {"fingerprint": plan.fingerprint, "plan": plan.to_json_dict(), "diff": "".join(diff)}
