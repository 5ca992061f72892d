"""What ``verify --listing`` costs against a full ``verify``, and what the ledger costs a
migration.

    python scripts/listing_bench.py s3 --reps 1            # ≥ 100,000 chunks on S3 at 30 ms
    python scripts/listing_bench.py s3 --reps 1 --blocks-per-axis 10 --block-edge 64 \
        --dtype uint16 --content gradient                 # chunks of the size of real ones
    python scripts/listing_bench.py local --gib 4 --reps 3 # the benchmark image, local disk
    python scripts/listing_bench.py cost --gib 4 --reps 3 --baseline DIR
    python scripts/listing_bench.py s3-cost --reps 3 --baseline DIR

``s3``: a moto S3 server on 127.0.0.1 holds SRC and DEST (by default an image of 47³ =
103,823 chunks of 16³ uint8 noise, one level, gzip; converted once, straight to the server);
every measured command then goes through a proxy that holds each response ``--rtt-ms``
(default 30 ms) and records every request and the bytes of every response body. Full
``verify`` and ``verify --listing`` run alternately, ``--reps`` times each (full first: the
first full verify writes the certificate the listing proof needs), each a subprocess; per
command: wall time, requests (by kind), bytes of response bodies (object GETs, and
listings). Then what a request costs the server itself, one at a time and straight to it:
milliseconds per key listed and per GET of a chunk. ``--endpoint URL`` uses a moto server
already running (``python -m moto.server -p PORT``) instead of starting one, and ``--stage
prepare`` / ``--stage measure`` split the run in two: the image prepared there once (an hour
for the default size on a 2-core machine, the server's time), measured as often as wanted.

``local``: the benchmark image of ``scripts/bench.py`` (``--gib``, cached under
``--data``), converted once; full ``verify`` and ``verify --listing`` alternately; per
command: wall time and the bytes it read (``rchar`` of ``/proc/self/io`` at its exit: every
``read`` of the process, TensorStore's included).

``cost``: ``convert`` of the benchmark image by this checkout and by ``--baseline`` (a
checkout of the code before the ledger), alternately, each into a fresh DEST after
``sync``, keeping the codec and with ``--skip-decode-check``; ``s3-cost``: the same on S3
through the 30 ms proxy (a smaller image). Both also report the ledger's size per million
chunks.

Medians with min–max, the 1-minute load average before and after each command, and one
JSON document on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench import ensure_dataset  # noqa: E402

from migrate.example.fixture import ImageSpec, write_dataset  # noqa: E402
from tests.s3server import (  # noqa: E402
    MotoServer,
    TcpProxy,
    fake_aws_environment,
    keys,
    s3_client,
    upload_tree,
)

S3_SPEC = ImageSpec(
    path="em/fibsem-uint8",
    shape=(376, 376, 376),
    dtype="uint8",
    block_size=(8, 8, 8),
    levels=1,
    compression={"type": "gzip"},
    content="noise",
)
"""47³ = 103,823 blocks (chunks) of 512 voxels."""
COST_SPEC = ImageSpec(
    path="em/fibsem-uint16",
    shape=(192, 256, 256),
    dtype="uint16",
    block_size=(32, 32, 32),
    levels=2,
    compression={"type": "gzip"},
    content="gradient",
)
"""The S3 cost image: 24 MiB of voxels, 448 + 64 chunks."""
RUNNER = (
    "import atexit, sys\n"
    "def report():\n"
    "    sys.stderr.write('PROCIO ' + open('/proc/self/io').read().replace('\\n', ' ') + '\\n')\n"
    "atexit.register(report)\n"
    "sys.argv = ['cellmap-migrate', *sys.argv[1:]]\n"
    "from migrate.cli import main\n"
    "main()\n"
)
"""Runs the CLI and, at exit, prints this process's I/O counters (bytes read: rchar)."""


def load() -> float:
    return round(os.getloadavg()[0], 2)


def run(
    args: Sequence[str], env: dict[str, str], tree: Path | None = None, ok: bool = True
) -> dict[str, Any]:
    """One CLI command as a subprocess: its wall time, exit status and bytes read."""
    environment = dict(env)
    if tree is not None:
        environment["PYTHONPATH"] = str(tree)
    before = load()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, *args],
        env=environment,
        cwd=tree or HERE.parent,
        capture_output=True,
        text=True,
        timeout=7200,
        check=False,
    )
    seconds = time.perf_counter() - started
    if ok and done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    counters = {}
    for line in done.stderr.splitlines():
        if line.startswith("PROCIO "):
            fields = line.split()[1:]
            counters = {
                k.rstrip(":"): int(v) for k, v in zip(fields[::2], fields[1::2], strict=False)
            }
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    return {
        "seconds": round(seconds, 3),
        "exit": done.returncode,
        "bytes_read": counters.get("rchar", 0),
        "load_before": before,
        "load_after": load(),
        "last_line": last[:300],
    }


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def requests_of(proxy: TcpProxy, start: int, start_seen: int) -> dict[str, Any]:
    """The requests and body bytes the proxy saw since ``start`` / ``start_seen``."""
    kinds: dict[str, int] = {}
    for method, path in proxy.requests[start:]:
        kind = "LIST" if "list-type" in path else method
        kinds[kind] = kinds.get(kind, 0) + 1
    listing = sum(
        size for m, path, size in proxy.responses_seen[start_seen:] if "list-type" in path
    )
    objects = sum(
        size for m, path, size in proxy.responses_seen[start_seen:] if "list-type" not in path
    )
    return {
        "requests": sum(kinds.values()),
        "by_kind": kinds,
        "object_bytes": objects,
        "listing_bytes": listing,
        "bytes": objects + listing,
    }


def ledger_size(client: Any, bucket: str, prefix: str) -> int:
    return sum(
        int(item["Size"]) for item in keys(client, bucket, f"{prefix}/.cellmap-migrate/ledger/")
    )


def local_ledger_size(dest: Path) -> int:
    return sum(
        p.stat().st_size for p in (dest / ".cellmap-migrate" / "ledger").rglob("*") if p.is_file()
    )


def chunk_count_local(dest: Path) -> int:
    names = {".zarray", ".zattrs", ".zgroup", "zarr.json"}
    return sum(
        1
        for p in dest.rglob("*")
        if p.is_file() and p.name not in names and ".cellmap-migrate" not in p.parts
    )


# --------------------------------------------------------------------------------------


def s3_prepare(args: argparse.Namespace, client: Any, url: str, work: Path) -> dict[str, Any]:
    """Write the image, upload it to ``source`` and convert it into ``dest``, straight to
    the server (no added latency)."""
    side, edge = args.blocks_per_axis, args.block_edge
    spec = dataclasses.replace(
        S3_SPEC,
        shape=(edge * side,) * 3,
        block_size=(edge,) * 3,
        dtype=args.dtype,
        content=args.content,
    )
    print(f"writing the source ({side**3:,} blocks of {edge}³) …", file=sys.stderr)
    root = write_dataset(work / "data", "jrc_listing-1", [spec], thumbnail=False)
    for bucket in ("source", "dest"):
        client.create_bucket(Bucket=bucket)
    print("uploading it …", file=sys.stderr)
    started = time.perf_counter()
    uploaded = upload_tree(client, root, "source", root.name, threads=args.threads)
    upload_s = time.perf_counter() - started
    shutil.rmtree(work / "data")
    print(f"  {uploaded:,} objects in {upload_s:.0f} s; converting …", file=sys.stderr)
    direct = {**os.environ, **fake_aws_environment(url, work / "home")}
    convert = run(["convert", *S3_PAIR, "--workers", "4", "--unit-mib", "1"], direct)
    print(f"  converted in {convert['seconds']:.0f} s", file=sys.stderr)
    return {"source_objects": uploaded, "upload_seconds": round(upload_s, 1), "convert": convert}


S3_PAIR = ("s3://source/jrc_listing-1.n5", "s3://dest/jrc_listing-1.zarr")


def s3_measure(args: argparse.Namespace, client: Any, port: int, work: Path) -> dict[str, Any]:
    """Full ``verify`` and ``verify --listing`` alternately through the delaying proxy (the
    first full verify writes the certificate the listing proof needs)."""
    proxy = TcpProxy(port, delay=args.rtt_ms / 1000, record=True)
    try:
        slow = {**os.environ, **fake_aws_environment(proxy.url, work / "home")}
        rows: dict[str, list[dict[str, Any]]] = {"full": [], "listing": []}
        for rep in range(args.reps):
            order = ["full", "listing"] if rep % 2 == 0 else ["listing", "full"]
            for kind in order:
                argv = ["verify", *S3_PAIR] + (["--listing"] if kind == "listing" else [])
                start, seen = len(proxy.requests), len(proxy.responses_seen)
                print(f"rep {rep + 1}: {kind} …", file=sys.stderr)
                row = run(argv, slow)
                row.update(requests_of(proxy, start, seen))
                rows[kind].append(row)
                print(
                    f"  {row['seconds']} s, {row['requests']} requests, {row['bytes']:,} bytes",
                    file=sys.stderr,
                )
    finally:
        proxy.cut()
    chunks = sum(
        1 for item in keys(client, "dest", "jrc_listing-1.zarr/em/") if "/s0/" in item["Key"]
    )
    size = ledger_size(client, "dest", "jrc_listing-1.zarr")
    costs = server_costs(client)
    full, listing = rows["full"], rows["listing"]
    full_s = statistics.median(r["seconds"] for r in full)
    list_s = statistics.median(r["seconds"] for r in listing)
    full_b = statistics.median(r["bytes"] for r in full)
    list_b = statistics.median(r["bytes"] for r in listing)
    full_o = statistics.median(r["object_bytes"] for r in full)
    list_o = statistics.median(r["object_bytes"] for r in listing)
    return {
        "rtt_ms": args.rtt_ms,
        "chunks": chunks,
        "full": {"seconds": summary([r["seconds"] for r in full]), "runs": full},
        "listing": {"seconds": summary([r["seconds"] for r in listing]), "runs": listing},
        "faster": round(full_s / list_s, 1),
        "fewer_bytes": round(full_b / max(list_b, 1), 1),
        "fewer_object_bytes": round(full_o / max(list_o, 1), 1),
        "ledger_bytes": size,
        "ledger_bytes_per_million_chunks": round(size / chunks * 1e6),
        "server": costs,
    }


def server_costs(client: Any, pages: int = 5, gets: int = 300) -> dict[str, float]:
    """What a request costs the server itself, the one process that serves both commands:
    one at a time, straight to it (no proxy, no added latency), milliseconds per key of a
    listing (``pages`` pages of DEST's chunks) and per GET of a chunk (``gets`` of them)."""
    listed: list[str] = []
    started = time.perf_counter()
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket="dest", Prefix="jrc_listing-1.zarr/em/"):
        listed += [item["Key"] for item in page.get("Contents", [])]
        pages -= 1
        if pages == 0:
            break
    per_key = (time.perf_counter() - started) * 1000 / max(len(listed), 1)
    chosen = random.Random(0).sample(listed, min(gets, len(listed)))
    started = time.perf_counter()
    for key in chosen:
        client.get_object(Bucket="dest", Key=key)["Body"].read()
    per_get = (time.perf_counter() - started) * 1000 / max(len(chosen), 1)
    return {"ms_per_listed_key": round(per_key, 3), "ms_per_get": round(per_get, 3)}


def s3_pair(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        work = Path(scratch)
        (work / "home").mkdir()
        moto = None
        if args.endpoint is None:
            moto = MotoServer()
            moto.start()
            url = moto.url
        else:
            url = args.endpoint.rstrip("/")
        port = int(url.rsplit(":", 1)[1])
        try:
            client = s3_client(url)
            result: dict[str, Any] = {"block_edge": args.block_edge}
            if args.stage in ("all", "prepare"):
                result.update(s3_prepare(args, client, url, work))
            if args.stage in ("all", "measure"):
                result.update(s3_measure(args, client, port, work))
        finally:
            if moto is not None:
                moto.stop()
    return result


def local_pair(args: argparse.Namespace) -> dict[str, Any]:
    n5, _images = ensure_dataset(args.data, args.gib)
    dest = args.data / f"gib-{args.gib:g}" / "listing.zarr"
    env = dict(os.environ)
    if not (dest / ".cellmap-migrate" / "certificate.json").exists():
        shutil.rmtree(dest, ignore_errors=True)
        print("converting …", file=sys.stderr)
        run(["convert", str(n5), str(dest)], env)
        print("first full verify …", file=sys.stderr)
        run(["verify", str(n5), str(dest)], env)
    rows: dict[str, list[dict[str, Any]]] = {"full": [], "listing": [], "hash": []}
    for rep in range(args.reps):
        kinds = ["full", "listing", "hash"]
        for kind in kinds if rep % 2 == 0 else list(reversed(kinds)):
            extra = {"full": [], "listing": ["--listing"], "hash": ["--listing", "--hash"]}[kind]
            subprocess.run(["sync"], check=False)
            print(f"rep {rep + 1}: {kind} …", file=sys.stderr)
            row = run(["verify", str(n5), str(dest), *extra], env)
            rows[kind].append(row)
            print(f"  {row['seconds']} s, {row['bytes_read']} bytes read", file=sys.stderr)
    medians = {
        kind: {
            "seconds": summary([r["seconds"] for r in runs]),
            "bytes_read": statistics.median(r["bytes_read"] for r in runs),
            "runs": runs,
        }
        for kind, runs in rows.items()
    }
    full, listing = medians["full"], medians["listing"]
    chunks = chunk_count_local(dest)
    return {
        "gib": args.gib,
        "chunks": chunks,
        **medians,
        "faster": round(full["seconds"]["median"] / listing["seconds"]["median"], 1),
        "fewer_bytes": round(full["bytes_read"] / max(listing["bytes_read"], 1), 1),
        "ledger_bytes": local_ledger_size(dest),
        "ledger_bytes_per_million_chunks": round(local_ledger_size(dest) / chunks * 1e6),
    }


def cost(args: argparse.Namespace) -> dict[str, Any]:
    """The migration with the ledger (this checkout) against the code before it."""
    n5, _images = ensure_dataset(args.data, args.gib)
    out = args.data / f"gib-{args.gib:g}" / "cost"
    env = dict(os.environ)
    trees = {"ledger": HERE.parent, "before": args.baseline.resolve()}
    result: dict[str, Any] = {"gib": args.gib}
    for mode, extra in (("keep codec", []), ("--skip-decode-check", ["--skip-decode-check"])):
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        for rep in range(args.reps):
            names = list(trees) if rep % 2 == 0 else list(reversed(trees))
            for name in names:
                shutil.rmtree(out, ignore_errors=True)
                subprocess.run(["sync"], check=False)
                print(f"{mode} rep {rep + 1}: {name} …", file=sys.stderr)
                row = run(["convert", str(n5), str(out), *extra], env, tree=trees[name])
                rows[name].append(row)
                print(f"  {row['seconds']} s", file=sys.stderr)
        chunks = chunk_count_local(out)
        with_ledger = statistics.median(r["seconds"] for r in rows["ledger"])
        without = statistics.median(r["seconds"] for r in rows["before"])
        result[mode] = {
            "ledger": {"seconds": summary([r["seconds"] for r in rows["ledger"]])},
            "before": {"seconds": summary([r["seconds"] for r in rows["before"]])},
            "cost_percent": round(100 * (with_ledger - without) / without, 1),
            "runs": rows,
            "chunks": chunks,
            "ledger_bytes_per_million_chunks": round(local_ledger_size(out) / chunks * 1e6)
            if (out / ".cellmap-migrate" / "ledger").exists()
            else None,
        }
        shutil.rmtree(out, ignore_errors=True)
    return result


def s3_cost(args: argparse.Namespace) -> dict[str, Any]:
    trees = {"ledger": HERE.parent, "before": args.baseline.resolve()}
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        work = Path(scratch)
        root = write_dataset(work / "data", "jrc_cost-1", [COST_SPEC], thumbnail=False)
        moto = MotoServer()
        moto.start()
        proxy = TcpProxy(moto.port, delay=args.rtt_ms / 1000, record=True)
        try:
            client = s3_client(moto.url)
            client.create_bucket(Bucket="source")
            upload_tree(client, root, "source", root.name)
            (work / "home").mkdir()
            env = {**os.environ, **fake_aws_environment(proxy.url, work / "home")}
            src = f"s3://source/{root.name}"
            rows: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
            for rep in range(args.reps):
                for name in list(trees) if rep % 2 == 0 else list(reversed(trees)):
                    bucket = f"dest-{name}-{rep}"
                    client.create_bucket(Bucket=bucket)
                    start, seen = len(proxy.requests), len(proxy.responses_seen)
                    print(f"rep {rep + 1}: {name} …", file=sys.stderr)
                    row = run(["convert", src, f"s3://{bucket}/out.zarr"], env, tree=trees[name])
                    row.update(requests_of(proxy, start, seen))
                    rows[name].append(row)
                    print(f"  {row['seconds']} s, {row['requests']} requests", file=sys.stderr)
            chunks = sum(
                1 for item in keys(client, "dest-ledger-0", "out.zarr/em/") if "/s" in item["Key"]
            )
            size = ledger_size(client, "dest-ledger-0", "out.zarr")
        finally:
            proxy.cut()
            moto.stop()
    with_ledger = statistics.median(r["seconds"] for r in rows["ledger"])
    without = statistics.median(r["seconds"] for r in rows["before"])
    return {
        "rtt_ms": args.rtt_ms,
        "ledger": {"seconds": summary([r["seconds"] for r in rows["ledger"]])},
        "before": {"seconds": summary([r["seconds"] for r in rows["before"]])},
        "cost_percent": round(100 * (with_ledger - without) / without, 1),
        "requests": {
            name: statistics.median(r["requests"] for r in runs) for name, runs in rows.items()
        },
        "runs": rows,
        "chunks": chunks,
        "ledger_bytes_per_million_chunks": round(size / max(chunks, 1) * 1e6),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("what", choices=["s3", "local", "cost", "s3-cost"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rtt-ms", type=float, default=30.0)
    parser.add_argument(
        "--blocks-per-axis", type=int, default=47, help="s3: the image's blocks along each axis"
    )
    parser.add_argument(
        "--block-edge", type=int, default=16, help="s3: voxels along each edge of a block"
    )
    parser.add_argument(
        "--endpoint",
        help="s3: a moto server already running (else one is started and stopped)",
    )
    parser.add_argument(
        "--stage",
        choices=["all", "prepare", "measure"],
        default="all",
        help="s3: prepare the image at --endpoint, measure one prepared there, or both",
    )
    parser.add_argument("--threads", type=int, default=16, help="s3: upload threads")
    parser.add_argument("--dtype", default="uint8", help="s3: the image's data type")
    parser.add_argument(
        "--content",
        choices=["noise", "gradient"],
        default="noise",
        help="s3: voxels (gradient: EM-like, compresses as EM does)",
    )
    parser.add_argument("--gib", type=float, default=4.0)
    parser.add_argument("--data", type=Path, default=HERE.parent / "bench-data")
    parser.add_argument("--scratch", type=Path, default=None, help="for temporary datasets")
    parser.add_argument("--baseline", type=Path, help="a checkout of the code before the ledger")
    args = parser.parse_args()
    if args.what in ("cost", "s3-cost") and args.baseline is None:
        parser.error(f"{args.what} needs --baseline DIR")
    run_it = {"s3": s3_pair, "local": local_pair, "cost": cost, "s3-cost": s3_cost}[args.what]
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result = run_it(args)
    document = {"what": args.what, "started": started, "cpus": os.cpu_count(), **result}
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
