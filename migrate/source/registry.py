"""The OpenOrganelle registry as one more source convention: manifests read, their sources
matched to images, and what a source states about its image as a :class:`Statement`.

``--registry PATH`` names one manifest (``<dataset>.manifest.json``, or the registry's own
``api/<dataset>/manifest.json``) or a folder of them (``<dataset>.manifest.json`` files and
``<dataset>/manifest.json`` sub-folders), local or on S3. Each is parsed strictly
(:class:`schemas.registry.Manifest`); a malformed one is a :class:`MetadataError` naming the
file and the field. A manifest's digest (SHA-256 of its canonical JSON) is what a migration
records as the registry it used.

A source is matched to an image by its URL's path inside the dataset, never by bucket or
host, so a mirror of the bucket still matches: for an N5 volume the path inside the N5 root
(``s3://…/jrc_hela-2/jrc_hela-2.n5/labels/er_pred`` → ``labels/er_pred``), for anything
else the path after the dataset's folder (``neuroglancer/em/fibsem-uint8.precomputed``). A
trailing ``/`` is ignored.

What a source states (:func:`registry_statement`), C order: its transform, which the portal
applied to every level, as s0's scale (its sign is the orientation: negative, the image is
stored mirrored along that axis) and s0's translation as OME-NGFF means it, the position of
the centre of stored voxel 0. The portal drew voxel ``i`` over ``[T + S·i, T + S·(i + 1)]``
(``S`` scale, ``T`` translate; Neuroglancer is corner-based), and the dataset's upright
images put that interval's low end where OME-NGFF puts the voxel's centre (``T = 0`` and
COSEM ``translate = 0`` for the same EM), so stored voxel 0 is at ``T`` when ``S > 0`` and at
``T + S`` when ``S < 0``: a mirrored source with ``T = N·|S|`` (``N`` the s0 extent) sits
exactly where its upright twin would.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from migrate.errors import MetadataError, MigrationError
from migrate.source.discover import non_finite_number
from migrate.source.image import SourceLevel
from migrate.source.parse import parse_attrs
from migrate.source.statement import LevelStatement, Ref, Statement
from migrate.source.units import normalize_stated_unit
from migrate.storage import S3Options, open_store
from schemas.registry import Manifest, RegistrySource

MANIFEST_SUFFIX = ".manifest.json"
"""A folder's manifest files: ``<dataset>.manifest.json``."""
MANIFEST_NAME = "manifest.json"
"""Or ``<dataset>/manifest.json`` (the registry repository's ``api/`` folder)."""


@dataclass(frozen=True)
class LoadedManifest:
    """One parsed manifest, where it was read and its digest."""

    manifest: Manifest
    location: str
    """Display path of the file, for messages."""
    digest: str
    """``sha256:`` and the first 16 hex digits of the SHA-256 of its canonical JSON."""

    def recorded(self) -> dict[str, str]:
        """What a migration records of the manifest it used (its settings)."""
        return {"dataset": self.manifest.name, "digest": self.digest}


@dataclass(frozen=True)
class Registry:
    """The manifests ``--registry`` named, by dataset name."""

    location: str
    manifests: Mapping[str, LoadedManifest]
    single: bool
    """PATH was one manifest file (then it must be the dataset's)."""

    def for_dataset(self, dataset: str) -> LoadedManifest | None:
        """The manifest of ``dataset``; None when a folder has none for it. A single manifest
        of another dataset is a MetadataError (a wrong file, not a missing one)."""
        found = self.manifests.get(dataset)
        if found is None and self.single:
            (only,) = self.manifests.values()
            raise MetadataError(
                only.location,
                "name",
                f"this manifest describes {only.manifest.name!r}, not {dataset!r} (the "
                "dataset of the source); give that dataset's manifest, or a folder of them",
            )
        return found


def manifest_digest(document: Any) -> str:
    """The digest of a parsed manifest: its canonical JSON (sorted keys, no spaces) hashed,
    so the same manifest read from a copy with other whitespace has the same digest."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_manifest(raw: bytes, location: str) -> LoadedManifest:
    """One manifest file's bytes parsed strictly; MetadataError naming file and field."""
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MetadataError(location, None, f"malformed JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise MetadataError(location, None, "expected a JSON object (a registry manifest)")
    bad = non_finite_number(document)
    if bad is not None:
        raise MetadataError(location, bad[0], f"{bad[1]} is not a JSON number")
    manifest = parse_attrs(Manifest, document, location)
    for key, source in manifest.sources.items():
        if source.name != key:
            raise MetadataError(
                location, f"sources.{key}.name", f"is {source.name!r}, not its key {key!r}"
            )
    return LoadedManifest(manifest, location, manifest_digest(document))


def load_registry(path: str, s3: S3Options | None = None) -> Registry:
    """Read ``--registry PATH``: one manifest file, or a folder of them (local or S3)."""
    path = path.removeprefix("file://")
    if path.endswith(".json"):
        parent, name = posixpath.split(path.rstrip("/"))
        store = open_store(parent or ".", read_only=True, s3=s3)
        raw = store.read(name)
        if raw is None:
            raise MigrationError(f"{store.display(name)}: --registry: no such manifest")
        loaded = parse_manifest(raw, store.display(name))
        return Registry(store.display(name), {loaded.manifest.name: loaded}, single=True)
    store = open_store(path, read_only=True, s3=s3)
    dirs, files = store.list_dir("")
    keys = [name for name in files if name.endswith(MANIFEST_SUFFIX)]
    nested = [f"{name}/{MANIFEST_NAME}" for name in dirs]
    raws = store.map(store.read, keys + nested)
    manifests: dict[str, LoadedManifest] = {}
    for key, raw in zip(keys + nested, raws, strict=True):
        if raw is None:
            continue  # a sub-folder without a manifest.json
        loaded = parse_manifest(raw, store.display(key))
        name = loaded.manifest.name
        if name in manifests:
            raise MetadataError(
                loaded.location,
                "name",
                f"{name!r} is described twice (also by {manifests[name].location})",
            )
        manifests[name] = loaded
    if not manifests:
        raise MigrationError(
            f"{store.display()}: --registry: no manifest here (looked for "
            f"<dataset>{MANIFEST_SUFFIX} and <dataset>/{MANIFEST_NAME})"
        )
    return Registry(store.display(), manifests, single=False)


def dataset_of(n5_root: str) -> str:
    """The dataset a ``<dataset>.n5`` root belongs to (its name without ``.n5``)."""
    return posixpath.basename(n5_root.rstrip("/")).removesuffix(".n5")


MatchKey = tuple[str, str]
"""How a source and an image are matched: (``n5``, path inside the N5 root) or
(``dataset``, path inside the dataset folder)."""


def source_key(url: str, dataset: str) -> MatchKey | None:
    """Where a registry source's ``url`` points inside its dataset (see the module
    docstring); None when the URL names neither an N5 root nor the dataset's folder."""
    rest = url.split("://", 1)[-1]
    parts = [part for part in rest.split("/") if part]
    for index, part in enumerate(parts):
        if part.endswith(".n5"):
            return ("n5", "/".join(parts[index + 1 :]))
    for index, part in enumerate(parts):
        if part == dataset:
            return ("dataset", "/".join(parts[index + 1 :]))
    return None


def n5_image_key(image_path: str) -> MatchKey:
    """The match key of the N5 image at ``image_path`` (inside its N5 root)."""
    return ("n5", image_path.strip("/"))


@dataclass(frozen=True)
class Matched:
    """A registry source matched to an image."""

    source: RegistrySource
    loaded: LoadedManifest

    def ref(self, field: str) -> Ref:
        """Where ``field`` of this source is in its manifest."""
        return Ref(self.loaded.location, f"sources.{self.source.name}.{field}")


def match_sources(loaded: LoadedManifest, keys: Sequence[MatchKey]) -> dict[MatchKey, Matched]:
    """The source of each image key (images without one are left out)."""
    name = loaded.manifest.name
    by_key = {source_key(source.url, name): source for source in loaded.manifest.sources.values()}
    return {key: Matched(by_key[key], loaded) for key in keys if key in by_key}


def unmatched_sources(loaded: LoadedManifest, keys: Sequence[MatchKey]) -> list[str]:
    """Names of the manifest's sources that match none of ``keys`` (volumes the registry
    lists that the source being migrated does not hold)."""
    wanted = set(keys)
    name = loaded.manifest.name
    return [
        source.name
        for source in loaded.manifest.sources.values()
        if source_key(source.url, name) not in wanted
    ]


def registry_statement(
    matched: Matched, levels: Sequence[SourceLevel], *, allow_unknown_units: bool
) -> Statement:
    """What a registry source states about its image (C order): axes, units, and s0's
    signed scale and translation (the position of stored voxel 0's centre; see the module
    docstring). It states nothing about other levels: the portal applied the transform to
    s0 and placed the other levels by the N5's own metadata. Raises MetadataError when the
    transform has another number of axes than the image."""
    transform = matched.source.transform
    ndim = len(levels[0].shape)
    if len(transform.axes) != ndim:
        ref = matched.ref("transform.axes")
        raise MetadataError(
            ref.location,
            ref.field,
            f"{len(transform.axes)} axes {list(transform.axes)} for the {ndim}-dimensional "
            f"image (s0 shape {list(levels[0].shape)}, C order)",
        )
    unit_refs = tuple(matched.ref(f"transform.units[{k}]") for k in range(ndim))
    units = tuple(
        normalize_stated_unit(
            unit, location=ref.location, field=ref.field, allow_unknown=allow_unknown_units
        )
        for unit, ref in zip(transform.units, unit_refs, strict=True)
    )
    position = tuple(
        t + s if s < 0 else t for t, s in zip(transform.translate, transform.scale, strict=True)
    )
    s0 = LevelStatement(
        scale=tuple(transform.scale),
        scale_ref=matched.ref("transform.scale"),
        translation=position,
        translation_ref=matched.ref("transform.translate"),
        factor=None,
    )
    blank = LevelStatement(None, None, None, None, None)
    where = f"{matched.loaded.location} sources.{matched.source.name}"
    return Statement(
        convention="registry",
        name="registry",
        axes=tuple(transform.axes),
        axes_ref=matched.ref("transform.axes"),
        units=units,
        unit_refs=unit_refs,
        levels=(s0,) + (blank,) * (len(levels) - 1),
        sources={"registry": f"OpenOrganelle registry ({where})"},
    )
