"""The certificate ``verify`` leaves at DEST when it proves a migration:
``DEST/.cellmap-migrate/certificate.json``.

It holds one proof per verified SRC (a DEST whose parts were migrated from different
SRCs, or with different settings, is verified part by part): what was proven (every voxel,
or a sample of the chunks; the metadata equal to the plan; the layout), of which images
(by fingerprint), when, by which version of the tool, and a digest of each of the two
listings the proof saw: SRC's source blocks and DEST's objects (chunks, metadata and the
ledger). ``verify --listing`` lists both again and compares: equal listings mean nothing
was added, removed or rewritten since the proof.

A listing digest is order-free (the sum, modulo 2^128, of the BLAKE2b-128 of each entry's
key, size and stamp), so it is computed while the listing streams by, in any order.
A ``convert`` that writes any of a proof's images withdraws that proof.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from migrate.dest.marks import parse_json
from migrate.dest.records import STATE_DIR
from migrate.storage import Store, join_key
from migrate.target.layout import dumps

CERTIFICATE_KEY = join_key(STATE_DIR, "certificate.json")
FORMAT = 1
_MASK = 2**128 - 1


def entry_hash(key: str, size: int, stamp: str) -> int:
    """The hash of one listing entry (BLAKE2b-128 of key, size and stamp)."""
    text = f"{key}\0{size}\0{stamp}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=16).digest(), "little")


@dataclass
class ListingDigest:
    """A listing summed up while it streams by: its objects, their bytes, and the order-free
    digest of its entries (see the module docstring)."""

    objects: int = 0
    bytes: int = 0
    total: int = 0

    def add(self, key: str, size: int, stamp: str) -> None:
        self.objects += 1
        self.bytes += size
        self.total = (self.total + entry_hash(key, size, stamp)) & _MASK

    def add_all(self, entries: Iterable[tuple[str, int, str]]) -> None:
        for key, size, stamp in entries:
            self.add(key, size, stamp)

    @property
    def digest(self) -> str:
        return f"{self.total:032x}"

    def to_json(self) -> dict[str, Any]:
        return {"objects": self.objects, "bytes": self.bytes, "digest": self.digest}

    @classmethod
    def from_json(cls, value: Any) -> ListingDigest:
        return cls(int(value["objects"]), int(value["bytes"]), int(str(value["digest"]), 16))

    def same(self, other: ListingDigest) -> bool:
        return (self.objects, self.bytes, self.total) == (other.objects, other.bytes, other.total)

    def describe(self) -> str:
        return f"{self.objects:,} object(s), {self.bytes:,} bytes, digest {self.digest}"


@dataclass
class Proof:
    """What one ``verify`` proved (see the module docstring)."""

    source: str
    """SRC as verified: the N5 root, and the path inside it."""
    proven: str
    """``full`` (every voxel) or ``sample`` (a random fraction of the chunks)."""
    sample: float
    images: dict[str, str]
    """Dest path → fingerprint of every image proven."""
    verified_at: str
    """When the proof ended (ISO 8601, UTC)."""
    tool_version: str
    summary: str
    """Verify's own last line: exactly what was compared."""
    source_listing: ListingDigest
    dest_listing: ListingDigest
    ledger: dict[str, str] = field(default_factory=dict)
    """Dest path → SHA-256 of each image's ledger manifest (``ledger.json``) as proven."""
    metadata_files: int = 0
    levels: int = 0
    voxels_compared: int = 0

    @property
    def full(self) -> bool:
        return self.proven == "full"

    def describe(self) -> str:
        what = "full voxel proof" if self.full else f"sample proof ({self.sample:g} of the chunks)"
        return (
            f"{what} of {self.source} on {self.verified_at} (cellmap-migrate "
            f"{self.tool_version}): {len(self.images)} image(s), {self.levels} level(s), "
            f"{self.metadata_files} metadata file(s) equal to the plan"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "proven": self.proven,
            "sample": self.sample,
            "images": dict(sorted(self.images.items())),
            "verified_at": self.verified_at,
            "tool_version": self.tool_version,
            "summary": self.summary,
            "levels": self.levels,
            "metadata_files": self.metadata_files,
            "voxels_compared": self.voxels_compared,
            "listings": {
                "source": self.source_listing.to_json(),
                "dest": self.dest_listing.to_json(),
            },
            "ledger": dict(sorted(self.ledger.items())),
        }

    @classmethod
    def from_json(cls, value: Any) -> Proof:
        listings = value["listings"]
        return cls(
            source=str(value["source"]),
            proven=str(value["proven"]),
            sample=float(value.get("sample", 1.0)),
            images={str(k): str(v) for k, v in dict(value["images"]).items()},
            verified_at=str(value["verified_at"]),
            tool_version=str(value.get("tool_version", "")),
            summary=str(value.get("summary", "")),
            source_listing=ListingDigest.from_json(listings["source"]),
            dest_listing=ListingDigest.from_json(listings["dest"]),
            ledger={str(k): str(v) for k, v in dict(value.get("ledger") or {}).items()},
            metadata_files=int(value.get("metadata_files", 0)),
            levels=int(value.get("levels", 0)),
            voxels_compared=int(value.get("voxels_compared", 0)),
        )


@dataclass
class Certificate:
    """``certificate.json``: the proofs of the SRCs verified into this DEST."""

    proofs: list[Proof] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "cellmap-migrate-certificate": FORMAT,
            "proofs": [proof.to_json() for proof in self.proofs],
        }

    @classmethod
    def parse(cls, raw: bytes | None) -> Certificate | None:
        """The certificate in ``raw``; None when absent. One that cannot be read holds no
        proof (it proves nothing)."""
        if raw is None:
            return None
        document = parse_json(raw)
        if document is None or document.get("cellmap-migrate-certificate") != FORMAT:
            return cls()
        proofs = []
        for value in document.get("proofs") or []:
            try:
                proofs.append(Proof.from_json(value))
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
        return cls(proofs)

    def proof_of(self, source: str) -> Proof | None:
        return next((proof for proof in self.proofs if proof.source == source), None)

    def with_proof(self, proof: Proof) -> Certificate:
        """This certificate with ``proof`` in place of any proof of the same SRC or of any
        of its images."""
        kept = [
            other
            for other in self.proofs
            if other.source != proof.source and not set(other.images) & set(proof.images)
        ]
        return Certificate([*kept, proof])


def read(store: Store) -> Certificate | None:
    return Certificate.parse(store.read(CERTIFICATE_KEY))


def write(store: Store, certificate: Certificate) -> None:
    if certificate.proofs:
        store.write(CERTIFICATE_KEY, dumps(certificate.to_json()))
    else:
        store.delete_prefix(CERTIFICATE_KEY)


def withdraw(store: Store, certificate: Certificate, image_paths: Iterable[str]) -> Certificate:
    """Drop the proofs that cover any of ``image_paths`` (their output is being written
    again); returns what is left (written, or the file deleted when nothing is)."""
    paths = set(image_paths)
    kept = Certificate([proof for proof in certificate.proofs if not set(proof.images) & paths])
    if len(kept.proofs) != len(certificate.proofs) or not kept.proofs:
        write(store, kept)
    return kept
