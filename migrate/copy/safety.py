"""What is at DEST that cellmap-migrate did not write, so that nothing of it is ever replaced.

cellmap-migrate writes, under an image's path, only Zarr metadata (``.zgroup``, ``.zattrs``,
``.zarray``, ``zarr.json``) and, inside the image's level arrays, chunk keys (``0/1/2``,
``c/0/1/2``) and the temporary files of its chunk writers (``.<name>….tmp``). Anything else
(an N5 ``attributes.json``, a user's notes, another tool's arrays) is foreign: a path that
holds it is refused, with or without ``--overwrite``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable

from migrate.copy import resume
from migrate.storage import Store, join_key

N5_ATTRIBUTES = "attributes.json"
ZARR_METADATA = frozenset({".zgroup", ".zattrs", ".zarray", "zarr.json"})
_CHUNK_KEY = re.compile(r"^(c/)?\d+([./]\d+)*$")
_TEMPORARY = re.compile(r"(^|/)\.[^/]+\.tmp$")
SHOWN = 3
"""Foreign keys named in a message."""


def written_by_us(key: str, levels: Iterable[str]) -> bool:
    """Whether ``key`` (relative to an image's path) is a kind of file cellmap-migrate
    writes there, given the names of the image's level arrays."""
    if key in ZARR_METADATA or _TEMPORARY.search(key):
        return True
    level, _, rest = key.partition("/")
    if level not in set(levels) or not rest:
        return False
    return rest in ZARR_METADATA or bool(_CHUNK_KEY.match(rest))


def recorded_levels(dest: Store, image_path: str) -> set[str]:
    """The level names cellmap-migrate recorded for the image at ``image_path``: those its
    finished metadata lists and those of its resume record."""
    names: set[str] = set()
    attributes = resume.group_attributes(dest, image_path) or {}
    ome = attributes.get("ome", attributes)
    for multiscale in ome.get("multiscales") or []:
        for dataset in multiscale.get("datasets") or []:
            if isinstance(dataset, dict) and isinstance(dataset.get("path"), str):
                names.add(dataset["path"])
    started = resume.read_json(dest, resume.image_state_key(image_path, "plan.json")) or {}
    for level in (started.get("image") or {}).get("levels") or []:
        if isinstance(level, dict) and isinstance(level.get("name"), str):
            names.add(level["name"])
    return names


def foreign_keys(dest: Store, image_path: str, levels: Iterable[str]) -> list[str]:
    """Up to :data:`SHOWN` keys under ``image_path`` that cellmap-migrate did not write
    (full keys); lists the whole image."""
    names = set(levels)
    found = []
    for key in dest.list_keys(image_path):
        if not written_by_us(key, names):
            found.append(join_key(image_path, key))
            if len(found) >= SHOWN:
                break
    return found


def describe_foreign(dest: Store, path: str, keys: list[str] | None = None) -> str:
    """What foreign data ``path`` holds, for a message: "N5 data (…)" or "files … (…)"."""
    if keys is None:
        keys = [join_key(path, key) for key in itertools.islice(dest.list_keys(path), SHOWN)]
    n5 = [key for key in keys if key.rsplit("/", 1)[-1] == N5_ATTRIBUTES]
    if dest.read(join_key(path, N5_ATTRIBUTES)) is not None:
        n5.insert(0, join_key(path, N5_ATTRIBUTES))
    if n5:
        return f"N5 data ({', '.join(dict.fromkeys(n5))})"
    shown = ", ".join(keys) if keys else "an empty folder"
    return f"files cellmap-migrate did not write ({shown})"
