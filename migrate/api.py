"""The library entry points the CLI calls: each builds stores, plans, and acts.

This is the I/O layer's front: the pure parts (discovery results → plan → documents) live
in ``plan``, ``layout`` and ``reconcile``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from migrate.copy.engine import RunResult, UnitExecutor, run_plan
from migrate.copy.events import Progress
from migrate.copy.options import EngineOptions
from migrate.dest import lease, marks, ours, records
from migrate.dest.lease import Notice
from migrate.dest.state import DestState, RootListing, read_root, read_state
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
    """A plan and the stores it reads from and writes to. ``plan`` is the plan made from SRC
    alone until DEST's state is read (:func:`inspect_dest`, or under the lease by
    :func:`run_prepared`): then it is the plan as it applies to DEST."""

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


def _within(inner: str, outer: str) -> bool:
    """True when the location ``inner`` is ``outer`` or lies under it (lexically, and for
    local paths also with their symbolic links resolved)."""
    if (inner.rstrip("/") + "/").startswith(outer.rstrip("/") + "/"):
        return True
    if "://" in inner or "://" in outer:
        return False
    import os.path

    real_inner, real_outer = os.path.realpath(inner), os.path.realpath(outer)
    return (real_inner.rstrip("/") + "/").startswith(real_outer.rstrip("/") + "/")


def check_output_paths(plan: Plan, source_root: str) -> None:
    """Refuse a plan that would write where it must not: an image (with ``--prefix``) inside
    the N5 source or around it (``--overwrite`` would delete the source with it), or in the
    folder where DEST keeps the state of its runs. Every image path is already made of plain
    segments (discovery and ``--prefix`` are checked), so it stays under DEST."""
    for image in plan.images:
        if image.dest_path.split("/")[0] == records.STATE_DIR:
            raise MigrationError(
                f"{plan.dest}/{image.dest_path}: an image would be written into "
                f"{records.STATE_DIR}, where DEST keeps the state of its runs; choose another "
                "--prefix"
            )
        where = f"{plan.dest.rstrip('/')}/{image.dest_path}".rstrip("/")
        if _within(where, source_root):
            raise MigrationError(
                f"{where}: the image {image.source_path or '(SRC)'} would be written inside "
                f"the source {source_root}, which is only ever read; choose another DEST or "
                "--prefix"
            )
        if _within(source_root, where):
            raise MigrationError(
                f"{where}: the image {image.source_path or '(SRC)'} would be written around "
                f"the source {source_root} (it holds it), which is only ever read; choose "
                "another DEST or --prefix"
            )


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
    check_output_paths(plan, source.url)
    return Prepared(plan, source, dest_store)


def inspect_dest(prepared: Prepared) -> tuple[RootListing, DestState]:
    """DEST as a dry run sees it (no lease): its root and its state, each read once; the
    prepared plan becomes the plan as it applies to DEST."""
    root = read_root(prepared.dest)
    found = read_state(prepared.dest, prepared.plan, root)
    prepared.plan = found.plan_at_dest(prepared.plan)
    return root, found


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
    for root in inside:
        check_output_paths(plan, root)
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
    src: str, dest: str, s3: S3Options | None = None, *, certify: bool = False
) -> tuple[Store, str, Store, SourceLocation]:
    """(the N5 root of SRC, or its dataset folder; SRC's path inside it; DEST; what SRC
    is), SRC opened read-only, DEST too unless ``certify`` (a full ``verify`` writes its
    certificate and ledger at DEST), with paths normalized as ``prepare`` normalizes them
    (so they compare with what DEST records)."""
    location = locate(_normalize(src), lambda url: open_store(url, read_only=True, s3=s3))
    root = location.dataset if location.dataset is not None else location.root
    dest_s3 = s3.for_writing() if certify and s3 is not None else s3
    return (
        open_store(root, read_only=True, s3=s3),
        location.inner,
        open_store(_normalize(dest), read_only=not certify, s3=dest_s3),
        location,
    )


def check_conflicts(plan: Plan) -> None:
    """Refuse a plan whose source metadata disagrees (between COSEM and Neuroglancer, inside
    one of them, or between the registry and the N5: each conflict says which) until
    ``--trust`` is given."""
    if plan.conflicts:
        from migrate.source.reconcile import REGISTRY_CONFLICT

        kinds = {c.startswith(REGISTRY_CONFLICT) for c in plan.conflicts}
        choices = [
            choice
            for registry, choice in ((False, "cosem|neuroglancer"), (True, "registry|n5"))
            if registry in kinds
        ]
        raise ConflictError(
            f"{len(plan.conflicts)} metadata conflict(s) (first: {plan.conflicts[0]}); "
            f"say which metadata to use with --trust {' and --trust '.join(choices)} "
            "(or --trust IMAGE=CHOICE for one image)"
        )


def check_dest_root(
    dest: Store, plan: Plan, *, into_existing: bool, root: RootListing | None = None
) -> None:
    """Refuse a DEST that is a file, an N5 tree, or (without ``into_existing``) a non-empty
    folder holding no cellmap-migrate output (looked for in the root's completion mark,
    at the plan's images, then anywhere in DEST's Zarr hierarchy). Writes nothing; runs
    before the lease is taken (a refused DEST gets no lease either), and the dry run calls
    it too. ``root`` is DEST's root listing, when already read."""
    root = root if root is not None else read_root(dest)
    if root.is_file:
        raise PlanMismatchError(f"{dest.display()}: DEST is a file, not a folder; choose another")
    if root.empty:
        return
    if ours.N5_ATTRIBUTES in root.files:
        raise PlanMismatchError(
            f"{dest.display()} holds {ours.describe_foreign(dest, '')}, not written by "
            "cellmap-migrate; it is never replaced: choose another DEST"
        )
    if root.has_state or into_existing:
        return
    attributes = marks.group_attributes(dest, "")
    if marks.completion_of(attributes) or marks.image_mark_of(attributes) is not None:
        return
    found = dest.map(lambda image: marks.completion_mark(dest, image.dest_path), plan.images)
    if any(mark is not None for mark in found):
        return
    from migrate.check.inventory import finished_images

    if next(iter(finished_images(dest)), None) is not None:
        return
    entries = [f"{name}/" for name in root.dirs] + list(root.files)
    shown = ", ".join(entries[: ours.SHOWN]) + (", …" if len(entries) > ours.SHOWN else "")
    raise PlanMismatchError(
        f"{dest.display()} is a non-empty folder of files not written by cellmap-migrate "
        f"({shown}); give a new or empty DEST, or --into-existing to write the Zarr output "
        "beside them"
    )


def check_datasets(dest: Store, plan: Plan, found: DestState, *, into_existing: bool) -> None:
    """Refuse a DEST that holds cellmap-migrate output of other datasets (images whose
    recorded source is another dataset's), naming them: one ``<dataset>.zarr`` holds the
    images of one dataset. ``into_existing`` writes beside them; an image path of this plan
    that holds another dataset's image is refused even then (it would be replaced). Reads
    only the images DEST's completion mark lists that the plan does not write."""
    mine = ours.dataset_of(plan.source)
    planned = {image.dest_path for image in plan.images}
    sources = {
        path: ours.recorded_source(image.attributes, image.started)
        for path, image in found.images.items()
    }
    if "" not in planned:
        sources[""] = ours.recorded_source(found.attributes(""), None)
    others = sorted(set(found.completion_mark) - planned - {""})
    attributes = dest.map(lambda path: marks.group_attributes(dest, path), others)
    for path, attrs in zip(others, attributes, strict=True):
        sources[path] = ours.recorded_source(attrs, None)
    foreign = {
        path: ours.dataset_of(source)
        for path, source in sources.items()
        if source and ours.dataset_of(source) != mine
    }
    clashing = sorted(path for path in foreign if path in planned)
    shown = sorted(foreign) if not into_existing else clashing
    if not shown:
        return
    named = ", ".join(f"{path or '.'} (of {foreign[path]})" for path in shown[: ours.SHOWN])
    named += ", …" if len(shown) > ours.SHOWN else ""
    if clashing:
        raise PlanMismatchError(
            f"{dest.display()} holds cellmap-migrate output of other datasets at the paths "
            f"this migration of {mine} would write ({named}); it is never replaced: give "
            f"{mine} its own DEST (<dataset>.zarr)"
        )
    raise PlanMismatchError(
        f"{dest.display()} holds cellmap-migrate output of other datasets ({named}); give "
        f"{mine} its own DEST (<dataset>.zarr), or --into-existing to write it beside them"
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
    finishing: Callable[[], None] | None = None,
    into_existing: bool = False,
    root_checked: bool = False,
) -> RunResult:
    """Migrate a prepared plan the one way every writer does (``convert`` and each dataset of
    ``bulk convert``): check DEST's root (a refused DEST is never written, not even a
    lease), take DEST's lease, read DEST's state once now that no other run can change it,
    plan against it (labels other runs listed, images other runs finished), run the plan
    under the lease (a lost lease stops it before any metadata is finalized), release the
    lease. ``prepared.plan`` is the plan that ran; ``finishing`` is called just before the
    completion mark that lists all of it is written (see ``run_plan``). ``root_checked``:
    the caller has just called :func:`check_dest_root` (the CLI does, before it prints the
    plan)."""
    if not root_checked:
        check_dest_root(prepared.dest, prepared.plan, into_existing=into_existing)
    with lease.hold(
        prepared.dest, expiry=lease_timeout, break_lease=break_lease, notice=notice
    ) as held:
        found = read_state(prepared.dest, prepared.plan, lease=False)
        check_datasets(prepared.dest, prepared.plan, found, into_existing=into_existing)
        prepared.plan = found.plan_at_dest(prepared.plan)
        broke = held.broke
        restart = broke is not None and broke.host != lease.this_host()
        if broke is not None and restart:
            notice(
                f"the records of the run whose lease was broken ({broke.describe()}) are not "
                "counted: the images it was copying are copied again from the start"
            )
        return run_plan(
            prepared.plan,
            prepared.source,
            prepared.dest,
            engine,
            progress,
            executor,
            guard=held.check,
            run_id=held.run_id,
            finishing=finishing,
            found=found,
            confirm=held.confirm,
            restart=restart,
        )
