"""Absurd sizes: a level's declared size never costs memory, and sizes the grid cannot hold
are refused at planning with one line naming the file and the field.

The memory tests run the CLI in a subprocess that caps its own address space
(``RLIMIT_AS``) at what the interpreter uses with every module of the run imported plus a
few hundred MB: a run whose state grew with the declared size (one signature per work
unit: 23.5 GB for the issue's level) dies there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts
import zarr

from tests.helpers import REPO, run_subprocess

HEADROOM_MIB = 400
"""Address space allowed above the interpreter's own (with its imports) in the child."""

CAPPED_CLI = f"""
import resource, sys
import numpy, tensorstore, zarr  # what a run loads, so the cap is measured with them
import migrate.cli, migrate.copy.copiers, migrate.copy.transplant
with open("/proc/self/status") as status:
    size = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
cap = size * 1024 + {HEADROOM_MIB} * 2**20
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
sys.argv = ["cellmap-migrate", *sys.argv[1:]]
migrate.cli.main()
"""

HUGE_X = 2**40
"""The issue's ``"dimensions": [1099511627776, 85, 38]``: 7 PB of uint16, 5 × 10^8 units."""


def write_huge(
    root: Path, dimensions: list[int], far: int | None = None, *, blocks: bool = True
) -> Path:
    """An N5 root ``jrc_huge-1.n5`` with one image of one level ``s0`` of ``dimensions``
    (F order, x first), holding (with ``blocks``) one block at the origin and, with ``far``,
    one at x=far (written by TensorStore's n5 driver); returns the root."""
    n5 = root / "jrc_huge-1" / "jrc_huge-1.n5"
    image = n5 / "em" / "fibsem-uint16"
    (image / "s0").mkdir(parents=True)
    (n5 / "attributes.json").write_text('{"n5": "2.5.0"}')
    (n5 / "em" / "attributes.json").write_text("{}")
    transform = {"axes": ["z", "y", "x"], "units": ["nm"] * 3, "scale": [4, 4, 4],
                 "translate": [0, 0, 0]}  # fmt: skip
    multiscales = [{"datasets": [{"path": "s0", "transform": transform}]}]
    (image / "attributes.json").write_text(json.dumps({"multiscales": multiscales}))
    metadata = {"dimensions": dimensions, "blockSize": [64, 64, 64], "dataType": "uint16",
                "compression": {"type": "gzip"}}  # fmt: skip
    if not blocks:  # sizes TensorStore would not even open: the attributes alone
        (image / "s0" / "attributes.json").write_text(json.dumps(metadata))
        return n5
    spec = {"driver": "n5", "kvstore": {"driver": "file", "path": str(image / "s0")},
            "metadata": metadata, "create": True}  # fmt: skip
    array = ts.open(spec).result()
    array[0:64, 0:64, 0:38].write(np.full((64, 64, 38), 7, dtype=np.uint16)).result()
    if far is not None:
        array[far : far + 64, 0:64, 0:38].write(np.full((64, 64, 38), 9, np.uint16)).result()
    return n5


def run_capped(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CAPPED_CLI, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        check=False,
    )


def test_the_memory_cap_bites() -> None:
    """The cap is real: allocating a GB under it fails."""
    run = subprocess.run(
        [sys.executable, "-c", CAPPED_CLI.replace("migrate.cli.main()", "bytearray(2**30)")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert run.returncode != 0
    assert "MemoryError" in run.stderr


def test_a_petabyte_level_with_few_blocks_costs_bounded_memory(tmp_path: Path) -> None:
    """Planning, the dry run and the run itself of a level declared 2^40 × 85 × 38 that holds
    two blocks: each stays within a few hundred MB and the blocks arrive."""
    n5 = write_huge(tmp_path, [HUGE_X, 85, 38], far=2**39)
    dest = tmp_path / "out.zarr"
    dry = run_capped("convert", str(n5), str(dest), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"[38, 85, {HUGE_X}]" in dry.stdout.replace("\n", "")
    assert not dest.exists()
    real = run_capped("convert", str(n5), str(dest), "--json")
    assert real.returncode == 0, real.stderr
    document = json.loads(real.stdout[real.stdout.index("{\n") :])
    (image,) = document["images"]
    assert image["complete"]
    assert image["units_copied"] == 2  # the two units that hold a block; the rest are zero
    assert image["units_copied"] + image["units_skipped"] == image["units_total"]
    array = zarr.open_array(str(dest / "em/fibsem-uint16/s0"), mode="r")
    assert array.shape == (38, 85, HUGE_X)
    assert (np.asarray(array[0:38, 0:64, 0:64]) == 7).all()
    assert (np.asarray(array[0:38, 0:64, 2**39 : 2**39 + 64]) == 9).all()
    assert (np.asarray(array[0:38, 64:85, 0:64]) == 0).all()
    # the same run again: finished, nothing to copy, still bounded
    again = run_capped("convert", str(n5), str(dest))
    assert again.returncode == 0, again.stderr
    assert "already complete" in again.stdout or "complete" in again.stdout


@pytest.mark.parametrize(
    ("dimensions", "field", "says"),
    [
        ([2**62, 85, 38], "dimensions[0]", "more than an array can hold"),
        ([85, 2**62 - 2, 2**62 - 2], "dimensions", "more than a 64-bit size can count"),
    ],
)
def test_a_size_the_grid_cannot_hold_is_refused_at_planning(
    tmp_path: Path, dimensions: list[int], field: str, says: str
) -> None:
    """``[2**62, …]`` ended in ``internal error: OverflowError`` after files were written,
    and the dry run accepted it: now both stop with one line naming the file and field,
    and nothing is written."""
    n5 = write_huge(tmp_path, dimensions, blocks=False)
    dest = tmp_path / "out.zarr"
    location = n5 / "em/fibsem-uint16/s0/attributes.json"
    for extra in (("--dry-run",), ()):
        run = run_subprocess("convert", str(n5), str(dest), *extra)
        assert run.exit_code == 1, (run.stdout, run.stderr)
        lines = [line for line in run.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1, run.stderr
        assert lines[0].startswith(f"error: {location}: {field}: ")
        assert says in lines[0]
        assert "internal error" not in run.stderr
        assert not dest.exists()
