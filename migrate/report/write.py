"""Write the report of a run into a local directory: ``index.html`` (everything inline) and
``report.json`` (what a later ``verify --report`` into the same directory keeps: the plan,
the metadata diff, the run and its timeline)."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

from migrate import __version__
from migrate.check.inventory import FinishedImage, finished_images
from migrate.check.verify import VerifyResult
from migrate.copy.tsio import n5_metadata
from migrate.dest import marks
from migrate.errors import MigrationError
from migrate.report.html import IndexEntry, Page, render_index, render_page
from migrate.report.model import DestLevel, ReportImage, image_of_dest, images_of_plan
from migrate.report.previews import Reader, all_previews
from migrate.report.timeline import Timeline
from migrate.source.parse import parse_attrs
from migrate.storage import Store, join_key
from schemas.n5 import N5ArrayAttributes
from schemas.plan import Plan, PrecomputedLevel

INDEX = "index.html"
DATA = "report.json"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _title(dest: Store) -> str:
    return f"cellmap-migrate report: {dest.url.rstrip('/').rsplit('/', 1)[-1]}"


def _prepare_dir(directory: str) -> Path:
    if directory.startswith("s3://"):
        raise MigrationError(f"{directory}: --report writes to a local directory")
    path = Path(directory).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MigrationError(f"{path}: cannot create the report directory: {exc}") from None
    if not path.is_dir():
        raise MigrationError(f"{path}: --report needs a directory")
    return path


def _write(path: Path, page: Page, data: dict[str, Any]) -> Path:
    """index.html and report.json, each written whole under a temporary name, then renamed."""
    for name, text in ((INDEX, render_page(page)), (DATA, json.dumps(data, indent=1) + "\n")):
        partial = path / f".{name}.partial"
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path / name)
    return (path / INDEX).absolute()


def write_convert_report(
    directory: str,
    plan: Plan,
    source: Store,
    dest: Store,
    diff: list[str],
    plan_text: str,
    run: dict[str, Any] | None,
    timeline: Timeline | None,
    *,
    fast: bool = True,
) -> Path:
    """The report of ``convert`` (``run`` None: a dry run, nothing written at DEST)."""
    path = _prepare_dir(directory)
    images = images_of_plan(plan, fast=fast)
    previews = all_previews(Reader(source, dest, dest_written=run is not None), images)
    created = _now()
    convert = {
        "created": created,
        "fingerprint": plan.fingerprint,
        "plan_text": plan_text,
        "diff": diff,
        "run": run,
        "timeline": timeline.to_json() if timeline is not None else None,
    }
    page = Page(
        title=_title(dest),
        source=plan.source,
        dest=plan.dest,
        created=created,
        tool_version=__version__,
        previews=previews,
        plan_text=plan_text,
        diff=diff,
        run=run,
        timeline=timeline,
        notes=["dry run: nothing was written at the destination"] if run is None else [],
    )
    data = {"source": plan.source, "dest": plan.dest, "convert": convert}
    return _write(path, page, data)


def _group_attributes(dest: Store, image: FinishedImage) -> dict[str, Any]:
    if image.ngff_version == "0.4":
        return marks.read_json(dest, join_key(image.dest_path, ".zattrs")) or {}
    document = marks.read_json(dest, join_key(image.dest_path, "zarr.json")) or {}
    return dict(document.get("attributes") or {})


def _source_metadata(attributes: dict[str, Any], where: str) -> dict[str, Any] | None:
    try:
        return n5_metadata(parse_attrs(N5ArrayAttributes, attributes, where).to_json_dict())
    except MigrationError:
        return None


def images_at_dest(dest: Store) -> list[ReportImage]:
    """Every finished image at DEST, as its own metadata describes it."""
    out = []
    for image in finished_images(dest):
        precomputed = image.source_format == "precomputed"
        levels = [
            DestLevel(
                level.name,
                level.dest_path,
                level.shape,
                level.dtype,
                level.source_path,
                None if precomputed else _source_metadata(level.source_attributes, level.dest_path),
                level.grid,
                source_root=image.source or None,
                precomputed=PrecomputedLevel(
                    volume=image.source_path, scale_index=index, scale=level.source_attributes
                )
                if precomputed
                else None,
            )
            for index, level in enumerate(image.levels)
        ]
        out.append(
            image_of_dest(
                image.dest_path,
                image.source_path,
                image.kind,
                image.ngff_version,
                _group_attributes(dest, image),
                levels,
            )
        )
    return sorted(out, key=lambda image: image.dest_path)


def _earlier(path: Path, dest: Store) -> dict[str, Any]:
    """What a convert report in this directory recorded about the same DEST, if anything."""
    try:
        data = json.loads((path / DATA).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("dest") != dest.url:
        return {}
    return data.get("convert") or {}


def write_verify_report(
    directory: str, source: Store, dest: Store, result: VerifyResult, *, sample: float
) -> Path:
    """The report of ``verify``; keeps the plan, diff and run of an earlier ``convert
    --report`` into the same directory for the same DEST."""
    path = _prepare_dir(directory)
    convert = _earlier(path, dest)
    images = images_at_dest(dest)
    created = _now()
    verify = {"created": created, "sample": sample, "result": result.to_json()}
    timeline = convert.get("timeline")
    page = Page(
        title=_title(dest),
        source=source.url,
        dest=dest.url,
        created=created,
        tool_version=__version__,
        previews=all_previews(Reader(source, dest), images),
        plan_text=convert.get("plan_text"),
        diff=convert.get("diff"),
        run=convert.get("run"),
        timeline=Timeline.from_json(timeline) if timeline else None,
        verify=verify,
        notes=[] if convert else ["no convert report for this destination in this directory"],
    )
    data = {"source": source.url, "dest": dest.url, "verify": verify}
    if convert:
        data["convert"] = convert
    return _write(path, page, data)


def write_index(directory: str, title: str, entries: list[IndexEntry]) -> Path:
    """The index page of a bulk run (``DIR/index.html``) beside the datasets' reports
    (``DIR/<dataset>/index.html``, written by :func:`write_convert_report` or
    :func:`write_verify_report` with ``DIR/<dataset>``)."""
    path = _prepare_dir(directory)
    partial = path / f".{INDEX}.partial"
    partial.write_text(render_index(title, _now(), entries), encoding="utf-8")
    os.replace(partial, path / INDEX)
    return (path / INDEX).absolute()
