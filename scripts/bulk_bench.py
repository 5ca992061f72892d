"""Bulk throughput: many small datasets in one ``bulk convert`` against one dataset of the
same total size in one ``convert``, locally and on S3 behind a simulated round trip.

    python scripts/bulk_bench.py                     # 40 datasets, local and S3 at 30 ms
    python scripts/bulk_bench.py --tiny              # 3 tiny datasets, no latency (a smoke run)
    python scripts/bulk_bench.py --no-s3 --reps 5    # local only, five alternating pairs

The single dataset holds the same images as the many (one ``em/fibsem-uint16`` image each,
same shape, blocks and voxels), so both runs read and write the same blocks and work units:
the difference is what a dataset costs (discovery, planning, preparing and finalizing DEST).
The S3 runs go to a moto server on 127.0.0.1 behind a local TCP proxy that holds every piece
of every response for ``--rtt-ms`` (see scripts/s3_latency.py); nothing else is contacted.
Each step runs as a subprocess of this interpreter's ``-m migrate``. Prints one JSON object:
seconds and MB/s per step, and the bulk/single throughput ratio per place.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
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


def spec(shape: tuple[int, int, int], block: int, seed: int, path: str) -> ImageSpec:
    return ImageSpec(path=path, shape=shape, dtype="uint16", block_size=(block,) * 3,
                     levels=2, compression={"type": "gzip", "level": 1}, seed=seed)  # fmt: skip


def make_data(work: Path, count: int, shape: tuple[int, int, int], block: int) -> int:
    """``count`` datasets under ``work/many`` and one dataset of them all under ``work/one``;
    returns the voxel bytes of either."""
    for i in range(count):
        write_dataset(
            work / "many", f"jrc_bulk-{i:03d}", [spec(shape, block, i, "em/fibsem-uint16")]
        )
    images = [spec(shape, block, i, f"em/fibsem-uint16-{i:03d}") for i in range(count)]
    write_dataset(work / "one", "jrc_single-1", images)
    per_image = sum(
        2 * -(-shape[0] // 2**n) * -(-shape[1] // 2**n) * -(-shape[2] // 2**n) for n in (0, 1)
    )
    return count * per_image


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    os.sync()  # the previous step's written pages are not this step's cost
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--datasets", type=int, default=40)
    parser.add_argument("--shape", default="64,128,128", help="s0 shape of each image, z,y,x")
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--rtt-ms", type=float, default=30.0, help="added to every S3 response")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--no-s3", action="store_true", help="local runs only")
    parser.add_argument("--tiny", action="store_true", help="3 tiny datasets, no latency")
    parser.add_argument(
        "--reps", type=int, default=1,
        help="local single and bulk runs this many times, alternating which goes first; "
        "reports each and the median ratio (the seconds shown are the last repetition's)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.tiny:
        args.datasets, args.shape, args.block, args.rtt_ms = 3, "12,16,20", 8, 0.0
    shape = tuple(int(n) for n in args.shape.split(","))
    assert len(shape) == 3
    py = [sys.executable, "-m", "migrate"]
    opts = ["--workers", str(args.workers)]
    report: dict[str, object] = {
        "datasets": args.datasets, "shape": list(shape), "block": args.block,
        "workers": args.workers, "rtt_ms": args.rtt_ms,
    }  # fmt: skip
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        nbytes = make_data(work / "data", args.datasets, shape, args.block)
        report["voxel_mb"] = round(nbytes / 1e6, 3)
        env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
        many, one = work / "data" / "many", work / "data" / "one"
        summary = ["--summary", str(work / "summary.json")]
        single = [*py, "convert", str(one / "jrc_single-1" / "jrc_single-1.n5"), *opts]
        bulk = [*py, "bulk", "convert", str(many), *opts, *summary]
        ratios: list[float] = []
        reps: list[dict[str, float]] = []
        for rep in range(args.reps):
            if rep:
                for output in [*many.glob("*/*.zarr"), *one.glob("*/*.zarr")]:
                    shutil.rmtree(output)
            # alternate which goes first, so a drift in the machine's speed favours neither
            order = ("single", "bulk") if rep % 2 == 0 else ("bulk", "single")
            for step in order:
                seconds[f"local_{step}"] = timed(single if step == "single" else bulk, env, work)
            ratios.append(seconds["local_single"] / seconds["local_bulk"])
            reps.append({step: round(seconds[f"local_{step}"], 2) for step in order})
        seconds["local_bulk_rerun"] = timed(bulk, env, work)
        if args.reps > 1:
            report["local_reps"] = reps
            report["local_ratio_median"] = round(statistics.median(ratios), 2)
            report["local_ratio_range"] = [round(min(ratios), 2), round(max(ratios), 2)]
        if not args.no_s3:
            moto = MotoServer()
            moto.start()
            proxy = TcpProxy(moto.port, delay=args.rtt_ms / 1000)
            try:
                client = s3_client(moto.url)
                for bucket, tree in (("many", many), ("one", one)):
                    client.create_bucket(Bucket=bucket)
                    # only the sources: the local runs above wrote .zarr trees beside them
                    for dataset in sorted(tree.iterdir()):
                        n5 = dataset / f"{dataset.name}.n5"
                        upload_tree(client, n5, bucket, f"{dataset.name}/{n5.name}")
                (work / "home").mkdir()
                s3env = {**env, **fake_aws_environment(proxy.url, work / "home")}
                seconds["s3_single"] = timed(
                    [*py, "convert", "s3://one/jrc_single-1/jrc_single-1.n5", *opts], s3env, work
                )
                seconds["s3_bulk"] = timed(
                    [*py, "bulk", "convert", "s3://many", *opts, *summary], s3env, work
                )
                seconds["s3_bulk_rerun"] = timed(
                    [*py, "bulk", "convert", "s3://many", *opts, *summary], s3env, work
                )
            finally:
                proxy.cut()
                moto.stop()
    report["seconds"] = {step: round(value, 2) for step, value in seconds.items()}
    report["mb_per_s"] = {
        step: round(nbytes / 1e6 / value, 1)
        for step, value in seconds.items()
        if not step.endswith("rerun")
    }
    report["bulk_over_single"] = {
        place: round(seconds[f"{place}_single"] / seconds[f"{place}_bulk"], 2)
        for place in ("local", "s3")
        if f"{place}_bulk" in seconds
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
