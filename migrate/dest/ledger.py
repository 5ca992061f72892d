"""The migration ledger: what was written to DEST and read from SRC, kept after the run.

For every image, ``DEST/.cellmap-migrate/ledger/<image dest path>/`` holds

- ``<level>/<n>.jsonl.gz``: the level's entries, gzip-compressed JSON lines, at most
  :data:`PART_ENTRIES` entries per part (parts numbered from 0). A line of a migration's
  ledger is one work unit, in unit order::

      {"unit": 17, "run": "<lease id>", "signature": "3:9f0c…",
       "chunks": [["0/1/2", 183240, "\\"5d41…\\"", ""], …],
       "source": [["2/1/0", 183256, "\\"7a3b…\\""], …]}

  ``chunks``: every chunk (shard) the unit wrote, as (key relative to the level array,
  size in bytes, stamp, digest); ``source``: every source block it read whose first voxel
  lies in the unit, as (N5 key, size, stamp); ``signature``: the signature of its source
  blocks (:func:`migrate.dest.records.unit_signatures`); ``run``: the lease id of the run
  that copied it. A ledger built by a full ``verify`` (of output made before the ledger
  existed) has lines without ``unit``, holding entries in listing order.
- ``ledger.json``: the manifest: the image's fingerprint (the one its completion mark
  carries), the stamp and digest kinds, and per level the counts of chunks, bytes, blocks
  and units and the SHA-256 of every part.

Stamps are what a listing shows: on S3 the ETag (every object cellmap-migrate writes is one
single-part PUT, the payload's SHA-256 signed, so the ETag is S3's MD5 of exactly those
bytes; the ledger keeps the ETag the PUT returned), locally the modification time in ns.
Digests: on S3 none beyond the ETag; locally the CRC-32 (zlib's) of the bytes (``--hash`` reads the
files to compare it).

The ledger of an image is written when the image is finalized, from its unit records (each
unit's entries are recorded with it, so a killed run loses none), before its OME metadata
and so before its completion mark: a finished image always has its ledger.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from migrate.dest import records
from migrate.dest.marks import parse_json
from migrate.dest.records import STATE_DIR, BlockEntry, ChunkEntry
from migrate.storage import LocalStore, Store, join_key
from migrate.target.layout import dumps
from schemas.plan import ImagePlan, Plan

LEDGER_DIR = join_key(STATE_DIR, "ledger")
MANIFEST = "ledger.json"
FORMAT = 1
PART_ENTRIES = 100_000
"""Entries (chunks plus blocks) per part, at most (a unit is never split: a part holding one
unit may hold more)."""
READ_BATCH = 256
"""Unit records read at once when the ledger is gathered."""


def ledger_key(image_dest_path: str, *parts: str) -> str:
    """The key of ``parts`` in the ledger folder of the image at ``image_dest_path``."""
    return join_key(LEDGER_DIR, image_dest_path, *parts)


def part_key(image_dest_path: str, level: str, number: int) -> str:
    return ledger_key(image_dest_path, level, f"{number}.jsonl.gz")


def stamp_kind(store: Store) -> str:
    """What a listing of ``store`` stamps objects with: ``mtime_ns`` or ``etag``."""
    return "mtime_ns" if isinstance(store, LocalStore) else "etag"


def digest_kind(store: Store) -> str | None:
    """The digest the ledger keeps of a chunk's bytes at ``store`` (None: the stamp is one)."""
    return "crc32" if isinstance(store, LocalStore) else None


def crc_hex(value: int) -> str:
    return f"{value:08x}"


@dataclass
class LevelLedger:
    """The manifest's account of one level."""

    chunks: int = 0
    bytes: int = 0
    blocks: int = 0
    units: int = 0
    missing_units: int = 0
    """Units recorded without ledger entries (by a cellmap-migrate before the ledger)."""
    parts: dict[str, str] = field(default_factory=dict)
    """Part name → SHA-256 of its bytes."""

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_json(cls, value: Any) -> LevelLedger:
        if not isinstance(value, dict):
            raise ValueError("not an object")
        parts = value.get("parts") or {}
        if not isinstance(parts, dict):
            raise ValueError("parts is not an object")
        return cls(
            int(value.get("chunks", 0)),
            int(value.get("bytes", 0)),
            int(value.get("blocks", 0)),
            int(value.get("units", 0)),
            int(value.get("missing_units", 0)),
            {str(k): str(v) for k, v in parts.items()},
        )


@dataclass
class Manifest:
    """An image's ``ledger.json``."""

    image: str
    fingerprint: str
    source: str
    source_path: str
    stamp: str
    digest: str | None
    built_by: str = "convert"
    """``convert`` (gathered from the unit records) or ``verify`` (from the listings a full
    proof saw)."""
    levels: dict[str, LevelLedger] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "cellmap-migrate-ledger": FORMAT,
            "image": self.image,
            "fingerprint": self.fingerprint,
            "source": self.source,
            "source_path": self.source_path,
            "stamp": self.stamp,
            "digest": self.digest,
            "built_by": self.built_by,
            "levels": {name: level.to_json() for name, level in self.levels.items()},
        }

    @classmethod
    def parse(cls, raw: bytes | None) -> Manifest | None:
        """The manifest in ``raw``; None when absent or not one."""
        document = parse_json(raw)
        if document is None or document.get("cellmap-migrate-ledger") != FORMAT:
            return None
        try:
            levels = document.get("levels") or {}
            return cls(
                image=str(document["image"]),
                fingerprint=str(document["fingerprint"]),
                source=str(document.get("source", "")),
                source_path=str(document.get("source_path", "")),
                stamp=str(document["stamp"]),
                digest=None if document.get("digest") is None else str(document["digest"]),
                built_by=str(document.get("built_by", "convert")),
                levels={str(k): LevelLedger.from_json(v) for k, v in levels.items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    @property
    def chunks(self) -> int:
        return sum(level.chunks for level in self.levels.values())

    @property
    def complete(self) -> bool:
        """Every unit of every level had its entries recorded."""
        return not any(level.missing_units for level in self.levels.values())


def read_manifest(store: Store, image_dest_path: str) -> Manifest | None:
    return Manifest.parse(store.read(ledger_key(image_dest_path, MANIFEST)))


def encode_part(lines: list[dict[str, Any]]) -> bytes:
    """A part's bytes: the lines as compact JSON, gzip-compressed with no time stamp (the
    same lines give the same bytes)."""
    text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
    return gzip.compress(text.encode(), compresslevel=6, mtime=0)


def decode_part(raw: bytes) -> Iterator[dict[str, Any]]:
    """The lines of a part (ValueError when it is not one)."""
    try:
        text = gzip.decompress(raw).decode()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a gzip-compressed ledger part ({exc})") from None
    for line in text.splitlines():
        value = json.loads(line)
        if not isinstance(value, dict):
            raise ValueError("a line is not a JSON object")
        yield value


def line_chunks(line: dict[str, Any]) -> Iterator[ChunkEntry]:
    for key, size, stamp, digest in line.get("chunks") or ():
        yield str(key), int(size), str(stamp), str(digest)


def line_blocks(line: dict[str, Any]) -> Iterator[BlockEntry]:
    for key, size, stamp in line.get("source") or ():
        yield str(key), int(size), str(stamp)


class PartWriter:
    """Writes one level's ledger lines as parts of at most :data:`PART_ENTRIES` entries,
    keeping one part in memory at a time, and accounts for them in a :class:`LevelLedger`."""

    def __init__(
        self, store: Store, image_dest_path: str, level: str, part_entries: int = PART_ENTRIES
    ) -> None:
        self.store = store
        self.image = image_dest_path
        self.level = level
        self.part_entries = part_entries
        self.account = LevelLedger()
        self._lines: list[dict[str, Any]] = []
        self._entries = 0

    def add(self, line: dict[str, Any]) -> None:
        chunks = line.get("chunks") or ()
        blocks = line.get("source") or ()
        self.account.chunks += len(chunks)
        self.account.bytes += sum(int(chunk[1]) for chunk in chunks)
        self.account.blocks += len(blocks)
        self._lines.append(line)
        self._entries += len(chunks) + len(blocks)
        if self._entries >= self.part_entries:
            self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        number = len(self.account.parts)
        data = encode_part(self._lines)
        self.store.write(part_key(self.image, self.level, number), data)
        self.account.parts[f"{number}.jsonl.gz"] = hashlib.sha256(data).hexdigest()
        self._lines = []
        self._entries = 0


def write_manifest(store: Store, manifest: Manifest) -> None:
    store.write(ledger_key(manifest.image, MANIFEST), dumps(manifest.to_json()))


def forget(store: Store, image: ImagePlan) -> None:
    """Delete an image's ledger (its output is replaced, or its ledger rewritten)."""
    if image.dest_path:
        store.delete_prefix(ledger_key(image.dest_path))
        return
    # the root image: its ledger is the folder itself; only its own names go
    old = read_manifest(store, "")
    levels = {level.name for level in image.levels} | set(old.levels if old else ())
    store.delete_prefix(ledger_key("", MANIFEST))
    for name in sorted(levels):
        store.delete_prefix(ledger_key("", name))


def gather(dest: Store, plan: Plan, image: ImagePlan, generation: str = "") -> Manifest:
    """Write the ledger of a finished ``image`` from its unit records (level by level, unit
    by unit, a part at a time), replacing any ledger it had; returns its manifest. Records
    read in batches of :data:`READ_BATCH`: memory stays bounded whatever the image."""
    fingerprint = plan.image_fingerprint(image)
    forget(dest, image)
    manifest = Manifest(
        image=image.dest_path,
        fingerprint=fingerprint,
        source=plan.source,
        source_path=image.source_path,
        stamp=stamp_kind(dest),
        digest=digest_kind(dest),
    )
    for level in image.levels:
        done = sorted(
            records.done_units(dest, fingerprint, image.dest_path, level.name, generation)
        )
        writer = PartWriter(dest, image.dest_path, level.name)
        for start in range(0, len(done), READ_BATCH):
            batch = done[start : start + READ_BATCH]
            found = records.read_records(
                dest, fingerprint, image.dest_path, level.name, batch, generation
            )
            for unit in batch:
                record = found[unit]
                writer.account.units += 1
                if record.entries is None:
                    writer.account.missing_units += 1
                    continue
                writer.add(
                    {
                        "unit": unit,
                        "run": record.run,
                        "signature": record.signature,
                        "chunks": [list(chunk) for chunk in record.entries.chunks],
                        "source": [list(block) for block in record.entries.blocks],
                    }
                )
        writer.flush()
        manifest.levels[level.name] = writer.account
    write_manifest(dest, manifest)
    return manifest
