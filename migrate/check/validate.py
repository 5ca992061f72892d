"""Validation of written OME-NGFF metadata with ome-zarr-models, plus the checks it skips.

The metadata documents are read through our own store layer (local or S3) into an in-memory
Zarr store, so validation never depends on zarr-python reaching the destination itself.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import zarr
import zarr.storage
from zarr.core.buffer import default_buffer_prototype

from migrate.storage import Store, join_key
from migrate.target.layout import METADATA_NAMES
from schemas.ngff import SPACE_UNITS, TIME_UNITS
from schemas.plan import ImagePlan, NgffVersion


def _memory_copy(dest: Store, image: ImagePlan) -> zarr.storage.MemoryStore:
    """Copy the image's metadata documents (not its chunks) into a fresh MemoryStore."""
    store = zarr.storage.MemoryStore()
    keys = [join_key(image.dest_path, name) for name in METADATA_NAMES]
    for level in image.levels:
        keys.extend(join_key(level.dest_path, name) for name in METADATA_NAMES)
    prototype = default_buffer_prototype()

    async def fill() -> None:
        for key in keys:
            data = dest.read(key)
            if data is not None:
                await store.set(key, prototype.buffer.from_bytes(data))

    asyncio.run(fill())
    return store


def validate_image(dest: Store, image: ImagePlan, ngff_version: NgffVersion) -> list[str]:
    """Problems with one written image's metadata ([] when it is valid): the image group
    and the level arrays the plan writes, as they are at DEST."""
    import ome_zarr_models.v04 as v04
    import ome_zarr_models.v05 as v05

    problems: list[str] = []
    store = _memory_copy(dest, image)
    where = dest.display(image.dest_path)
    try:
        group = zarr.open_group(
            store, path=image.dest_path, mode="r", zarr_format=2 if ngff_version == "0.4" else 3
        )
    except Exception as exc:
        return [f"{where}: cannot open as a Zarr group: {exc}"]
    models: dict[tuple[str, str], Any] = {
        ("0.4", "image"): v04.Image,
        ("0.4", "label"): v04.ImageLabel,
        ("0.5", "image"): v05.Image,
        ("0.5", "label"): v05.ImageLabel,
    }
    try:
        models[(ngff_version, image.kind)].from_zarr(group)
    except Exception as exc:
        first = str(exc).strip().splitlines()
        problems.append(
            f"{where}: not a valid OME-NGFF {ngff_version} {image.kind}: {' '.join(first[:3])}"
        )
    attrs: Any = dict(group.attrs)
    ome = attrs.get("ome", attrs)
    for multiscale in ome.get("multiscales", []):
        for axis in multiscale.get("axes", []):
            allowed = {"space": SPACE_UNITS, "time": TIME_UNITS}.get(axis.get("type"))
            unit = axis.get("unit")
            if allowed is not None and unit is not None and unit not in allowed:
                problems.append(
                    f"{where}: axis {axis.get('name')!r} unit {unit!r} is not an OME-NGFF unit"
                )
    return problems


def validate_labels_listing(dest: Store, image: ImagePlan, ngff_version: NgffVersion) -> list[str]:
    """A label image must be listed by its parent ``labels`` group."""
    parent, _, name = image.dest_path.rpartition("/")
    key = join_key(parent, ".zattrs" if ngff_version == "0.4" else "zarr.json")
    raw = dest.read(key)
    attrs: Any = json.loads(raw) if raw else {}
    if ngff_version == "0.5":
        attrs = attrs.get("attributes", {}).get("ome", {})
    if name not in (attrs.get("labels") or []):
        return [f"{dest.display(key)}: labels: does not list label image {name!r}"]
    return []
