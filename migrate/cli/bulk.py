"""``cellmap-migrate bulk convert|status|verify ROOT [DEST_ROOT]``: every dataset of a root.

``ROOT`` holds datasets laid out as ``<dataset>/<dataset>.n5``; each is migrated to
``<DEST_ROOT>/<dataset>/<dataset>.zarr`` (``DEST_ROOT`` defaults to ``ROOT``: beside the
``.n5``). ``bulk convert`` takes every option of the single-dataset ``convert``.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from migrate.cli.commands import (
    INTO_EXISTING_VERIFY_HELP,
    _cluster_settings,
    _executor,
    cli,
    cluster_options,
    convert,
    default_workers,
    load_registry_option,
    reports_errors,
    s3_options,
)
from migrate.cli.progress import current_watch, watched
from migrate.errors import MigrationError
from migrate.storage import S3Options, Store

if TYPE_CHECKING:
    from migrate.bulk.select import Selection
    from migrate.bulk.summary import DatasetOutcome
    from migrate.copy.options import EngineOptions
    from migrate.target.plan import PlanOptions

F = TypeVar("F", bound=Callable[..., Any])

OWN = {"src", "dest", "dry_run", "plan_only", "as_json"}
"""Parameters of ``convert`` that ``bulk convert`` defines its own way, or not at all:
``--plan-only`` (a line per level) is for one dataset; the bulk survey is already the
short form, a line per dataset, and a line per level of every dataset of a bucket would
bring back the thousands of lines ``--plan-only`` exists to avoid."""
HANDLED = {
    "ngff_version", "prefix", "codec", "codec_level", "blosc_cname", "blosc_shuffle",
    "chunks", "shard", "downsampling", "trust", "registry",
    "allow_unknown_units", "labels", "workers", "unit_mib", "overwrite", "no_transplant",
    "skip_decode_check", "report", "into_existing", "break_lease", "lease_timeout",
    "image_paths",
}  # fmt: skip
"""The single-dataset options that bulk passes on (s3 and cluster options come as groups)."""
CLUSTER = {
    "scheduler", "cluster", "cluster_jobs", "cluster_cores", "cluster_memory",
    "cluster_walltime", "cluster_queue", "retries",
}  # fmt: skip
S3 = {"anon", "endpoint_url", "region"}


def selection_options(command: F) -> F:
    """ROOT, DEST_ROOT and which datasets of ROOT."""
    for option in reversed(
        [
            click.argument("root"),
            click.argument("dest_root", required=False),
            click.option("--include", multiple=True, metavar="GLOB",
                         help="Only datasets whose name matches (repeatable)."),
            click.option("--exclude", multiple=True, metavar="GLOB",
                         help="Leave out datasets whose name matches (repeatable)."),
            click.option("--datasets", "datasets_file", metavar="FILE",
                         help="The datasets to cover, one name a line (# comments), in order."),
            click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
        ]
    ):  # fmt: skip
        command = option(command)
    return command


def summary_option(default_file: bool) -> Callable[[F], F]:
    text = (
        "Write the bulk summary (JSON) here, updated as datasets finish "
        "[default: cellmap-bulk-<UTC time>.json in the working directory]."
        if default_file
        else "Also write the summary (JSON) to this file."
    )
    return click.option("--summary", "summary_file", metavar="FILE", help=text)


def single_dataset_options(command: click.Command) -> click.Command:
    """Add every option of ``convert`` that bulk does not define itself (shared objects)."""
    taken = {param.name for param in command.params}
    for param in convert.params:
        if param.name not in OWN and param.name not in taken:
            command.params.append(param)
    return command


@cli.group(name="bulk")
def bulk() -> None:
    """Every dataset of a root (<dataset>/<dataset>.n5) in one resumable run."""


def _select(
    root: str, dest_root: str | None, include: tuple[str, ...], exclude: tuple[str, ...],
    datasets_file: str | None, s3: S3Options, *, writing: bool,
) -> tuple[Store, Store, Selection]:  # fmt: skip
    from migrate.bulk.select import read_names_file, select_datasets
    from migrate.storage import open_store

    source = open_store(root.removeprefix("file://"), read_only=True, s3=s3)
    dest_url = (dest_root or root).removeprefix("file://")
    dest = open_store(dest_url, read_only=not writing, s3=s3 if not writing else s3.for_writing())
    names = read_names_file(datasets_file) if datasets_file else None
    if not source.url.startswith("s3://") and not Path(source.url).is_dir():
        raise MigrationError(f"{source.url}: ROOT is not a directory")
    selection = select_datasets(source, dest, include=include, exclude=exclude, names=names)
    if not selection.datasets:  # a wrong ROOT or a filter that matches nothing: not a success
        skipped = ", ".join(s.name for s in selection.skipped[:3])
        more = ", …" if len(selection.skipped) > 3 else ""
        raise MigrationError(
            f"{source.url}: no dataset selected (a dataset is <dataset>/<dataset>.n5 and/or "
            "<dataset>/neuroglancer/<group>/<name>.precomputed)"
            + (f"; skipped for want of either: {skipped}{more}" if skipped else "")
        )
    return source, dest, selection


def _report_selection(selection: Selection, as_json: bool) -> None:
    if as_json:
        return
    for skipped in selection.skipped:
        click.echo(f"skipped {skipped.name}: {skipped.reason}", err=True)
    for warning in selection.warnings:
        click.echo(f"warning: {warning}", err=True)


def _plan_and_engine(values: dict[str, Any], s3: S3Options) -> tuple[PlanOptions, EngineOptions]:
    from migrate.copy.options import EngineOptions
    from migrate.target.plan import PlanOptions

    unknown = [
        name for name, value in values.items()
        if name not in HANDLED and name not in CLUSTER and value not in (None, False, (), "")
    ]  # fmt: skip
    if unknown:
        raise MigrationError(f"bulk does not pass on --{unknown[0].replace('_', '-')} yet")
    plan = PlanOptions(
        ngff_version=values["ngff_version"],
        codec=values["codec"],
        codec_level=values["codec_level"],
        blosc_cname=values["blosc_cname"],
        blosc_shuffle=values["blosc_shuffle"],
        chunks=values["chunks"],
        shard=values["shard"],
        prefix=values["prefix"].strip("/"),
        downsampling=values["downsampling"],
        trust=values["trust"],
        allow_unknown_units=values["allow_unknown_units"],
        label_patterns=values["labels"],
        unit_bytes=int(values["unit_mib"] * 2**20),
        registry=load_registry_option(values["registry"], s3),
        image_paths=values["image_paths"],
    )
    engine = EngineOptions(
        workers=values["workers"] or default_workers(),
        overwrite=values["overwrite"],
        transplant=not values["no_transplant"],
        decode_check=not values["skip_decode_check"],
    )
    return plan, engine


def render_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return (
        "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        )
        + "\n"
    )


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f}"


@bulk.command(name="convert")
@selection_options
@click.option(
    "--dry-run",
    is_flag=True,
    help="Survey every dataset (what is there, what would be written); write nothing.",
)
@click.option(
    "--fail-fast", is_flag=True, help="Start no further dataset after the first one fails."
)
@summary_option(default_file=True)
@cluster_options
@s3_options
@reports_errors
@watched
def bulk_convert(
    root: str, dest_root: str | None, include: tuple[str, ...], exclude: tuple[str, ...],
    datasets_file: str | None, as_json: bool, dry_run: bool, fail_fast: bool,
    summary_file: str | None, s3: S3Options, **values: Any,
) -> None:  # fmt: skip
    """Migrate every dataset of ROOT that is not complete yet, each to
    <DEST_ROOT>/<dataset>/<dataset>.zarr (DEST_ROOT defaults to ROOT: beside its .n5).

    A dataset that fails does not stop the others (unless --fail-fast); the exit status is
    non-zero if any failed. The same command again resumes: complete datasets are checked
    and skipped, partial ones continue, failed ones are tried again.
    """
    cluster = {name: values.pop(name) for name in CLUSTER}
    report_dir = values.pop("report")
    plan_options, engine = _plan_and_engine(values, s3)
    if report_dir:
        from migrate.report import require_extra

        require_extra()
    cluster_settings = _cluster_settings(cluster, values["workers"])
    _source, _dest, selection = _select(
        root, dest_root, include, exclude, datasets_file, s3, writing=not dry_run
    )
    _report_selection(selection, as_json)
    if dry_run:
        _dry_run(selection, plan_options, engine, s3, as_json, values)
        return
    from migrate.bulk.run import BulkOptions, convert_datasets
    from migrate.bulk.summary import Summary, default_summary_path
    from migrate.cli.bulk_progress import BulkProgress

    path = Path(summary_file) if summary_file else default_summary_path()
    summary = Summary("bulk convert", _source.url, _dest.url, path)
    for skipped in selection.skipped:
        summary.skip(skipped.name, skipped.reason)
    for warning in selection.warnings:
        summary.warn(warning)
    options = BulkOptions(
        plan_options, engine, s3=s3, fail_fast=fail_fast, report_dir=report_dir,
        into_existing=values["into_existing"], break_lease=values["break_lease"],
        lease_timeout=values["lease_timeout"],
    )  # fmt: skip
    progress = BulkProgress(len(selection.datasets), as_json=as_json)
    done: dict[str, DatasetOutcome] = {}

    def finished(outcome: DatasetOutcome) -> None:
        summary.add(outcome)
        progress.finished(outcome)
        current_watch().record("dataset", **outcome.to_json())
        if report_dir:
            done[outcome.name] = outcome
            _write_index(report_dir, _dest.url, selection, done)

    from migrate.storage import iocounts

    counted = iocounts.totals()
    try:
        with _executor(cluster_settings) as executor:
            outcomes = convert_datasets(
                selection.datasets, options, executor=executor,
                progress_for=progress.for_dataset, finished=finished,
            )  # fmt: skip
    finally:
        progress.close()
    moved = iocounts.totals() - counted
    document = summary.finish(outcomes, None if cluster_settings else moved.to_json())
    if as_json:
        click.echo(json.dumps(document, indent=2))
    else:
        rows = [["dataset", "before", "state", "units copied", "skipped", "total", "MB read",
                 "seconds"]]  # fmt: skip
        for o in outcomes:
            rows.append([o.name, o.before or "-", o.state, str(o.units_copied),
                         str(o.units_skipped), str(o.units_total), _mb(o.bytes_read),
                         f"{o.seconds:.1f}"])  # fmt: skip
        click.echo(render_table(rows), nl=False)
        complete = sum(1 for o in outcomes if o.state == "complete")
        click.echo(
            f"{complete}/{len(outcomes)} dataset(s) complete, "
            f"{_mb(sum(o.bytes_read for o in outcomes))} MB of voxels copied; "
            f"summary: {path}" + (f"; reports: {report_dir}/index.html" if report_dir else "")
        )
        if not cluster_settings:
            click.echo(
                f"on storage: {_mb(moved.bytes_read)} MB read, {_mb(moved.bytes_written)} MB "
                f"written in {moved.objects_written} object(s)"
            )
    _fail_on(outcomes, "failed", "fix them and run the same command again")


def _write_index(
    directory: str, dest_root: str, selection: Selection, done: dict[str, DatasetOutcome]
) -> None:
    """The index of the datasets' reports: every selected dataset, the finished ones linked."""
    from migrate.report.html import IndexEntry
    from migrate.report.write import write_index

    entries = [
        IndexEntry(d.name, done[d.name].report, done[d.name].state, _first_line(done[d.name]))
        if d.name in done
        else IndexEntry(d.name, None, "not finished")
        for d in selection.datasets
    ] + [IndexEntry(s.name, None, "skipped", s.reason) for s in selection.skipped]
    write_index(directory, f"cellmap-migrate bulk: {dest_root}", entries)


def _first_line(outcome: DatasetOutcome) -> str:
    return outcome.failures[0] if outcome.failures else outcome.detail


def _fail_on(outcomes: list[DatasetOutcome], what: str, hint: str) -> None:
    failed = [o for o in outcomes if o.failures or o.state in ("NOT PROVEN", "not run")]
    if failed:
        named = "; ".join(f"{o.name} ({o.failures[0] if o.failures else o.detail})" for o in failed)
        raise MigrationError(f"{len(failed)} dataset(s) {what}: {named}; {hint}")


def _dry_run(
    selection: Selection, plan_options: PlanOptions, engine: EngineOptions, s3: S3Options,
    as_json: bool, values: dict[str, Any],
) -> None:  # fmt: skip
    from migrate.bulk.run import default_in_flight
    from migrate.bulk.survey import survey, totals

    with cf.ThreadPoolExecutor(default_in_flight(engine.workers), "survey") as pool:
        rows = list(
            pool.map(
                lambda d: survey(d, plan_options, s3, engine.overwrite, values["into_existing"]),
                selection.datasets,
            )
        )
    total = totals(rows)
    if as_json:
        click.echo(json.dumps({
            "datasets": [row.to_json() for row in rows],
            "skipped": {s.name: s.reason for s in selection.skipped},
            "warnings": list(selection.warnings),
            "totals": total,
        }, indent=2))  # fmt: skip
    else:
        table = [["dataset", "at DEST", "images", "levels", "voxels", "MB", "blocks≤",
                  "conventions", "writes≤", "requests≤"]]  # fmt: skip
        for row in rows:
            volumes = f" ({row.precomputed} precomputed)" if row.precomputed else ""
            images = f"{row.images}{volumes}"
            table.append([row.name, row.state, images, str(row.levels),
                          str(row.voxels), _mb(row.bytes), str(row.source_blocks),
                          "+".join(row.conventions) or "-", str(row.objects_to_write),
                          str(row.requests)])  # fmt: skip
        table.append(["total", "", str(total["images"]), str(total["levels"]),
                      str(total["voxels"]), _mb(total["bytes"]), str(total["source_blocks"]),
                      "", str(total["objects_to_write"]), str(total["requests"])])  # fmt: skip
        click.echo(render_table(table), nl=False)
        for row in rows:
            if row.registry is not None:
                counts = row.registry
                click.echo(
                    f"  {row.name}: registry: {counts['mirrored']} mirrored, "
                    f"{counts['restyled']} restyled, {counts['reclassified']} reclassified, "
                    f"{counts['in_conflict']} in conflict, {counts['absent']} absent from the "
                    f"registry; {counts['unmatched']} registry source(s) without an image"
                )
            for problem in row.problems:
                click.echo(f"  {row.name}: {problem}")
            if row.refusal:
                click.echo(f"  {row.name}: REFUSED: {row.refusal}")
    refused = [row for row in rows if row.refusal]
    if refused:
        raise MigrationError(
            f"{len(refused)} dataset(s) would be refused: "
            + "; ".join(f"{row.name} ({row.refusal})" for row in refused)
        )


@bulk.command(name="status")
@selection_options
@summary_option(default_file=False)
@s3_options
@reports_errors
def bulk_status(
    root: str, dest_root: str | None, include: tuple[str, ...], exclude: tuple[str, ...],
    datasets_file: str | None, as_json: bool, summary_file: str | None, s3: S3Options,
) -> None:  # fmt: skip
    """Per dataset of ROOT: complete, partial or new at DEST; exit 0 only when all complete."""
    from migrate.bulk.run import status_dataset

    _source, _dest, selection = _select(
        root, dest_root, include, exclude, datasets_file, s3, writing=False
    )
    _report_selection(selection, as_json)
    with cf.ThreadPoolExecutor(4, "status") as pool:
        outcomes = list(pool.map(lambda d: status_dataset(d, s3), selection.datasets))
    _print_checks("bulk status", _source.url, _dest.url, outcomes, selection, as_json,
                  summary_file)  # fmt: skip
    incomplete = [o.name for o in outcomes if o.state != "complete"]
    if incomplete:
        raise MigrationError(f"{len(incomplete)} dataset(s) not complete: {', '.join(incomplete)}")


@bulk.command(name="verify")
@selection_options
@click.option(
    "--sample",
    type=click.FloatRange(0, 1, min_open=True),
    default=1.0,
    help="Compare this fraction of the chunks of each level, chosen at random.",
)
@click.option("--seed", type=int, help="Random seed for --sample.")
@click.option("--workers", type=click.IntRange(min=1), help="Parallel reads (default: cores).")
@click.option(
    "--registry",
    metavar="PATH",
    help="The registry manifests the datasets were migrated with (a folder).",
)
@click.option("--into-existing", is_flag=True, help=INTO_EXISTING_VERIFY_HELP)
@click.option("--listing", is_flag=True,
              help="Per dataset, the verdict from listings alone (verify --listing): proven "
              "by a full voxel proof and unchanged since, or why not. Reads no chunk.")  # fmt: skip
@click.option(
    "--hash",
    "hash_files",
    is_flag=True,
    help="With --listing on local DESTs: also compare each chunk file's CRC-32.",
)
@summary_option(default_file=False)
@s3_options
@reports_errors
def bulk_verify(
    root: str, dest_root: str | None, include: tuple[str, ...], exclude: tuple[str, ...],
    datasets_file: str | None, as_json: bool, sample: float, seed: int | None,
    workers: int | None, registry: str | None, into_existing: bool, listing: bool,
    hash_files: bool, summary_file: str | None,
    s3: S3Options,
) -> None:  # fmt: skip
    """Per dataset of ROOT: compare DEST with the source (every voxel, or --sample) and
    validate its metadata, leaving a certificate at each DEST proven; exit non-zero on any
    doubt. Says what was proven for each. With --listing: the verdict from listings alone."""
    from migrate.bulk.run import verify_dataset, verify_listing_dataset

    context = click.get_current_context()
    if listing and sample < 1.0:
        raise click.UsageError("--sample reads chunks; --listing reads none", context)
    if hash_files and not listing:
        raise click.UsageError("--hash goes with --listing", context)
    _source, _dest, selection = _select(
        root, dest_root, include, exclude, datasets_file, s3, writing=False
    )
    _report_selection(selection, as_json)
    manifests = load_registry_option(registry, s3)
    outcomes = []
    for dataset in selection.datasets:
        if listing:
            outcome = verify_listing_dataset(
                dataset, hash_files=hash_files, s3=s3, registry=manifests,
                into_existing=into_existing,
            )  # fmt: skip
        else:
            outcome = verify_dataset(
                dataset, sample=sample, seed=seed, workers=workers or default_workers(), s3=s3,
                registry=manifests,
                into_existing=into_existing,
            )  # fmt: skip
        outcomes.append(outcome)
        if not as_json:
            click.echo(f"{outcome.state}: {outcome.name}: {outcome.detail}", err=True)
            for problem in outcome.failures[:20]:
                click.echo(f"  MISMATCH {problem}", err=True)
    _print_checks("bulk verify", _source.url, _dest.url, outcomes, selection, as_json,
                  summary_file)  # fmt: skip
    _fail_on(outcomes, "not proven", "nothing may be deleted before they verify")


def _print_checks(
    command: str, root: str, dest_root: str, outcomes: list[DatasetOutcome],
    selection: Selection,
    as_json: bool, summary_file: str | None,
) -> None:  # fmt: skip
    from migrate.bulk.summary import Summary

    summary = Summary(command, root, dest_root, Path(summary_file) if summary_file else None)
    for skipped in selection.skipped:
        summary.skip(skipped.name, skipped.reason)
    document = summary.finish(outcomes)
    if as_json:
        click.echo(json.dumps(document, indent=2))
        return
    rows = [["dataset", "state", "detail"]]
    rows += [[o.name, o.state, o.detail] for o in outcomes]
    click.echo(render_table(rows), nl=False)
    by_state = document["totals"]["by_state"]
    click.echo(
        f"{len(outcomes)} dataset(s): "
        + ", ".join(f"{count} {state}" for state, count in by_state.items())
    )


single_dataset_options(bulk_convert)
