"""The ``cellmap-migrate`` command line: parse, build stores, call one library function, print.

Errors reach the user as one line, ``error: …``, with a non-zero exit status; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from migrate import __version__
from migrate.errors import ConflictError, MigrationError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 1
EXIT_INTERNAL = 3


def _shape_option(value: str | None, name: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        shape = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated integers, got {value!r}", param_hint=name
        ) from None
    if not shape or any(n <= 0 for n in shape):
        raise click.BadParameter(f"sizes must be positive, got {value!r}", param_hint=name)
    return shape


def reports_errors(command: F) -> F:
    """Turn MigrationError (and anything unexpected) into one ``error:`` line and an exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(click.get_current_context().find_root().params.get("debug"))
        try:
            return command(*args, **kwargs)
        except MigrationError as exc:
            if debug:
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            click.echo("error: interrupted; run the same command again to resume", err=True)
            sys.exit(130)
        except Exception as exc:
            if debug:
                raise
            message = str(exc).splitlines()[0] if str(exc) else ""
            click.echo(
                f"error: internal error: {type(exc).__name__}: {message} "
                "(run with --debug for the traceback)",
                err=True,
            )
            sys.exit(EXIT_INTERNAL)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cellmap-migrate")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def cli(debug: bool) -> None:
    """Migrate Cellmap/COSEM N5 datasets to OME-NGFF Zarr."""


@cli.command()
@click.argument("src")
@click.argument("dest", required=False)
@click.option(
    "--dry-run", is_flag=True, help="Print the plan and the metadata diff; write nothing."
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan (or results) as JSON.")
@click.option("--ngff-version", type=click.Choice(["0.4", "0.5"]), default="0.4", show_default=True)
@click.option("--prefix", default="", help="Nest the output under this path, e.g. recon-1.")
@click.option(
    "--codec",
    type=click.Choice(["keep", "gzip", "zstd", "blosc"]),
    default="keep",
    show_default=True,
    help="keep: the source compression where Zarr can express it, else zstd.",
)
@click.option("--chunks", help="Output chunk shape, C order (z,y,x); default: the source blocks.")
@click.option("--shard", help="Shard shape, C order (0.5 only): a whole number of chunks.")
@click.option(
    "--downsampling",
    type=click.Choice(["windowed", "subsample"]),
    default="windowed",
    show_default=True,
    help="Translation rule when only Neuroglancer metadata exists.",
)
@click.option("--trust", type=click.Choice(["cosem", "neuroglancer"]), help="Resolve conflicts.")
@click.option("--allow-unknown-units", is_flag=True, help="Keep units OME-NGFF does not name.")
@click.option("--label", "labels", multiple=True, help="Treat images matching PATTERN as labels.")
@click.option("--workers", type=click.IntRange(min=1), help="Parallel copies (default: cores).")
@click.option("--overwrite", is_flag=True, help="Replace output made with other settings.")
@click.option("--no-transplant", is_flag=True, help="Always decode and re-encode blocks.")
@click.option(
    "--skip-decode-check", is_flag=True, help="Move block bytes without proving they decode."
)
@reports_errors
def convert(
    src: str,
    dest: str | None,
    dry_run: bool,
    as_json: bool,
    ngff_version: str,
    prefix: str,
    codec: str,
    chunks: str | None,
    shard: str | None,
    downsampling: str,
    trust: str | None,
    allow_unknown_units: bool,
    labels: tuple[str, ...],
    workers: int | None,
    overwrite: bool,
    no_transplant: bool,
    skip_decode_check: bool,
) -> None:
    """Migrate every multiscale image under SRC (an N5 root or a group in it) to DEST.

    DEST defaults to the sibling <dataset>.zarr of the <dataset>.n5 root; paths inside the
    N5 root are kept.
    """
    from migrate.api import prepare
    from migrate.diff import metadata_diff, plan_json, render_plan
    from migrate.plan import PlanOptions

    options = PlanOptions(
        ngff_version=ngff_version,  # type: ignore[arg-type]
        codec=codec,  # type: ignore[arg-type]
        chunks=_shape_option(chunks, "--chunks"),
        shard=_shape_option(shard, "--shard"),
        prefix=prefix.strip("/"),
        downsampling=downsampling,  # type: ignore[arg-type]
        trust=trust,  # type: ignore[arg-type]
        allow_unknown_units=allow_unknown_units,
        label_patterns=labels,
    )
    prepared = prepare(src, dest, options, read_only_dest=dry_run)
    plan = prepared.plan
    if dry_run:
        diff = metadata_diff(plan, prepared.dest)
        if as_json:
            click.echo(json.dumps(plan_json(plan, diff), indent=2))
        else:
            click.echo(render_plan(plan), nl=False)
            click.echo("\nmetadata changes:" if diff else "\nmetadata: no changes")
            click.echo("".join(diff), nl=False)
    if plan.conflicts:
        raise ConflictError(
            f"{len(plan.conflicts)} metadata conflict(s) between COSEM and Neuroglancer "
            f"metadata (first: {plan.conflicts[0]}); pick one with --trust cosem|neuroglancer"
        )
    if dry_run:
        return
    from migrate.engine import EngineOptions, run_plan
    from migrate.progress import make_progress
    from migrate.report import render_run

    if not as_json:
        click.echo(render_plan(plan), nl=False, err=True)
    engine = EngineOptions(
        workers=workers or default_workers(),
        overwrite=overwrite,
        transplant=not no_transplant,
        decode_check=not skip_decode_check,
    )
    result = run_plan(plan, prepared.source, prepared.dest, engine, make_progress(as_json=as_json))
    if as_json:
        click.echo(json.dumps({"fingerprint": plan.fingerprint, **result.to_json()}, indent=2))
    else:
        click.echo(render_run(plan, result), nl=False)
    if result.failures:
        raise MigrationError(
            f"{len(result.failures)} work unit(s) failed (first: {result.failures[0]}); "
            "fix the source and run the same command again to finish"
        )


def default_workers() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="cellmap-migrate")


@cli.command(name="status")
@click.argument("dest")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@reports_errors
def status_command(dest: str, as_json: bool) -> None:
    """Per image and level of DEST: work units done / total; exit 0 only when all complete."""
    from migrate.status import render_status, status
    from migrate.stores import open_store

    images = status(open_store(dest, read_only=True))
    if as_json:
        click.echo(json.dumps([image.to_json() for image in images], indent=2))
    else:
        click.echo(render_status(images), nl=False)
    incomplete = [image.dest_path for image in images if not image.complete]
    if incomplete:
        raise MigrationError(f"{len(incomplete)} image(s) incomplete: {', '.join(incomplete)}")


@cli.command(name="verify")
@click.argument("src")
@click.argument("dest")
@click.option("--sample", type=click.FloatRange(0, 1, min_open=True), default=1.0,
              help="Compare this fraction of the work units, chosen at random.")  # fmt: skip
@click.option("--seed", type=int, help="Random seed for --sample.")
@click.option("--workers", type=click.IntRange(min=1), help="Parallel reads (default: cores).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@reports_errors
def verify_command(
    src: str, dest: str, sample: float, seed: int | None, workers: int | None, as_json: bool
) -> None:
    """Compare DEST with SRC voxel for voxel and validate its OME-NGFF metadata."""
    from migrate.discover import split_n5_url
    from migrate.stores import open_store
    from migrate.verify import verify

    n5_root, _inner = split_n5_url(src.removeprefix("file://"))
    result = verify(
        open_store(n5_root, read_only=True),
        open_store(dest, read_only=True),
        sample=sample,
        workers=workers or default_workers(),
        seed=seed,
    )
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        for problem in result.problems:
            click.echo(f"MISMATCH {problem}")
        click.echo(
            f"verified {result.images} image(s), {result.units_checked} unit(s), "
            f"{result.bytes_compared / 1e6:.1f} MB of voxels: "
            + ("OK" if not result.problems else f"{len(result.problems)} problem(s)")
        )
    if result.problems:
        raise MigrationError(f"verification failed: {result.problems[0]}")


@cli.command(name="demo")
@click.argument("directory", default="cellmap-demo", required=False)
@click.option("--size", type=click.Choice(["tiny", "small", "medium"]), default="small",
              show_default=True, help="Size of the generated example dataset.")  # fmt: skip
@reports_errors
def demo_command(directory: str, size: str) -> None:
    """Generate an example Cellmap dataset in DIRECTORY, then dry-run, convert and verify it."""
    from pathlib import Path

    from migrate.fixture import example_images, write_dataset

    root = Path(directory)
    name = "jrc_example-1"
    n5 = root / name / f"{name}.n5"
    if n5.exists():
        click.echo(f"using the example dataset already at {n5}")
    else:
        n5 = write_dataset(root, name, example_images(size))  # type: ignore[arg-type]
        click.echo(f"wrote the example dataset {n5}")
    context = click.get_current_context()
    for title, command, args in (
        ("dry run", convert, [str(n5), "--dry-run"]),
        ("convert", convert, [str(n5)]),
        ("verify", verify_command, [str(n5), str(n5.with_suffix(".zarr"))]),
    ):
        click.echo(f"\n=== cellmap-migrate {command.name} {' '.join(args)}  ({title})")
        context.invoke(command, **_defaults(command, args))


def _defaults(command: click.Command, args: list[str]) -> dict[str, Any]:
    """Parse ``args`` with ``command``'s own parser, giving its parameters' values."""
    sub = command.make_context(command.name, list(args))
    return dict(sub.params)
