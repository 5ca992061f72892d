"""Unit records kept at DEST while a migration runs, so a killed run picks up where it stopped.

While an image is being copied, ``DEST/.cellmap-migrate/images/<image dest path>/`` holds:

- ``plan.json``: the image's plan and fingerprint, written before any of its chunks;
- ``done/<fingerprint>/<generation>/<level>/<unit>``: one object per finished work unit,
  written only after every chunk of that unit is stored, so each record is independent and
  any number of workers (on any machine) can add records at once without coordination. It
  holds the signature of the unit's source blocks as they were listed before the unit was
  copied (:func:`unit_signatures`: key, size and modification time, or ETag on S3); a
  resumed run lists the source again and redoes the done units whose signature changed.
  It also holds the unit's ledger entries (:class:`UnitRecord`: every chunk written with
  its size, stamp and digest, every source block read with its size and stamp, and the run
  that wrote it), which the image's ledger gathers when it is finalized
  (:mod:`migrate.dest.ledger`). A record holding only a signature was written before the
  ledger existed.
  The generation is the run id of the run that started the image (kept in ``plan.json``;
  resumed runs keep it): a worker of an older run whose image was deleted and started again
  (``--overwrite``) records under its own generation, which the new run does not count.
  (Records written before generations existed have none: ``done/<fingerprint>/<level>/…``.)

When every unit of an image is done, its ledger is written (``.cellmap-migrate/ledger/``,
:mod:`migrate.dest.ledger`), then its OME metadata with the fingerprint in the
``cellmap-migrate`` provenance attribute: that is the image's completion mark. The image's
records are then deleted, so a finished destination holds Zarr metadata, chunks and the
ledger (and, once ``verify`` has proven it, its certificate). Last of all, the root group's
``cellmap-migrate`` attribute lists every finished image by fingerprint
(:func:`migrate.dest.marks.dest_completion_mark`): only then is the destination complete.

Every per-unit value here is kept only for units the data proves: a signature for each unit
that has a source block in the listing, a done set of the records found. Nothing is
allocated per unit of a level's *declared* size.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from migrate.dest.marks import read_json
from migrate.storage import Store, join_key
from migrate.target.layout import dumps
from schemas.plan import ImagePlan, LevelPlan, Plan

STATE_DIR = ".cellmap-migrate"


def image_state_key(image_dest_path: str, *parts: str) -> str:
    return join_key(STATE_DIR, "images", image_dest_path, *parts)


def record_start(dest: Store, plan: Plan, image: ImagePlan, generation: str = "") -> None:
    dest.write(
        image_state_key(image.dest_path, "plan.json"),
        dumps(
            {
                "fingerprint": plan.image_fingerprint(image),
                "generation": generation,
                "plan_fingerprint": plan.fingerprint,
                "tool_version": plan.tool_version,
                "ngff_version": plan.ngff_version,
                "source": plan.source,
                "image": image.to_json_dict(),
            }
        ),
    )


def recorded_generation(dest: Store, image_dest_path: str) -> str:
    """The generation of the image's records (its plan.json), "" when it has none."""
    return generation_of(read_json(dest, image_state_key(image_dest_path, "plan.json")))


def generation_of(started: Mapping[str, Any] | None) -> str:
    """The generation recorded in an image's start record (plan.json), "" when none."""
    generation = (started or {}).get("generation")
    return generation if isinstance(generation, str) else ""


def done_prefix(fingerprint: str, image_dest_path: str, level: str, generation: str = "") -> str:
    return image_state_key(image_dest_path, "done", fingerprint, generation, level)


ChunkEntry = tuple[str, int, str, str]
"""A chunk (shard) written: (key relative to its level array, size in bytes, stamp, digest).
The stamp is what a listing of DEST shows for it (local: the modification time in ns; S3:
the ETag the PUT returned); the digest that of its bytes (local: CRC-32, 8 hex digits; S3: "", the
ETag being S3's MD5 of the bytes)."""
BlockEntry = tuple[str, int, str]
"""A source block read: (N5 key ``x/y/z`` relative to its level, size in bytes, stamp as a
listing of SRC shows it)."""


@dataclass(frozen=True)
class UnitEntries:
    """What copying one work unit wrote and read: its chunks (shards) and the source blocks
    whose first voxel lies in the unit (a block that overlaps several units is listed by one
    of them only)."""

    chunks: tuple[ChunkEntry, ...] = ()
    blocks: tuple[BlockEntry, ...] = ()


@dataclass(frozen=True)
class UnitRecord:
    """A unit record read back: the signature of its source blocks, the run that wrote it,
    and its ledger entries (None: written before the ledger existed)."""

    signature: str
    run: str = ""
    entries: UnitEntries | None = None


def encode_record(signature: str, entries: UnitEntries | None, run: str = "") -> bytes:
    """A unit record's bytes: JSON with the signature, the writing run and its entries."""
    if entries is None:
        return signature.encode()
    document = {
        "signature": signature,
        "run": run,
        "chunks": [list(chunk) for chunk in entries.chunks],
        "source": [list(block) for block in entries.blocks],
    }
    return json.dumps(document, separators=(",", ":")).encode()


def parse_record(raw: bytes | None) -> UnitRecord:
    """A unit record from its bytes: JSON (with ledger entries), or a bare signature (a
    record written before the ledger existed, or unreadable: no entries)."""
    text = (raw or b"").decode("utf-8", errors="replace")
    if not text.startswith("{"):
        return UnitRecord(text)
    try:
        document = json.loads(text)
        chunks = tuple(_chunk_entry(item) for item in document["chunks"])
        blocks = tuple(_block_entry(item) for item in document["source"])
        return UnitRecord(
            str(document["signature"]), str(document.get("run") or ""), UnitEntries(chunks, blocks)
        )
    except (ValueError, KeyError, TypeError, IndexError):
        return UnitRecord(text)


def _chunk_entry(item: Sequence[Any]) -> ChunkEntry:
    key, size, stamp, digest = item
    return str(key), int(size), str(stamp), str(digest)


def _block_entry(item: Sequence[Any]) -> BlockEntry:
    key, size, stamp = item
    return str(key), int(size), str(stamp)


def record_unit(
    dest: Store,
    fingerprint: str,
    image_dest_path: str,
    level: str,
    unit: int,
    *,
    signature: str = "",
    generation: str = "",
    entries: UnitEntries | None = None,
    run: str = "",
) -> None:
    """Record a unit as done (by a run of ``generation``), with the signature of the source
    blocks it was copied from and, for the ledger, its ``entries`` and the ``run`` (lease id)
    that wrote it."""
    key = join_key(done_prefix(fingerprint, image_dest_path, level, generation), str(unit))
    dest.write(key, encode_record(signature, entries, run))


def read_records(
    dest: Store,
    fingerprint: str,
    image_dest_path: str,
    level: str,
    units: Iterable[int],
    generation: str = "",
) -> dict[int, UnitRecord]:
    """The records of the done ``units`` of one level, read in parallel where the store
    allows."""
    prefix = done_prefix(fingerprint, image_dest_path, level, generation)
    order = sorted(units)
    raws = dest.map(lambda unit: dest.read(join_key(prefix, str(unit))), order)
    return {unit: parse_record(raw) for unit, raw in zip(order, raws, strict=True)}


def recorded_signatures(
    dest: Store,
    fingerprint: str,
    image_dest_path: str,
    level: str,
    units: set[int],
    generation: str = "",
) -> dict[int, str]:
    """The source signature recorded with each of the done ``units`` of one level."""
    found = read_records(dest, fingerprint, image_dest_path, level, units, generation)
    return {unit: record.signature for unit, record in found.items()}


_MASK = 2**64 - 1
EMPTY_SIGNATURE = f"0:{0:016x}"
"""The signature of a unit none of whose source blocks is stored (all zero)."""


def entry_value(key: str, size: int, stamp: str) -> int:
    """A listed file's share of a signature: 64 bits of a hash of its key, size and stamp."""
    text = f"{key}\0{size}\0{stamp}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


class UnitSums:
    """The signatures of work units being summed (see :func:`unit_signatures`): each listed
    file adds its :func:`entry_value` to every unit its box falls in; a unit's signature is
    its count of files and their sum (modulo 2**64: the order of the listing does not
    matter)."""

    def __init__(self, grid: Sequence[int]) -> None:
        self.grid = tuple(grid)
        self.sums: dict[int, int] = {}
        self.counts: dict[int, int] = {}

    def add(self, ranges: Sequence[range], value: int) -> None:
        """Add ``value`` to every unit of the box ``ranges`` (unit indices per axis, C
        order)."""
        for position in itertools.product(*ranges):
            linear = 0
            for p, g in zip(position, self.grid, strict=True):
                linear = linear * g + p
            self.sums[linear] = (self.sums.get(linear, 0) + value) & _MASK
            self.counts[linear] = self.counts.get(linear, 0) + 1

    def signatures(self) -> dict[int, str]:
        """C-order unit index → signature, for the units a file fell in."""
        return {
            unit: f"{self.counts[unit]}:{total:016x}" for unit, total in sorted(self.sums.items())
        }


def unit_signatures(
    source: Store, level: LevelPlan, listing: Iterable[tuple[str, int, str]] | None = None
) -> dict[int, str]:
    """A signature of the source blocks of the work units of ``level`` (C-order unit index →
    signature), from one listing of the level: a function of each block's key, size and
    stamp (modification time on disk, ETag on S3), so a block that is rewritten, added or
    removed changes the signature of every unit it falls in. Nothing is read but the
    listing. Only units with a listed block are in the result (the others'
    signature is :data:`EMPTY_SIGNATURE`: see :func:`signature_of`), so its size follows the
    blocks stored, never the level's declared size. ``listing``: the level's listing
    (:meth:`~migrate.storage.Store.list_stats`), when already made."""
    ndim = len(level.shape)
    units = UnitSums(level.unit_grid)
    entries = listing if listing is not None else source.list_stats(level.source_path)
    for key, size, stamp in entries:
        parts = key.split("/")
        if len(parts) != ndim or not all(part.isdigit() for part in parts):
            continue  # attributes.json and anything else that is not a block
        ranges = []
        for axis, (index, block, unit, extent) in enumerate(
            zip(reversed(parts), level.source_blocks, level.unit_shape, level.shape, strict=True)
        ):
            start = int(index) * block
            if start >= extent:
                break  # outside the array: never read
            stop = min(start + block, extent)
            if level.mirror is not None and level.mirror[axis]:  # where it lands at DEST
                start, stop = extent - stop, extent - start
            ranges.append(range(start // unit, (stop - 1) // unit + 1))
        else:
            units.add(ranges, entry_value(key, size, stamp))
    return units.signatures()


def signature_of(signatures: Mapping[int, str], unit: int) -> str:
    """The signature of ``unit`` in a :func:`unit_signatures` result."""
    return signatures.get(unit, EMPTY_SIGNATURE)


def done_units(
    dest: Store, fingerprint: str, image_dest_path: str, level: str, generation: str = ""
) -> set[int]:
    """Indices of the work units of one level already recorded as finished (by runs of
    ``generation``)."""
    done: set[int] = set()
    for key in dest.list_keys(done_prefix(fingerprint, image_dest_path, level, generation)):
        name = key.rsplit("/", 1)[-1]
        if name.isdigit():
            done.add(int(name))
    return done


def forget_image(dest: Store, image_dest_path: str) -> None:
    """Drop an image's resume records (its ledger, beside them, stays), and the ``images``
    folder once no image has records left in it."""
    dest.delete_prefix(image_state_key(image_dest_path))
    images = join_key(STATE_DIR, "images")
    if next(iter(dest.list_keys(images)), None) is None:
        dest.delete_prefix(images)


def started_images(dest: Store) -> list[dict[str, Any]]:
    """The recorded plan.json of every image started but not finished at DEST.

    Walks the state folder's directories without descending into ``done/`` records.
    """
    found: list[dict[str, Any]] = []
    pending = [join_key(STATE_DIR, "images")]
    while pending:
        prefix = pending.pop()
        dirs, files = dest.list_dir(prefix)
        if "plan.json" in files:
            record = read_json(dest, join_key(prefix, "plan.json"))
            if record is not None:
                found.append(record)
        pending.extend(join_key(prefix, name) for name in dirs if name != "done")
    return sorted(found, key=lambda record: str(record.get("image", {}).get("dest_path")))
