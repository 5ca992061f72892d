"""What the truncated edge blocks of an N5 array cost the fast path, on one core.

    python scripts/edge_cost.py bench-data/gib-1/jrc_bench-1/jrc_bench-1.n5/em/fibsem-uint16/s0

Java N5 writes the blocks at an array's far edges truncated; a Zarr chunk is always whole,
so even ``--skip-decode-check`` must decode, zero-pad and re-encode those blocks (with
``migrate.copy.transplant.BlockCodec``, as a migration does), while the full-size blocks are
copied as bytes. This script times exactly that work for every edge block of one array,
single-threaded, and compares it with reading the whole array's files (what ``cp`` does at
least), so the share of a keep-codec migration that no byte-moving trick can remove is
visible. The array is read once untimed first, so both timings see it in the page cache.
Block positions are C order (z, y, x); N5 keys and headers are F order (x, y, z).
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import time
from pathlib import Path

from migrate.api import prepare
from migrate.copy.transplant import BlockCodec
from migrate.target.plan import PlanOptions
from schemas.plan import LevelPlan


def block_files(array: Path) -> list[Path]:
    """Every block file of an N5 array (keys x/y/z, any depth)."""
    return sorted(p for p in array.rglob("*") if p.is_file() and p.name != "attributes.json")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("array", type=Path, help="an N5 array directory (with attributes.json)")
    args = parser.parse_args()
    array: Path = args.array.absolute()
    level = level_plan(array)
    codec = BlockCodec.of(level)
    full = tuple(level.source_blocks)
    files = block_files(array)
    raws = [path.read_bytes() for path in files]  # warm the page cache, untimed

    started = time.perf_counter()
    for path in files:
        path.read_bytes()
    read_seconds = time.perf_counter() - started

    ndim = len(full)
    edges = []
    for raw in raws:
        dims = tuple(reversed(struct.unpack_from(f">{ndim}I", raw, 4)))
        if dims != full:
            edges.append((raw[4 + 4 * ndim :], dims))
    started = time.process_time()
    for payload, dims in edges:
        codec.recode(payload, dims, full)
    edge_cpu = time.process_time() - started

    voxels = math.prod(level.shape) * codec.itemsize
    edge_voxels = sum(math.prod(dims) for _, dims in edges) * codec.itemsize
    print(
        json.dumps(
            {
                "array": str(array),
                "blocks": len(files),
                "edge_blocks": len(edges),
                "edge_share_of_voxels": round(edge_voxels / voxels, 3),
                "edge_recode_cpu_s": round(edge_cpu, 3),
                "read_all_files_s": round(read_seconds, 3),
                "edge_cpu_per_gib_of_array_s": round(edge_cpu / (voxels / 2**30), 3),
            },
            indent=2,
        )
    )
    return 0


def level_plan(array: Path) -> LevelPlan:
    """The plan of ``array`` (a level of a multiscale image), made by the product's own
    discovery and planning with default options; nothing is written."""
    prepared = prepare(str(array.parent), None, PlanOptions(), read_only_dest=True)
    for image in prepared.plan.images:
        for level in image.levels:
            if level.name == array.name:
                return level
    raise SystemExit(f"{array}: not a level of a multiscale image")


if __name__ == "__main__":
    raise SystemExit(main())
