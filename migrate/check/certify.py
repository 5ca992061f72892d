"""A ``verify`` that leaves its proof at DEST: the certificate, and the ledger it rests on.

Around the proof of :func:`migrate.check.verify.verify` (metadata, layout, voxels), SRC's
source blocks and DEST's objects are listed before and after (one listing of each; the
proof reads every chunk anyway). When the proof holds and neither listing changed
meanwhile, under DEST's lease (no ``convert`` writes meanwhile):

- the ledger is compared with the listings. A full proof builds the ledger of every image
  that has none (output made before the ledger existed) or whose ledger no longer matches
  DEST or SRC (its voxels are now proven anyway) from the listings it saw; a sample cannot
  vouch for what it did not read, so there a difference is a problem;
- the certificate (:mod:`migrate.dest.certificate`) gets this proof, in place of any
  earlier proof of the same SRC or images.

A proof that fails withdraws the earlier proofs of its images. DEST that cannot be written
(a read-only bucket, permissions) or whose lease another run holds gets no certificate: a
note says why, and the verification result stands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from migrate import __version__
from migrate.check.listing import (
    Survey,
    Value,
    compare_blocks,
    compare_chunks,
    dest_entries,
    list_ledgers,
    now_iso,
    read_ledgers,
    source_entries,
    source_location,
    survey,
)
from migrate.check.replan import plan_again
from migrate.check.verify import VerifyResult, verify
from migrate.copy.events import Progress
from migrate.copy.precomputed import image_source, sibling_store
from migrate.dest import certificate, lease, ledger
from migrate.dest.certificate import Certificate, ListingDigest, Proof
from migrate.errors import MigrationError, StoreError
from migrate.source.dataset import SourceLocation
from migrate.source.registry import Registry
from migrate.storage import LocalStore, Store
from schemas.plan import Plan

Notice = Callable[[str], None]


@dataclass
class Certified:
    """A verify's result and what became of its certificate and ledger."""

    result: VerifyResult
    proof: Proof | None = None
    """The proof written into the certificate (None: none was)."""
    notes: list[str] = field(default_factory=list)


def verify_and_certify(
    source: Store,
    dest: Store,
    *,
    inner: str = "",
    sample: float = 1.0,
    workers: int = 2,
    seed: int | None = None,
    progress: Progress | None = None,
    notice: Notice = print,
    registry: Registry | None = None,
    location: SourceLocation | None = None,
    into_existing: bool = False,
) -> Certified:
    """:func:`~migrate.check.verify.verify` (which takes ``registry``, ``location`` and
    ``into_existing``), then the certificate (see the module docstring). ``dest`` must be
    writable for the certificate to be written."""
    plan, recorded = plan_again(source, inner, dest, registry, location)
    proven_source = source_location(source, inner)
    source = sibling_store(source, plan.source)  # the N5 root of a dataset folder
    before = survey(plan, source, dest)
    result = verify(
        source,
        dest,
        inner=inner,
        into_existing=into_existing,
        sample=sample,
        workers=workers,
        seed=seed,
        progress=progress,
        replanned=(plan, recorded),
    )
    done = Certified(result)
    if result.problems:
        _withdraw(dest, plan, done)
        return done
    try:
        with lease.hold(dest, notice=notice) as held:
            _certify(plan, source, dest, proven_source, before, done, sample)
            if done.proof is not None:
                held.confirm()
                held_certificate = certificate.read(dest) or Certificate()
                certificate.write(dest, held_certificate.with_proof(done.proof))
    except lease.LeaseHeldError as exc:
        done.proof = None
        done.notes.append(f"no certificate written: {exc}")
    except StoreError as exc:
        done.proof = None
        done.notes.append(f"no certificate written: {exc}")
    return done


def _withdraw(dest: Store, plan: Plan, done: Certified) -> None:
    """A failed proof: earlier proofs of these images no longer hold."""
    try:
        held = certificate.read(dest)
        if held is None:
            return
        paths = [image.dest_path for image in plan.images]
        kept = certificate.withdraw(dest, held, paths)
        if len(kept.proofs) != len(held.proofs):
            done.notes.append(
                f"{dest.display(certificate.CERTIFICATE_KEY)}: the earlier proof of these "
                "images was withdrawn"
            )
    except MigrationError as exc:
        done.notes.append(f"could not withdraw the earlier proof: {exc}")


def _changed(what: str, before: ListingDigest, after: ListingDigest) -> str:
    return (
        f"{what} changed while it was verified: its listing was {before.describe()} before, "
        f"{after.describe()} after; verify again"
    )


def _certify(
    plan: Plan,
    source: Store,
    dest: Store,
    proven_source: str,
    before: Survey,
    done: Certified,
    sample: float,
) -> None:
    """Under the lease: the listings again, the ledger checked (or built), the proof."""
    result = done.result
    ledgers = list_ledgers(plan, dest)
    manifests, _digests, ledger_problems, missing = read_ledgers(plan, dest, ledgers)
    after = survey(plan, source, dest, manifests, ledgers=ledgers)
    if not before.source.same(after.source):
        result.problems.append(_changed(proven_source, before.source, after.source))
    if not before.dest.same(after.dest):
        result.problems.append(_changed(dest.display(), before.dest, after.dest))
    if result.problems:
        return
    differences = ledger_problems + compare_chunks(plan, dest, manifests, after, False)
    differences += compare_blocks(plan, source, dest, manifests, after)
    if sample < 1.0:
        result.problems += differences
        if missing:
            done.notes.append(
                f"no ledger for {len(missing)} image(s) (output made before the ledger "
                "existed): a full verify builds it"
            )
    elif missing or differences:
        rebuilt = _rebuild(plan, source, dest, before)
        if rebuilt is not None:
            result.problems.append(rebuilt)
            return
        if missing:
            done.notes.append(
                f"ledger built for {len(missing)} image(s) from the listings this proof saw "
                "(output made before the ledger existed)"
            )
        if differences:
            done.notes.append(
                f"ledger rebuilt from the listings this proof saw: {len(differences)} "
                f"difference(s) from the migration's ledger (first: {differences[0]})"
            )
    if result.problems:
        return
    written = list_ledgers(plan, dest)
    _manifests, digests, problems, still_missing = read_ledgers(plan, dest, written)
    if problems or still_missing:  # pragma: no cover - just written
        result.problems += problems
        return
    ledger_digest = ListingDigest()
    ledger_digest.add_all(written)
    proven = Survey(source=after.source, dest=after.dest, ledgers=ledger_digest)
    done.proof = Proof(
        source=proven_source,
        proven="full" if sample >= 1.0 else "sample",
        sample=sample,
        images={image.dest_path: plan.image_fingerprint(image) for image in plan.images},
        verified_at=now_iso(),
        tool_version=__version__,
        summary=result.summary(),
        source_listing=proven.source,
        dest_listing=proven.dest_listing,
        ledger=digests,
        metadata_files=result.metadata_files,
        levels=result.levels,
        voxels_compared=result.voxels_compared,
    )


BUILD_PART_ENTRIES = 20_000
"""Entries per part of a ledger built from listings (the levels of an image are written
at once, each holding one part in memory)."""
LINE_ENTRIES = 1000
"""Entries per line of a ledger built from listings."""


def _rebuild(plan: Plan, source: Store, dest: Store, before: Survey) -> str | None:
    """Write every image's ledger from a listing of SRC and DEST (locally each chunk is
    read for its CRC-32); a problem when the listings are not the ones the proof saw."""
    check = Survey()
    for image in plan.images:
        _build_image(plan.model_copy(update={"images": (image,)}), source, dest, check)
    if not check.dest.same(before.dest):
        return _changed(dest.display(), before.dest, check.dest)
    if not check.source.same(before.source):
        return _changed(source.display(), before.source, check.source)
    return None


def _build_image(plan: Plan, source: Store, dest: Store, check: Survey) -> None:
    """The ledger of the one image of ``plan``, built from listings (``verify`` builds)."""
    image = plan.images[0]
    ledger.forget(dest, image)
    writers = {
        level.name: ledger.PartWriter(dest, image.dest_path, level.name, BUILD_PART_ENTRIES)
        for level in image.levels
    }
    by_dest = {level.dest_path: level.name for level in image.levels}
    store = image_source(source, image)
    by_source = {store.display(level.source_path): level.name for level in image.levels}
    lines: dict[tuple[str, str], list[list[object]]] = {}

    def add(level: str, kind: str, entry: list[object]) -> None:
        line = lines.setdefault((level, kind), [])
        line.append(entry)
        if len(line) >= LINE_ENTRIES:
            writers[level].add({kind: line})
            lines[(level, kind)] = []

    def route(key: str, prefixes: dict[str, str]) -> tuple[str, str]:
        for prefix, name in prefixes.items():
            if key.startswith(prefix + "/"):
                return name, key[len(prefix) + 1 :]
        raise AssertionError(f"{key} is outside every level")  # pragma: no cover

    value: Value
    hashing = isinstance(dest, LocalStore)
    for key, value in dest_entries(plan, dest, hashing, check):
        level, inner = route(key, by_dest)
        add(level, "chunks", [inner, *value])
    for key, value in source_entries(plan, source, check):
        level, inner = route(key, by_source)
        add(level, "source", [inner, value[0], value[1]])
    for (level, kind), line in lines.items():
        if line:
            writers[level].add({kind: line})
    manifest = ledger.Manifest(
        image=image.dest_path,
        fingerprint=plan.image_fingerprint(image),
        source=plan.source,
        source_path=image.source_path,
        stamp=ledger.stamp_kind(dest),
        digest=ledger.digest_kind(dest),
        built_by="verify",
    )
    for level_plan in image.levels:
        writers[level_plan.name].flush()
        manifest.levels[level_plan.name] = writers[level_plan.name].account
    ledger.write_manifest(dest, manifest)
