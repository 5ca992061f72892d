"""How cellmap-migrate fares against a distant S3 endpoint: the dry run, the migration, a
re-run of the finished migration and ``status`` of a many-image dataset, behind a simulated
round trip.

    python scripts/s3_latency.py                    # 30 ms per response, 24 images
    python scripts/s3_latency.py --rtt-ms 50 --images 40

A moto S3 server is started on 127.0.0.1, behind a local TCP proxy that holds every piece
of every response for ``--rtt-ms`` (so each small request costs about one round trip, as
from a laptop to a cloud region); nothing else is contacted. The dataset is Cellmap-shaped
(``em/fibsem-uint16`` plus ``labels/<organelle>_seg`` images, four levels each, tiny arrays:
metadata dominates). Each step runs as a subprocess of this interpreter's ``-m migrate``
(``--tree DIR`` runs another checkout's code instead, to compare two versions in one run).
Prints one JSON object: seconds per step, and the connections each step opened (boto3 and
TensorStore keep connections open, so this is about how many requests were in flight).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from migrate.example.fixture import ImageSpec, write_dataset  # noqa: E402
from tests.s3server import (  # noqa: E402
    MotoServer,
    TcpProxy,
    fake_aws_environment,
    s3_client,
    upload_tree,
)

ORGANELLES = ("mito", "er", "nucleus", "golgi", "ves", "lyso", "ld", "perox", "mt", "cent")


def images(count: int) -> list[ImageSpec]:
    """An EM image and ``count - 1`` label images, four levels each (C-order shapes)."""
    specs = [
        ImageSpec(path="em/fibsem-uint16", shape=(40, 48, 56), dtype="uint16",
                  block_size=(16, 16, 16), levels=4, compression={"type": "gzip"})
    ]  # fmt: skip
    for i in range(count - 1):
        name = f"{ORGANELLES[i % len(ORGANELLES)]}{i // len(ORGANELLES) or ''}_seg"
        specs.append(
            ImageSpec(path=f"labels/{name}", shape=(20, 24, 28), dtype="uint64",
                      block_size=(16, 16, 16), levels=4, compression={"type": "gzip"},
                      content="labels", seed=i)
        )  # fmt: skip
    return specs


def run(argv: list[str], env: dict[str, str], cwd: Path | None) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rtt-ms", type=float, default=30.0, help="added to every response")
    parser.add_argument("--images", type=int, default=24, help="images in the dataset")
    parser.add_argument("--tree", type=Path, help="run the migrate package of this checkout")
    parser.add_argument("--workers", type=int, help="passed to the migration step")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        root = write_dataset(work / "data", "jrc_latency-1", images(args.images))
        moto = MotoServer()
        moto.start()
        proxy = TcpProxy(moto.port, delay=args.rtt_ms / 1000)
        try:
            client = s3_client(moto.url)
            for bucket in ("source", "dest"):
                client.create_bucket(Bucket=bucket)
            uploaded = upload_tree(client, root, "source", root.name)
            (work / "home").mkdir()
            env = {**os.environ, **fake_aws_environment(proxy.url, work / "home")}
            cwd = None
            if args.tree is not None:
                env["PYTHONPATH"] = str(args.tree.absolute())
                cwd = args.tree.absolute()
            src, dest = f"s3://source/{root.name}", "s3://dest/jrc_latency-1.zarr"
            migrate = [sys.executable, "-m", "migrate", "convert", src, dest]
            steps = {
                "dry_run": [*migrate, "--dry-run"],
                "migration": [*migrate, "--json"]
                + ([] if args.workers is None else ["--workers", str(args.workers)]),
                "re_run": [*migrate, "--json"],
                "status": [sys.executable, "-m", "migrate", "status", dest],
            }
            seconds = {}
            connections = {}
            for step, argv in steps.items():
                before = proxy.connections
                seconds[step] = round(run(argv, env, cwd), 2)
                connections[step] = proxy.connections - before
        finally:
            proxy.cut()
            moto.stop()
    print(
        json.dumps(
            {
                "rtt_ms": args.rtt_ms,
                "images": args.images,
                "workers": args.workers,
                "source_objects": uploaded,
                "tree": str(args.tree or HERE.parent),
                "seconds": seconds,
                "connections_opened": connections,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
