"""Which datasets a bulk run covers: the children of ROOT laid out as ``<dataset>/<dataset>.n5``.

Discovery lists only what it must: one listing of ROOT (none with ``--datasets FILE``), then
one existence check of each candidate's N5 root, many at a time on S3
(:meth:`~migrate.storage.Store.map`).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from migrate.errors import MigrationError
from migrate.storage import Store, join_key, segment_problem
from migrate.storage.keys import RULE

DATASET_NAME = re.compile(r"^[A-Za-z0-9]+_[A-Za-z0-9][A-Za-z0-9._-]*$")
"""``<institute>_<id>``, e.g. ``jrc_hela-2``, ``aic_desmosome-2``."""


@dataclass(frozen=True)
class Dataset:
    """One selected dataset: its name and where its N5 root and its Zarr output are."""

    name: str
    source: str
    """URL of ``<ROOT>/<name>/<name>.n5``."""
    dest: str
    """URL of ``<DEST_ROOT>/<name>/<name>.zarr``."""


@dataclass(frozen=True)
class Skipped:
    """A dataset that is not migrated, and why (e.g. it has no N5 root)."""

    name: str
    reason: str


@dataclass(frozen=True)
class Selection:
    datasets: tuple[Dataset, ...]
    skipped: tuple[Skipped, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)


def n5_root_key(name: str) -> str:
    return join_key(name, f"{name}.n5")


def zarr_root_key(name: str) -> str:
    return join_key(name, f"{name}.zarr")


def read_names_file(path: str) -> list[str]:
    """Dataset names from a file, one a line; blank lines and ``#`` comments are ignored."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise MigrationError(f"{path}: cannot read the --datasets file: {exc.strerror}") from exc
    names: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        problem = segment_problem(name)
        if problem is not None:
            raise MigrationError(f"{path}: line {number}: {problem} is not a dataset name ({RULE})")
        if name not in names:
            names.append(name)
    return names


def matches(name: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Selected by the ``--include`` globs (all, when there are none) and no ``--exclude``."""
    if include and not any(fnmatch.fnmatchcase(name, glob) for glob in include):
        return False
    return not any(fnmatch.fnmatchcase(name, glob) for glob in exclude)


def select_datasets(
    root: Store,
    dest_root: Store,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    names: Sequence[str] | None = None,
) -> Selection:
    """The datasets under ``root`` to migrate into ``dest_root``: in the order of ``names``
    (``--datasets FILE``) when given, else by name; filtered by the globs; those without a
    ``<name>.n5`` root are skipped with a reason."""
    skipped: list[Skipped] = []
    if names is None:
        candidates = []
        for name in sorted(name for name in root.list_dir("")[0] if not name.startswith(".")):
            problem = segment_problem(name)
            if problem is None:
                candidates.append(name)
            else:  # never made into a key: it could lead outside ROOT or DEST_ROOT
                reason = f"{root.display()} lists {problem}, which is not {RULE}"
                skipped.append(Skipped(repr(name), reason))
    else:
        candidates = list(names)
    candidates = [name for name in candidates if matches(name, include, exclude)]
    has_n5 = root.map(lambda name: root.exists_prefix(n5_root_key(name)), candidates)
    datasets: list[Dataset] = []
    warnings: list[str] = []
    for name, found in zip(candidates, has_n5, strict=True):
        if not found:
            where = root.display(n5_root_key(name))
            reason = (
                f"{where}: no N5 root (expected <dataset>/<dataset>.n5)"
                if names is None or root.exists_prefix(name)
                else f"{root.display(name)}: no such dataset"
            )
            skipped.append(Skipped(name, reason))
            continue
        if not DATASET_NAME.match(name):
            warnings.append(f"{name}: the name does not follow <institute>_<id> (e.g. jrc_hela-2)")
        datasets.append(
            Dataset(name, root.display(n5_root_key(name)), dest_root.display(zarr_root_key(name)))
        )
    return Selection(tuple(datasets), tuple(skipped), tuple(warnings))
