"""``verify --listing``: the proof that costs a listing, not a second migration.

Without reading any chunk or block, it proves that

1. every chunk (shard) the ledger records is at DEST with the size and stamp it records (S3:
   the ETag a listing shows, which for the single-part PUTs cellmap-migrate makes is the MD5
   of the bytes; locally: the size and modification time a walk shows, and with ``--hash``
   the CRC-32 of the file's bytes too), and nothing else is in a level array;
2. every source block is at SRC with the size and stamp it had when it was read for the
   copy, and no block was added;
3. every metadata document equals what the plan, made again from SRC, writes; the layout
   holds nothing the plan does not account for (:mod:`migrate.check.verify`);
4. the certificate of a full voxel proof exists, of these very images and ledgers, and the
   listings of SRC and DEST are still the ones that proof saw.

Listings are compared with the ledger without holding either in memory: entries are summed
into :data:`BUCKETS` buckets by key on both sides (the order-free entry hashes of
:mod:`migrate.dest.certificate`); only when a bucket differs are the listing and the ledger
read a second time, keeping the entries of differing buckets, to name each key. On S3 the
listings are made several prefixes at a time (a level's first key segments), one request
per 1,000 objects.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import math
import queue
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from migrate.check.replan import Recorded, plan_again
from migrate.check.verify import VerifyResult, check_layout, check_metadata
from migrate.copy.precomputed import image_source, is_source_file, sibling_store
from migrate.dest import certificate, ledger
from migrate.dest.certificate import ListingDigest, Proof, entry_hash
from migrate.dest.ours import ZARR_METADATA, LevelGrid
from migrate.dest.records import STATE_DIR
from migrate.source.dataset import SourceLocation
from migrate.source.registry import Registry
from migrate.storage import LocalStore, Store, join_key
from schemas.plan import ImagePlan, LevelPlan, Plan

BUCKETS = 4096
"""Buckets a side of a comparison is summed into (its memory, whatever the image)."""
NAMED = 50
"""Differences named per comparison; the rest are counted."""
SCAN_BUCKETS = 256
"""Differing buckets whose keys are looked up by the second pass, at most."""
_QUEUE_PAGES = 64


# --------------------------------------------------------------------------------------
# Listings
# --------------------------------------------------------------------------------------

Entry = tuple[str, int, str]
"""(key, size, stamp) as :meth:`~migrate.storage.Store.list_stats` lists it."""


def _inside_state(key: str) -> bool:
    return key == STATE_DIR or key.startswith(STATE_DIR + "/")


SPLIT_DEPTH = 3
"""Folder levels a prefix is split into, at most, to list its parts in parallel."""
PAGE = 1000
"""Objects an S3 listing returns per request."""


def _split(store: Store, prefixes: Sequence[str], expected: int) -> tuple[list[str], list[Entry]]:
    """Prefixes that together hold everything under ``prefixes``, split folder by folder
    (one listing with a delimiter each, several at a time) into at most one part per
    :data:`PAGE` of the ``expected`` objects (and no more than keep
    :attr:`~migrate.storage.Store.concurrency` listings busy), so that the listing still
    costs about one request per :data:`PAGE` objects; and the objects found directly in the
    folders looked at on the way. A deeper split is not even looked at when the folders seen
    so far say it would give too many parts (chunk grids are regular). The state folder is
    left out unless a prefix is inside it."""
    limit = max(1, min(4 * store.concurrency, expected // PAGE))
    found: list[Entry] = []
    frontier = list(prefixes)
    fanout = 1.0
    for _depth in range(SPLIT_DEPTH):
        if not frontier or len(frontier) * fanout > limit:
            break
        listed = store.map(store.list_dir_stats, frontier)
        deeper: list[str] = []
        direct: list[Entry] = []
        for prefix, (dirs, files) in zip(frontier, listed, strict=True):
            direct += [(join_key(prefix, name), size, stamp) for name, size, stamp in files]
            keep_state = _inside_state(prefix)
            deeper += [
                join_key(prefix, name)
                for name in dirs
                if keep_state or not _inside_state(join_key(prefix, name))
            ]
        if len(deeper) > limit:
            break  # this depth's folders are the parts: listed whole, files and all
        found += direct
        fanout = len(deeper) / len(frontier)
        frontier = deeper
    return frontier, found


def stream_stats(
    store: Store, prefixes: Sequence[str], *, split: bool = True, expected: int = 0
) -> Iterator[Entry]:
    """Every object under each of ``prefixes`` as (key relative to the store, size, stamp),
    in no particular order; the state folder only when a prefix is inside it. Locally a walk
    per prefix; on S3 (``split``) the prefixes are split by their first key segments and
    the parts listed :attr:`~migrate.storage.Store.concurrency` at a time, pages handed over
    through a bounded queue (memory stays bounded): each object is listed once, one request
    per 1,000, plus one per folder split (about one part per 1,000 of the ``expected``
    objects: see :func:`_split`)."""
    if store.concurrency <= 1:
        for prefix in prefixes:
            keep_state = _inside_state(prefix)
            for key, size, stamp in store.list_stats(prefix):
                full = join_key(prefix, key)
                if keep_state or not _inside_state(full):
                    yield full, size, stamp
        return
    parts, direct = _split(store, prefixes, expected) if split else (list(prefixes), [])
    yield from direct
    yield from _parallel(store, parts)


_DONE = object()


def _parallel(store: Store, prefixes: list[str]) -> Iterator[Entry]:
    pages: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_PAGES)
    pending = list(reversed(prefixes))
    lock = threading.Lock()
    stop = threading.Event()

    def work() -> None:
        try:
            while not stop.is_set():
                with lock:
                    if not pending:
                        break
                    prefix = pending.pop()
                page: list[Entry] = []
                for key, size, stamp in store.list_stats(prefix):
                    page.append((join_key(prefix, key), size, stamp))
                    if len(page) >= 1000:
                        pages.put(page)
                        page = []
                    if stop.is_set():
                        return
                if page:
                    pages.put(page)
        except BaseException as exc:  # handed to the consumer, raised there
            pages.put(exc)
        finally:
            pages.put(_DONE)

    count = max(1, min(store.concurrency, len(prefixes)))
    threads = [threading.Thread(target=work, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    finished = 0
    try:
        while finished < count:
            item = pages.get()
            if item is _DONE:
                finished += 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield from item
    finally:
        stop.set()
        while any(thread.is_alive() for thread in threads):  # unblock producers
            with contextlib.suppress(queue.Empty):
                pages.get(timeout=0.05)


# --------------------------------------------------------------------------------------
# What is compared
# --------------------------------------------------------------------------------------


def is_block_key(key: str, level: LevelPlan) -> bool:
    """Whether ``key`` (relative to the source level, N5 ``x/y/z``) is a block of the level
    inside its extent, as :func:`migrate.dest.records.unit_signatures` counts blocks (a
    precomputed level: a chunk or shard file the copy reads)."""
    if level.precomputed is not None:
        return is_source_file(key, level)
    parts = key.split("/")
    if len(parts) != len(level.shape) or not all(part.isdigit() for part in parts):
        return False
    return all(
        int(index) * block < extent
        for index, block, extent in zip(
            reversed(parts), level.source_blocks, level.shape, strict=True
        )
    )


def level_grid(plan: Plan, level: LevelPlan) -> LevelGrid:
    return LevelGrid(
        tuple(level.shape),
        tuple(level.shard or level.chunks),
        "" if plan.ngff_version == "0.4" else "c",
    )


def dest_prefixes(plan: Plan) -> list[str]:
    """What a DEST listing covers besides the ledger: every image of the plan."""
    return [image.dest_path for image in plan.images]


def source_stores(plan: Plan, source: Store) -> list[tuple[Store, dict[str, LevelPlan]]]:
    """What a SRC listing covers: every level of the plan (source path → level), grouped by
    the store their paths are relative to (the N5 root; a precomputed volume's dataset
    folder)."""
    stores: dict[str, tuple[Store, dict[str, LevelPlan]]] = {}
    for image in plan.images:
        store = image_source(source, image)
        levels = stores.setdefault(store.url, (store, {}))[1]
        levels.update({level.source_path: level for level in image.levels})
    return list(stores.values())


def source_key(store: Store, level: LevelPlan, key: str) -> str:
    """The full name of source file ``key`` of ``level`` (its location, as messages show
    it): SRC's side of a comparison, whichever store the level is read from."""
    return store.display(join_key(level.source_path, key))


def ledger_prefixes(plan: Plan) -> list[str]:
    return [ledger.ledger_key(image.dest_path) for image in plan.images]


def _level_of(path: str, levels: dict[str, LevelPlan]) -> tuple[LevelPlan, str] | None:
    """The level array a full key lies in, and the key relative to it."""
    parts = path.split("/")
    for cut in range(len(parts) - 1, 0, -1):
        level = levels.get("/".join(parts[:cut]))
        if level is not None:
            return level, "/".join(parts[cut:])
    return None


# --------------------------------------------------------------------------------------
# Bucketed comparison: a ledger side against a listing side
# --------------------------------------------------------------------------------------

Value = tuple[int, str, str]
"""(size, stamp, digest) of an entry; the digest is compared only where both sides have
one (``--hash``)."""


def _bucket(key: str) -> int:
    return zlib.crc32(key.encode()) & (BUCKETS - 1)


def _value_hash(key: str, value: Value, with_digest: bool) -> int:
    size, stamp, digest = value
    return entry_hash(key, size, f"{stamp}\0{digest}" if with_digest else stamp)


class Balance:
    """Two multisets of keyed entries, summed into buckets by key (see the module
    docstring). ``with_digest``: digests are part of each value (``--hash``)."""

    def __init__(self, with_digest: bool = False) -> None:
        self.with_digest = with_digest
        self.sums = [[0] * BUCKETS, [0] * BUCKETS]
        self.counts = [[0] * BUCKETS, [0] * BUCKETS]
        self.entries = [0, 0]

    def add(self, side: int, key: str, value: Value) -> None:
        bucket = _bucket(key)
        self.sums[side][bucket] = (
            self.sums[side][bucket] + _value_hash(key, value, self.with_digest)
        ) & (2**128 - 1)
        self.counts[side][bucket] += 1
        self.entries[side] += 1

    def differing(self) -> list[int]:
        return [
            bucket
            for bucket in range(BUCKETS)
            if self.sums[0][bucket] != self.sums[1][bucket]
            or self.counts[0][bucket] != self.counts[1][bucket]
        ]


Describe = Callable[[str, Value | None, Value | None], str]


def name_differences(
    buckets: Iterable[int],
    ledger_side: Callable[[], Iterator[tuple[str, Value]]],
    listing_side: Callable[[], Iterator[tuple[str, Value]]],
    describe: Describe,
    with_digest: bool,
) -> list[str]:
    """The second pass: read both sides again, keeping only the entries in ``buckets``, and
    describe each key whose entries differ (at most :data:`NAMED`, then a count)."""
    wanted = set(list(buckets)[:SCAN_BUCKETS])
    recorded: dict[str, Value] = {}
    listed: dict[str, Value] = {}
    for target, side in ((recorded, ledger_side), (listed, listing_side)):
        for key, value in side():
            if _bucket(key) in wanted:
                target[key] = value
    messages: list[str] = []
    differ = 0
    for key in sorted(set(recorded) | set(listed)):
        old, new = recorded.get(key), listed.get(key)
        if old is not None and new is not None:
            same = old[:2] == new[:2] and (not with_digest or old[2] == new[2])
            if same:
                continue
        differ += 1
        if len(messages) < NAMED:
            messages.append(describe(key, old, new))
    if differ > len(messages):
        messages.append(f"… and {differ - len(messages)} more difference(s)")
    return messages


# --------------------------------------------------------------------------------------
# The survey: one pass over the listings of SRC and DEST
# --------------------------------------------------------------------------------------


@dataclass
class Survey:
    """The listings of SRC (source blocks of the plan's levels) and DEST (the plan's images,
    and their ledgers), summed up (:class:`~migrate.dest.certificate.ListingDigest`), and,
    when ledgers were given, compared with them."""

    source: ListingDigest = field(default_factory=ListingDigest)
    dest: ListingDigest = field(default_factory=ListingDigest)
    ledgers: ListingDigest = field(default_factory=ListingDigest)
    chunks: Balance | None = None
    blocks: Balance | None = None
    strays: list[str] = field(default_factory=list)
    """Keys in level arrays that are neither metadata nor chunks of the grid."""
    stray_count: int = 0
    listed_chunks: int = 0
    listed_blocks: int = 0

    @property
    def dest_listing(self) -> ListingDigest:
        """DEST's listing as a certificate records it: the images and their ledgers."""
        both = ListingDigest(
            self.dest.objects + self.ledgers.objects,
            self.dest.bytes + self.ledgers.bytes,
            (self.dest.total + self.ledgers.total) & (2**128 - 1),
        )
        return both


def _file_crc(store: Store, key: str) -> str:
    data = store.read(key)
    return ledger.crc_hex(zlib.crc32(data)) if data is not None else ""


def dest_entries(
    plan: Plan, dest: Store, hash_files: bool, survey: Survey | None = None
) -> Iterator[tuple[str, Value]]:
    """The chunks the listing of DEST shows in the plan's level arrays (full key, value);
    metadata is skipped, anything else is noted as a stray in ``survey``; every object is
    added to ``survey``'s DEST digest. ``hash_files``: read each chunk for its CRC-32."""
    levels = {level.dest_path: level for image in plan.images for level in image.levels}
    grids = {path: level_grid(plan, level) for path, level in levels.items()}
    expected = sum(math.prod(grid.extent) for grid in grids.values())
    for key, size, stamp in stream_stats(dest, dest_prefixes(plan), expected=expected):
        if survey is not None:
            survey.dest.add(key, size, stamp)
        found = _level_of(key, levels)
        if found is None:
            continue  # the image's own metadata (or a stray the layout check names)
        level, inner = found
        if inner in ZARR_METADATA:
            continue
        if not grids[level.dest_path].holds(inner):
            if survey is not None:
                survey.stray_count += 1
                if len(survey.strays) < NAMED:
                    survey.strays.append(key)
            continue
        digest = _file_crc(dest, key) if hash_files else ""
        yield key, (size, stamp, digest)


def source_entries(
    plan: Plan, source: Store, survey: Survey | None = None
) -> Iterator[tuple[str, Value]]:
    """The source blocks the listing of SRC shows in the plan's levels (full name, as
    :func:`source_key` gives it; value); every object is added to ``survey``'s SRC
    digest."""
    for store, levels in source_stores(plan, source):
        expected = sum(level.source_block_count for level in levels.values())
        for key, size, stamp in stream_stats(store, list(levels), expected=expected):
            name = store.display(key)
            if survey is not None:
                survey.source.add(name, size, stamp)
            found = _level_of(key, levels)
            if found is not None and is_block_key(found[1], found[0]):
                yield name, (size, stamp, "")


def ledger_lines(
    plan: Plan, dest: Store, manifests: dict[str, ledger.Manifest]
) -> Iterator[tuple[ImagePlan, LevelPlan, dict[str, Any]]]:
    """Every line of the ledgers, with its image and level, part by part: of each part the
    bytes whose SHA-256 the manifest records, as read here (a part that is missing or not
    those bytes now, even if it was when :func:`read_ledgers` checked it, gives no lines: its
    chunks and blocks are then named as not in the ledger, never taken from other bytes)."""
    for image in plan.images:
        manifest = manifests.get(image.dest_path)
        if manifest is None:
            continue
        for level in image.levels:
            account = manifest.levels.get(level.name)
            parts = account.parts if account else {}
            for name in sorted(parts, key=_part_number):
                raw = dest.read(ledger.ledger_key(image.dest_path, level.name, name))
                if raw is None or hashlib.sha256(raw).hexdigest() != parts[name]:
                    continue  # named by the ledger check, or changed since
                try:
                    lines = list(ledger.decode_part(raw))
                except ValueError:
                    continue  # named by the ledger check (its digest differs)
                for line in lines:
                    yield image, level, line


def ledger_entries(
    plan: Plan,
    dest: Store,
    manifests: dict[str, ledger.Manifest],
    kind: str,
    source: Store | None = None,
) -> Iterator[tuple[str, Value]]:
    """The entries the ledgers record (``kind``: ``chunks`` with full DEST keys, or
    ``source`` with full SRC names, :func:`source_key`, of ``source``), part by part."""
    for image, level, line in ledger_lines(plan, dest, manifests):
        if kind == "chunks":
            for key, size, stamp, digest in ledger.line_chunks(line):
                yield join_key(level.dest_path, key), (size, stamp, digest)
        else:
            assert source is not None
            store = image_source(source, image)
            for key, size, stamp in ledger.line_blocks(line):
                yield source_key(store, level, key), (size, stamp, "")


def _part_number(name: str) -> int:
    head = name.split(".", 1)[0]
    return int(head) if head.isdigit() else -1


def list_ledgers(plan: Plan, dest: Store) -> list[Entry]:
    """The objects of the plan's ledger folders (a manifest and a few parts per image)."""
    return list(stream_stats(dest, ledger_prefixes(plan), split=False))


def survey(
    plan: Plan,
    source: Store,
    dest: Store,
    manifests: dict[str, ledger.Manifest] | None = None,
    *,
    hash_files: bool = False,
    ledgers: list[Entry] | None = None,
) -> Survey:
    """List SRC and DEST once (and the plan's ledger folders, unless their listing is
    given), summing both up; with ``manifests``, compare the listings with those ledgers on
    the way."""
    found = Survey()
    for key, size, stamp in ledgers if ledgers is not None else list_ledgers(plan, dest):
        found.ledgers.add(key, size, stamp)
    if manifests is not None:
        found.chunks = Balance(with_digest=hash_files)
        found.blocks = Balance()
        for image, level, line in ledger_lines(plan, dest, manifests):
            store = image_source(source, image)
            for key, size, stamp, digest in ledger.line_chunks(line):
                found.chunks.add(0, join_key(level.dest_path, key), (size, stamp, digest))
            for key, size, stamp in ledger.line_blocks(line):
                found.blocks.add(0, source_key(store, level, key), (size, stamp, ""))
    for key, value in dest_entries(plan, dest, hash_files, found):
        found.listed_chunks += 1
        if found.chunks is not None:
            found.chunks.add(1, key, value)
    for key, value in source_entries(plan, source, found):
        found.listed_blocks += 1
        if found.blocks is not None:
            found.blocks.add(1, key, value)
    return found


def _show(value: Value, kind: str) -> str:
    size, stamp, digest = value
    what = {"etag": f"ETag {stamp}", "mtime_ns": f"modified {_mtime(stamp)}"}.get(kind, stamp)
    return f"{size:,} bytes, {what}" + (f", CRC-32 {digest}" if digest else "")


def _mtime(stamp: str) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(int(stamp) / 1e9, datetime.UTC)
    except (ValueError, OverflowError, OSError):
        return stamp
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z") + f" ({stamp} ns)"


def compare_chunks(
    plan: Plan,
    dest: Store,
    manifests: dict[str, ledger.Manifest],
    found: Survey,
    hash_files: bool,
) -> list[str]:
    """Every difference between DEST's chunks and what the ledgers record, named."""
    assert found.chunks is not None
    kind = ledger.stamp_kind(dest)
    problems = [
        f"{dest.display(key)}: a key that is not a chunk of the plan's grid (not written by "
        "the migration)"
        for key in found.strays
    ]
    if found.stray_count > len(found.strays):
        problems.append(f"… and {found.stray_count - len(found.strays)} more such key(s)")
    differing = found.chunks.differing()
    if not differing:
        return problems

    def describe(key: str, old: Value | None, new: Value | None) -> str:
        where = dest.display(key)
        if new is None:
            assert old is not None
            return f"{where}: missing at DEST (the ledger records {_show(old, kind)})"
        if old is None:
            return (
                f"{where}: at DEST ({_show(new, kind)}) but not in the ledger: not written "
                "by the migration"
            )
        return (
            f"{where}: changed since it was written: DEST holds {_show(new, kind)}, the "
            f"ledger records {_show(old, kind)}"
        )

    return problems + name_differences(
        differing,
        lambda: ledger_entries(plan, dest, manifests, "chunks"),
        lambda: dest_entries(plan, dest, hash_files),
        describe,
        hash_files,
    )


def compare_blocks(
    plan: Plan, source: Store, dest: Store, manifests: dict[str, ledger.Manifest], found: Survey
) -> list[str]:
    """Every difference between SRC's blocks and the ones the ledgers record, named."""
    assert found.blocks is not None
    differing = found.blocks.differing()
    if not differing:
        return []
    kind = ledger.stamp_kind(source)

    def describe(key: str, old: Value | None, new: Value | None) -> str:
        where = key  # a full name already
        if new is None:
            assert old is not None
            return f"{where}: source block deleted since it was copied (was {_show(old, kind)})"
        if old is None:
            return f"{where}: source block added since the copy ({_show(new, kind)})"
        return (
            f"{where}: source block changed since it was copied: SRC holds "
            f"{_show(new, kind)}, it was {_show(old, kind)} when read"
        )

    return name_differences(
        differing,
        lambda: ledger_entries(plan, dest, manifests, "source", source),
        lambda: source_entries(plan, source),
        describe,
        False,
    )


# --------------------------------------------------------------------------------------
# The ledgers themselves
# --------------------------------------------------------------------------------------


def manifest_digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def read_ledgers(
    plan: Plan, dest: Store, listing: list[Entry] | None = None
) -> tuple[dict[str, ledger.Manifest], dict[str, str], list[str], list[str]]:
    """Each image's ledger manifest that can be used (dest path → manifest), the SHA-256 of
    every manifest read, the problems found with them (parts missing, edited or left over,
    another migration's ledger, an incomplete one) and the images that have none.
    ``listing``: of the ledger folders (:func:`list_ledgers`), when already made."""
    found_listing = listing if listing is not None else list_ledgers(plan, dest)
    listed = {key for key, _size, _stamp in found_listing}
    keys = [ledger.ledger_key(image.dest_path, ledger.MANIFEST) for image in plan.images]
    raws = dest.map(dest.read, keys)
    manifests: dict[str, ledger.Manifest] = {}
    digests: dict[str, str] = {}
    problems: list[str] = []
    missing: list[str] = []
    kind = ledger.stamp_kind(dest)
    for image, key, raw in zip(plan.images, keys, raws, strict=True):
        if raw is None:
            missing.append(image.dest_path)
            continue
        digests[image.dest_path] = manifest_digest(raw)
        manifest = ledger.Manifest.parse(raw)
        where = dest.display(key)
        if manifest is None:
            problems.append(f"{where}: not a ledger manifest (edited?)")
            continue
        fingerprint = plan.image_fingerprint(image)
        if manifest.fingerprint != fingerprint:
            problems.append(
                f"{where}: the ledger of another migration (fingerprint {manifest.fingerprint}, "
                f"the plan's is {fingerprint})"
            )
            continue
        if manifest.stamp != kind:
            problems.append(
                f"{where}: its stamps are {manifest.stamp}, a listing here shows {kind} (the "
                "output was moved between a local disk and S3): a full verify builds a "
                "ledger for it here"
            )
            continue
        if not manifest.complete:
            units = sum(level.missing_units for level in manifest.levels.values())
            problems.append(
                f"{where}: incomplete: {units} work unit(s) were recorded by a cellmap-migrate "
                "before the ledger; a full verify builds the ledger"
            )
            continue
        problems.extend(_check_parts(dest, image, manifest, listed))
        manifests[image.dest_path] = manifest
    return manifests, digests, problems, missing


def _check_parts(
    dest: Store, image: ImagePlan, manifest: ledger.Manifest, listed: set[str]
) -> list[str]:
    """The parts of an image's ledger: each one the manifest lists is there with its
    SHA-256, and the ledger folder holds nothing else."""
    problems = []
    expected = {ledger.ledger_key(image.dest_path, ledger.MANIFEST): ""}
    for level in image.levels:
        account = manifest.levels.get(level.name)
        if account is None:
            problems.append(
                f"{dest.display(ledger.ledger_key(image.dest_path, ledger.MANIFEST))}: "
                f"records no level {level.name}"
            )
            continue
        for name, digest in account.parts.items():
            expected[ledger.ledger_key(image.dest_path, level.name, name)] = digest
    parts = [key for key, digest in expected.items() if digest]
    raws = dest.map(dest.read, parts)
    for key, raw in zip(parts, raws, strict=True):
        if raw is None:
            problems.append(f"{dest.display(key)}: ledger part missing (the manifest lists it)")
        elif hashlib.sha256(raw).hexdigest() != expected[key]:
            problems.append(
                f"{dest.display(key)}: ledger part edited (its SHA-256 is not the one the "
                "manifest records)"
            )
    prefix = ledger.ledger_key(image.dest_path)
    own = {level.name for level in image.levels}
    for full in sorted(listed):
        if not full.startswith(prefix + "/") or full in expected:
            continue
        key = full[len(prefix) + 1 :]
        if not image.dest_path and key != ledger.MANIFEST and key.split("/", 1)[0] not in own:
            continue  # the root image's ledger folder is the ledger folder itself
        problems.append(f"{dest.display(full)}: in the ledger folder, but no part of the ledger")
    return problems


# --------------------------------------------------------------------------------------
# The proof
# --------------------------------------------------------------------------------------


@dataclass
class ListingResult:
    """What ``verify --listing`` compared, and every problem found (none: proven)."""

    images: int = 0
    levels: int = 0
    chunks: int = 0
    """Chunks (shards) at DEST compared with the ledger."""
    blocks: int = 0
    """Source blocks at SRC compared with the ledger."""
    metadata_files: int = 0
    hashed: bool = False
    proof: dict[str, Any] | None = None
    """The certificate's proof that still holds (its JSON), when one does."""
    listed_at: str = ""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    verdict: str = ""
    """For ``bulk verify --listing``: ``proven: …``, or why not, in a few words."""

    def to_json(self) -> dict[str, Any]:
        return {**vars(self), "summary": self.summary()}

    def summary(self) -> str:
        counts = f"{self.images} image(s), {self.levels} level(s)"
        stamp = "size, modification time and CRC-32" if self.hashed else "size and stamp"
        checked = (
            f"{self.chunks:,} chunk(s) at DEST with the {stamp} the ledger records and nothing "
            f"else, {self.blocks:,} source block(s) unchanged since they were copied, "
            f"{self.metadata_files} metadata file(s) equal to the plan"
        )
        if self.problems or self.proof is None:
            return (
                f"NOT proven by listing: {len(self.problems)} problem(s); checked {counts}: "
                f"{checked}"
            )
        when = self.proof.get("verified_at", "")
        return (
            f"proven by listing (no chunk read): {counts}: {checked}; the full voxel proof "
            f"of {when} still holds (SRC and DEST listed as it saw them): OK"
        )


def now_iso() -> str:
    moment = datetime.datetime.now(datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def source_location(source: Store, inner: str) -> str:
    """SRC as a certificate names it: the N5 root and the path inside it."""
    return source.display(inner)


def check_images_complete(
    plan: Plan, dest: Store, recorded: Sequence[Recorded], result: VerifyResult
) -> None:
    planned = {image.dest_path for image in plan.images}
    for r in recorded:
        if not r.finished and r.dest_path in planned:
            result.problems.append(f"{dest.display(r.dest_path)}: migration is not complete")


def verify_listing(
    source: Store,
    dest: Store,
    *,
    inner: str = "",
    hash_files: bool = False,
    registry: Registry | None = None,
    location: SourceLocation | None = None,
    into_existing: bool = False,
) -> ListingResult:
    """``verify --listing`` (see the module docstring) of DEST against SRC (``source``, its
    part ``inner``; ``location`` when SRC is a dataset folder or a precomputed volume, and
    ``registry``, ``into_existing`` as :func:`~migrate.check.verify.verify` takes them).
    Raises MigrationError (one line) when SRC cannot be read or planned, or DEST holds no
    migration of it."""
    if hash_files and not isinstance(dest, LocalStore):
        hash_files = False
    plan, recorded = plan_again(source, inner, dest, registry, location)
    proven_source = source_location(source, inner)
    source = sibling_store(source, plan.source)  # the N5 root of a dataset folder
    result = ListingResult(
        images=len(plan.images),
        levels=sum(len(image.levels) for image in plan.images),
        hashed=hash_files,
        listed_at=now_iso(),
    )
    checked = VerifyResult()
    check_images_complete(plan, dest, recorded, checked)
    incomplete = bool(checked.problems)
    check_metadata(plan, source, dest, checked)
    check_layout(plan, dest, recorded, checked, into_existing=into_existing, list_levels=False)
    result.metadata_files = checked.metadata_files
    result.notes += checked.notes
    ledgers = list_ledgers(plan, dest)
    manifests, digests, ledger_problems, missing = read_ledgers(plan, dest, ledgers)
    for path in missing:
        result.problems.append(
            f"{dest.display(ledger.ledger_key(path, ledger.MANIFEST))}: no ledger: output "
            "made before the ledger existed (or not finished); run a full verify "
            "(cellmap-migrate verify SRC DEST), which builds it"
        )
    result.problems += ledger_problems
    found = survey(plan, source, dest, manifests, hash_files=hash_files, ledgers=ledgers)
    result.chunks = found.listed_chunks
    result.blocks = found.listed_blocks
    result.problems += compare_chunks(plan, dest, manifests, found, hash_files)
    result.problems += compare_blocks(plan, source, dest, manifests, found)
    result.problems += checked.problems
    proof_problems, proof = check_certificate(plan, proven_source, dest, found, digests)
    result.problems += proof_problems
    result.proof = proof.to_json() if proof is not None and not result.problems else None
    result.verdict = _verdict(result, proof, incomplete, bool(missing))
    return result


def check_certificate(
    plan: Plan,
    proven_source: str,
    dest: Store,
    found: Survey,
    digests: dict[str, str],
) -> tuple[list[str], Proof | None]:
    """(4): the certificate holds a full proof of SRC (``proven_source``, as
    :func:`source_location` names it), of these images and ledgers, whose listings are the
    ones just made."""
    where = dest.display(certificate.CERTIFICATE_KEY)
    held = certificate.read(dest)
    if held is None:
        return [f"{where}: no certificate: DEST was never proven; run a full verify"], None
    proof = held.proof_of(proven_source)
    if proof is None:
        return [f"{where}: holds no proof of {proven_source}; run a full verify"], None
    problems = []
    if not proof.full:
        problems.append(
            f"{where}: the proof of {proof.verified_at} compared a sample of the chunks "
            f"({proof.sample:g}), not every voxel; run a full verify"
        )
    fingerprints = {image.dest_path: plan.image_fingerprint(image) for image in plan.images}
    if proof.images != fingerprints:
        problems.append(
            f"{where}: the proof of {proof.verified_at} is of other images or another "
            "migration of them (fingerprints differ)"
        )
    for path, digest in sorted(digests.items()):
        if proof.ledger.get(path) != digest:
            key = dest.display(ledger.ledger_key(path, ledger.MANIFEST))
            problems.append(
                f"{key}: the ledger is not the one the proof of {proof.verified_at} saw "
                "(edited or rewritten since)"
            )
    if not proof.source_listing.same(found.source):
        problems.append(
            f"{where}: SRC changed since the proof of {proof.verified_at}: its listing is "
            f"{found.source.describe()}, the proof saw {proof.source_listing.describe()}"
        )
    if not proof.dest_listing.same(found.dest_listing):
        problems.append(
            f"{where}: DEST changed since the proof of {proof.verified_at}: its listing is "
            f"{found.dest_listing.describe()}, the proof saw {proof.dest_listing.describe()}"
        )
    return problems, proof


def _verdict(result: ListingResult, proof: Proof | None, incomplete: bool, no_ledger: bool) -> str:
    """The verdict of ``bulk verify --listing``."""
    if not result.problems and proof is not None:
        day = proof.verified_at
        return f"proven: full voxel proof on {day}, unchanged since (listing {result.listed_at})"
    if incomplete:
        return "not proven: incomplete (a migration has not finished)"
    if no_ledger:
        return "not proven: no ledger (output made before the ledger existed); run a full verify"
    if proof is None:
        return "not proven: never fully verified; run a full verify"
    if not proof.full:
        return f"not proven: only a sample was verified ({proof.verified_at})"
    first = result.problems[0] if result.problems else ""
    return f"not proven: changed since the full voxel proof of {proof.verified_at} ({first})"
