"""The ``cellmap-migrate`` command line: parse, build stores, call one library function, print.

Errors reach the user as one line, ``error: …``, with a non-zero exit status; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from migrate import __version__
from migrate.cli import signals
from migrate.cli.progress import current_watch, log_plan, watched
from migrate.errors import MigrationError, OptionError
from migrate.storage import S3Options
from migrate.target.codecs import BLOSC_CNAMES
from migrate.target.plan import DEFAULT_UNIT_BYTES

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 1
EXIT_USAGE = 2
"""An option value that cannot be used (click's own usage errors exit 2 too)."""
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130
"""Ctrl-C (SIGINT): 128 + 2, as shells report it."""
EXIT_TERMINATED = 143
"""SIGTERM (what batch schedulers send at a time limit or on a cancel): 128 + 15."""


def _trust_option(values: tuple[str, ...]) -> tuple[str, ...]:
    """The ``--trust`` values, checked (a bad one is a usage error naming it)."""
    from migrate.source.reconcile import parse_trust

    try:
        parse_trust(values)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--trust") from None
    return values


def load_registry_option(path: str | None, s3: S3Options) -> Any:
    """The manifests ``--registry PATH`` names (None without the option)."""
    if path is None:
        return None
    from migrate.source.registry import load_registry

    return load_registry(path, s3)


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


class ShapeParam(click.ParamType[tuple[int, ...]]):
    """A shape given as comma-separated positive integers (``64,64,64``); anything else is a
    usage error (exit 2) naming the option."""

    name = "Z,Y,X"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        name = param.opts[0] if param is not None and param.opts else "shape"
        try:
            shape = _shape_option(str(value), name)
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)
        assert shape is not None
        return shape


SHAPE = ShapeParam()


class PrefixParam(click.ParamType[str]):
    """A relative path of plain segments (``recon-1``, ``a/b``; a trailing '/' is dropped);
    an absolute path, ``..``, ``.``, an empty segment, a backslash or a control character
    is a usage error (exit 2) naming the option."""

    name = "PATH"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from migrate.storage import path_problem

        prefix = str(value)
        prefix = prefix[:-1] if prefix.endswith("/") and prefix != "/" else prefix
        problem = path_problem(prefix)
        if problem is not None:
            self.fail(f"{problem}: a prefix is a relative path of plain names", param, ctx)
        return prefix


PREFIX = PrefixParam()


def image_path_pairs(
    ctx: click.Context | None, param: click.Parameter | None, values: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    """``--image-path VOLUME=PATH`` values as (volume, path) pairs, sorted (the option's
    callback); a value without ``=``, an empty side, a path that leaves the output
    (``..``) or starts with ``.``, or a volume given twice is a usage error (exit 2)."""
    pairs: dict[str, str] = {}
    for value in values:
        volume, equals, path = value.partition("=")
        volume, path = volume.strip("/"), path.strip("/")
        parts = path.split("/")
        problem = None
        if not equals or not volume or not path:
            problem = "expected VOLUME=PATH, e.g. neuroglancer/em/x.precomputed=em/x-jpeg"
        elif any(part in ("", ".", "..") for part in parts) or "\\" in path:
            problem = "PATH must be a relative path inside the output (no '..', '.', '//')"
        elif parts[0].startswith(".") or any(ord(char) < 32 for char in path):
            problem = "PATH may not start with '.' or hold control characters"
        elif volume in pairs:
            problem = f"{volume} is given twice"
        if problem is not None:
            raise click.BadParameter(f"{value!r}: {problem}", param_hint="--image-path")
        pairs[volume] = path
    return tuple(sorted(pairs.items()))


def reports_errors(command: F) -> F:
    """Turn MigrationError (and anything unexpected) into one ``error:`` line and an exit code.

    Adds ``--debug`` to the command, so that it works after the subcommand name too."""

    @click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
    @functools.wraps(command)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        debug = debug or bool(click.get_current_context().find_root().params.get("debug"))
        try:
            with signals.handled():
                result = command(*args, **kwargs)
            held = signals.held_signal()
            if held is not None:
                click.echo(signals.late_note(held), err=True)
            return result
        except MigrationError as exc:
            if debug:
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE if isinstance(exc, OptionError) else EXIT_ERROR)
        except signals.Terminated:
            click.echo(
                "error: terminated (SIGTERM); every finished work unit is recorded: "
                "run the same command again to resume",
                err=True,
            )
            sys.exit(EXIT_TERMINATED)
        except KeyboardInterrupt:
            click.echo("error: interrupted; run the same command again to resume", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except click.ClickException:
            raise  # a usage error found by the command: click prints it (exit 2)
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


def cluster_options(command: F) -> F:
    """The options that move the copying of work units to a Dask cluster."""
    options = [
        click.option(
            "--scheduler",
            metavar="ADDRESS",
            help="Copy on the workers of this Dask scheduler (tcp://host:port, or the path of "
            "a scheduler JSON file).",
        ),
        click.option(
            "--cluster",
            type=click.Choice(["local", "lsf", "slurm"]),
            help="Start a Dask cluster for the run: local (--workers processes) or batch jobs "
            "(lsf/slurm need dask-jobqueue).",
        ),
        click.option("--cluster-jobs", type=click.IntRange(min=1),
                     help="lsf/slurm: batch jobs (of Dask workers) to start [1]."),
        click.option("--cluster-cores", type=click.IntRange(min=1),
                     help="lsf/slurm: cores per job."),
        click.option("--cluster-memory", metavar="SIZE",
                     help="lsf/slurm: memory per job, e.g. 16GB."),
        click.option("--cluster-walltime", metavar="TIME",
                     help="lsf/slurm: wall-clock limit per job (LSF hh:mm, SLURM hh:mm:ss)."),
        click.option("--cluster-queue", metavar="NAME", help="lsf/slurm: queue (partition)."),
        click.option("--retries", type=click.IntRange(min=0),
                     help="Dask: retries of a task that raised, on another worker [3]."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def s3_options(command: F) -> F:
    """Add ``--anon``, ``--endpoint-url`` and ``--region``; the command gets them as one
    ``s3: S3Options`` argument."""

    @functools.wraps(command)
    def wrapper(
        *args: Any, anon: bool, endpoint_url: str | None, region: str | None, **kwargs: Any
    ) -> Any:
        s3 = S3Options(endpoint_url=endpoint_url or None, region=region or None, anon=anon or None)
        return command(*args, s3=s3, **kwargs)

    decorated: Any = wrapper
    for option in (
        click.option(
            "--region", metavar="NAME", help="AWS region (default: AWS_REGION or the profile's)."
        ),
        click.option(
            "--endpoint-url",
            metavar="URL",
            help="S3-compatible server for s3:// locations (default: AWS_ENDPOINT_URL).",
        ),
        click.option(
            "--anon",
            is_flag=True,
            help="Read s3:// locations anonymously (public buckets); locations that are "
            "written always use the configured credentials. Default: anonymous only when no "
            "AWS credentials are configured.",
        ),
    ):
        decorated = option(decorated)
    return decorated  # type: ignore[no-any-return]


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
@click.option(
    "--plan-only",
    is_flag=True,
    help="A dry run that prints the plan only, one line per level (image, level, shape, "
    "chunks/shards, dtype, codec, copy path, scale, translation), without the metadata "
    "diff; writes nothing.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan (or results) as JSON.")
@click.option("--ngff-version", type=click.Choice(["0.4", "0.5"]), default="0.4", show_default=True,
              help="OME-NGFF version of the output: 0.4 is Zarr v2 (what the Cellmap bucket "
              "publishes), 0.5 is Zarr v3 (needed for --shard).")  # fmt: skip
@click.option(
    "--prefix", default="", type=PREFIX, help="Nest the output under this path, e.g. recon-1."
)
@click.option(
    "--codec",
    type=click.Choice(["keep", "gzip", "zstd", "blosc"]),
    default="keep",
    show_default=True,
    help="keep: the source compression where Zarr can express it, else zstd level 3. gzip, "
    "zstd, blosc: a source already in that codec keeps its blocks (and settings, unless "
    "--codec-level/--blosc-* say otherwise); others are re-encoded.",
)
@click.option(
    "--codec-level",
    type=int,
    metavar="N",
    help="Level of --codec gzip (0–9) [6], zstd (1–22) [3] or blosc (0–9) [5]; with it (or "
    "--blosc-*) every level is written with exactly these settings.",
)
@click.option(
    "--blosc-cname",
    type=click.Choice(BLOSC_CNAMES),
    help="Compressor inside --codec blosc [zstd].",
)
@click.option(
    "--blosc-shuffle",
    type=click.Choice(["noshuffle", "shuffle", "bitshuffle"]),
    help="Shuffle of --codec blosc [shuffle].",
)
@click.option(
    "--chunks", type=SHAPE, help="Output chunk shape, C order (z,y,x); default: the source blocks."
)
@click.option(
    "--shard",
    type=SHAPE,
    help="Shard shape, C order (z,y,x; 0.5 only): a whole number of chunks on every axis, at "
    "every level; a level smaller than the shard gets one shard of its size, rounded up to "
    "whole chunks.",
)
@click.option(
    "--downsampling",
    type=click.Choice(["windowed", "subsample"]),
    default="windowed",
    show_default=True,
    help="Translation rule when only Neuroglancer metadata exists.",
)
@click.option(
    "--trust",
    multiple=True,
    metavar="[PATTERN=]CHOICE",
    callback=lambda ctx, param, value: _trust_option(value),
    help="Resolve conflicts: cosem|neuroglancer (the N5's conventions), registry|n5 (the "
    "registry against the N5), for every image or PATTERN=CHOICE for the images whose path "
    "matches PATTERN (repeatable).",
)
@click.option(
    "--registry",
    metavar="PATH",
    help="OpenOrganelle registry: a manifest (<dataset>.manifest.json) or a folder of them, "
    "local or s3://; mirrors, restyles and classifies images as the portal showed them.",
)
@click.option("--allow-unknown-units", is_flag=True, help="Keep units OME-NGFF does not name.")
@click.option("--label", "labels", multiple=True, help="Treat images matching PATTERN as labels.")
@click.option(
    "--image-path",
    "image_paths",
    multiple=True,
    metavar="VOLUME=PATH",
    callback=image_path_pairs,
    help="Write the precomputed volume VOLUME (its path in the dataset, e.g. "
    "neuroglancer/em/fibsem-uint8.precomputed) to the image path PATH (under --prefix) "
    "instead of em/fibsem-uint8.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Parallel copies (default: cores); with --cluster local, worker processes.",
)
@click.option(
    "--unit-mib",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_UNIT_BYTES / 2**20,
    show_default=True,
    help="Target size of one work unit (uncompressed); peak memory ≈ 2 × workers × this. "
    "Changes no output byte; an image resumed goes on with the units it was started with.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace cellmap-migrate output made with other settings (never anything else).",
)
@click.option(
    "--into-existing",
    is_flag=True,
    help="Write into a non-empty DEST folder that holds no cellmap-migrate output yet.",
)
@click.option(
    "--break-lease",
    is_flag=True,
    help="Take the lease of DEST even from a run that looks alive (make sure it is gone).",
)
@click.option(
    "--lease-timeout",
    type=click.FloatRange(min=10),
    default=300,
    show_default=True,
    help="Seconds after which this run's lease, if no longer renewed, may be taken over.",
)
@click.option(
    "--no-transplant",
    is_flag=True,
    help="Copy every level through TensorStore (no block-by-block fast path).",
)
@click.option(
    "--skip-decode-check", is_flag=True, help="Move block bytes without proving they decode."
)
@click.option("--report", metavar="DIR", help="Write an HTML report with pictures into DIR.")
@cluster_options
@s3_options
@reports_errors
@watched
def convert(
    src: str,
    dest: str | None,
    dry_run: bool,
    plan_only: bool,
    as_json: bool,
    ngff_version: str,
    prefix: str,
    codec: str,
    codec_level: int | None,
    blosc_cname: str | None,
    blosc_shuffle: str | None,
    chunks: tuple[int, ...] | None,
    shard: tuple[int, ...] | None,
    downsampling: str,
    trust: tuple[str, ...],
    registry: str | None,
    allow_unknown_units: bool,
    labels: tuple[str, ...],
    image_paths: tuple[tuple[str, str], ...],
    workers: int | None,
    unit_mib: float,
    overwrite: bool,
    into_existing: bool,
    break_lease: bool,
    lease_timeout: float,
    no_transplant: bool,
    skip_decode_check: bool,
    report: str | None,
    s3: S3Options,
    **cluster: Any,
) -> None:
    """Migrate every multiscale image under SRC to DEST. SRC is an N5 root or a group in it,
    a dataset folder (its N5 images and its neuroglancer/<group>/<name>.precomputed volumes
    together), or one precomputed volume.

    DEST defaults to the sibling <dataset>.zarr of the <dataset>.n5 root (or of the dataset
    folder); paths inside the N5 root are kept, a volume goes to <group>/<name>. SRC and
    DEST are local paths or s3://bucket/prefix, in any mix. With --scheduler or --cluster,
    the chunks are copied by the workers of a Dask cluster (they must reach SRC and DEST at
    the same paths or URLs).
    """
    dry_run = dry_run or plan_only
    cluster_settings = _cluster_settings(cluster, workers)
    if report:
        from migrate.report import require_extra

        require_extra()
    from migrate.api import (
        check_conflicts,
        check_datasets,
        check_dest_root,
        inspect_dest,
        prepare,
        run_prepared,
    )
    from migrate.copy.engine import check_images
    from migrate.dest import lease
    from migrate.target.diff import (
        metadata_diff,
        plan_json,
        plan_levels,
        render_plan,
        render_plan_levels,
    )
    from migrate.target.plan import PlanOptions

    options = PlanOptions(
        ngff_version=ngff_version,  # type: ignore[arg-type]
        codec=codec,  # type: ignore[arg-type]
        codec_level=codec_level,
        blosc_cname=blosc_cname,
        blosc_shuffle=blosc_shuffle,
        chunks=chunks,
        shard=shard,
        prefix=prefix.strip("/"),
        downsampling=downsampling,  # type: ignore[arg-type]
        trust=trust,
        allow_unknown_units=allow_unknown_units,
        label_patterns=labels,
        unit_bytes=int(unit_mib * 2**20),
        registry=load_registry_option(registry, s3),
        image_paths=image_paths,
    )
    prepared = prepare(src, dest, options, read_only_dest=dry_run, s3=s3)
    found = inspect_dest(prepared) if dry_run or report else None  # DEST's state, read once
    plan = prepared.plan
    log_plan(current_watch(), plan)
    diff = metadata_diff(plan, prepared.dest) if (dry_run and not plan_only) or report else []
    if plan_only:
        fast = not no_transplant
        if as_json:
            levels = plan_levels(plan, fast=fast)
            click.echo(json.dumps({"fingerprint": plan.fingerprint, "levels": levels}, indent=2))
        else:
            click.echo(render_plan_levels(plan, fast=fast), nl=False)
    elif dry_run:
        if as_json:
            click.echo(json.dumps(plan_json(plan, diff), indent=2))
        else:
            click.echo(render_plan(plan, fast=not no_transplant), nl=False)
            click.echo("\nmetadata changes:" if diff else "\nmetadata: no changes")
            click.echo("".join(diff), nl=False)
    check_conflicts(plan)
    if dry_run and found is not None:  # the refusals a real run meets, with its messages
        root, state = found
        check_dest_root(prepared.dest, plan, into_existing=into_existing, root=root)
        check_datasets(prepared.dest, plan, state, into_existing=into_existing)
        check_images(prepared.dest, plan, overwrite, state)
        holder = lease.live_holder(state.lease)
        if holder is not None:
            click.echo(f"note: DEST is being written right now ({holder.describe()})", err=True)
        if report:
            _convert_report(report, prepared, diff, None, None, fast=not no_transplant)
        return
    from migrate.cli.report import render_run
    from migrate.copy.options import EngineOptions

    check_dest_root(prepared.dest, plan, into_existing=into_existing)  # a refusal: one line
    if not as_json:
        click.echo(render_plan(plan, detailed=False), nl=False, err=True)  # with its warnings
    for image in plan.images if as_json else ():
        for warning in image.warnings:  # a JSON line, among the progress lines
            event = {"event": "warning", "image": image.dest_path, "message": warning}
            click.echo(json.dumps(event), err=True)
    engine = EngineOptions(
        workers=workers or default_workers(),
        overwrite=overwrite,
        transplant=not no_transplant,
        decode_check=not skip_decode_check,
    )
    progress = current_watch().progress()
    if report:
        from migrate.report import RecordingProgress

        progress = recording = RecordingProgress(progress)
    notice = functools.partial(click.echo, err=True)
    with _executor(cluster_settings) as executor:
        result = run_prepared(
            prepared,
            engine,
            progress,
            executor,
            lease_timeout=lease_timeout,
            break_lease=break_lease,
            notice=notice,
            finishing=signals.finishing,
            into_existing=into_existing,
            root_checked=True,
        )
    plan = prepared.plan
    current_watch().record("summary", fingerprint=plan.fingerprint, **result.to_json())
    if as_json:
        click.echo(json.dumps({"fingerprint": plan.fingerprint, **result.to_json()}, indent=2))
    else:
        click.echo(render_run(plan, result), nl=False)
    if report:
        timeline = recording.timeline
        _convert_report(report, prepared, diff, result.to_json(), timeline, fast=not no_transplant)
    if result.failures:
        raise MigrationError(
            f"{len(result.failures)} work unit(s) failed (first: {result.failures[0]}); "
            "fix the source and run the same command again to finish"
        )
    if signals.held_signal() is not None:
        return  # asked to stop as the run finished: no more than the summary
    from migrate.view.scan import convert_hint

    hint = convert_hint(prepared.dest)  # --json: stderr carries JSON lines only
    click.echo(json.dumps({"event": "view", "message": hint}) if as_json else hint, err=True)


def _convert_report(directory: str, prepared: Any, diff: list[str], *args: Any, fast: bool) -> None:
    from migrate.report.write import write_convert_report
    from migrate.target.diff import render_plan

    text = render_plan(prepared.plan, fast=fast)
    path = write_convert_report(directory, prepared.plan, prepared.source, prepared.dest, diff,
                                text, *args, fast=fast)  # fmt: skip
    click.echo(f"report: {path}", err=True)


def _cluster_settings(values: dict[str, Any], workers: int | None) -> Any:
    """The ClusterOptions of the cluster flags (checked), or None without them. Dask is
    imported only when a flag is given."""
    if not any(value is not None for value in values.values()):
        return None
    try:
        from migrate.copy.distributed import ClusterOptions
    except ImportError as exc:
        raise MigrationError(
            f"--scheduler/--cluster need Dask ({exc}); install it with "
            "pip install 'cellmap-migrate[distributed]'"
        ) from None
    given = {
        "scheduler": values["scheduler"],
        "cluster": values["cluster"],
        "workers": workers,
        "jobs": values["cluster_jobs"],
        "cores": values["cluster_cores"],
        "memory": values["cluster_memory"],
        "walltime": values["cluster_walltime"],
        "queue": values["cluster_queue"],
    }
    if values["retries"] is not None:
        given["retries"] = values["retries"]
    settings = ClusterOptions(**given)
    settings.check()
    return settings


@contextlib.contextmanager
def _executor(settings: Any) -> Iterator[Any]:
    """The executor of the run: None (the embedded engine) or a Dask cluster's."""
    if settings is None:
        yield None
        return
    from migrate.copy.distributed import DaskExecutor, connect

    with connect(settings) as client:
        yield DaskExecutor(client, retries=settings.retries)


def default_workers() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def main() -> None:
    """Console-script entry point."""
    from migrate.copy.memory import limit_malloc_arenas

    limit_malloc_arenas()
    signals.own_process()
    cli(prog_name="cellmap-migrate")


@cli.command(name="status")
@click.argument("dest")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@s3_options
@reports_errors
def status_command(dest: str, as_json: bool, s3: S3Options) -> None:
    """Per image and level of DEST: complete, or work units done / total, and MB of voxels
    done / total (uncompressed); exit 0 only when all complete."""
    from migrate.check.status import render_status, status
    from migrate.storage import open_store

    images = status(open_store(dest, read_only=True, s3=s3))
    if as_json:
        click.echo(json.dumps([image.to_json() for image in images], indent=2))
    else:
        click.echo(render_status(images), nl=False)
    incomplete = [image.dest_path for image in images if not image.complete]
    if incomplete:
        raise MigrationError(f"{len(incomplete)} image(s) incomplete: {', '.join(incomplete)}")


INTO_EXISTING_VERIFY_HELP = (
    "DEST was written with convert --into-existing: files and folders that are not Zarr, "
    "outside every image, are listed as notes instead of failing."
)


@cli.command(name="verify")
@click.argument("src")
@click.argument("dest")
@click.option("--sample", type=click.FloatRange(0, 1, min_open=True), default=1.0,
              help="Compare this fraction of each level's chunks (shards), chosen at "
              "random, instead of every voxel.")  # fmt: skip
@click.option("--seed", type=int, help="Random seed for --sample.")
@click.option("--workers", type=click.IntRange(min=1), help="Parallel reads (default: cores).")
@click.option("--into-existing", is_flag=True, help=INTO_EXISTING_VERIFY_HELP)
@click.option("--listing", is_flag=True,
              help="Prove DEST unchanged since a full verify from listings alone: the ledger "
              "against DEST's and SRC's listings, the metadata against the plan, the "
              "certificate's listings against today's. Reads no chunk.")  # fmt: skip
@click.option("--hash", "hash_files", is_flag=True,
              help="With --listing on a local DEST: also read every chunk file and compare "
              "its CRC-32 with the ledger's.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--report", metavar="DIR", help="Write an HTML report with pictures into DIR.")
@click.option("--registry", metavar="PATH",
              help="The registry manifest (or a folder of them) DEST was migrated with; "
              "checked against the digest DEST records.")  # fmt: skip
@s3_options
@reports_errors
@watched
def verify_command(
    src: str,
    dest: str,
    sample: float,
    seed: int | None,
    workers: int | None,
    into_existing: bool,
    listing: bool,
    hash_files: bool,
    as_json: bool,
    report: str | None,
    registry: str | None,
    s3: S3Options,
) -> None:
    """Prove that DEST is the migration of SRC: plan it again from SRC's metadata with the
    settings DEST records, then compare every metadata file with the plan's, check that every
    image and level is there and complete and nothing else is, compare every voxel (or a
    --sample of the chunks), and validate the OME-NGFF metadata. A proof leaves its
    certificate at DEST (and builds the ledger of output made before it existed);
    --listing then proves DEST unchanged since, from listings alone."""
    context = click.get_current_context()
    if listing and (sample < 1.0 or report):
        option = "--sample" if sample < 1.0 else "--report"
        raise click.UsageError(f"{option} reads chunks; --listing reads none", context)
    if hash_files and not listing:
        raise click.UsageError("--hash goes with --listing", context)
    if listing:
        _verify_listing(src, dest, hash_files, as_json, s3, registry, into_existing)
        return
    if report:
        from migrate.report import require_extra

        require_extra()
    from migrate.api import open_for_verify
    from migrate.check.certify import verify_and_certify

    source, inner, dest_store, location = open_for_verify(src, dest, s3, certify=True)
    certified = verify_and_certify(
        source,
        dest_store,
        inner=inner,
        location=location,
        sample=sample,
        workers=workers or default_workers(),
        seed=seed,
        into_existing=into_existing,
        progress=current_watch().progress(),
        registry=load_registry_option(registry, s3),
        notice=lambda line: click.echo(line, err=True),
    )
    result = certified.result
    current_watch().record("summary", **result.to_json())
    if as_json:
        proof = certified.proof.to_json() if certified.proof is not None else None
        click.echo(json.dumps({**result.to_json(), "certificate": proof}, indent=2))
    else:
        for note in [*result.notes, *certified.notes]:
            click.echo(f"note: {note}", err=True)
        if certified.proof is not None:
            where = dest_store.display(".cellmap-migrate/certificate.json")
            click.echo(f"certificate: {where}: {certified.proof.describe()}", err=True)
        for problem in result.problems:
            click.echo(f"MISMATCH {problem}")
        click.echo(result.summary())
    if report:
        from migrate.report.write import write_verify_report

        path = write_verify_report(report, source, dest_store, result, sample=sample)
        click.echo(f"report: {path}", err=True)
    if result.problems:
        raise MigrationError(f"verification failed: {result.problems[0]}")


def _verify_listing(
    src: str,
    dest: str,
    hash_files: bool,
    as_json: bool,
    s3: S3Options,
    registry: str | None,
    into_existing: bool,
) -> None:
    """``verify --listing``: print every difference, then the one line of what was proven."""
    from migrate.api import open_for_verify
    from migrate.check.listing import verify_listing

    source, inner, dest_store, location = open_for_verify(src, dest, s3)
    result = verify_listing(
        source, dest_store, inner=inner, hash_files=hash_files,
        registry=load_registry_option(registry, s3), location=location,
        into_existing=into_existing,
    )  # fmt: skip
    if hash_files and not result.hashed:
        click.echo("note: --hash reads local chunk files; on S3 the ETag is the digest", err=True)
    current_watch().record("summary", **result.to_json())
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        for note in result.notes:
            click.echo(f"note: {note}", err=True)
        for problem in result.problems:
            click.echo(f"MISMATCH {problem}")
        click.echo(result.summary())
    if result.problems or result.proof is None:
        first = result.problems[0] if result.problems else "no full proof"
        raise MigrationError(f"not proven by listing: {first}")


@cli.command(name="demo")
@click.argument("directory", default="cellmap-demo", required=False)
@click.option("--size", type=click.Choice(["tiny", "small", "medium"]), default="small",
              show_default=True, help="Size of the generated example dataset.")  # fmt: skip
@reports_errors
def demo_command(directory: str, size: str) -> None:
    """Generate an example Cellmap dataset in DIRECTORY, then dry-run, convert and verify it."""
    from pathlib import Path

    from migrate.example.fixture import example_images, write_dataset

    root = Path(directory)
    name = "jrc_example-1"
    n5 = root / name / f"{name}.n5"
    if n5.exists():
        click.echo(f"using the example dataset already at {n5}")
    else:
        n5 = write_dataset(root, name, example_images(size))  # type: ignore[arg-type]
        click.echo(f"wrote the example dataset {n5}")
    context = click.get_current_context()
    click.echo(f"\n=== cellmap-migrate convert {n5} --dry-run  (what would be written)")
    _demo_dry_run(str(n5))
    for title, command, args in (
        ("copy", convert, [str(n5)]),
        (
            "prove the copy: metadata, layout, every voxel",
            verify_command,
            [str(n5), str(n5.with_suffix(".zarr"))],
        ),
    ):
        click.echo(f"\n=== cellmap-migrate {command.name} {' '.join(args)}  ({title})")
        context.invoke(command, **_defaults(command, args))
    click.echo(f"\nthe example's OME-NGFF output: {n5.with_suffix('.zarr')}")


def _demo_dry_run(src: str, shown: int = 60) -> None:
    """The dry run, with the metadata diff cut to its first ``shown`` lines."""
    from migrate.api import prepare
    from migrate.target.diff import metadata_diff, render_plan
    from migrate.target.plan import PlanOptions

    prepared = prepare(src, None, PlanOptions(), read_only_dest=True)
    click.echo(render_plan(prepared.plan), nl=False)
    diff = metadata_diff(prepared.plan, prepared.dest)
    click.echo("\nmetadata changes:" if diff else "\nmetadata: no changes")
    click.echo("".join(diff[:shown]), nl=False)
    if len(diff) > shown:
        click.echo(f"… {len(diff) - shown} more diff lines (all of them: --dry-run on its own)")


def _defaults(command: click.Command, args: list[str]) -> dict[str, Any]:
    """Parse ``args`` with ``command``'s own parser, giving its parameters' values."""
    sub = command.make_context(command.name, list(args))
    return dict(sub.params)
