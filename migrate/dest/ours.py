"""What at DEST cellmap-migrate wrote, exactly, so that nothing else is ever replaced.

Under an image's path cellmap-migrate writes only these names, and "written by us" means
exactly them:

- the Zarr metadata of the image group and of its level arrays (``.zgroup``, ``.zattrs``,
  ``.zarray``, ``zarr.json``);
- inside a level array whose grid DEST records (the level's ``.zarray`` or ``zarr.json``,
  or the image's start record), chunk (shard) keys in canonical form inside that grid:
  ``z/y/x`` for Zarr v2 and ``c/z/y/x`` for v3, one plain decimal per axis (no ``00``, no
  sign), each below the grid's extent along its axis;
- the temporary files of its writers: ``.<name>.<host>-<pid>-<start>-<thread>.tmp``
  (:data:`migrate.storage.local.TEMPORARY`, the name that says which process writes it) of
  one of the names above, and TensorStore's ``<chunk>.__lock`` beside a chunk key.

At DEST's root, the state folder ``.cellmap-migrate/`` holds only these names
(:func:`state_name`): ``lease.json`` (and its ``lease.json.lock``), ``certificate.json``,
the unit records ``images/<image>/plan.json`` and ``images/<image>/done/…/<unit>``, and the
ledger ``ledger/<image>/ledger.json`` and ``ledger/<image>/<level>/<n>.jsonl.gz``, each also
under a writer's temporary name.

Anything else (an N5 ``attributes.json``, ``.analysis-results.tmp``, a key ``s0/0/0/99``
outside the grid, ``s0/0/0/00``) is foreign: a path that holds it is refused, with or
without ``--overwrite``, and the message names it.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from migrate.dest import marks, records
from migrate.storage import Store, join_key
from migrate.storage.local import TEMPORARY

N5_ATTRIBUTES = "attributes.json"
ZARR_METADATA = frozenset({".zgroup", ".zattrs", ".zarray", "zarr.json"})
_INDEX = re.compile(r"0|[1-9][0-9]*")
_LOCK = ".__lock"
SHOWN = 5
"""Foreign keys named in a message."""


@dataclass(frozen=True)
class LevelGrid:
    """A level array as DEST records it: its shape and write granularity (chunk or shard
    shape), C order, and how its chunk keys start (``c`` for Zarr v3, nothing for v2)."""

    shape: tuple[int, ...]
    grid: tuple[int, ...]
    prefix: str = ""

    @property
    def extent(self) -> tuple[int, ...]:
        """Chunks (shards) along each axis."""
        return tuple(math.ceil(n / g) for n, g in zip(self.shape, self.grid, strict=True))

    def holds(self, key: str) -> bool:
        """Whether ``key`` (relative to the level) is a chunk key of this grid, in canonical
        form."""
        parts = key.split("/")
        if self.prefix:
            if not parts or parts[0] != self.prefix:
                return False
            parts = parts[1:]
        if len(parts) != len(self.extent) or not parts:
            return False
        return all(
            _INDEX.fullmatch(part) is not None and int(part) < n
            for part, n in zip(parts, self.extent, strict=True)
        )


def _temporary_of(name: str) -> str | None:
    """The name a writer's temporary file ``name`` stands for, or None when ``name`` is not
    one (``.<name>.<writer>.tmp``)."""
    match = TEMPORARY.search(name)
    if match is None or not name.startswith(".") or match.start() < 2:
        return None
    return name[1 : match.start()]


_STATE_FILES = frozenset({"lease.json", "lease.json.lock", "certificate.json"})
_PART = re.compile(r"(0|[1-9][0-9]*)\.jsonl\.gz")


def state_name(key: str) -> bool:
    """Whether ``key`` (relative to the state folder ``.cellmap-migrate``) is a name
    cellmap-migrate writes there (see the module docstring)."""
    folder, _, name = key.rpartition("/")
    temporary = _temporary_of(name)
    if temporary is not None:
        return state_name(join_key(folder, temporary))
    if not folder:
        return name in _STATE_FILES
    top = folder.split("/", 1)[0]
    if top == "images":
        return name == "plan.json" or ("/done/" in f"/{folder}/" and name.isdigit())
    if top == "ledger":
        return name == "ledger.json" or (_PART.fullmatch(name) is not None and "/" in folder)
    return False


def written_by_us(
    key: str, levels: Mapping[str, LevelGrid | None], *, at_root: bool = False
) -> bool:
    """Whether ``key`` (relative to an image's path) is a name cellmap-migrate writes there
    (see the module docstring), given the image's recorded level arrays (name → grid;
    None: a level whose grid DEST does not record, which may hold metadata only).
    ``at_root``: the image is DEST's root, which also holds the state folder."""
    if at_root and key.startswith(records.STATE_DIR + "/"):
        return state_name(key[len(records.STATE_DIR) + 1 :])
    folder, _, name = key.rpartition("/")
    temporary = _temporary_of(name)
    if temporary is not None:
        return written_by_us(join_key(folder, temporary), levels)
    if name.endswith(_LOCK) and name != _LOCK:
        return _chunk_of(join_key(folder, name[: -len(_LOCK)]), levels)
    if key in ZARR_METADATA:
        return True
    level, _, rest = key.partition("/")
    if level not in levels or not rest:
        return False
    return rest in ZARR_METADATA or _chunk_of(key, levels)


def _chunk_of(key: str, levels: Mapping[str, LevelGrid | None]) -> bool:
    level, _, rest = key.partition("/")
    grid = levels.get(level)
    return grid is not None and bool(rest) and grid.holds(rest)


def _grid_of_array(document: dict[str, Any] | None) -> LevelGrid | None:
    """The grid of a Zarr array from its ``.zarray`` or ``zarr.json`` (None: not one)."""
    if document is None:
        return None
    try:
        if document.get("zarr_format") == 3:
            shape = tuple(int(n) for n in document["shape"])
            chunks = document["chunk_grid"]["configuration"]["chunk_shape"]
            return LevelGrid(shape, tuple(int(c) for c in chunks), "c")
        shape = tuple(int(n) for n in document["shape"])
        return LevelGrid(shape, tuple(int(c) for c in document["chunks"]), "")
    except (KeyError, TypeError, ValueError):
        return None


def _grid_of_record(level: Any, version: Any) -> LevelGrid | None:
    """The grid of a level from an image's start record (its plan)."""
    try:
        shape = tuple(int(n) for n in level["shape"])
        grid = tuple(int(n) for n in (level.get("shard") or level["chunks"]))
    except (KeyError, TypeError, ValueError):
        return None
    if len(grid) != len(shape) or not all(g > 0 for g in grid):
        return None
    return LevelGrid(shape, grid, "" if version == "0.4" else "c")


def recorded_levels(
    dest: Store,
    image_path: str,
    attributes: dict[str, Any] | None = None,
    started: dict[str, Any] | None = None,
) -> dict[str, LevelGrid | None]:
    """The level arrays cellmap-migrate recorded for the image at ``image_path`` (name →
    grid): those its finished metadata lists (their grid from each level's own array
    metadata) and those of its start record (their grid from the record's plan).
    ``attributes`` and ``started`` are the image group's attributes and start record, when
    already read (a :class:`~migrate.dest.state.DestState` holds them)."""
    if attributes is None:
        attributes = marks.group_attributes(dest, image_path)
    if started is None:
        started = marks.read_json(dest, records.image_state_key(image_path, "plan.json"))
    levels: dict[str, LevelGrid | None] = {}
    ome = (attributes or {}).get("ome", attributes or {})
    names = [
        dataset["path"]
        for multiscale in ome.get("multiscales") or []
        if isinstance(multiscale, dict)
        for dataset in multiscale.get("datasets") or []
        if isinstance(dataset, dict) and isinstance(dataset.get("path"), str)
    ]

    def array(name: str) -> LevelGrid | None:
        v3 = marks.read_json(dest, join_key(image_path, name, "zarr.json"))
        return _grid_of_array(v3 or marks.read_json(dest, join_key(image_path, name, ".zarray")))

    levels.update(zip(names, dest.map(array, names), strict=True))
    record = started or {}
    for level in (record.get("image") or {}).get("levels") or []:
        if isinstance(level, dict) and isinstance(level.get("name"), str):
            grid = _grid_of_record(level, record.get("ngff_version"))
            levels[level["name"]] = levels.get(level["name"]) or grid
    return levels


def foreign_keys(dest: Store, image_path: str, levels: Mapping[str, LevelGrid | None]) -> list[str]:
    """Up to :data:`SHOWN` keys under ``image_path`` that cellmap-migrate did not write
    (full keys); lists the whole image."""
    found = []
    for key in dest.list_keys(image_path):
        if not written_by_us(key, levels, at_root=not image_path):
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


DATASET_FOLDER = re.compile(r"[A-Za-z0-9]+_[A-Za-z0-9][A-Za-z0-9._-]*")
"""A Cellmap dataset folder's name, ``<institute>_<id>`` (``jrc_hela-2``)."""


def dataset_of(source: str) -> str:
    """The dataset a recorded source location belongs to: ``jrc_hela-2`` for
    ``…/jrc_hela-2/jrc_hela-2.n5`` (the name of a ``<dataset>.n5`` root) and for
    ``…/jrc_hela-2`` (the dataset folder a precomputed volume records); the location itself
    for an N5 root named otherwise (``/data/volume``: it belongs to no named dataset)."""
    location = source.rstrip("/")
    name = location.rsplit("/", 1)[-1]
    if name.endswith(".n5") and len(name) > 3:
        return name[: -len(".n5")]
    return name if DATASET_FOLDER.fullmatch(name) else location


def recorded_source(attributes: dict[str, Any] | None, started: dict[str, Any] | None) -> str:
    """The source location an image at DEST records: its provenance (finished) or its start
    record (started); "" when neither says."""
    provenance = marks.image_mark_of(attributes)
    if provenance is not None and isinstance(provenance.get("source"), str):
        return str(provenance["source"])
    if started is not None and isinstance(started.get("source"), str):
        return str(started["source"])
    return ""
