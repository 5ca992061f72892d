"""``cellmap-migrate view``: open an output in Neuroglancer (a link; a local server for a
local output), or re-point an old N5 state at it (``--from-state``)."""

from __future__ import annotations

import json
import webbrowser
from pathlib import Path
from typing import Any

import click

from migrate.cli.commands import cli, reports_errors, s3_options
from migrate.errors import MigrationError
from migrate.storage import LocalStore, S3Options, open_store
from migrate.view.link import DEFAULT_NEUROGLANCER_URL, state_from_link, state_link
from migrate.view.state import ViewImage, viewer_state
from schemas.plan import NgffVersion

DEFAULT_PORT = 8777


def read_old_state(given: str) -> dict[str, Any]:
    """The state of ``--from-state``: a file (state JSON, or a link) or a link."""
    try:
        text = Path(given).read_text() if Path(given).is_file() else given
    except OSError:  # a long link is no file name
        text = given
    try:
        value = json.loads(text)
    except ValueError:
        try:
            return state_from_link(text.strip())
        except ValueError as exc:
            raise MigrationError(
                f"{given[:80]}: --from-state: neither a state JSON nor a Neuroglancer link ({exc})"
            ) from None
    if not isinstance(value, dict):
        raise MigrationError(f"{given[:80]}: --from-state: the state is not a JSON object")
    return value


def _state(version: NgffVersion, images: list[ViewImage], from_state: str | None) -> Any:
    if from_state is None:
        state = viewer_state(images, version)
        hidden = [layer["name"] for layer in state["layers"] if layer.get("visible") is False]
        if hidden:
            shown = [layer["name"] for layer in state["layers"] if layer["name"] not in hidden]
            click.echo(
                f"shown: {', '.join(shown)}; listed but hidden (click a layer's name in "
                f"Neuroglancer to show it): {', '.join(hidden)}",
                err=True,
            )
        return state
    from migrate.view.from_state import StateError, convert_state

    try:
        converted = convert_state(read_old_state(from_state), images, version)
    except StateError as exc:
        raise MigrationError(f"{from_state[:80]}: --from-state: {exc}") from None
    for line in converted.repointed:
        click.echo(f"re-pointed {line}", err=True)
    for note in converted.notes:
        click.echo(f"note: {note}", err=True)
    return converted.state


@cli.command(name="view")
@click.argument("path")
@click.option("--open", "open_browser", is_flag=True, help="Open the link in a web browser.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT,
              show_default=True,
              help="Local outputs: serve on 127.0.0.1 at this port (0: any port).")  # fmt: skip
@click.option("--neuroglancer-url", default=DEFAULT_NEUROGLANCER_URL, show_default=True,
              metavar="URL", help="The Neuroglancer instance the link opens.")  # fmt: skip
@click.option("--from-state", metavar="URL_OR_FILE",
              help="Convert this Neuroglancer state of the N5 source (a link, or a file with "
              "the state JSON) into one that shows PATH at the same place.")  # fmt: skip
@s3_options
@reports_errors
def view_command(
    path: str,
    open_browser: bool,
    port: int,
    neuroglancer_url: str,
    from_state: str | None,
    s3: S3Options,
) -> None:
    """Print a Neuroglancer link that shows the output PATH: every finished image a layer,
    the first EM image and the label images shown, the others listed but hidden.

    EM and LM become image layers (contrast from the data), label images segmentation
    layers, in one coordinate space. For s3:// outputs the link reads the bucket's HTTPS
    URLs; a local output is served on 127.0.0.1 (with CORS) until Ctrl-C.
    """
    from migrate.check.inventory import started_images
    from migrate.view.scan import output_images

    store = open_store(path, read_only=True, s3=s3)
    unfinished = [started.image.dest_path for started in started_images(store)]
    if unfinished:
        click.echo(
            f"not shown, still being migrated: {', '.join(unfinished)} "
            "(run the same convert again to finish)",
            err=True,
        )
    if not isinstance(store, LocalStore):
        version, images = output_images(store)
        link = state_link(_state(version, images, from_state), neuroglancer_url)
        click.echo(link)
        if open_browser:
            webbrowser.open(link)
        return
    from migrate.view.serve import make_server

    if not store.root.is_dir():
        raise MigrationError(f"{store.url}: no such directory")
    server = make_server(str(store.root), port)
    try:
        version, images = output_images(store, server.base_url)
        link = state_link(_state(version, images, from_state), neuroglancer_url)
        click.echo(f"serving {store.url} at {server.base_url} (Ctrl-C to stop)", err=True)
        click.echo(link)
        if open_browser:
            webbrowser.open(link)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            click.echo("stopped serving", err=True)
    finally:
        server.server_close()
