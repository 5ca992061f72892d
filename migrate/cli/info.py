"""``cellmap-migrate info PATH``: what an N5 tree or an OME-Zarr output holds. Writes nothing."""

from __future__ import annotations

import json

import click

from migrate.cli.commands import reports_errors, s3_options
from migrate.errors import MigrationError
from migrate.storage import S3Options


@click.command(name="info")
@click.argument("path")
@click.option("--sizes", is_flag=True,
              help="Also count the objects and stored bytes of every level (lists every "
              "object: on S3, one request per 1000 objects).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@s3_options
@reports_errors
def info_command(path: str, sizes: bool, as_json: bool, s3: S3Options) -> None:
    """Show the multiscale images of PATH: an N5 tree, any group in it, an OME-Zarr (0.4 or
    0.5) tree, a dataset folder (its N5 images and precomputed volumes) or a precomputed
    volume, local or s3://. Per level: shape, dtype, chunks, codec, voxel size
    and translation (C order: z, y, x), where each value came from, and what is wrong.
    Exits non-zero when an image cannot be read or mapped."""
    from migrate.check.info import render_info, tree_info

    info = tree_info(path, sizes=sizes, s3=s3)
    if as_json:
        click.echo(json.dumps(info.to_json(), indent=2))
    else:
        click.echo(render_info(info), nl=False)
    errors = info.errors
    if errors:
        first = errors[0].removeprefix("error: ")
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise MigrationError(first + more)
