"""What SRC is: an N5 tree (or a group in one), a precomputed volume, or a dataset folder.

A Cellmap dataset is a folder ``<dataset>/`` holding the N5 root ``<dataset>.n5/`` and,
for some, Neuroglancer precomputed volumes ``neuroglancer/<group>/<name>.precomputed/``.
:func:`locate` tells the three kinds of SRC apart (a URL with a ``.n5`` component is N5; one
ending in ``.precomputed`` is a volume; a folder holding ``<name>.n5/`` or ``neuroglancer/``
is a dataset; any other folder is taken to be an N5 root, as before datasets were known),
with at most one listing. :func:`read_source` reads what the kind holds: the N5 discovery
and the volumes' ``info`` files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from migrate.errors import MigrationError
from migrate.source.discover import Discovery, discover, split_n5_url
from migrate.source.precomputed import (
    NEUROGLANCER,
    SUFFIX,
    PrecomputedVolume,
    find_volumes,
    read_volume,
)
from migrate.storage import Store

SourceKind = Literal["n5", "volume", "dataset"]


@dataclass(frozen=True)
class SourceLocation:
    """Where SRC is and what kind it is. URLs are normalized (no trailing ``/``)."""

    kind: SourceKind
    root: str
    """The root of the plan's ``source``: the N5 root (``n5``), or the dataset folder."""
    inner: str
    """``n5``: the group inside the N5 root; ``volume``: the volume's path inside the
    dataset folder; ``dataset``: empty."""
    dataset: str | None = None
    """The dataset folder (``volume``, ``dataset``)."""
    n5_root: str | None = None
    """The dataset's N5 root, when it has one (``dataset``), or ``root`` (``n5``)."""

    @property
    def name(self) -> str | None:
        """The dataset's name (its folder's), when SRC is in a dataset folder."""
        return self.dataset.rstrip("/").rsplit("/", 1)[-1] if self.dataset else None

    @property
    def in_neuroglancer_folder(self) -> bool:
        """A volume at ``<dataset>/neuroglancer/<group>/<name>.precomputed``."""
        return self.kind == "volume" and self.inner.startswith(NEUROGLANCER + "/")


def locate(url: str, open_store: Callable[[str], Store]) -> SourceLocation:
    """The kind of SRC at the normalized ``url`` (``open_store`` opens a location
    read-only; it is called, and one listing made, only for a folder that could be a
    dataset)."""
    n5_root, inner = split_n5_url(url)
    if n5_root.endswith(".n5"):
        return SourceLocation("n5", n5_root, inner, n5_root=n5_root)
    parts = url.rstrip("/").split("/")
    if parts[-1].endswith(SUFFIX):
        if len(parts) >= 4 and parts[-3] == NEUROGLANCER:
            dataset, path = "/".join(parts[:-3]), "/".join(parts[-3:])
        else:
            dataset, path = "/".join(parts[:-1]), parts[-1]
        if not dataset or dataset.endswith(":/"):
            raise MigrationError(f"{url}: a precomputed volume needs a folder around it")
        return SourceLocation("volume", dataset, path, dataset=dataset)
    name = parts[-1]
    store = open_store(url)
    dirs, files = store.list_dir("")
    if f"{name}.n5" in dirs or (NEUROGLANCER in dirs and "attributes.json" not in files):
        n5 = f"{url.rstrip('/')}/{name}.n5" if f"{name}.n5" in dirs else None
        return SourceLocation("dataset", n5 or url, "", dataset=url, n5_root=n5)
    return SourceLocation("n5", url, "", n5_root=url)


@dataclass(frozen=True)
class SourceRead:
    """What SRC holds: the N5 discovery (when it reads an N5 tree) and the volumes."""

    location: SourceLocation
    discovery: Discovery | None
    volumes: tuple[PrecomputedVolume, ...]


def read_source(location: SourceLocation, n5: Store | None, dataset: Store | None) -> SourceRead:
    """Discover the N5 images (``n5``: the store of the N5 root, when there is one) and read
    the precomputed volumes' ``info`` files (``dataset``: the store of the dataset folder),
    as ``location`` asks."""
    discovery = None
    if location.kind == "n5":
        assert n5 is not None
        return SourceRead(location, discover(n5, location.inner), ())
    assert dataset is not None
    if location.kind == "volume":
        return SourceRead(location, None, (read_volume(dataset, location.inner),))
    if n5 is not None:
        discovery = discover(n5, "")
    paths = find_volumes(dataset)
    volumes = dataset.map(lambda path: read_volume(dataset, path), paths)
    return SourceRead(location, discovery, tuple(volumes))
