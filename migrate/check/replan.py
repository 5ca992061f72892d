"""What DEST records about its migration, and the plan of that migration made again.

Each image cellmap-migrate writes keeps, in the ``cellmap-migrate`` provenance of its group
metadata, the source it came from (the N5 root and the path inside it) and the options it
was planned with. From those and SRC's own metadata, :func:`plan_again` builds the plan
``convert`` would follow: what ``verify`` compares DEST with.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from migrate.check.inventory import marked_groups
from migrate.copy.precomputed import sibling_store
from migrate.dest import records
from migrate.dest.state import read_state
from migrate.errors import VerificationError
from migrate.source.dataset import SourceLocation, read_source
from migrate.source.discover import discover
from migrate.source.registry import Registry, dataset_of
from migrate.storage import Store, join_key
from migrate.target.layout import PROVENANCE_KEY
from migrate.target.plan import PlanOptions, build_plan
from migrate.target.precomputed import build_dataset_plan
from schemas.plan import Plan


@dataclass(frozen=True)
class Recorded:
    """An image cellmap-migrate wrote (or started) at DEST, and its recorded provenance."""

    dest_path: str
    metadata_key: str
    provenance: dict[str, Any]
    finished: bool


def recorded_images(dest: Store) -> list[Recorded]:
    """Every image cellmap-migrate finished (by its completion mark) or started (by its
    resume record) at DEST."""
    found = [
        Recorded(
            path,
            join_key(path, ".zattrs" if version == "0.4" else "zarr.json"),
            dict(attrs[PROVENANCE_KEY]),
            True,
        )
        for batch in marked_groups(dest)
        for path, version, attrs in batch
    ]
    for record in records.started_images(dest):
        image = record.get("image") or {}
        attributes = image.get("attributes") or {}
        found.append(
            Recorded(
                str(image.get("dest_path", "")),
                records.image_state_key(str(image.get("dest_path", "")), "plan.json"),
                dict(attributes.get(PROVENANCE_KEY) or {}),
                False,
            )
        )
    return found


def origin(provenance: dict[str, Any]) -> str:
    """The recorded source location of an image, for messages."""
    return "/".join(
        part.strip("/") if i else part.rstrip("/")
        for i, part in enumerate((str(provenance.get("source")), str(provenance.get("path"))))
        if part
    )


def _within(path: str, inner: str) -> bool:
    return not inner or path == inner or path.startswith(inner + "/")


def recorded_options(
    source: Store,
    inner: str,
    dest: Store,
    recorded: Sequence[Recorded],
    registry: Registry | None = None,
    of_src: Callable[[Recorded], bool] | None = None,
) -> PlanOptions:
    """The options recorded by the images at DEST (``recorded``) that were migrated from
    SRC (its ``inner`` part; ``of_src``, when given, says which those are), where SRC is the
    source they record, at the same location (the location is part of what they record, so
    a moved source plans differently). ``--image-path`` settings, recorded by each
    precomputed volume for itself, are gathered from all of them.

    Raises VerificationError when DEST holds no such image, when they were migrated with
    different settings, or when the settings are not recorded."""
    if not recorded:
        raise VerificationError(
            f"{dest.display()}: no cellmap-migrate output found (nothing to verify)"
        )
    ours = [
        r
        for r in recorded
        if (of_src(r) if of_src is not None else str(r.provenance.get("source")) == source.url)
        and (of_src is not None or _within(str(r.provenance.get("path", "")), inner))
    ]
    if not ours:
        origins = sorted(
            {origin(r.provenance) if inner else str(r.provenance.get("source")) for r in recorded}
        )
        shown = ", ".join(origins[:3]) + (
            f" and {len(origins) - 3} more" if len(origins) > 3 else ""
        )
        raise VerificationError(
            f"{source.display(inner)} is not the source of {dest.display()}: "
            f"its images were migrated from {shown}"
        )
    for r in ours:
        if not isinstance(r.provenance.get("settings"), dict):
            raise VerificationError(
                f"{dest.display(r.metadata_key)}: {PROVENANCE_KEY}.settings: missing (written by "
                "a cellmap-migrate that did not record its settings): verify cannot plan the "
                "same migration again; convert it again with --overwrite"
            )
    variants: dict[str, Recorded] = {}
    image_paths: dict[str, Any] = {}
    for r in ours:
        own = dict(r.provenance["settings"])
        paths = own.pop(IMAGE_PATHS, None)
        if isinstance(paths, dict):
            image_paths.update(paths)
        variants.setdefault(json.dumps(own, sort_keys=True), r)
    if len(variants) > 1:
        every = [r.provenance["settings"] for r in variants.values()]
        differ = [k for k in every[0] if any(s.get(k) != every[0][k] for s in every)]
        shown = "; ".join(
            f"{r.dest_path}: "
            + ", ".join(f"{k} {r.provenance['settings'].get(k)!r}" for k in differ)
            for r in variants.values()
        )
        raise VerificationError(
            f"{dest.display()}: its images of {source.display(inner)} were migrated with "
            f"different settings ({shown}); verify each part with its own SRC"
        )
    first = ours[0]
    settings = {k: v for k, v in first.provenance["settings"].items() if k != IMAGE_PATHS}
    if image_paths:
        settings[IMAGE_PATHS] = dict(sorted(image_paths.items()))
    where = dest.display(first.metadata_key)
    check_registry(settings, where, registry, dataset_of(source.url))
    return PlanOptions.from_recorded(settings, where, registry)


IMAGE_PATHS = "image_paths"


def check_registry(
    settings: dict[str, Any], where: str, registry: Registry | None, dataset: str
) -> None:
    """The registry DEST records (``settings.registry``: dataset and digest) is the one
    ``verify --registry`` gives for ``dataset``, or neither has one; VerificationError naming
    both otherwise (another manifest is other settings)."""
    recorded = settings.get("registry")
    if recorded is None:
        if registry is not None and registry.for_dataset(dataset) is not None:
            raise VerificationError(
                f"{where}: migrated without a registry, but --registry {registry.location} "
                "was given: other settings (verify without --registry)"
            )
        return
    if not isinstance(recorded, dict) or set(recorded) != {"dataset", "digest"}:
        raise VerificationError(
            f"{where}: {PROVENANCE_KEY}.settings.registry: not what cellmap-migrate records "
            f"({recorded!r})"
        )
    dataset, digest = str(recorded["dataset"]), str(recorded["digest"])
    if registry is None:
        raise VerificationError(
            f"{where}: migrated with the registry manifest of {dataset} (digest {digest}); "
            "give it with --registry PATH (the manifest, or a folder holding it)"
        )
    manifest = registry.for_dataset(dataset)
    if manifest is None:
        raise VerificationError(
            f"--registry {registry.location} has no manifest of {dataset}; {where} was "
            f"migrated with the one of digest {digest}"
        )
    if manifest.digest != digest:
        raise VerificationError(
            f"{manifest.location} (digest {manifest.digest}) is not the registry manifest "
            f"{where} was migrated with (digest {digest}): other settings (convert again "
            "with --overwrite to migrate with this one)"
        )


def plan_again_dataset(
    dataset: Store, location: SourceLocation, dest: Store, registry: Registry | None = None
) -> tuple[Plan, list[Recorded]]:
    """:func:`plan_again` for a dataset folder or one precomputed volume (``dataset``: the
    dataset folder's store): its N5 images and volumes, recorded by their N5 root and by
    the dataset folder."""
    n5 = sibling_store(dataset, location.n5_root) if location.n5_root else None
    read = read_source(location, n5, dataset)
    recorded = recorded_images(dest)
    n5_url = n5.url if n5 is not None else None

    def of_src(r: Recorded) -> bool:
        source, path = str(r.provenance.get("source")), str(r.provenance.get("path", ""))
        if location.kind == "volume":
            return source == dataset.url and path == location.inner
        return source == dataset.url or (n5_url is not None and source == n5_url)

    options = recorded_options(dataset, location.inner, dest, recorded, registry, of_src)
    plan = build_dataset_plan(
        read.discovery, n5_url, read.volumes, dataset.url, location.inner, dest.url, options
    )
    return read_state(dest, plan, lease=False).plan_at_dest(plan), recorded


def plan_again(
    source: Store,
    inner: str,
    dest: Store,
    registry: Registry | None = None,
    location: SourceLocation | None = None,
) -> tuple[Plan, list[Recorded]]:
    """The plan of the migration DEST records, made again from SRC's own metadata (and the
    label images DEST's ``labels`` groups list, as ``convert`` merges them) and the registry
    manifest it records (found in ``registry``, checked by digest); with every image
    cellmap-migrate finished or started at DEST. ``location`` says what SRC is when it is
    not an N5 tree (a dataset folder or a precomputed volume: ``source`` is then the
    dataset folder)."""
    if location is not None and location.kind != "n5":
        return plan_again_dataset(source, location, dest, registry)
    discovery = discover(source, inner)
    recorded = recorded_images(dest)
    options = recorded_options(source, inner, dest, recorded, registry)
    plan = build_plan(discovery, source.url, inner, dest.url, options)
    plan = read_state(dest, plan, lease=False).plan_at_dest(plan)
    return plan, recorded
