"""What ``verify --listing`` costs against a full ``verify``, and what the ledger costs a
migration.

    python scripts/listing_bench.py s3 --reps 2            # ≥ 100,000 chunks on S3 at 30 ms
    python scripts/listing_bench.py local --gib 4 --reps 3 # the benchmark image, local disk
    python scripts/listing_bench.py cost --gib 4 --reps 3 --baseline DIR
    python scripts/listing_bench.py s3-cost --reps 3 --baseline DIR

``s3``: a moto S3 server on 127.0.0.1 holds SRC and DEST (an image of 47³ = 103,823
chunks of 8³ uint8, one level; converted once, straight to the server); every measured
command then goes through a proxy that holds each response ``--rtt-ms`` (default 30 ms) and
records every request and the bytes of every response body. Full ``verify`` and
``verify --listing`` run alternately, ``--reps`` times each, each a subprocess; per command:
wall time, requests (by kind), bytes of response bodies (object GETs, and listings).

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


def s3_pair(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        work = Path(scratch)
        side = args.blocks_per_axis
        spec = dataclasses.replace(S3_SPEC, shape=(8 * side,) * 3)
        print(f"writing the source ({side**3:,} blocks) …", file=sys.stderr)
        root = write_dataset(work / "data", "jrc_listing-1", [spec], thumbnail=False)
        moto = MotoServer()
        moto.start()
        proxy = TcpProxy(moto.port, delay=args.rtt_ms / 1000, record=True)
        try:
            client = s3_client(moto.url)
            for bucket in ("source", "dest"):
                client.create_bucket(Bucket=bucket)
            print("uploading it …", file=sys.stderr)
            uploaded = upload_tree(client, root, "source", root.name)
            (work / "home").mkdir()
            direct = {**os.environ, **fake_aws_environment(moto.url, work / "home")}
            slow = {**os.environ, **fake_aws_environment(proxy.url, work / "home")}
            src, dest = f"s3://source/{root.name}", "s3://dest/jrc_listing-1.zarr"
            print("converting it (no added latency) …", file=sys.stderr)
            convert = run(["convert", src, dest, "--workers", "4", "--unit-mib", "1"], direct)
            chunks = sum(
                1
                for item in keys(client, "dest", "jrc_listing-1.zarr/em/")
                if "/s0/" in item["Key"]
            )
            print("first full verify (writes the certificate) …", file=sys.stderr)
            run(["verify", src, dest], direct)
            rows: dict[str, list[dict[str, Any]]] = {"full": [], "listing": []}
            for rep in range(args.reps):
                order = ["full", "listing"] if rep % 2 == 0 else ["listing", "full"]
                for kind in order:
                    argv = ["verify", src, dest] + (["--listing"] if kind == "listing" else [])
                    start, seen = len(proxy.requests), len(proxy.responses_seen)
                    print(f"rep {rep + 1}: {kind} …", file=sys.stderr)
                    row = run(argv, slow)
                    row.update(requests_of(proxy, start, seen))
                    rows[kind].append(row)
                    print(f"  {row['seconds']} s, {row['requests']} requests", file=sys.stderr)
            size = ledger_size(client, "dest", "jrc_listing-1.zarr")
        finally:
            proxy.cut()
            moto.stop()
    full, listing = rows["full"], rows["listing"]
    full_s = statistics.median(r["seconds"] for r in full)
    list_s = statistics.median(r["seconds"] for r in listing)
    full_b = statistics.median(r["bytes"] for r in full)
    list_b = statistics.median(r["bytes"] for r in listing)
    full_o = statistics.median(r["object_bytes"] for r in full)
    list_o = statistics.median(r["object_bytes"] for r in listing)
    return {
        "rtt_ms": args.rtt_ms,
        "source_objects": uploaded,
        "chunks": chunks,
        "convert_seconds": convert["seconds"],
        "full": {"seconds": summary([r["seconds"] for r in full]), "runs": full},
        "listing": {"seconds": summary([r["seconds"] for r in listing]), "runs": listing},
        "faster": round(full_s / list_s, 1),
        "fewer_bytes": round(full_b / max(list_b, 1), 1),
        "fewer_object_bytes": round(full_o / max(list_o, 1), 1),
        "ledger_bytes": size,
        "ledger_bytes_per_million_chunks": round(size / chunks * 1e6),
    }


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
