"""Benchmark cellmap-migrate against ``cp -r`` and a plain TensorStore copy.

    python scripts/bench.py                      # ~1 GiB FIB-SEM image + labels, 3 repetitions
    python scripts/bench.py --gib 2 --reps 5     # bigger, more repetitions
    python scripts/bench.py --tiny --data DIR --out DIR   # seconds; what the test suite runs

The dataset (a FIB-SEM-like uint16 image, gzip, 64^3 blocks, Java-style truncated edge
blocks, 3 levels, plus a uint64 label image at half resolution; see
``scripts/make_fixture.py --bench-gib``) is generated once, block by block (bounded memory),
and cached under ``--data`` (default ``./bench-data``, git-ignored).

Every row runs as a subprocess (process start-up included), ``--reps`` times, with its
output deleted before each repetition (except the re-run row, which times a second run on a
finished output). The source stays in the page cache for every row alike, and every
repetition starts after ``sync`` (no row pays for the write-back of another's output). Rows:

* ``cp -r`` of the N5 tree: the floor for a local migration;
* a plain TensorStore copy, N5 → Zarr v2 with the same chunks, one ``dst.write(src.T)`` per
  array (TensorStore streams it chunk by chunk on all cores), gzip level 6 (what keeping the
  codec costs without transplant) and zstd level 3 (the same work as our re-encode rows);
* ``cellmap-migrate convert`` in each mode, ``--workers 1`` and the default (one per core);
* ``cellmap-migrate --version``: the CLI's fixed start-up (interpreter and imports), which
  even a re-run of a finished migration pays.

Reported per row: median and min–max wall time, MB/s of voxels (uncompressed bytes of every
array of every level), wall time ÷ ``cp -r``, speed-up over the plain TensorStore copy
(gzip), peak RSS of the process tree, and chunk files written. Peak RSS is the larger of
(a) the child's own ``ru_maxrss`` from ``wait4`` and (b) the sum of VmRSS over the child and
all its descendants, polled from ``/proc`` every 20 ms. The table goes to stdout (Markdown),
everything to ``--out``/bench.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_fixture import bench_images  # noqa: E402

from migrate.example.fixture import ImageSpec, level_shape, write_dataset  # noqa: E402

DATASET = "jrc_bench-1"
METADATA_FILES = {".zarray", ".zattrs", ".zgroup", "zarr.json", "attributes.json"}
TINY_GIB = 0.004


# --------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------


def dataset_fingerprint(images: Sequence[ImageSpec]) -> str:
    return json.dumps([repr(spec) for spec in images])


def ensure_dataset(data_dir: Path, gib: float) -> tuple[Path, list[ImageSpec]]:
    """The cached benchmark N5 root (generated when missing or made from other specs)."""
    images = bench_images(gib)
    base = data_dir / f"gib-{gib:g}"
    n5_root = base / DATASET / f"{DATASET}.n5"
    marker = base / "complete.json"
    wanted = dataset_fingerprint(images)
    if marker.exists() and json.loads(marker.read_text()).get("specs") == wanted:
        return n5_root, images
    if base.exists():
        shutil.rmtree(base)
    print(f"generating {gib:g} GiB benchmark dataset under {base} …", file=sys.stderr)
    started = time.perf_counter()
    write_dataset(base, DATASET, images, overwrite=True)
    marker.write_text(json.dumps({"specs": wanted}))
    print(f"  done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return n5_root, images


def voxel_bytes(images: Sequence[ImageSpec], levels: int | None = None) -> int:
    """Uncompressed bytes of every array (of the first ``levels`` levels) of ``images``."""
    import numpy as np

    total = 0
    for spec in images:
        itemsize = np.dtype(spec.dtype).itemsize
        for level in range(spec.levels if levels is None else min(levels, spec.levels)):
            total += math.prod(level_shape(spec, level)) * itemsize
    return total


def tree_stats(path: Path, *, chunks_only: bool) -> tuple[int, int]:
    """(files, bytes) under ``path``; with ``chunks_only``, metadata and the hidden resume
    folder are not counted."""
    files = size = 0
    for dirpath, dirnames, filenames in os.walk(path):
        if chunks_only:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if chunks_only and (name in METADATA_FILES or name.startswith(".")):
                continue
            files += 1
            size += (Path(dirpath) / name).stat().st_size
    return files, size


# --------------------------------------------------------------------------------------
# Measuring one subprocess
# --------------------------------------------------------------------------------------

PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (0 for vanished processes)."""
    total = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return total


@dataclass
class Measured:
    seconds: float
    cpu_seconds: float
    """User + system CPU time of the child (and of its waited-for descendants)."""
    peak_rss: int
    returncode: int
    stdout: str
    stderr: str


def run_measured(argv: Sequence[str], cwd: Path | None = None) -> Measured:
    """Run ``argv``; wall time, peak RSS of its process tree, exit status and output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, cwd=cwd)
        peak = 0
        done = threading.Event()

        def poll() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _tree_rss(proc.pid))
                done.wait(0.02)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        done.set()
        poller.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(
            seconds,
            usage.ru_utime + usage.ru_stime,
            max(peak, usage.ru_maxrss * 1024),
            proc.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


# --------------------------------------------------------------------------------------
# The plain TensorStore copy (run in a subprocess: python bench.py --ts-copy SRC DEST CODEC)
# --------------------------------------------------------------------------------------


def ts_copy(n5_root: Path, dest: Path, codec: str) -> None:
    """Copy every N5 array under ``n5_root`` to a Zarr v2 array under ``dest`` with
    TensorStore alone: what a converter without a fast path does."""
    import tensorstore as ts

    compressor = {"id": "gzip", "level": 6} if codec == "gzip" else {"id": "zstd", "level": 3}
    context = ts.Context({"file_io_sync": False})  # like cellmap-migrate and cp: no fsync
    for attributes in sorted(n5_root.rglob("attributes.json")):
        attrs = json.loads(attributes.read_text())
        if "dimensions" not in attrs:
            continue
        rel = attributes.parent.relative_to(n5_root).as_posix()
        compression = {
            k: v for k, v in attrs["compression"].items() if k in ("type", "level", "useZlib")
        }
        source = ts.open(
            {
                "driver": "n5",
                "kvstore": {"driver": "file", "path": str(attributes.parent) + "/"},
                "metadata": {**{k: attrs[k] for k in ("dimensions", "blockSize", "dataType")},
                             "compression": compression},
            },
            open=True, read=True, assume_metadata=True, context=context,
        ).result()  # fmt: skip
        target = ts.open(
            {
                "driver": "zarr",
                "kvstore": {"driver": "file", "path": str(dest / rel) + "/"},
                "metadata": {
                    "shape": list(reversed(attrs["dimensions"])),
                    "chunks": list(reversed(attrs["blockSize"])),
                    "dtype": source.dtype.numpy_dtype.str,
                    "compressor": compressor,
                    "fill_value": 0,
                    "order": "C",
                    "dimension_separator": "/",
                },
            },
            create=True, delete_existing=True, context=context,
        ).result()  # fmt: skip
        target.write(source.T).result()


# --------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------


@dataclass
class Row:
    id: str
    label: str
    build: Callable[[Path], list[str]]
    """argv for an output path."""
    rerun: bool = False
    result: dict[str, Any] = field(default_factory=dict)


def convert_argv(src: Path, *options: str) -> Callable[[Path], list[str]]:
    def build(out: Path) -> list[str]:
        return [sys.executable, "-m", "migrate", "convert", str(src), str(out), "--json", *options]

    return build


def ts_argv(src: Path, codec: str) -> Callable[[Path], list[str]]:
    def build(out: Path) -> list[str]:
        return [sys.executable, str(Path(__file__)), "--ts-copy", str(src), str(out), codec]

    return build


def make_rows(src: Path, shard: str) -> list[Row]:
    v5 = ("--ngff-version", "0.5", "--shard", shard)
    return [
        Row("cp", "cp -r (N5 tree)", lambda out: ["cp", "-r", str(src), str(out)]),
        Row("ts-gzip", "plain TensorStore copy, gzip 6", ts_argv(src, "gzip")),
        Row("ts-zstd", "plain TensorStore copy, zstd 3", ts_argv(src, "zstd")),
        Row("keep-04", "0.4 keep codec", convert_argv(src)),
        Row("keep-04-w1", "0.4 keep codec, --workers 1", convert_argv(src, "--workers", "1")),
        Row("keep-05", f"0.5 keep codec, shard {shard}", convert_argv(src, *v5)),
        Row(
            "keep-05-w1",
            f"0.5 keep codec, shard {shard}, --workers 1",
            convert_argv(src, *v5, "--workers", "1"),
        ),
        Row(
            "skip-04",
            "0.4 keep codec, --skip-decode-check",
            convert_argv(src, "--skip-decode-check"),
        ),
        Row(
            "skip-05",
            f"0.5 keep codec, shard {shard}, --skip-decode-check",
            convert_argv(src, *v5, "--skip-decode-check"),
        ),
        Row("zstd-04", "0.4 zstd re-encode", convert_argv(src, "--codec", "zstd")),
        Row(
            "zstd-04-w1",
            "0.4 zstd re-encode, --workers 1",
            convert_argv(src, "--codec", "zstd", "--workers", "1"),
        ),
        Row(
            "dask-zstd-04",
            "0.4 zstd re-encode, --cluster local --workers 2",
            convert_argv(src, "--codec", "zstd", "--cluster", "local", "--workers", "2"),
        ),
        Row(
            "dask-zstd-04-w1",
            "0.4 zstd re-encode, --cluster local --workers 1",
            convert_argv(src, "--codec", "zstd", "--cluster", "local", "--workers", "1"),
        ),
        Row(
            "notransplant-04",
            "0.4 keep codec, --no-transplant",
            convert_argv(src, "--no-transplant"),
        ),
        Row("rerun-04", "0.4 keep codec, re-run when finished", convert_argv(src), rerun=True),
        Row(
            "startup",
            "start-up only: cellmap-migrate --version",
            lambda out: [sys.executable, "-m", "migrate", "--version"],
            rerun=True,
        ),
    ]


def engine_seconds(measured: Measured) -> float | None:
    """The run time ``cellmap-migrate convert --json`` reports (without process start-up)."""
    try:
        value = json.loads(measured.stdout).get("seconds")
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None


def run_rows(rows: Sequence[Row], out_dir: Path, reps: int) -> None:
    """Every row ``reps`` times, round-robin (so that a change in the machine's load hits all
    rows alike); the re-run row first completes its output once, untimed."""
    runs: dict[str, list[Measured]] = {row.id: [] for row in rows}
    loads: dict[str, list[float]] = {row.id: [] for row in rows}
    for row in rows:
        shutil.rmtree(out_dir / row.id, ignore_errors=True)
        if row.rerun:
            check(row, run_measured(row.build(out_dir / row.id)))
    for rep in range(reps):
        for row in rows:
            out = out_dir / row.id
            print(f"[{rep + 1}/{reps}] {row.id}: {row.label}", file=sys.stderr, flush=True)
            if not row.rerun:
                shutil.rmtree(out, ignore_errors=True)
            os.sync()  # no row pays for the write-back of another's output
            loads[row.id].append(os.getloadavg()[0])
            measured = run_measured(row.build(out))
            check(row, measured)
            runs[row.id].append(measured)
            print(f"  {measured.seconds:.2f} s", file=sys.stderr, flush=True)
    for row in rows:
        out = out_dir / row.id
        files, size = tree_stats(out, chunks_only=row.id != "cp")
        seconds = [m.seconds for m in runs[row.id]]
        engine = [e for e in map(engine_seconds, runs[row.id]) if e is not None]
        row.result = {
            "id": row.id,
            "label": row.label,
            "argv": [Path(a).name if a == sys.executable else a for a in row.build(out)],
            "seconds": [round(x, 3) for x in seconds],
            "median_s": round(statistics.median(seconds), 3),
            "min_s": round(min(seconds), 3),
            "max_s": round(max(seconds), 3),
            "cpu_s": round(statistics.median(m.cpu_seconds for m in runs[row.id]), 3),
            "engine_s": round(statistics.median(engine), 3) if engine else None,
            "load_1min": [round(x, 2) for x in loads[row.id]],
            "peak_rss_mib": round(max(m.peak_rss for m in runs[row.id]) / 2**20, 1),
            "files_written": 0 if row.rerun else files,
            "bytes_written": 0 if row.rerun else size,
        }
        shutil.rmtree(out, ignore_errors=True)


def check(row: Row, measured: Measured) -> None:
    if measured.returncode != 0:
        tail = "\n".join((measured.stderr or measured.stdout).strip().splitlines()[-5:])
        raise SystemExit(f"bench: row {row.id} failed ({measured.returncode}):\n{tail}")


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def summarize(rows: list[Row], total_voxel_bytes: int, largest_array: int) -> dict[str, Any]:
    by_id = {row.id: row.result for row in rows if row.result}
    cp = by_id.get("cp", {}).get("median_s")
    ts_gzip = by_id.get("ts-gzip", {}).get("median_s")
    for result in by_id.values():
        median = max(result["median_s"], 1e-9)
        result["mb_per_s"] = round(total_voxel_bytes / 1e6 / median, 1)
        result["vs_cp"] = round(median / cp, 2) if cp else None
        result["speedup_vs_ts"] = round(ts_gzip / median, 2) if ts_gzip else None
    scaling = {}
    for base in ("keep-04", "keep-05", "zstd-04", "dask-zstd-04"):
        one, default = by_id.get(f"{base}-w1"), by_id.get(base)
        if one and default:
            scaling[base] = round(one["median_s"] / default["median_s"], 2)
    targets = []

    def target(name: str, value: float | None, goal: str, met: bool | None) -> None:
        targets.append({"target": name, "value": value, "goal": goal, "met": met})

    for rid in ("keep-04", "keep-05"):
        value = by_id.get(rid, {}).get("speedup_vs_ts")
        target(f"{rid} speed-up over plain TensorStore (gzip)", value, ">= 4",
               None if value is None else value >= 4)  # fmt: skip
    for rid in ("skip-04", "skip-05"):
        value = by_id.get(rid, {}).get("vs_cp")
        target(f"{rid} wall time / cp -r", value, "<= 2",
               None if value is None else value <= 2)  # fmt: skip
    zstd, ts_zstd = by_id.get("zstd-04"), by_id.get("ts-zstd")
    if zstd and ts_zstd:
        value = round(ts_zstd["median_s"] / zstd["median_s"], 2)
        target("zstd-04 speed vs plain TensorStore (zstd)", value, ">= 1", value >= 1)
    if ts_gzip and zstd:
        value = round(ts_gzip / zstd["median_s"], 2)
        target("zstd-04 speed vs plain TensorStore (gzip)", value, ">= 1", value >= 1)
    if zstd:
        value = round(zstd["peak_rss_mib"] * 2**20 / largest_array * 100, 1)
        target("zstd-04 peak RSS, % of the largest array (EM s0)", value, "< 25", value < 25)
        value = round(zstd["peak_rss_mib"] * 2**20 / total_voxel_bytes * 100, 1)
        target("zstd-04 peak RSS, % of all voxel bytes migrated", value, "< 25", value < 25)
    if "zstd-04" in scaling:
        value = scaling["zstd-04"]
        target("zstd-04 throughput, --workers 2 / --workers 1", value, ">= 1.6", value >= 1.6)
    rerun, first = by_id.get("rerun-04"), by_id.get("keep-04")
    if rerun and first:
        value = round(rerun["median_s"] / first["median_s"] * 100, 1)
        target("re-run of a finished migration, % of the first run", value, "< 2", value < 2)
        if rerun.get("engine_s") is not None and first.get("engine_s"):
            value = round(rerun["engine_s"] / first["engine_s"] * 100, 1)
            target("re-run, % of the first run, engine time (no process start-up)", value,
                   "< 2", value < 2)  # fmt: skip
        startup = by_id.get("startup")
        if startup:
            value = round((rerun["median_s"] - startup["median_s"]) / first["median_s"] * 100, 1)
            target("re-run minus the CLI's start-up (`--version`), % of the first run", value,
                   "< 2", value < 2)  # fmt: skip
    return {"workers_scaling": scaling, "targets": targets}


def _cell(value: float | None, unit: str = "") -> str:
    return "–" if value is None else f"{value}{unit}"


def table(results: list[dict[str, Any]]) -> str:
    header = (
        "| row | median s (min–max) | CPU s | MB/s of voxels | ÷ cp -r | × faster than TS copy "
        "| peak RSS MiB | files written |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['label']} | {r['median_s']:.2f} ({r['min_s']:.2f}–{r['max_s']:.2f}) "
            f"| {r['cpu_s']:.1f} | {r['mb_per_s']:.0f} | {_cell(r['vs_cp'])} "
            f"| {_cell(r['speedup_vs_ts'])} | {r['peak_rss_mib']:.0f} | {r['files_written']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--gib", type=float, default=1.0, help="size of the EM image's s0")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per row")
    parser.add_argument("--tiny", action="store_true", help=f"{TINY_GIB} GiB, 1 repetition")
    parser.add_argument("--data", type=Path, default=Path("bench-data"), help="dataset cache")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="results dir")
    parser.add_argument("--shard", default="256,256,256", help="shard shape of the 0.5 rows")
    parser.add_argument("--only", help="comma-separated row ids (default: all)")
    parser.add_argument("--ts-copy", nargs=3, metavar=("SRC", "DEST", "CODEC"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args(argv)
    if args.ts_copy:
        src, dest, codec = args.ts_copy
        ts_copy(Path(src), Path(dest), codec)
        return 0
    gib = TINY_GIB if args.tiny else args.gib
    reps = 1 if args.tiny else args.reps
    data_dir = args.data.absolute()
    n5_root, images = ensure_dataset(data_dir, gib)
    total = voxel_bytes(images)
    largest = max(voxel_bytes([spec], levels=1) for spec in images)
    source_files, source_bytes = tree_stats(n5_root, chunks_only=False)
    rows = make_rows(n5_root, args.shard)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {row.id for row in rows}
        if unknown:
            parser.error(f"unknown row id(s): {sorted(unknown)}")
        rows = [row for row in rows if row.id in wanted]
    out_dir = data_dir / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    run_rows(rows, out_dir, reps)
    summary = summarize(rows, total, largest)
    results = [row.result for row in rows]
    command = "python scripts/bench.py " + " ".join(sys.argv[1:] if argv is None else list(argv))
    report = {
        "command": command.strip(),
        "machine": {
            "cores": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "dataset": {
            "gib": gib,
            "n5_root": str(n5_root),
            "images": [
                {"path": s.path, "dtype": s.dtype, "shape_s0": list(s.shape), "levels": s.levels}
                for s in images
            ],
            "voxel_bytes": total,
            "largest_array_bytes": largest,
            "source_files": source_files,
            "source_bytes": source_bytes,
        },
        "repetitions": reps,
        "peak_rss_method": "max(child ru_maxrss from wait4, /proc VmRSS of the process tree "
        "polled every 20 ms)",
        "rows": results,
        **summary,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{gib:g} GiB dataset: {total / 1e6:.0f} MB of voxels in {source_files} files "
        f"({source_bytes / 1e6:.0f} MB on disk), {reps} repetition(s), "
        f"{report['machine']['cores']} cores\n"
    )
    print(table(results))
    for name, value in summary["workers_scaling"].items():
        print(f"{name}: default workers / --workers 1 throughput = {value}×")
    for t in summary["targets"]:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        print(f"target {t['target']}: {t['value']} (goal {t['goal']}) {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
