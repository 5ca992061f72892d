"""Write a realistic Cellmap N5 dataset for tests, demos and benchmarks.

    python scripts/make_fixture.py ROOT [--name jrc_example-1] [--size tiny|small|medium]
    python scripts/make_fixture.py ROOT --bench-gib 4 [--name jrc_bench-1]

Writes ``ROOT/<name>/<name>.n5`` (plus ``thumbnail.jpg``) with the example writer's own N5
block encoder (migrate.example.fixture). ``--bench-gib`` writes, instead of the example
images, one big FIB-SEM-like uint16 image (gzip, 64^3 blocks, truncated edge blocks: no axis
is a multiple of 64) of about that many GiB at s0, plus a uint64 label image at half the
resolution. All shapes are printed in
C order (z, y, x).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from migrate.example.fixture import (
    ImageSpec,
    example_images,
    level_block_size,
    level_shape,
    write_dataset,
)


def bench_images(gib: float, levels: int = 3) -> list[ImageSpec]:
    """A FIB-SEM-like uint16 image of ~``gib`` GiB at s0 and a half-resolution label image."""
    if gib <= 0:
        raise ValueError(f"--bench-gib must be positive, got {gib}")
    voxels = gib * 2**30 / 2
    proportions = (0.8, 1.0, 1.25)  # z, y, x
    edge = (voxels / (proportions[0] * proportions[1] * proportions[2])) ** (1 / 3)
    shape = []
    for p in proportions:
        n = max(65, round(edge * p))
        if n % 64 == 0:
            n += 37  # keep the edge blocks truncated
        shape.append(n)
    em = ImageSpec(
        path="em/fibsem-uint16",
        shape=tuple(shape),
        dtype="uint16",
        block_size=(64, 64, 64),
        levels=levels,
        voxel_size=(5.24, 4.0, 4.0),
        compression={"type": "gzip", "level": -1},
        content="gradient",
        seed=11,
    )
    half = tuple(-(-n // 2) for n in shape)
    labels = ImageSpec(
        path="labels/mito_seg",
        shape=half,
        dtype="uint64",
        block_size=((128, 128, 128), (64, 64, 64)),
        levels=levels,
        voxel_size=(10.48, 8.0, 8.0),
        offset=(2.62, 2.0, 2.0),
        compression={"type": "gzip", "level": -1},
        downsampling="subsample",
        content="labels",
        seed=12,
    )
    return [em, labels]


def _disk_usage(path: Path) -> tuple[int, int]:
    """(number of files, total bytes) under ``path``."""
    files = size = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            files += 1
            size += (Path(dirpath) / name).stat().st_size
    return files, size


def _describe(n5_root: Path, spec: ImageSpec) -> str:
    files, size = _disk_usage(n5_root / spec.path)
    lines = [
        f"  {spec.path}: {spec.dtype}, {spec.compression.get('type')}, "
        f"{spec.levels} levels, {spec.edge_blocks} edge blocks, metadata={spec.metadata}, "
        f"{files} files, {size / 2**20:.1f} MiB"
    ]
    for level in range(spec.levels):
        lines.append(
            f"    s{level}: shape {level_shape(spec, level)} "
            f"blocks {level_block_size(spec, level)} (z, y, x)"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("root", type=Path, help="directory to write the dataset into")
    parser.add_argument("--name", default=None, help="dataset name (default jrc_example-1)")
    parser.add_argument("--size", choices=["tiny", "small", "medium"], default="tiny")
    parser.add_argument(
        "--bench-gib",
        type=float,
        default=None,
        help="write one ~N GiB uint16 gzip 64^3 FIB-SEM image plus a label image instead",
    )
    parser.add_argument("--levels", type=int, default=3, help="levels of the bench images")
    parser.add_argument("--workers", type=int, default=None, help="writer threads")
    parser.add_argument("--overwrite", action="store_true", help="replace existing images")
    args = parser.parse_args(argv)

    try:
        if args.bench_gib is not None:
            name = args.name or "jrc_bench-1"
            images = bench_images(args.bench_gib, args.levels)
        else:
            name = args.name or "jrc_example-1"
            images = example_images(args.size)
        start = time.perf_counter()
        n5_root = write_dataset(
            args.root, name, images, workers=args.workers, overwrite=args.overwrite
        )
        elapsed = time.perf_counter() - start
    except FileExistsError as exc:
        print(f"error: {exc.args[0].split(' (')[0]} (use --overwrite)", file=sys.stderr)
        return 1
    except (ValueError, NotImplementedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {n5_root} in {elapsed:.1f} s")
    for spec in images:
        print(_describe(n5_root, spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
