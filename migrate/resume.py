"""Resume records kept at DEST, so that a killed run picks up where it stopped.

Layout, under ``DEST/.cellmap-migrate/images/<image dest path>/``:

- ``plan.json``: the image's plan and fingerprint, written before any of its chunks;
- ``done/<fingerprint>/<level>/<unit>``: one empty object per finished work unit, written
  only after every chunk of that unit is stored, so each record is independent and any
  number of workers (on any machine) can add records at once without coordination;
- ``complete.json``: written after the image's OME metadata; then ``done/`` is removed. What
  remains is one small JSON file per image in a hidden folder that Zarr readers ignore.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

from migrate.layout import dumps
from migrate.stores import Store, join_key
from schemas.plan import ImagePlan, Plan

STATE_DIR = ".cellmap-migrate"


def image_state_key(image_dest_path: str, *parts: str) -> str:
    return join_key(STATE_DIR, "images", image_dest_path, *parts)


def image_fingerprint(plan: Plan, image: ImagePlan) -> str:
    """A hash of everything that determines this image's output bytes."""
    payload = {
        "tool_version": plan.tool_version,
        "ngff_version": plan.ngff_version,
        "image": image.to_json_dict(),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ImageState(Enum):
    NEW = "new"  # nothing at DEST
    PARTIAL = "partial"  # started with the same plan
    COMPLETE = "complete"  # finished with the same plan
    DIFFERENT = "different"  # started or finished with another plan
    FOREIGN = "foreign"  # DEST holds data cellmap-migrate did not write


@dataclass(frozen=True)
class StateRecord:
    state: ImageState
    recorded: dict[str, Any] | None = None
    """The recorded plan.json or complete.json, when there is one."""


def read_json(store: Store, key: str) -> dict[str, Any] | None:
    raw = store.read(key)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def image_state(dest: Store, plan: Plan, image: ImagePlan) -> StateRecord:
    """Where this image stands at DEST relative to ``plan``."""
    fingerprint = image_fingerprint(plan, image)
    complete = read_json(dest, image_state_key(image.dest_path, "complete.json"))
    if complete is not None:
        same = complete.get("fingerprint") == fingerprint
        return StateRecord(ImageState.COMPLETE if same else ImageState.DIFFERENT, complete)
    started = read_json(dest, image_state_key(image.dest_path, "plan.json"))
    if started is not None:
        same = started.get("fingerprint") == fingerprint
        return StateRecord(ImageState.PARTIAL if same else ImageState.DIFFERENT, started)
    if dest.exists_prefix(image.dest_path):
        return StateRecord(ImageState.FOREIGN)
    return StateRecord(ImageState.NEW)


def record_start(dest: Store, plan: Plan, image: ImagePlan) -> None:
    dest.write(
        image_state_key(image.dest_path, "plan.json"),
        dumps(
            {
                "fingerprint": image_fingerprint(plan, image),
                "plan_fingerprint": plan.fingerprint,
                "tool_version": plan.tool_version,
                "ngff_version": plan.ngff_version,
                "source": plan.source,
                "image": image.to_json_dict(),
            }
        ),
    )


def done_prefix(fingerprint: str, image_dest_path: str, level: str) -> str:
    return image_state_key(image_dest_path, "done", fingerprint, level)


def record_unit(dest: Store, fingerprint: str, image_dest_path: str, level: str, unit: int) -> None:
    dest.write(join_key(done_prefix(fingerprint, image_dest_path, level), str(unit)), b"")


def done_units(dest: Store, fingerprint: str, image_dest_path: str, level: str) -> set[int]:
    """Indices of the work units of one level already recorded as finished."""
    done: set[int] = set()
    for key in dest.list_keys(done_prefix(fingerprint, image_dest_path, level)):
        name = key.rsplit("/", 1)[-1]
        if name.isdigit():
            done.add(int(name))
    return done


def record_complete(dest: Store, plan: Plan, image: ImagePlan, summary: dict[str, Any]) -> None:
    """Mark the image finished, then drop its per-unit records."""
    started = read_json(dest, image_state_key(image.dest_path, "plan.json")) or {}
    dest.write(
        image_state_key(image.dest_path, "complete.json"),
        dumps({**started, "fingerprint": image_fingerprint(plan, image), "summary": summary}),
    )
    dest.delete_prefix(image_state_key(image.dest_path, "done"))
    dest.delete_prefix(image_state_key(image.dest_path, "plan.json"))


def recorded_images(dest: Store) -> list[dict[str, Any]]:
    """Every image that has a plan.json or complete.json at DEST, with its ``state`` key set."""
    found: list[dict[str, Any]] = []
    base = join_key(STATE_DIR, "images")
    keys = sorted(
        key
        for key in dest.list_keys(base)
        if key.endswith(("plan.json", "complete.json")) and "/done/" not in f"/{key}"
    )
    for key in keys:
        record = read_json(dest, join_key(base, key))
        if record is None:
            continue
        record["state"] = "complete" if key.endswith("complete.json") else "partial"
        found.append(record)
    return found
