"""The library entry points the CLI calls: each builds stores, plans, and acts.

This is the I/O layer's front: the pure parts (discovery results → plan → documents) live
in ``plan``, ``layout`` and ``reconcile``.
"""

from __future__ import annotations

from dataclasses import dataclass

from migrate.copy import lease, resume, safety
from migrate.copy.engine import RunResult, UnitExecutor, run_plan
from migrate.copy.events import Progress
from migrate.copy.lease import Notice
from migrate.copy.options import EngineOptions
from migrate.errors import ConflictError, MigrationError, PlanMismatchError
from migrate.source.dataset import SourceLocation, locate, read_source
from migrate.source.discover import ATTRIBUTES, discover, normalize_url
from migrate.source.precomputed import NEUROGLANCER
from migrate.storage import S3Options, Store, join_key, open_store
from migrate.target.plan import PlanOptions, build_plan
from migrate.target.precomputed import build_dataset_plan
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
    strict_image_paths: bool = True,
) -> Prepared:
    """Discover SRC and plan its migration to DEST (default: the sibling ``.zarr``).

    Either may be a local path or ``s3://bucket/prefix``; ``s3`` says how to reach S3. SRC
    may be an N5 tree or a group in it, a dataset folder or a precomputed volume. With
    ``strict_image_paths`` (``convert``; bulk runs pass False), an ``--image-path`` that
    names no volume of SRC is an error.
    """
    location = locate(_normalize(src), lambda url: open_store(url, read_only=True, s3=s3))
    if location.kind != "n5":
        return _prepare_dataset(
            location, dest, options, read_only_dest=read_only_dest, s3=s3,
            strict_image_paths=strict_image_paths,
        )  # fmt: skip
    if options.image_paths and strict_image_paths:
        raise MigrationError(
            f"--image-path {options.image_paths[0][0]}=…: SRC {location.root} is an N5 tree, "
            "which holds no precomputed volume; give the dataset folder or the volume"
        )
    n5_root, inner = location.root, location.inner
    dest_url = _normalize(dest) if dest else default_dest(n5_root)
    _check_not_inside(n5_root, dest_url)
    source = open_store(n5_root, read_only=True, s3=s3)
    dest_s3 = s3 if read_only_dest or s3 is None else s3.for_writing()
    dest_store = open_store(dest_url, read_only=read_only_dest, s3=dest_s3)
    discovery = discover(source, inner)
    plan = build_plan(discovery, source.url, inner, dest_store.url, options)
    plan = resume.plan_at_dest(plan, dest_store)
    return Prepared(plan, source, dest_store)


def default_dataset_dest(location: SourceLocation) -> str:
    """``<dataset>/<dataset>.zarr`` of a dataset folder or of a volume in its
    ``neuroglancer/`` folder."""
    if location.dataset is None or (
        location.kind == "volume" and not location.in_neuroglancer_folder
    ):
        raise MigrationError(
            f"{location.root}/{location.inner}: not in a dataset's neuroglancer/ folder; "
            "give DEST explicitly"
        )
    return f"{location.dataset.rstrip('/')}/{location.name}.zarr"


def _prepare_dataset(
    location: SourceLocation,
    dest: str | None,
    options: PlanOptions,
    *,
    read_only_dest: bool,
    s3: S3Options | None,
    strict_image_paths: bool,
) -> Prepared:
    """:func:`prepare` for a dataset folder (its N5 images and precomputed volumes) or one
    precomputed volume."""
    assert location.dataset is not None
    dest_url = _normalize(dest) if dest else default_dataset_dest(location)
    inside = [location.n5_root] if location.n5_root else []
    inside.append(f"{location.dataset.rstrip('/')}/{location.inner or NEUROGLANCER}")
    for root in inside:
        _check_not_inside(root, dest_url)
    dataset = open_store(location.dataset, read_only=True, s3=s3)
    n5 = open_store(location.n5_root, read_only=True, s3=s3) if location.n5_root else None
    dest_s3 = s3 if read_only_dest or s3 is None else s3.for_writing()
    dest_store = open_store(dest_url, read_only=read_only_dest, s3=dest_s3)
    read = read_source(location, n5, dataset)
    volumes = {volume.path for volume in read.volumes}
    for volume, _ in options.image_paths:
        if volume not in volumes and strict_image_paths:
            raise MigrationError(
                f"--image-path {volume}=…: {dataset.display(volume)} is not a precomputed "
                f"volume of SRC (it has {', '.join(sorted(volumes)) or 'none'})"
            )
    plan = build_dataset_plan(
        read.discovery,
        n5.url if n5 is not None else None,
        read.volumes,
        dataset.url,
        location.inner,
        dest_store.url,
        options,
    )
    if location.in_neuroglancer_folder:
        _check_n5_clash(dataset, location, plan, options)
    plan = resume.plan_at_dest(plan, dest_store)
    source = n5 if n5 is not None and plan.source == n5.url else dataset
    return Prepared(plan, source, dest_store)


def _check_n5_clash(
    dataset: Store, location: SourceLocation, plan: Plan, options: PlanOptions
) -> None:
    """Refuse one volume whose default image path is that of an image of the dataset's N5
    root, unless ``--prefix`` or ``--image-path`` says where it goes (one read)."""
    if options.prefix or location.inner in dict(options.image_paths):
        return
    image = plan.images[0]
    n5_group = join_key(f"{location.name}.n5", image.dest_path)
    if dataset.read(join_key(n5_group, ATTRIBUTES)) is not None:
        raise MigrationError(
            f"{dataset.display(location.inner)} would be written to {image.dest_path}, the "
            f"path of the N5 image {dataset.display(n5_group)}; say where it goes with "
            f"--image-path {location.inner}=PATH (or --prefix)"
        )


def open_for_verify(
    src: str, dest: str, s3: S3Options | None = None
) -> tuple[Store, str, Store, SourceLocation]:
    """(the N5 root of SRC, or its dataset folder; SRC's path inside it; DEST; what SRC
    is), opened read-only, with paths normalized as ``prepare`` normalizes them (so they
    compare with what DEST records)."""
    location = locate(_normalize(src), lambda url: open_store(url, read_only=True, s3=s3))
    root = location.dataset if location.dataset is not None else location.root
    return (
        open_store(root, read_only=True, s3=s3),
        location.inner,
        open_store(_normalize(dest), read_only=True, s3=s3),
        location,
    )


def check_conflicts(plan: Plan) -> None:
    """Refuse a plan whose source metadata disagrees (between COSEM and Neuroglancer, or
    inside one of them: each conflict says which) until ``--trust`` is given."""
    if plan.conflicts:
        raise ConflictError(
            f"{len(plan.conflicts)} metadata conflict(s) (first: {plan.conflicts[0]}); "
            "say which metadata to use with --trust cosem|neuroglancer"
        )


def check_dest_root(dest: Store, plan: Plan, *, into_existing: bool) -> None:
    """Refuse a DEST that is a file, an N5 tree, or (without ``into_existing``) a non-empty
    folder holding no cellmap-migrate output (looked for at the plan's images first, then
    anywhere in DEST's Zarr hierarchy). Writes nothing; the dry run calls it too."""
    if dest.root_is_object():
        raise PlanMismatchError(f"{dest.display()}: DEST is a file, not a folder; choose another")
    dirs, files = dest.list_dir("")
    if not dirs and not files:
        return
    if safety.N5_ATTRIBUTES in files:
        raise PlanMismatchError(
            f"{dest.display()} holds {safety.describe_foreign(dest, '')}, not written by "
            "cellmap-migrate; it is never replaced: choose another DEST"
        )
    if resume.STATE_DIR in dirs or into_existing:
        return
    marks = dest.map(lambda image: resume.completion_mark(dest, image.dest_path), plan.images)
    if any(mark is not None for mark in marks):
        return
    from migrate.check.inventory import finished_images

    if next(iter(finished_images(dest)), None) is not None:
        return
    entries = [f"{name}/" for name in dirs] + files
    shown = ", ".join(entries[: safety.SHOWN]) + (", …" if len(entries) > safety.SHOWN else "")
    raise PlanMismatchError(
        f"{dest.display()} is a non-empty folder of files not written by cellmap-migrate "
        f"({shown}); give a new or empty DEST, or --into-existing to write the Zarr output "
        "beside them"
    )


def run_prepared(
    prepared: Prepared,
    engine: EngineOptions,
    progress: Progress,
    executor: UnitExecutor | None,
    *,
    lease_timeout: float,
    break_lease: bool,
    notice: Notice,
) -> RunResult:
    """Migrate a prepared plan the one way every writer does (``convert`` and each dataset of
    ``bulk convert``): take DEST's lease, plan again against what DEST holds now that no
    other run can change it (labels other runs listed, images other runs finished), run the
    plan under the lease (a lost lease stops it before any metadata is finalized), release
    the lease. ``prepared.plan`` is the plan that ran."""
    with lease.hold(
        prepared.dest, expiry=lease_timeout, break_lease=break_lease, notice=notice
    ) as held:
        prepared.plan = resume.plan_at_dest(prepared.plan, prepared.dest)
        return run_plan(
            prepared.plan,
            prepared.source,
            prepared.dest,
            engine,
            progress,
            executor,
            guard=held.check,
            run_id=held.run_id,
        )
