"""What the trust checks cost (source signatures and the lease), against a whole migration.

    python scripts/signature_cost.py [--gib 1] [--data bench-data] [--reps 3]

On the benchmark dataset (``scripts/make_fixture.py --bench-gib``, generated once under
``--data``), times a whole ``convert`` (0.4, keep codec, a subprocess, start-up included) and,
in this process, the work the source signatures add to it:

- listing every level of the source with sizes and modification times and computing each
  work unit's signature (what every run with work to do does before copying), and
- reading back the signature of every unit from its record (what a resumed run does, at
  most: the records of all units, as if the run had been killed at the very end), and
- taking, renewing once and releasing the lease of a DEST (what every real run does; it
  renews every 30 s while it lives, which is below one renewal per 30 s of migration).

Prints the median of ``--reps`` repetitions of each and their ratio to the migration.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from make_fixture import bench_images  # noqa: E402

from migrate.api import prepare  # noqa: E402
from migrate.dest import lease, records  # noqa: E402
from migrate.example.fixture import write_dataset  # noqa: E402
from migrate.storage import LocalStore  # noqa: E402
from migrate.target.plan import PlanOptions  # noqa: E402


def dataset(data: Path, gib: float) -> Path:
    n5 = data / f"sig-gib-{gib:g}" / "jrc_bench-1" / "jrc_bench-1.n5"
    if not n5.exists():
        print(f"generating {gib:g} GiB under {n5} …", file=sys.stderr)
        write_dataset(n5.parents[1], "jrc_bench-1", bench_images(gib))
    return n5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--data", type=Path, default=REPO / "bench-data")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    n5 = dataset(args.data, args.gib)
    scratch = Path(tempfile.mkdtemp(prefix="signature-cost-"))
    try:
        migrations, listings, rereads, leases = [], [], [], []
        for _ in range(args.reps):
            out = scratch / "out.zarr"
            shutil.rmtree(out, ignore_errors=True)
            subprocess.run(["sync"], check=False)
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "migrate", "convert", str(n5), str(out)],
                check=True,
                capture_output=True,
                cwd=REPO,
            )
            migrations.append(time.perf_counter() - started)

            prepared = prepare(
                str(n5), str(scratch / "records.zarr"), PlanOptions(), read_only_dest=False
            )
            levels = [(image, level) for image in prepared.plan.images for level in image.levels]
            started = time.perf_counter()
            signatures = [records.unit_signatures(prepared.source, level) for _, level in levels]
            listings.append(time.perf_counter() - started)

            store = LocalStore(scratch / "records.zarr", read_only=False)
            for (image, level), sigs in zip(levels, signatures, strict=True):
                fingerprint = prepared.plan.image_fingerprint(image)
                for unit in range(level.unit_count):
                    records.record_unit(
                        store, fingerprint, image.dest_path, level.name, unit,
                        signature=records.signature_of(sigs, unit),
                    )  # fmt: skip
            started = time.perf_counter()
            for image, level in levels:
                fingerprint = prepared.plan.image_fingerprint(image)
                done = records.done_units(store, fingerprint, image.dest_path, level.name)
                records.recorded_signatures(store, fingerprint, image.dest_path, level.name, done)
            rereads.append(time.perf_counter() - started)
            started = time.perf_counter()
            with lease.hold(store, notice=lambda _: None) as taken:
                taken.renew()
            leases.append(time.perf_counter() - started)
            shutil.rmtree(scratch / "records.zarr")
        units = sum(level.unit_count for _, level in levels)
        blocks = sum(
            1 for _, level in levels for _ in prepared.source.list_stats(level.source_path)
        )
        migration = statistics.median(migrations)
        listing = statistics.median(listings)
        reread = statistics.median(rereads)
        leased = statistics.median(leases)
        print(f"{args.gib:g} GiB, {len(levels)} levels, {blocks} source files, {units} work units")
        print(f"convert (subprocess, start-up included): {migration:.3f} s")
        print(
            f"listing + unit signatures (every run):   {listing:.3f} s = {listing / migration:.2%}"
        )
        print(f"reading every unit's record (a resume):  {reread:.3f} s = {reread / migration:.2%}")
        print(f"lease: take, renew once, release:        {leased:.3f} s = {leased / migration:.2%}")
        total = (listing + reread + leased) / migration
        print(f"all together:                            {total:.2%} of the migration")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
