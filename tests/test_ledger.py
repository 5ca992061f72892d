"""The migration ledger, the certificate and ``verify --listing`` (issue 22), on local disks.

Every expectation about what DEST holds is read back independently of the code under test:
chunk and block files are read and stat'ed here, their CRC-32 computed with zlib."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from migrate.check.listing import verify_listing
from migrate.example.fixture import ImageSpec, write_dataset
from migrate.storage import LocalStore
from tests.helpers import (
    end,
    freeze_when,
    kill_frozen,
    popen_convert,
    run_cli,
    run_subprocess,
    thaw,
    unit_records,
)

SPEC = ImageSpec(
    path="em/fibsem-uint16",
    shape=(40, 48, 56),
    block_size=(16, 16, 16),
    levels=2,
    content="sparse",  # absent blocks: room to add a chunk the migration never wrote
    seed=5,
)
IMAGE = SPEC.path
STATE = ".cellmap-migrate"
CHUNK_NAMES = {".zarray", ".zattrs", ".zgroup", "zarr.json"}


def ledger_dir(dest: Path, image: str = IMAGE) -> Path:
    return dest / STATE / "ledger" / image


def ledger_lines(dest: Path, image: str = IMAGE) -> dict[str, list[dict[str, Any]]]:
    """Every line of an image's ledger, per level, read with gzip and json here."""
    manifest = json.loads((ledger_dir(dest, image) / "ledger.json").read_text())
    found: dict[str, list[dict[str, Any]]] = {}
    for level, account in manifest["levels"].items():
        found[level] = []
        for name in sorted(account["parts"], key=lambda n: int(n.split(".")[0])):
            text = gzip.decompress((ledger_dir(dest, image) / level / name).read_bytes())
            found[level] += [json.loads(line) for line in text.decode().splitlines()]
    return found


def chunk_entries(dest: Path, image: str = IMAGE) -> dict[str, tuple[int, str, str]]:
    """level/key → (size, stamp, digest) of every chunk the ledger records."""
    return {
        f"{level}/{key}": (size, stamp, digest)
        for level, lines in ledger_lines(dest, image).items()
        for line in lines
        for key, size, stamp, digest in line.get("chunks", [])
    }


def block_entries(dest: Path, image: str = IMAGE) -> dict[str, tuple[int, str]]:
    return {
        f"{level}/{key}": (size, stamp)
        for level, lines in ledger_lines(dest, image).items()
        for line in lines
        for key, size, stamp in line.get("source", [])
    }


def chunk_files_at(dest: Path, image: str = IMAGE) -> dict[str, Path]:
    """level/key → path of every chunk file of the image's levels, found by a walk here."""
    root = dest / image
    return {
        path.relative_to(root).as_posix(): path
        for path in root.rglob("*")
        if path.is_file() and path.name not in CHUNK_NAMES and path.parent != root
    }


def block_files_at(n5: Path, image: str = IMAGE) -> dict[str, Path]:
    root = n5 / image
    return {
        path.relative_to(root).as_posix(): path
        for path in root.rglob("*")
        if path.is_file() and path.name != "attributes.json"
    }


def listing(n5: Path, dest: Path, *extra: str) -> Any:
    return run_cli("verify", "--listing", str(n5), str(dest), *extra)


def mismatches(run: Any) -> list[str]:
    return [line for line in run.stdout.splitlines() if line.startswith("MISMATCH ")]


@pytest.fixture(scope="module")
def proven(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A dataset converted and fully verified (so it holds its ledger and certificate)."""
    root = tmp_path_factory.mktemp("ledger")
    n5 = write_dataset(root, "jrc_ledger-1", [SPEC])
    dest = n5.with_suffix(".zarr")
    assert run_cli("convert", str(n5)).exit_code == 0
    verified = run_cli("verify", str(n5), str(dest))
    assert verified.exit_code == 0, verified.stdout + verified.stderr
    assert "certificate:" in verified.stderr
    return n5, dest


# --------------------------------------------------------------------------------------
# The ledger records what was written and read, as a listing and the bytes show it
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        (),
        ("--no-transplant",),
        ("--skip-decode-check",),
        ("--codec", "zstd"),
        ("--chunks", "8,8,8"),
        ("--ngff-version", "0.5", "--shard", "32,32,32"),
        ("--ngff-version", "0.5", "--shard", "32,32,32", "--skip-decode-check"),
    ],
    ids=[
        "moved",
        "tensorstore",
        "kernel-copy",
        "re-encoded",
        "rechunked",
        "sharded",
        "sharded-kernel",
    ],
)
def test_the_ledger_records_every_chunk_and_block_as_stored(
    tmp_path: Path, options: tuple[str, ...]
) -> None:
    """Whatever path copies the chunks, the ledger lists exactly the chunk files at DEST
    with their size, modification time and CRC-32, and exactly the source block files with
    their size and modification time."""
    n5 = write_dataset(tmp_path, "jrc_paths-1", [SPEC])
    dest = tmp_path / "out.zarr"
    run = run_cli("convert", str(n5), str(dest), *options)
    assert run.exit_code == 0, run.stderr
    recorded = chunk_entries(dest)
    files = chunk_files_at(dest)
    assert files, "the fixture wrote no chunk"
    assert set(recorded) == set(files)
    for key, path in files.items():
        data = path.read_bytes()
        expected = (len(data), str(path.stat().st_mtime_ns), f"{zlib.crc32(data):08x}")
        assert recorded[key] == expected, key
    blocks = block_entries(dest)
    assert set(blocks) == set(block_files_at(n5))
    for key, path in block_files_at(n5).items():
        assert blocks[key] == (path.stat().st_size, str(path.stat().st_mtime_ns)), key
    manifest = json.loads((ledger_dir(dest) / "ledger.json").read_text())
    assert manifest["stamp"] == "mtime_ns"
    assert manifest["digest"] == "crc32"
    assert sum(level["chunks"] for level in manifest["levels"].values()) == len(files)


def test_a_finished_dest_holds_the_ledger_and_no_resume_record(proven: tuple[Path, Path]) -> None:
    _n5, dest = proven
    state = dest / STATE
    names = sorted(p.relative_to(state).as_posix() for p in state.rglob("*") if p.is_file())
    assert "certificate.json" in names
    assert all(name == "certificate.json" or name.startswith("ledger/") for name in names), names
    lines = ledger_lines(dest)
    for level_lines in lines.values():
        units = [line["unit"] for line in level_lines]
        assert units == sorted(units)
        assert all(line["signature"].split(":")[0].isdigit() for line in level_lines)


# --------------------------------------------------------------------------------------
# verify --listing: proven, and each tampering named
# --------------------------------------------------------------------------------------


def test_listing_proves_a_proven_dest_without_reading_chunks(
    proven: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    n5, dest = proven
    from migrate.storage import LocalStore

    reads: list[str] = []
    original = LocalStore.read

    def read(self: LocalStore, key: str) -> Any:
        reads.append(key)
        return original(self, key)

    monkeypatch.setattr(LocalStore, "read", read)
    run = listing(n5, dest)
    assert run.exit_code == 0, run.stdout
    last = run.stdout.splitlines()[-1]
    assert last.startswith("proven by listing (no chunk read): 1 image(s), 2 level(s): ")
    assert last.endswith("still holds (SRC and DEST listed as it saw them): OK")
    chunks = set(chunk_files_at(dest))
    blocks = set(block_files_at(n5))
    assert f"{len(chunks)} chunk(s) at DEST" in last
    assert f"{len(blocks)} source block(s) unchanged" in last
    # no chunk and no block was read: only metadata, the ledger and the certificate
    for key in reads:
        name = key.rsplit("/", 1)[-1]
        assert name in {*CHUNK_NAMES, "attributes.json", "ledger.json", "certificate.json"} or (
            key.startswith(f"{STATE}/ledger/") and name.endswith(".jsonl.gz")
        ), key


@contextlib.contextmanager
def restored(*paths: Path) -> Iterator[None]:
    """Put ``paths`` back as they were (bytes and modification time; a path that did not
    exist is removed) after the block."""
    saved = {
        path: (path.read_bytes(), path.stat().st_atime_ns, path.stat().st_mtime_ns)
        if path.exists()
        else None
        for path in paths
    }
    try:
        yield
    finally:
        for path, value in saved.items():
            if value is None:
                path.unlink(missing_ok=True)
                continue
            data, atime, mtime = value
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            os.utime(path, ns=(atime, mtime))


def _same_size_other_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_zarray(path: Path) -> None:
    document = json.loads(path.read_text())
    document["compressor"]["level"] = 1
    path.write_text(json.dumps(document))


def _edit_ledger_part(path: Path) -> None:
    lines = [json.loads(x) for x in gzip.decompress(path.read_bytes()).decode().splitlines()]
    lines[0]["chunks"][0][1] += 1  # a size
    text = "".join(json.dumps(line) + "\n" for line in lines)
    path.write_bytes(gzip.compress(text.encode(), mtime=0))


Tamper = Callable[[Path, Path], tuple[list[Path], Callable[[], None], str, str]]
"""(n5, dest) → (paths to restore, the tampering, the key a MISMATCH must name, the words)."""


def _first_chunk(dest: Path) -> tuple[str, Path]:
    key, path = sorted(chunk_files_at(dest).items())[0]
    return key, path


def _absent_chunk(dest: Path) -> tuple[str, Path]:
    """A chunk key of s0's grid with no chunk (an all-zero block of the sparse source)."""
    present = set(chunk_files_at(dest))
    blocks = (16, 16, 16)  # SPEC.block_size, one for every level
    grid = [-(-n // b) for n, b in zip(SPEC.shape, blocks, strict=True)]
    for z in range(grid[0]):
        for y in range(grid[1]):
            for x in range(grid[2]):
                key = f"s0/{z}/{y}/{x}"
                if key not in present:
                    return key, dest / IMAGE / key
    raise AssertionError("the sparse fixture has no absent block")


def _first_block(n5: Path) -> tuple[str, Path]:
    key, path = sorted(block_files_at(n5).items())[0]
    return key, path


def t_chunk_deleted(n5: Path, dest: Path) -> tuple[list[Path], Callable[[], None], str, str]:
    key, path = _first_chunk(dest)
    return [path], path.unlink, f"{dest}/{IMAGE}/{key}", "missing at DEST"


def t_chunk_overwritten(n5: Path, dest: Path) -> tuple[list[Path], Callable[[], None], str, str]:
    key, path = _first_chunk(dest)
    return (
        [path],
        lambda: _same_size_other_bytes(path),
        f"{dest}/{IMAGE}/{key}",
        "changed since it was written",
    )


def t_chunk_added(n5: Path, dest: Path) -> tuple[list[Path], Callable[[], None], str, str]:
    key, path = _absent_chunk(dest)
    _, existing = _first_chunk(dest)

    def add() -> None:
        shutil.copyfile(existing, path)

    return (
        [path],
        add,
        f"{dest}/{IMAGE}/{key}",
        "not in the ledger",
    )


def t_block_rewritten(n5: Path, dest: Path) -> tuple[list[Path], Callable[[], None], str, str]:
    key, path = _first_block(n5)
    return (
        [path],
        lambda: _same_size_other_bytes(path),
        f"{n5}/{IMAGE}/{key}",
        "source block changed since it was copied",
    )


def t_block_deleted(n5: Path, dest: Path) -> tuple[list[Path], Callable[[], None], str, str]:
    key, path = _first_block(n5)
    return [path], path.unlink, f"{n5}/{IMAGE}/{key}", "source block deleted since it was copied"


def t_zarray_edited(n5: Path, dest: Path) -> tuple[list[Path], Callable[[], None], str, str]:
    path = dest / IMAGE / "s0" / ".zarray"
    return [path], lambda: _edit_zarray(path), f"{path}: compressor.level is 1", ""


def t_ledger_edited(n5: Path, dest: Path) -> tuple[list[Path], Callable[[], None], str, str]:
    path = ledger_dir(dest) / "s0" / "0.jsonl.gz"
    return [path], lambda: _edit_ledger_part(path), str(path), "ledger part edited"


def t_certificate_deleted(n5: Path, dest: Path) -> tuple[list[Path], Callable[[], None], str, str]:
    path = dest / STATE / "certificate.json"
    return [path], path.unlink, str(path), "no certificate"


@pytest.mark.parametrize(
    "tamper",
    [
        t_chunk_deleted,
        t_chunk_overwritten,
        t_chunk_added,
        t_block_rewritten,
        t_block_deleted,
        t_zarray_edited,
        t_ledger_edited,
        t_certificate_deleted,
    ],
    ids=lambda f: f.__name__.removeprefix("t_"),
)
def test_listing_names_every_tampering(proven: tuple[Path, Path], tamper: Tamper) -> None:
    n5, dest = proven
    paths, act, key, words = tamper(n5, dest)
    with restored(*paths):
        act()
        run = listing(n5, dest)
        assert run.exit_code == 1, run.stdout
        assert run.stdout.splitlines()[-1].startswith("NOT proven by listing: ")
        named = [line for line in mismatches(run) if key in line]
        assert named, (key, run.stdout)
        assert words in named[0], named
        assert "error: not proven by listing: " in run.stderr
    again = listing(n5, dest)
    assert again.exit_code == 0, again.stdout  # restored: proven again


def test_hash_finds_same_size_bytes_whose_modification_time_was_kept(
    proven: tuple[Path, Path],
) -> None:
    """A chunk rewritten in place with its modification time put back looks unchanged to a
    listing; ``--hash`` reads the file and names it."""
    n5, dest = proven
    key, path = _first_chunk(dest)
    with restored(path):
        stat = path.stat()
        _same_size_other_bytes(path)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert listing(n5, dest).exit_code == 0  # what a listing cannot see
        hashed = listing(n5, dest, "--hash")
        assert hashed.exit_code == 1
        named = [line for line in mismatches(hashed) if f"{IMAGE}/{key}" in line]
        assert named, hashed.stdout
        assert "CRC-32" in named[0], hashed.stdout


def test_hash_needs_listing_and_listing_takes_no_sample(proven: tuple[Path, Path]) -> None:
    n5, dest = proven
    assert run_cli("verify", "--hash", str(n5), str(dest)).exit_code == 2
    assert run_cli("verify", "--listing", "--sample", "0.5", str(n5), str(dest)).exit_code == 2


# --------------------------------------------------------------------------------------
# The certificate: written by verify, shown by status and info, withdrawn when it no
# longer holds
# --------------------------------------------------------------------------------------


def test_status_and_info_show_the_certificate(proven: tuple[Path, Path]) -> None:
    n5, dest = proven
    certificate = json.loads((dest / STATE / "certificate.json").read_text())
    (proof,) = certificate["proofs"]
    assert proof["source"] == str(n5)
    assert proof["proven"] == "full"
    assert set(proof["images"]) == {IMAGE}
    assert proof["listings"]["source"]["objects"] == len(block_files_at(n5)) + 2  # attributes
    for command in ("status", "info"):
        run = run_cli(command, str(dest))
        assert run.exit_code == 0, run.stderr
        line = next(x for x in run.stdout.splitlines() if x.startswith("proven: "))
        assert f"full voxel proof of {n5} on {proof['verified_at']}" in line
    status = json.loads(run_cli("status", "--json", str(dest)).stdout)
    assert status[0]["proven"]["verified_at"] == proof["verified_at"]


def test_a_failed_verify_withdraws_the_proof(tmp_path: Path) -> None:
    n5 = write_dataset(tmp_path, "jrc_withdraw-1", [SPEC])
    dest = n5.with_suffix(".zarr")
    assert run_cli("convert", str(n5)).exit_code == 0
    assert run_cli("verify", str(n5), str(dest)).exit_code == 0
    _key, path = _first_chunk(dest)
    stat = path.stat()
    _same_size_other_bytes(path)  # bit rot: same size, same time
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    failed = run_cli("verify", str(n5), str(dest))
    assert failed.exit_code == 1
    assert "the earlier proof of these images was withdrawn" in failed.stderr
    assert not (dest / STATE / "certificate.json").exists()
    after = listing(n5, dest)
    assert after.exit_code == 1
    assert any("no certificate" in line for line in mismatches(after))


def test_a_convert_that_writes_an_image_withdraws_its_proof(tmp_path: Path) -> None:
    n5 = write_dataset(tmp_path, "jrc_reconvert-1", [SPEC])
    dest = n5.with_suffix(".zarr")
    assert run_cli("convert", str(n5)).exit_code == 0
    assert run_cli("verify", str(n5), str(dest)).exit_code == 0
    again = run_cli("convert", str(n5), "--overwrite", "--codec", "zstd")
    assert again.exit_code == 0, again.stderr
    assert not (dest / STATE / "certificate.json").exists()
    assert "no certificate" in listing(n5, dest).stdout
    assert run_cli("verify", str(n5), str(dest)).exit_code == 0
    assert listing(n5, dest).exit_code == 0


# --------------------------------------------------------------------------------------
# Output made before the ledger existed
# --------------------------------------------------------------------------------------


def test_a_full_verify_builds_the_ledger_of_older_output(tmp_path: Path) -> None:
    n5 = write_dataset(tmp_path, "jrc_older-1", [SPEC])
    dest = n5.with_suffix(".zarr")
    assert run_cli("convert", str(n5)).exit_code == 0
    shutil.rmtree(dest / STATE)  # what a cellmap-migrate before the ledger left
    before = listing(n5, dest)
    assert before.exit_code == 1
    ledger_key = f"{dest}/{STATE}/ledger/{IMAGE}/ledger.json"
    assert any(
        ledger_key in line and "no ledger" in line and "full verify" in line
        for line in mismatches(before)
    ), before.stdout
    verified = run_cli("verify", str(n5), str(dest))
    assert verified.exit_code == 0, verified.stdout
    assert "ledger built for 1 image(s)" in verified.stderr
    manifest = json.loads((ledger_dir(dest) / "ledger.json").read_text())
    assert manifest["built_by"] == "verify"
    files = chunk_files_at(dest)
    recorded = chunk_entries(dest)
    assert set(recorded) == set(files)
    for key, path in files.items():
        data = path.read_bytes()
        assert recorded[key] == (len(data), str(path.stat().st_mtime_ns), f"{zlib.crc32(data):08x}")
    assert set(block_entries(dest)) == set(block_files_at(n5))
    assert listing(n5, dest).exit_code == 0


def test_an_incomplete_ledger_is_named(proven: tuple[Path, Path]) -> None:
    """A ledger gathered from unit records of which some were written before the ledger
    existed (a resumed older run) says so; --listing does not take it for proof."""
    n5, dest = proven
    path = ledger_dir(dest) / "ledger.json"
    with restored(path):
        manifest = json.loads(path.read_text())
        manifest["levels"]["s0"]["missing_units"] = 2
        path.write_text(json.dumps(manifest))
        run = listing(n5, dest)
        assert run.exit_code == 1
        assert any(
            str(path) in line and "incomplete: 2 work unit(s)" in line for line in mismatches(run)
        ), run.stdout


# --------------------------------------------------------------------------------------
# Kills and races
# --------------------------------------------------------------------------------------

SLOW_SPEC = ImageSpec(
    path="em/fibsem-uint16",
    shape=(128, 160, 160),
    dtype="uint16",
    block_size=(16, 16, 16),
    levels=2,
    content="noise",
)
SLOW = ("--workers", "1", "--unit-mib", "0.0078125")  # a unit per block: ~1,500 units


def comparable(dest: Path) -> dict[str, Any]:
    """An image's ledger without what differs between two runs of the same migration: the
    chunks' modification times and the runs' ids."""
    result: dict[str, Any] = {}
    for level, lines in ledger_lines(dest, SLOW_SPEC.path).items():
        for line in lines:
            result[f"{level}/{line['unit']}"] = (
                line["signature"],
                sorted((key, size, digest) for key, size, _stamp, digest in line["chunks"]),
                sorted(tuple(block) for block in line["source"]),
            )
    return result


@pytest.mark.slow
def test_the_ledger_after_kill_and_resume_equals_an_uninterrupted_runs(tmp_path: Path) -> None:
    n5 = write_dataset(tmp_path, "jrc_kill-1", [SLOW_SPEC])
    reference = tmp_path / "reference.zarr"
    whole = run_subprocess("convert", str(n5), str(reference), *SLOW)
    assert whole.exit_code == 0, whole.stderr
    dest = tmp_path / "out.zarr"
    seen = 0
    for _attempt in range(2):
        proc = popen_convert(str(n5), str(dest), *SLOW)
        try:
            wanted = seen + 5

            def recorded(n: int = wanted) -> bool:
                return unit_records(dest) >= n

            freeze_when(proc, recorded, f"{wanted} unit records")
            kill_frozen(proc)  # frozen between two writes, wherever it is
        finally:
            end(proc)
        seen = unit_records(dest)
    assert not (ledger_dir(dest, SLOW_SPEC.path) / "ledger.json").exists()
    final = run_subprocess("convert", str(n5), str(dest), *SLOW)
    assert final.exit_code == 0, final.stderr
    assert "partial" in final.stdout
    assert comparable(dest) == comparable(reference)
    # and it proves the output: full verify, then the listing
    assert run_subprocess("verify", str(n5), str(dest)).exit_code == 0
    assert run_subprocess("verify", "--listing", str(n5), str(dest)).exit_code == 0


def lease_run_id(dest: Path) -> str | None:
    try:
        return str(json.loads((dest / STATE / "lease.json").read_text())["run_id"])
    except (OSError, ValueError, KeyError):
        return None


@pytest.mark.slow
def test_two_runs_racing_on_one_dest_cannot_both_write_ledger_entries(tmp_path: Path) -> None:
    """A second run started while the first is frozen mid-copy is refused by the lease and
    writes nothing: every entry of the ledger is the first run's."""
    n5 = write_dataset(tmp_path, "jrc_race-1", [SLOW_SPEC])
    dest = tmp_path / "out.zarr"
    first = popen_convert(str(n5), str(dest), *SLOW)
    try:
        freeze_when(first, lambda: unit_records(dest) >= 3, "3 unit records")
        holder = lease_run_id(dest)
        assert holder is not None
        records_before = unit_records(dest)
        second = run_subprocess("convert", str(n5), str(dest), *SLOW)
        assert second.exit_code == 1
        assert "is being written by another run" in second.stderr
        assert unit_records(dest) == records_before
        thaw(first)
        _, err = first.communicate(timeout=600)
        assert first.returncode == 0, err
    finally:
        end(first)
    runs = {line["run"] for lines in ledger_lines(dest, SLOW_SPEC.path).values() for line in lines}
    assert runs == {holder}


# --------------------------------------------------------------------------------------
# Bulk: the verdict per dataset
# --------------------------------------------------------------------------------------

SMALL = ImageSpec(path="em/fibsem-uint8", shape=(20, 24, 28), dtype="uint8", block_size=(8, 8, 8))


def test_bulk_verify_listing_says_which_dataset_changed_since_its_proof(tmp_path: Path) -> None:
    root = tmp_path / "bucket"
    names = ["jrc_alpha-1", "jrc_beta-1", "jrc_gamma-1"]
    for seed, name in enumerate(names):
        write_dataset(root, name, [ImageSpec(**{**vars(SMALL), "seed": seed})])
    summary = str(tmp_path / "summary.json")
    assert run_cli("bulk", "convert", str(root), "--summary", summary).exit_code == 0
    never = run_cli("bulk", "verify", "--listing", str(root), "--json")
    assert never.exit_code == 1
    assert {entry["detail"] for entry in never.json["datasets"].values()} == {
        "not proven: never fully verified; run a full verify"
    }
    verified = run_cli("bulk", "verify", str(root))
    assert verified.exit_code == 0, verified.stderr
    chunk = root / "jrc_beta-1" / "jrc_beta-1.zarr" / SMALL.path / "s0" / "0" / "0" / "0"
    _same_size_other_bytes(chunk)  # modified after verification
    run = run_cli("bulk", "verify", "--listing", str(root), "--json")
    assert run.exit_code == 1
    verdicts = {name: entry["detail"] for name, entry in run.json["datasets"].items()}
    states = {name: entry["state"] for name, entry in run.json["datasets"].items()}
    assert states == {"jrc_alpha-1": "proven", "jrc_beta-1": "NOT PROVEN", "jrc_gamma-1": "proven"}
    for name in ("jrc_alpha-1", "jrc_gamma-1"):
        proof = json.loads((root / name / f"{name}.zarr" / STATE / "certificate.json").read_text())
        when = proof["proofs"][0]["verified_at"]
        assert verdicts[name].startswith(f"proven: full voxel proof on {when}, unchanged since ")
        assert "(listing 20" in verdicts[name]
    assert verdicts["jrc_beta-1"].startswith("not proven: changed since the full voxel proof of ")
    assert f"{chunk}: changed since it was written" in verdicts["jrc_beta-1"]
    text = run_cli("bulk", "verify", "--listing", str(root))
    assert "1 dataset(s) not proven: jrc_beta-1" in text.stderr


# --------------------------------------------------------------------------------------
# The pieces
# --------------------------------------------------------------------------------------


def test_a_unit_record_from_before_the_ledger_is_read_as_a_bare_signature() -> None:
    from migrate.dest.records import UnitEntries, encode_record, parse_record

    old = parse_record(b"3:0123456789abcdef")
    assert (old.signature, old.entries) == ("3:0123456789abcdef", None)
    entries = UnitEntries((("0/0/1", 10, "17", "0000000a"),), (("1/0/0", 12, "18"),))
    new = parse_record(encode_record("1:ffffffffffffffff", entries, "run-1"))
    assert (new.signature, new.run, new.entries) == ("1:ffffffffffffffff", "run-1", entries)
    assert parse_record(b"{not json").entries is None


@pytest.mark.parametrize(
    ("key", "ours"),
    [
        ("lease.json", True),
        ("lease.json.lock", True),
        ("certificate.json", True),
        ("images/em/x/plan.json", True),
        ("images/em/x/done/fp/gen/s0/17", True),
        ("ledger/em/x/ledger.json", True),
        ("ledger/em/x/s0/0.jsonl.gz", True),
        ("ledger/em/x/s0/.0.jsonl.gz.host-1-2-3.tmp", True),
        ("ledger/em/x/s0/notes.txt", False),
        ("ledger/0.jsonl.gz", False),
        ("images/em/x/done/fp/gen/s0/README", False),
        ("certificate.json.bak", False),
        ("other/thing", False),
    ],
)
def test_the_state_folder_holds_only_names_cellmap_migrate_writes(key: str, ours: bool) -> None:
    from migrate.dest.ours import state_name, written_by_us

    assert state_name(key) is ours
    assert written_by_us(f".cellmap-migrate/{key}", {}, at_root=True) is ours
    assert not written_by_us(f".cellmap-migrate/{key}", {})  # inside an image: never ours


def test_a_tensorstore_generation_gives_the_etag() -> None:
    from migrate.copy.transplant import etag_of

    assert (
        etag_of(b'\x00"4da53b0779222d9a3961a1b6758a892f"') == '"4da53b0779222d9a3961a1b6758a892f"'
    )
    assert etag_of(b"") == ""


def test_buckets_find_and_name_every_difference() -> None:
    from migrate.check.listing import Balance, name_differences

    recorded = {f"s0/{i}/0/0": (100 + i, f"t{i}", "") for i in range(5000)}
    listed = dict(recorded)
    listed.pop("s0/7/0/0")
    listed["s0/9/0/0"] = (109, "other", "")
    listed["s0/99999/0/0"] = (1, "t", "")
    balance = Balance()
    for key, value in recorded.items():
        balance.add(0, key, value)
    for key, value in listed.items():
        balance.add(1, key, value)
    differing = balance.differing()
    assert 1 <= len(differing) <= 3

    def describe(key: str, old: Any, new: Any) -> str:
        return f"{key}: {old} → {new}"

    named = name_differences(
        differing, lambda: iter(recorded.items()), lambda: iter(listed.items()), describe, False
    )
    assert named == [
        "s0/7/0/0: (107, 't7', '') → None",
        "s0/9/0/0: (109, 't9', '') → (109, 'other', '')",
        "s0/99999/0/0: None → (1, 't', '')",
    ]
    same = Balance()
    for side, items in ((0, recorded), (1, dict(reversed(list(recorded.items()))))):
        for key, value in items.items():
            same.add(side, key, value)
    assert same.differing() == []  # order does not matter


class _SwappingStore(LocalStore):
    """DEST as a reader racing a writer sees it: ``key`` reads as it is the first time and
    as ``later`` from then on (every other read, and everything else, the real store's)."""

    def __init__(self, root: Path, key: str, later: bytes) -> None:
        super().__init__(root, read_only=True)
        self._key, self._later, self.reads = key, later, 0

    def read(self, key: str) -> bytes | None:
        if key == self._key:
            self.reads += 1
            if self.reads > 1:
                return self._later
        return super().read(key)


def test_a_ledger_part_swapped_after_its_check_is_not_believed(
    proven: tuple[Path, Path],
) -> None:
    """A chunk overwritten, and the ledger part rewritten to record it, between the moment
    ``--listing`` checks the part's SHA-256 and the moment it uses the part: the chunk is
    named as not what the ledger (the checked one) records, not taken from the new part."""
    n5, dest = proven
    key, chunk = _first_chunk(dest)
    (part,) = [p for p in (ledger_dir(dest) / key.split("/")[0]).iterdir() if p.is_file()]
    with restored(chunk, part):
        _same_size_other_bytes(chunk)
        stat = chunk.stat()
        lines = [json.loads(x) for x in gzip.decompress(part.read_bytes()).decode().splitlines()]
        level_key = key.split("/", 1)[1]
        for line in lines:
            for entry in line.get("chunks", []):
                if entry[0] == level_key:  # what a forger would write: the chunk as it is now
                    entry[1:] = [stat.st_size, str(stat.st_mtime_ns), entry[3]]
        forged = gzip.compress("".join(json.dumps(x) + "\n" for x in lines).encode(), mtime=0)
        swapping = _SwappingStore(dest, part.relative_to(dest).as_posix(), forged)
        result = verify_listing(LocalStore(n5, read_only=True), swapping)
        assert swapping.reads >= 2, "\n".join(["the part was read once", *result.problems])
    assert result.problems, "proven with a ledger part that changed after it was checked"
    named = [p for p in result.problems if p.startswith(f"{dest}/{IMAGE}/{key}:")]
    assert named, "\n".join(result.problems)
