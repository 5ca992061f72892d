"""What migrating a precomputed volume costs: wall time and peak memory of ``convert``.

Writes one dataset folder with a JPEG volume, a raw one and a sharded raw one (3 scales
each, TensorStore-written, the voxels of an example N5 EM), then times
``cellmap-migrate convert`` of each volume in a subprocess (``/usr/bin/time``: wall seconds
and peak RSS). Shapes are C order (z, y, x).

    python scripts/precomputed_bench.py --shape 128,512,512 --workers 2
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from migrate.example.fixture import ImageSpec
from migrate.example.precomputed import sharding, volume_of_image, write_volume

VOLUMES = {
    "jpeg": "neuroglancer/em/fibsem-uint8.precomputed",
    "raw": "neuroglancer/em/raw-uint8.precomputed",
    "raw, sharded": "neuroglancer/em/sharded-uint8.precomputed",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="128,512,512", help="s0 shape, z,y,x")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the data folder")
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.shape.split(","))
    root = Path(tempfile.mkdtemp(prefix="precomputed-bench-"))
    image = ImageSpec(path="em/x", shape=shape, dtype="uint8", levels=3, content="gradient")
    data = root / "jrc_bench-1"
    data.mkdir()
    write_volume(data, volume_of_image(image, VOLUMES["jpeg"], encoding="jpeg", chunk=(64,) * 3))
    write_volume(data, volume_of_image(image, VOLUMES["raw"], chunk=(64,) * 3))
    shards = sharding(3, 3)
    sharded = volume_of_image(image, VOLUMES["raw, sharded"], chunk=(64,) * 3, sharded=shards)
    write_volume(data, sharded)
    voxels = sum(math.prod(max(1, -(-n // 2**k)) for n in shape) for k in range(3))
    print(f"{voxels / 1e6:.1f} M voxels (uint8) per volume, {args.workers} worker(s)")
    try:
        for name, volume in VOLUMES.items():
            dest = root / f"{name.replace(', ', '-')}.zarr"
            command = [
                "/usr/bin/time", "-f", "%e %M", sys.executable, "-m", "migrate", "convert",
                str(data / volume), str(dest), "--workers", str(args.workers),
            ]  # fmt: skip
            run = subprocess.run(command, capture_output=True, text=True, check=True)
            seconds, kib = run.stderr.strip().splitlines()[-1].split()
            rate = voxels / 1e6 / float(seconds)
            print(f"{name:>13}: {float(seconds):6.2f} s, {rate:6.1f} MB/s of voxels, "
                  f"peak RSS {int(kib) / 1024:.0f} MiB")  # fmt: skip
    finally:
        if not args.keep:
            shutil.rmtree(root)


if __name__ == "__main__":
    main()
