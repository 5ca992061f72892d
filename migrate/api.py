"""The library entry points the CLI calls: each builds stores, plans, and acts.

This is the I/O layer's front: the pure parts (discovery results → plan → documents) live
in ``plan``, ``layout`` and ``mapping``.
"""

from __future__ import annotations

from dataclasses import dataclass

from migrate.copy import resume
from migrate.errors import MigrationError
from migrate.source.discover import discover, normalize_url, split_n5_url
from migrate.storage import S3Options, Store, open_store
from migrate.target.plan import PlanOptions, build_plan
from schemas.plan import Plan


@dataclass
class Prepared:
    """A plan and the stores it reads from and writes to."""

    plan: Plan
    source: Store
    dest: Store


def default_dest(n5_root: str) -> str:
    """The sibling ``<dataset>.zarr`` of a ``<dataset>.n5`` root."""
    base = n5_root.rstrip("/")
    if not base.endswith(".n5"):
        raise MigrationError(f"{n5_root}: not a <dataset>.n5 root; give DEST explicitly")
    return base[: -len(".n5")] + ".zarr"


def _normalize(url: str) -> str:
    """``url`` with ``.``, ``..`` and repeated slashes resolved (lexically), local paths made
    absolute: ``cd x.n5/em; convert ..`` plans the same images as ``convert /…/x.n5``."""
    if url.startswith("s3://"):
        return normalize_url(url)
    import os.path

    return os.path.abspath(os.path.expanduser(url.removeprefix("file://")))


def _check_not_inside(source_root: str, dest: str) -> None:
    src = source_root.rstrip("/") + "/"
    if (dest.rstrip("/") + "/").startswith(src):
        raise MigrationError(f"{dest}: DEST is inside the source {source_root}; choose another")


def prepare(
    src: str,
    dest: str | None,
    options: PlanOptions,
    *,
    read_only_dest: bool,
    s3: S3Options | None = None,
) -> Prepared:
    """Discover SRC and plan its migration to DEST (default: the sibling ``.zarr``).

    Either may be a local path or ``s3://bucket/prefix``; ``s3`` says how to reach S3.
    """
    n5_root, inner = split_n5_url(_normalize(src))
    dest_url = _normalize(dest) if dest else default_dest(n5_root)
    _check_not_inside(n5_root, dest_url)
    source = open_store(n5_root, read_only=True, s3=s3)
    dest_s3 = s3 if read_only_dest or s3 is None else s3.for_writing()
    dest_store = open_store(dest_url, read_only=read_only_dest, s3=dest_s3)
    discovery = discover(source, inner)
    plan = build_plan(discovery, source.url, inner, dest_store.url, options)
    plan = resume.plan_at_dest(plan, dest_store)
    return Prepared(plan, source, dest_store)


def open_for_verify(src: str, dest: str, s3: S3Options | None = None) -> tuple[Store, str, Store]:
    """(the N5 root of SRC, SRC's path inside it, DEST), both opened read-only, with paths
    normalized as ``prepare`` normalizes them (so they compare with what DEST records)."""
    n5_root, inner = split_n5_url(_normalize(src))
    return (
        open_store(n5_root, read_only=True, s3=s3),
        inner,
        open_store(_normalize(dest), read_only=True, s3=s3),
    )
