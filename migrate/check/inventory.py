"""What cellmap-migrate has written at a destination, read back from DEST alone.

Finished images are found by their completion mark (the fingerprint in the ``cellmap-migrate``
attribute of the image group) and described from their own Zarr metadata; images still in
progress from their resume records. A finished image is *confirmed* only when the DEST-level
completion mark (the root group's ``cellmap-migrate.complete``, written after every other
document) lists it with the same fingerprint: otherwise the run that wrote it stopped before
it had written everything (e.g. a ``labels`` group). Shapes and chunk grids are in **C order**
(z, y, x).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from migrate.dest import marks, records
from migrate.errors import MigrationError
from migrate.storage import Store, join_key
from migrate.target.layout import PROVENANCE_KEY
from schemas.plan import ImagePlan


@dataclass(frozen=True)
class FinishedLevel:
    """One level of a finished image, with what is needed to compare it with its source."""

    name: str
    dest_path: str
    source_path: str
    shape: tuple[int, ...]
    dtype: str
    grid: tuple[int, ...]
    """The destination's write granularity: its chunk (or shard) shape."""
    source_attributes: dict[str, Any]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class FinishedImage:
    dest_path: str
    ngff_version: Literal["0.4", "0.5"]
    kind: Literal["image", "label"]
    source: str
    source_path: str
    levels: tuple[FinishedLevel, ...]
    fingerprint: str = ""
    confirmed: bool = False
    """The DEST completion mark lists this image with its fingerprint."""
    source_format: str | None = None
    """``precomputed`` for a precomputed volume's migration; None for N5."""


@dataclass(frozen=True)
class StartedImage:
    """An image whose migration started and has not finished (from its plan.json)."""

    image: ImagePlan
    ngff_version: Literal["0.4", "0.5"]
    fingerprint: str
    generation: str = ""
    """Of its resume records (see :mod:`migrate.dest.records`)."""


def _node(store: Store, path: str) -> tuple[str, str, dict[str, Any]] | None:
    """(zarr version, node type, user attributes) of the node at ``path``, or None."""
    v3 = marks.read_json(store, join_key(path, "zarr.json"))
    if v3 is not None:
        return "0.5", str(v3.get("node_type")), dict(v3.get("attributes") or {})
    if store.read(join_key(path, ".zarray")) is not None:
        return "0.4", "array", marks.read_json(store, join_key(path, ".zattrs")) or {}
    if store.read(join_key(path, ".zgroup")) is not None:
        return "0.4", "group", marks.read_json(store, join_key(path, ".zattrs")) or {}
    return None


def _array_layout(
    store: Store, path: str, version: str
) -> tuple[tuple[int, ...], str, tuple[int, ...]]:
    """(shape, dtype name, chunk-or-shard grid) of a destination array."""
    if version == "0.4":
        meta = marks.read_json(store, join_key(path, ".zarray")) or {}
        dtype = np.dtype(meta["dtype"]).newbyteorder("=").name
        return tuple(meta["shape"]), dtype, tuple(meta["chunks"])
    meta = marks.read_json(store, join_key(path, "zarr.json")) or {}
    grid = meta["chunk_grid"]["configuration"]["chunk_shape"]
    return tuple(meta["shape"]), str(meta["data_type"]), tuple(grid)


def _finished(
    store: Store, path: str, version: str, attrs: dict[str, Any], mark: dict[str, str] | None
) -> FinishedImage:
    ome = attrs.get("ome", attrs)
    provenance = attrs[PROVENANCE_KEY]
    levels = []
    for dataset in ome["multiscales"][0]["datasets"]:
        level_path = join_key(path, dataset["path"])
        node = _node(store, level_path)
        where = store.display(level_path)
        if node is None or node[1] != "array":
            raise MigrationError(f"{where}: listed by multiscales but not a Zarr array")
        level_provenance = node[2].get(PROVENANCE_KEY, {})
        shape, dtype, grid = _array_layout(store, level_path, version)
        levels.append(
            FinishedLevel(
                name=dataset["path"],
                dest_path=level_path,
                source_path=str(level_provenance.get("path", "")),
                shape=shape,
                dtype=dtype,
                grid=grid,
                source_attributes=dict(level_provenance.get("source_attributes", {})),
            )
        )
    return FinishedImage(
        dest_path=path,
        ngff_version="0.4" if version == "0.4" else "0.5",
        kind="label" if "image-label" in ome else "image",
        source=str(provenance.get("source", "")),
        source_path=str(provenance.get("path", "")),
        levels=tuple(levels),
        fingerprint=str(provenance["fingerprint"]),
        # no mark at all when DEST's root is itself an image: its own mark is the only one
        confirmed=mark is None or mark.get(path) == provenance["fingerprint"],
        source_format=provenance.get("format") if provenance.get("format") else None,
    )


def marked_groups(store: Store) -> Iterator[list[tuple[str, str, dict[str, Any]]]]:
    """(path, zarr version, attributes) of every group at DEST that carries cellmap-migrate's
    completion mark, one batch per depth, breadth first; never descends into them.

    Walks groups only: never lists inside an array, so it costs a few requests per group;
    the groups of one depth are read together (:meth:`~migrate.storage.Store.map`).
    """
    frontier = [""]
    while frontier:
        nodes = store.map(lambda path: _node(store, path), frontier)
        finished: list[tuple[str, str, dict[str, Any]]] = []
        groups: list[str] = []
        for path, node in zip(frontier, nodes, strict=True):
            if node is None and path:
                continue
            if node is not None:
                version, kind, attrs = node
                if kind == "array":
                    continue
                provenance = attrs.get(PROVENANCE_KEY)
                if isinstance(provenance, dict) and provenance.get("fingerprint"):
                    finished.append((path, version, attrs))
                    continue
            groups.append(path)
        if finished:
            yield finished
        listings = store.map(lambda path: store.list_dir(path)[0], groups)
        frontier = [
            join_key(path, name)
            for path, names in zip(groups, listings, strict=True)
            for name in names
            if not name.startswith(".")
        ]


def _finished_item(
    store: Store, mark: dict[str, str] | None, item: tuple[str, str, dict[str, Any]]
) -> FinishedImage:
    return _finished(store, *item, mark)


def finished_images(store: Store) -> Iterator[FinishedImage]:
    """Every image at DEST that carries cellmap-migrate's completion mark, breadth first
    (the finished images of one depth are read together). An image is ``confirmed`` when
    DEST's root completion mark lists it with its fingerprint (or when the root is itself
    the image: then its own mark is the only one)."""
    mark: dict[str, str] | None = marks.dest_completion_mark(store)
    for batch in marked_groups(store):
        if any(path == "" for path, _, _ in batch):
            mark = None  # the root is an image
        yield from store.map(functools.partial(_finished_item, store, mark), batch)


def completion_mark(store: Store) -> dict[str, str]:
    """The images DEST's completion mark lists as finished (path → fingerprint)."""
    return marks.dest_completion_mark(store)


def started_images(store: Store) -> list[StartedImage]:
    """Images whose migration started at DEST and has not finished."""
    return [
        StartedImage(
            image=ImagePlan.model_validate(record["image"]),
            ngff_version="0.4" if record.get("ngff_version") == "0.4" else "0.5",
            fingerprint=str(record["fingerprint"]),
            generation=str(record.get("generation") or ""),
        )
        for record in records.started_images(store)
    ]
