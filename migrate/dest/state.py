"""DEST's state, read once per run: :func:`read_state` → :class:`DestState`, a value the
rest of the run passes along; :class:`DestWriter` writes through it.

What a run needs to know about DEST, and where it comes from:

- **the root** (:class:`RootListing`, :func:`read_root`): is DEST a file, what its top level
  holds (an N5 ``attributes.json``, the state folder ``.cellmap-migrate``, anything at all);
- **the metadata documents** of the root, of the plan's groups and of its images (raw bytes,
  so that a finalize step compares what it would write with what is there without reading
  it again): group attributes, each image's completion mark, DEST's completion mark, the
  label names the ``labels`` groups list;
- **the start record** (``plan.json``) of each of the plan's images and whether the state
  folder holds unit records at all;
- **the lease** as it was read (who holds DEST, if anyone), and the certificate ``verify``
  left (:mod:`migrate.dest.certificate`), when the state folder exists.

Reading is one batch: on S3 every request of the state goes out at once (up to the store's
concurrency), locally one after the other. A DEST that does not exist or is empty costs one
listing. Per-level state that can be large (the done units of a level, the signatures of its
source blocks) is not in the value: it is read level by level, only for the levels a run
copies (:mod:`migrate.dest.records`).

A real run reads the root before it takes the lease (a refused DEST is never written, not
even a lease: :func:`migrate.dest.ours.check_root`), then, under the lease, the whole state
once; the dry run reads it once without a lease.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from migrate.dest import marks, records
from migrate.dest.certificate import CERTIFICATE_KEY, Certificate
from migrate.dest.lease import Holder, read_holder
from migrate.storage import Store, join_key
from migrate.target.layout import Documents, dumps
from migrate.target.plan import plan_groups, with_completion_mark
from schemas.plan import ImagePlan, Plan


class ImageState(Enum):
    NEW = "new"  # nothing at DEST
    PARTIAL = "partial"  # started with the same plan
    COMPLETE = "complete"  # finished with the same plan
    DIFFERENT = "different"  # started or finished with another plan
    FOREIGN = "foreign"  # DEST holds data cellmap-migrate did not write


@dataclass(frozen=True)
class RootListing:
    """DEST's top level: whether it is a file, and its immediate children."""

    is_file: bool = False
    dirs: tuple[str, ...] = ()
    files: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.dirs and not self.files

    @property
    def has_state(self) -> bool:
        """The state folder (``.cellmap-migrate``: lease, unit records) is there."""
        return records.STATE_DIR in self.dirs


def read_root(store: Store) -> RootListing:
    """Whether DEST is a file, and its top-level listing. One request after the other: it
    is a run's first contact with DEST, and storage that cannot be reached is then retried
    (and shown) once, not twice at the same time."""
    if store.root_is_object():
        return RootListing(is_file=True)
    dirs, files = store.list_dir("")
    return RootListing(False, tuple(dirs), tuple(files))


@dataclass(frozen=True)
class ImageAtDest:
    """What DEST holds at one image path of a plan."""

    path: str
    attributes: dict[str, Any] | None = None
    """The group's user attributes; None when there is no Zarr group."""
    started: dict[str, Any] | None = None
    """Its start record (``plan.json``), when a run started it and has not finished it."""
    occupied: bool = False
    """Anything is stored under the path (looked at only when there is neither of the two)."""

    @property
    def mark(self) -> dict[str, Any] | None:
        """The provenance of the finished image (it carries the fingerprint), or None."""
        return marks.image_mark_of(self.attributes)

    @property
    def generation(self) -> str:
        """The generation of its unit records (see :mod:`migrate.dest.records`)."""
        return records.generation_of(self.started)


@dataclass(frozen=True)
class DestState:
    """DEST as one run found it (see the module docstring). Pure queries only."""

    url: str
    root: RootListing = RootListing()
    documents: Mapping[str, bytes | None] = field(default_factory=dict)
    """Every metadata document read (key → bytes; None: absent)."""
    images: Mapping[str, ImageAtDest] = field(default_factory=dict)
    has_records: bool = False
    """The state folder holds unit or start records (of any image)."""
    lease: tuple[Holder | None, str] | None = None
    """The lease as read (its holder, None when unreadable, and version token); None when
    there was none."""
    certificate: Certificate | None = None
    """The certificate ``verify`` left (:mod:`migrate.dest.certificate`); None: there is
    none."""

    def parsed(self, key: str) -> dict[str, Any] | None:
        return marks.parse_json(self.documents.get(key))

    def attributes(self, path: str) -> dict[str, Any] | None:
        """The user attributes of the group at ``path`` (it must have been read)."""
        v3, v2 = (self.parsed(join_key(path, name)) for name in marks.GROUP_DOCUMENTS)
        return marks.attributes_of(v3, v2)

    @property
    def completion_mark(self) -> dict[str, str]:
        """The images DEST's completion mark lists (dest path → fingerprint)."""
        return marks.completion_of(self.attributes(""))

    def image(self, path: str) -> ImageAtDest:
        return self.images.get(path) or ImageAtDest(path)

    def image_state(self, plan: Plan, image: ImagePlan) -> ImageState:
        """Where ``image`` stands at DEST relative to ``plan``."""
        found = self.image(image.dest_path)
        fingerprint = plan.image_fingerprint(image)
        finished = found.mark
        if finished is not None:
            same = finished["fingerprint"] == fingerprint
            return ImageState.COMPLETE if same else ImageState.DIFFERENT
        if found.started is not None:
            same = found.started.get("fingerprint") == fingerprint
            return ImageState.PARTIAL if same else ImageState.DIFFERENT
        return ImageState.FOREIGN if found.occupied else ImageState.NEW

    def plan_at_dest(self, plan: Plan) -> Plan:
        """``plan`` as it applies to what DEST holds: its ``labels`` groups keep listing the
        label images other runs listed, and the completion mark keeps listing the images
        other runs finished there. ``convert`` writes this; ``verify`` compares DEST with
        it."""
        paths = [group.path for group in plan.groups if group.attributes]
        existing = marks.labels_of({path: self.attributes(path) for path in paths})
        if existing:
            plan = plan.model_copy(
                update={"groups": plan_groups(plan.images, plan.ngff_version, existing)}
            )
        return with_completion_mark(plan, self.completion_mark)

    @property
    def holder(self) -> Holder | None:
        """Who held DEST's lease when the state was read (None: nobody, or unreadable)."""
        return self.lease[0] if self.lease is not None else None


def _group_keys(path: str, version: str) -> list[str]:
    """The documents read for a group: its attributes (v3 or v2) and, for a 0.4 plan, the
    ``.zgroup`` a finalize step writes."""
    names = [*marks.GROUP_DOCUMENTS, *((".zgroup",) if version == "0.4" else ())]
    return [join_key(path, name) for name in names]


def _read_documents(store: Store, groups: list[list[str]]) -> dict[str, bytes | None]:
    """The documents of each group (a list of keys, v3 first). On a store without
    concurrency a group whose ``zarr.json`` exists is not asked for its v2 documents."""
    found: dict[str, bytes | None] = {}
    if store.concurrency > 1:
        keys = [key for group in groups for key in group]
        found.update(zip(keys, store.map(store.read, keys), strict=True))
        return found
    for group in groups:
        v3 = store.read(group[0])
        found[group[0]] = v3
        if v3 is None:
            found.update((key, store.read(key)) for key in group[1:])
    return found


def read_state(
    store: Store, plan: Plan, root: RootListing | None = None, *, lease: bool = True
) -> DestState:
    """DEST's state for ``plan`` (see the module docstring): one listing of the root (none
    when ``root`` is given: the dry run's, read by the same run without a lease), then one
    batch of reads, and a second one only for what the first found (start records when
    there are records at all; whether an image path holds anything when it has neither
    metadata nor a record). ``lease``: read the lease too (not needed by the run that holds
    it)."""
    root = root if root is not None else read_root(store)
    if root.is_file or root.empty:
        return DestState(store.url, root)
    group_paths = list(dict.fromkeys(["", *(group.path for group in plan.groups)]))
    image_paths = [image.dest_path for image in plan.images]
    groups = [_group_keys(path, plan.ngff_version) for path in group_paths]
    groups += [[join_key(path, name) for name in marks.GROUP_DOCUMENTS] for path in image_paths]
    calls: list[Callable[[], Any]] = [lambda: _read_documents(store, groups)]
    if root.has_state:
        calls.append(lambda: store.exists_prefix(records.image_state_key("")))
        calls.append(lambda: store.read(CERTIFICATE_KEY))
        if lease:
            calls.append(lambda: read_holder(store))
    results = store.map(lambda call: call(), calls)
    documents: dict[str, bytes | None] = results[0]
    has_records = bool(results[1]) if root.has_state else False
    found_certificate = Certificate.parse(results[2]) if root.has_state else None
    held = results[3] if root.has_state and lease else None
    attributes = {
        path: marks.attributes_of(
            *(marks.parse_json(documents.get(join_key(path, n))) for n in marks.GROUP_DOCUMENTS)
        )
        for path in image_paths
    }
    started: list[dict[str, Any] | None] = [None] * len(image_paths)
    if has_records:
        starts = [records.image_state_key(path, "plan.json") for path in image_paths]
        started = [marks.parse_json(raw) for raw in store.map(store.read, starts)]
    vacant = [
        path
        for path, start in zip(image_paths, started, strict=True)
        if attributes[path] is None and start is None
    ]
    occupied = dict(zip(vacant, store.map(store.exists_prefix, vacant), strict=True))
    images = {
        path: ImageAtDest(path, attributes[path], start, occupied.get(path, False))
        for path, start in zip(image_paths, started, strict=True)
    }
    return DestState(store.url, root, documents, images, has_records, held, found_certificate)


class DestWriter:
    """The writes of one run at DEST, made through the state it read: a document is written
    only when its bytes differ from what the state (or this run's own earlier write) says is
    there, so finishing a finished migration reads and writes nothing more."""

    def __init__(self, store: Store, state: DestState) -> None:
        self.store = store
        self.state = state
        self._known: dict[str, bytes | None] = dict(state.documents)
        self._lock = threading.Lock()

    def _current(self, key: str) -> bytes | None:
        with self._lock:
            if key in self._known:
                return self._known[key]
        return self.store.read(key)

    def _write(self, key: str, data: bytes) -> None:
        self.store.write(key, data)
        with self._lock:
            self._known[key] = data

    def pending(self, docs: Documents) -> bool:
        """Whether :meth:`write_if_changed` would write any of ``docs``."""
        return any(self._current(key) != dumps(document) for key, document in docs.items())

    def write_if_changed(self, docs: Documents) -> None:
        """Write each document whose stored bytes differ, in order."""
        for key, document in docs.items():
            self.write_one_if_changed(key, document)

    def write_one_if_changed(self, key: str, document: Any) -> None:
        data = dumps(document)
        if self._current(key) != data:
            self._write(key, data)

    def write_if_absent(self, docs: Documents) -> None:
        for key, document in docs.items():
            if self._current(key) is None:
                self._write(key, dumps(document))

    def forget(self, prefix: str) -> None:
        """Note that everything under ``prefix`` was deleted."""
        with self._lock:
            for key in [key for key in self._known if key.startswith(prefix.rstrip("/") + "/")]:
                self._known[key] = None
