"""What rewriting the bulk summary costs as datasets finish, against re-encoding it whole and
indented each time (what it did before).

    python scripts/summary_cost.py --datasets 500

A :class:`migrate.bulk.summary.Summary` gets ``--datasets`` outcomes one after another, as
a bulk run gives them, and is written to a temporary file after each; prints the CPU
seconds of the whole sequence both ways, as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from migrate.bulk import summary


def indented(document: dict[str, Any], rows: dict[str, str] | None = None) -> str:
    return json.dumps(document, indent=2) + "\n"


def run(count: int, folder: Path) -> float:
    kept = summary.Summary("convert", "/data", "/data", folder / "summary.json")
    started = time.process_time()
    for i in range(count):
        name = f"jrc_dataset-{i:04d}"
        kept.add(
            summary.DatasetOutcome(
                name, f"/data/{name}/{name}.n5", f"/data/{name}/{name}.zarr",
                state="complete", before="new", images=3, units_total=120, units_copied=120,
                bytes_read=3 * 10**9, seconds=42.0, detail="copied 120 unit(s)",
            )
        )  # fmt: skip
    return time.process_time() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--datasets", type=int, default=500)
    args = parser.parse_args()
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        seconds["a_line_each"] = run(args.datasets, Path(scratch))
        line_each = summary.render
        summary.render = indented
        try:
            seconds["indented_whole"] = run(args.datasets, Path(scratch))
        finally:
            summary.render = line_each
    print(json.dumps({"datasets": args.datasets, "cpu_seconds": {
        k: round(v, 3) for k, v in seconds.items()}}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
