"""DEST's state is read once per run (issue 22, "House").

A re-run of a finished migration used to read the root group four times (prepare, under
the lease, the state check, finalize) and every image group twice or more. Now the root is
listed and its group read once before the lease (is DEST ours to lock?), then the state is
read once under the lease and the finalize steps compare with it instead of reading again.
Counted on a real local store: every ``read`` of DEST's keys during the re-run.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pytest

from migrate.example.fixture import ImageSpec, write_dataset
from migrate.storage.local import LocalStore
from tests.helpers import run_cli

SPECS = [
    ImageSpec(path="em/fibsem-uint16", shape=(20, 24, 28), dtype="uint16", levels=2),
    ImageSpec(path="labels/mito_seg", shape=(20, 24, 28), dtype="uint64", content="labels"),
    ImageSpec(path="labels/er_seg", shape=(20, 24, 28), dtype="uint64", content="labels", seed=2),
]


def count_reads(monkeypatch: pytest.MonkeyPatch, dest: Path) -> collections.Counter[str]:
    """Every key read from the store rooted at ``dest`` from now on (the reads still
    happen: this only counts them)."""
    reads: collections.Counter[str] = collections.Counter()
    original = LocalStore.read

    def read(self: LocalStore, key: str) -> Any:
        if self.root == dest:
            reads[key] += 1
        return original(self, key)

    monkeypatch.setattr(LocalStore, "read", read)
    return reads


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_a_finished_rerun_reads_each_document_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    n5 = write_dataset(tmp_path, "jrc_state-1", SPECS)
    dest = tmp_path / "out.zarr"
    options = ("--ngff-version", version)
    assert run_cli("convert", str(n5), str(dest), *options).exit_code == 0
    reads = count_reads(monkeypatch, dest)
    again = run_cli("convert", str(n5), str(dest), *options)
    assert again.exit_code == 0, again.stderr
    assert "already complete" in again.stdout
    root = ".zattrs" if version == "0.4" else "zarr.json"
    # once, in the state under the lease: before it, the state folder the finished output
    # keeps (its ledger) already says DEST is cellmap-migrate's (without a ledger: twice)
    assert reads[root] == 1, reads
    for image in ("em/fibsem-uint16", "labels/mito_seg", "labels/er_seg"):
        assert reads[f"{image}/{root}"] == 1, reads
    documents = {key: n for key, n in reads.items() if not key.startswith(".cellmap-migrate")}
    assert max(documents.values()) <= 2, documents
    assert not any(key.endswith((".zarray",)) or "/s0/" in key for key in documents), documents
