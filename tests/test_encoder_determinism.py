"""A migration writes the same bytes on every CPU (migrate.copy.transplant.encode).

ISA-L picks its deflate code by the CPU's instruction set when it starts, so the same
migration could write different bytes on two machines: a resumed run on another host, Dask
workers on mixed nodes, or two migrations compared by checksum would disagree even though
every chunk decodes to the same values. Here the encoder, and whole sharded migrations
(block by block, and through TensorStore), run in this process (the host's instruction set,
AVX-512 on the CI machines) and again in a child interpreter under ``qemu-x86_64``
emulating an AVX-without-AVX2 CPU (ISA-L's SSE/AVX code) or an AVX2 CPU. Every gzip and zlib
level 0–9 must give the same bytes on all of them, and each stream must decode (with the
standard library's zlib, an independent decoder) to the chunk it encodes.

Chunks are C order (z, y, x): truncated edge blocks zero-padded to the full chunk, as the
block-by-block path encodes them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pytest

from migrate.copy.transplant import encode
from migrate.example.fixture import ImageSpec, write_image
from schemas.plan import CodecPlan

EMULATED_CPUS = ("SandyBridge", "Haswell")
"""qemu CPU models: AVX without AVX2 (ISA-L's SSE/AVX code) and AVX2."""

NAMES: tuple[Literal["gzip"], Literal["zlib"]] = ("gzip", "zlib")
LEVELS = range(10)

CHILD = """
import json, sys
import numpy as np
from tests.test_encoder_determinism import digests
chunks = np.load(sys.argv[1])
print(json.dumps(digests([chunks[f"arr_{i}"] for i in range(len(chunks.files))])))
"""
"""Run in the emulated CPU: the same :func:`digests` as the host's, on the host's chunks."""


def edge_chunks() -> list[npt.NDArray[Any]]:
    """Zero-padded edge chunks of EM-like noise, sparse labels, smooth ramps and white
    noise, uint8 and little-endian uint16, in 32³ and 64³ chunks."""
    rng = np.random.default_rng(2026)
    chunks: list[npt.NDArray[Any]] = []
    for k in range(12):
        side = 64 if k % 3 else 32
        dims = tuple(int(n) for n in rng.integers(1, side, 3))
        dtype = np.dtype("<u2") if k % 2 else np.dtype("u1")
        top = np.iinfo(dtype).max
        kind = k % 4
        values: npt.NDArray[Any]
        if kind == 0:
            values = rng.normal(top * 0.45, top * 0.03, dims)
        elif kind == 1:
            values = rng.integers(0, 4, dims) * (top // 5)
        elif kind == 2:
            z, y, x = np.indices(dims)
            values = (7 * z + 3 * y + x) % (top // 2)
        else:
            values = rng.integers(0, top, dims)
        chunk = np.zeros((side,) * 3, dtype)
        chunk[tuple(slice(0, d) for d in dims)] = np.clip(values, 0, top).astype(dtype)
        chunks.append(chunk)
    return chunks


def digests(chunks: list[npt.NDArray[Any]]) -> dict[str, str]:
    """The sha256 of every chunk encoded at every gzip and zlib level, by ``chunk name level``."""
    found: dict[str, str] = {}
    for i, values in enumerate(chunks):
        for name in NAMES:
            for level in LEVELS:
                plan = CodecPlan(
                    name=name, level=level, endian="little", transplant=False, reason=""
                )
                found[f"{i} {name} {level}"] = hashlib.sha256(encode(plan, values)).hexdigest()
    return found


def native_digests(chunks: list[npt.NDArray[Any]]) -> dict[str, str]:
    """:func:`digests` in this process; each stream is also decoded with the standard
    library's zlib and must give the chunk's bytes back."""
    for values in chunks:
        for name in NAMES:
            for level in LEVELS:
                plan = CodecPlan(
                    name=name, level=level, endian="little", transplant=False, reason=""
                )
                wbits = 31 if name == "gzip" else 15
                payload = bytes(encode(plan, values))
                assert zlib.decompress(payload, wbits) == values.tobytes(), (name, level)
    return digests(chunks)


@pytest.fixture(scope="module")
def qemu() -> str:
    found = shutil.which("qemu-x86_64")
    if found is None:
        pytest.skip(
            "qemu-x86_64 is not installed (apt-get install qemu-user): the encoder cannot "
            "be run on other instruction sets"
        )
    return found


@pytest.mark.parametrize("cpu", EMULATED_CPUS)
def test_every_level_writes_the_same_bytes_on_another_instruction_set(
    qemu: str, cpu: str, tmp_path: Path
) -> None:
    chunks = edge_chunks()
    np.savez(tmp_path / "chunks.npz", *chunks)
    expected = native_digests(chunks)
    done = subprocess.run(
        [qemu, "-cpu", cpu, sys.executable, "-c", CHILD, str(tmp_path / "chunks.npz")],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    emulated = json.loads(done.stdout)
    differing = sorted(key for key in expected if emulated[key] != expected[key])
    assert differing == [], f"different bytes on {cpu}: {differing[:12]}"


def tree_digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("path", ["block by block", "--no-transplant"])
def test_a_sharded_migration_writes_the_same_tree_on_another_instruction_set(
    qemu: str, path: str, tmp_path: Path
) -> None:
    """Through the block-by-block path (ISA-L and libdeflate) and through TensorStore."""
    n5 = tmp_path / "jrc_cpu-1" / "jrc_cpu-1.n5"
    for image, dtype, level in (
        ("em/fibsem-uint16", "uint16", 9),
        ("em/fibsem-uint8", "uint8", -1),
    ):
        spec = ImageSpec(
            path=image,
            shape=(40, 70, 90),  # truncated edge blocks on every axis
            block_size=(32, 32, 32),
            levels=2,
            dtype=dtype,
            compression={"type": "gzip", "level": level},  # kept: levels 9 and 6
            seed=3,
        )
        write_image(n5, spec)
    args = ["convert", str(n5), "--ngff-version", "0.5", "--shard", "64,64,64"]
    if path == "--no-transplant":
        args.append(path)
    trees = {}
    for cpu in ("host", "Haswell"):
        dest = tmp_path / f"{cpu}.zarr"
        prefix = [] if cpu == "host" else [qemu, "-cpu", cpu]
        done = subprocess.run(
            [*prefix, sys.executable, "-m", "migrate", *args[:2], str(dest), *args[2:]],
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        trees[cpu] = tree_digests(dest)
    assert len(trees["host"]) > 10
    assert trees["Haswell"].keys() == trees["host"].keys()
    differing = sorted(
        key
        for key in trees["host"]
        if trees["Haswell"][key] != trees["host"][key]
        and not key.startswith(".cellmap-migrate/")  # the ledger: run ids and modification times
    )
    assert differing == [], f"different bytes on an AVX2 CPU: {differing[:8]}"
