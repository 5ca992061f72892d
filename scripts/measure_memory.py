"""Measure the copy engine's peak memory on a multi-GiB array (issue: bounded memory).

    python scripts/measure_memory.py [--gib 1 3] [--workers 2] [--unit-mib 32]

For each size, generates (once, cached under ./bench-data/memory-<gib>) a raw uint16 N5 image
with 128^3 blocks — raw so that generating it is disk-bound, not gzip-bound — then runs
``cellmap-migrate convert --no-transplant`` (the decode/encode path, which holds voxels in
memory) as a child process and reports its peak resident set size (``ru_maxrss`` of the child,
read by ``/usr/bin/time``-free means: ``os.wait4``'s rusage of that child) next to the array
size and the documented bound ``baseline + 3 × workers × unit``. Peak memory must not grow
with the array: compare the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from migrate.example.fixture import ImageSpec, write_image

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class MemoryRun:
    array_bytes: int
    shape_zyx: tuple[int, int, int]
    workers: int
    unit_mib: float
    seconds: float
    peak_rss_bytes: int
    bound_bytes: int

    @property
    def peak_over_array(self) -> float:
        return self.peak_rss_bytes / self.array_bytes


def measure(gib: float, workers: int, unit_mib: float, baseline: int) -> MemoryRun:
    side = round((gib * 2**30 / 2) ** (1 / 3))
    shape = (side + 3, side + 5, side + 7)  # no axis a multiple of the blocks
    nbytes = shape[0] * shape[1] * shape[2] * 2
    root = REPO / "bench-data" / f"memory-{gib:g}"
    n5 = root / "jrc_memory" / "jrc_memory.n5"
    spec = ImageSpec(path="em/fibsem-uint16", shape=shape, dtype="uint16",
                     block_size=(128, 128, 128), levels=1, compression={"type": "raw"},
                     content="gradient")  # fmt: skip
    if not (n5 / spec.path / "s0" / "attributes.json").exists():
        started = time.monotonic()
        write_image(n5, spec, overwrite=True)
        print(f"generated {nbytes / 2**30:.2f} GiB in {time.monotonic() - started:.0f} s")
    dest = root / "out.zarr"
    shutil.rmtree(dest, ignore_errors=True)
    command = [
        sys.executable, "-m", "migrate", "convert", str(n5), str(dest), "--no-transplant",
        "--workers", str(workers), "--unit-mib", str(unit_mib), "--json",
    ]  # fmt: skip
    started = time.monotonic()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.monotonic() - started
    if status != 0:
        raise SystemExit(f"convert failed with status {status}")
    shutil.rmtree(dest, ignore_errors=True)
    peak = usage.ru_maxrss * 1024
    bound = baseline + 3 * workers * unit_mib * 2**20
    return MemoryRun(nbytes, shape, workers, unit_mib, round(seconds, 1), peak, int(bound))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[1])
    parser.add_argument("--gib", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--unit-mib", type=float, default=32.0)
    args = parser.parse_args()
    baseline = int(
        subprocess.run(
            [sys.executable, "-c", "import resource, tensorstore, zarr, migrate.cli;"
             "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    rows = [measure(gib, args.workers, args.unit_mib, baseline) for gib in args.gib]
    out = REPO / "bench-results" / "memory.json"
    out.parent.mkdir(exist_ok=True)
    runs = [asdict(row) for row in rows]
    out.write_text(json.dumps({"baseline_rss_bytes": baseline, "runs": runs}, indent=2) + "\n")
    print(f"import baseline {baseline / 2**20:.0f} MiB; bound = baseline + 3 × workers × unit")
    print("array GiB  workers  unit MiB  seconds  peak RSS MiB  bound MiB  peak/array")
    for row in rows:
        print(
            f"{row.array_bytes / 2**30:9.2f}  {row.workers:7}  {row.unit_mib:8g}  "
            f"{row.seconds:7}  {row.peak_rss_bytes / 2**20:12.0f}  "
            f"{row.bound_bytes / 2**20:9.0f}  {100 * row.peak_over_array:9.1f} %"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
