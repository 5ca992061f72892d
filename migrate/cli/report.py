"""Final summaries printed after a run."""

from __future__ import annotations

from migrate.cli.progress import meaningful_rate
from migrate.copy.engine import RunResult
from migrate.storage.iocounts import IOCounts
from schemas.plan import Plan


def render_run(plan: Plan, result: RunResult) -> str:
    """A table: per image, its state before, units copied / skipped / total, MB of voxels
    (uncompressed) copied, and status; then the totals, with the stored (compressed) bytes
    read and written and the objects written."""
    rows = [("image", "before", "copied", "skipped", "total units", "voxel MB", "status")]
    for image in result.images:
        status = "complete" if image.complete else f"INCOMPLETE ({len(image.failures)} failed)"
        rows.append(
            (
                image.dest_path,
                image.state_before,
                str(image.units_copied),
                str(image.units_skipped),
                str(image.units_total),
                f"{image.bytes_read / 1e6:.1f}",
                status,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    total = sum(image.bytes_read for image in result.images)
    rate = meaningful_rate(total, result.seconds)
    if all(i.state_before == "complete" for i in result.images):
        lines.append(f"already complete: nothing to copy ({plan.dest})")
    else:
        speed = f" ({rate / 1e6:.1f} MB/s)" if rate else ""
        lines.append(
            f"{total / 1e6:.1f} MB of voxels in {result.seconds:.1f} s{speed} -> {plan.dest}"
        )
    lines.append(render_storage(result.storage))
    return "\n".join(lines) + "\n"


def render_storage(counts: IOCounts | None) -> str:
    """One line: stored bytes read and written, objects written, requests retried."""
    if counts is None:
        return "on storage: not counted here (the chunks were copied by the Dask workers)"
    retried = f", {counts.retries} request(s) retried" if counts.retries else ""
    return (
        f"on storage: {counts.bytes_read / 1e6:.1f} MB read, "
        f"{counts.bytes_written / 1e6:.1f} MB written in {counts.objects_written} object(s)"
        f"{retried}"
    )
