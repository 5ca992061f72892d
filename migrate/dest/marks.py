"""What DEST's Zarr metadata says about cellmap-migrate's work: group attributes, each
image's completion mark (the fingerprint in its ``cellmap-migrate`` provenance) and DEST's
own completion mark (the root group's ``cellmap-migrate.complete``: every finished image by
fingerprint), and the label names the ``labels`` groups list.

Readers take a store; the ``…_of`` functions take attributes already read (a
:class:`~migrate.dest.state.DestState` holds them), so a run reads each document once.
"""

from __future__ import annotations

import json
from typing import Any

from migrate.storage import Store, join_key
from migrate.target.layout import PROVENANCE_KEY
from migrate.target.plan import COMPLETE_KEY

GROUP_DOCUMENTS = ("zarr.json", ".zattrs")
"""The documents holding a group's user attributes: Zarr v3, then v2."""


def parse_json(raw: bytes | None) -> dict[str, Any] | None:
    """A JSON object from stored bytes; None when absent, not JSON or not an object."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_json(store: Store, key: str) -> dict[str, Any] | None:
    return parse_json(store.read(key))


def attributes_of(v3: dict[str, Any] | None, v2: dict[str, Any] | None) -> dict[str, Any] | None:
    """A group's user attributes from its parsed ``zarr.json`` (v3) or ``.zattrs`` (v2)."""
    if v3 is not None:
        attributes = v3.get("attributes", {})
        return attributes if isinstance(attributes, dict) else {}
    return v2


def group_attributes(store: Store, path: str) -> dict[str, Any] | None:
    """A Zarr group's user attributes (v2 ``.zattrs`` or v3 ``zarr.json``), None if absent.

    On a store that takes calls in parallel (S3) both documents are asked for at once, one
    round trip instead of two when the group is v2 (or absent); locally, one at a time."""
    keys = [join_key(path, name) for name in GROUP_DOCUMENTS]
    if store.concurrency > 1:
        v3, v2 = store.map(lambda key: read_json(store, key), keys)
    else:
        v3 = read_json(store, keys[0])
        v2 = None if v3 is not None else read_json(store, keys[1])
    return attributes_of(v3, v2)


def image_mark_of(attributes: dict[str, Any] | None) -> dict[str, Any] | None:
    """The provenance of a finished image (it carries the fingerprint), from its group's
    attributes, or None."""
    provenance = (attributes or {}).get(PROVENANCE_KEY)
    if isinstance(provenance, dict) and provenance.get("fingerprint"):
        return provenance
    return None


def completion_mark(store: Store, path: str) -> dict[str, Any] | None:
    """The provenance of a finished image at ``path`` (it carries the fingerprint), or None."""
    return image_mark_of(group_attributes(store, path))


def dest_completion_mark(dest: Store) -> dict[str, str]:
    """The images DEST's completion mark lists as finished (dest path → image fingerprint);
    empty when there is no mark."""
    return completion_of(group_attributes(dest, ""))


def completion_of(root_attributes: dict[str, Any] | None) -> dict[str, str]:
    """The completion mark in the root group's attributes (see :func:`dest_completion_mark`)."""
    provenance = (root_attributes or {}).get(PROVENANCE_KEY)
    complete = provenance.get(COMPLETE_KEY) if isinstance(provenance, dict) else None
    if not isinstance(complete, dict):
        return {}
    return {str(path): str(fp) for path, fp in complete.items() if isinstance(fp, str)}


def listed_labels(dest: Store, group_paths: list[str]) -> dict[str, tuple[str, ...]]:
    """The label names the ``labels`` groups at ``group_paths`` already list at DEST
    (groups that list none are left out); the groups are read in parallel where the store
    allows."""
    found = dest.map(lambda path: group_attributes(dest, path), group_paths)
    return labels_of(dict(zip(group_paths, found, strict=True)))


def labels_of(attributes: dict[str, dict[str, Any] | None]) -> dict[str, tuple[str, ...]]:
    """The label names each group (path → its attributes) lists (see :func:`listed_labels`)."""
    found: dict[str, tuple[str, ...]] = {}
    for path, attrs in attributes.items():
        group: Any = attrs or {}
        labels = group.get("labels") or group.get("ome", {}).get("labels") or []
        if isinstance(labels, list) and labels:
            found[path] = tuple(str(name) for name in labels)
    return found
