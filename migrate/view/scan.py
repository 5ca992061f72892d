"""What an output holds for the viewer: its finished images, their s0 geometry and a display
range from a coarse level's values. The I/O of the ``view`` room (reads only).

Per-axis values are in **C order** (z, y, x), as in the OME metadata.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from migrate.check.inventory import FinishedImage, finished_images
from migrate.copy import tsio
from migrate.dest import marks
from migrate.errors import MigrationError
from migrate.storage import LocalStore, S3Store, Store, join_key
from migrate.view.state import ViewImage, percentile_range
from schemas.plan import NgffVersion

SAMPLE_VOXELS = 2**21
"""The contrast range is computed from the finest level with at most this many voxels (or
the coarsest level): a few MB read per image, locally or from S3."""


def s3_https_url(store: S3Store, key: str = "") -> str:
    """The HTTPS URL of ``key`` in an S3 store: virtual-hosted style on AWS
    (``https://BUCKET.s3.amazonaws.com/prefix/key``), path style under a custom endpoint
    (``ENDPOINT/BUCKET/prefix/key``)."""
    path = join_key(store.prefix, key)
    endpoint = store.settings.endpoint_url
    base = (
        f"{endpoint.rstrip('/')}/{store.bucket}"
        if endpoint
        else f"https://{store.bucket}.s3.amazonaws.com"
    )
    return f"{base}/{path}" if path else base


def browser_base(store: Store, local_base: str | None) -> Callable[[str], str]:
    """The function that gives the browser URL of a path in ``store``: the bucket's HTTPS
    URL for S3, the local server's (``local_base``, e.g. http://127.0.0.1:8777) otherwise."""
    if isinstance(store, S3Store):
        return lambda path: s3_https_url(store, path)
    if local_base is None:
        raise MigrationError(f"{store.url}: a local output needs the local server's address")
    return lambda path: f"{local_base.rstrip('/')}/{join_key(path)}"


def _group_ome(store: Store, path: str, version: NgffVersion) -> dict[str, Any]:
    attrs: Any = marks.group_attributes(store, path) or {}
    return dict(attrs.get("ome", attrs) if version == "0.5" else attrs)


def _sample_level(image: FinishedImage) -> int:
    for index, level in enumerate(image.levels):
        if math.prod(level.shape) <= SAMPLE_VOXELS:
            return index
    return len(image.levels) - 1


def contrast_range(store: Store, image: FinishedImage) -> tuple[float, float]:
    """Percentiles of a coarse level of ``image`` (see :func:`percentile_range`)."""
    level = image.levels[_sample_level(image)]
    try:
        array = tsio.open_dest_readonly(store, level.dest_path, image.ngff_version, 2)
        values = array.read().result()
    except Exception as exc:  # TensorStore raises ValueError and friends
        raise MigrationError(
            f"{store.display(level.dest_path)}: cannot read it for the contrast range: "
            f"{tsio.ts_error_text(exc)}"
        ) from None
    return percentile_range(values)


def view_image(store: Store, image: FinishedImage, url: Callable[[str], str]) -> ViewImage:
    """One finished image as the viewer needs it (reads its group and a coarse level)."""
    ome = _group_ome(store, image.dest_path, image.ngff_version)
    where = store.display(image.dest_path)
    try:
        multiscale = ome["multiscales"][0]
        axes = multiscale["axes"]
        transforms = multiscale["datasets"][0]["coordinateTransformations"]
    except (KeyError, IndexError, TypeError):
        raise MigrationError(f"{where}: no multiscales[0] axes and datasets") from None
    scale = next(t["scale"] for t in transforms if t["type"] == "scale")
    translation = next(
        (t["translation"] for t in transforms if t["type"] == "translation"), [0.0] * len(axes)
    )
    segmentation = image.kind == "label" and image.levels[0].dtype.startswith("uint")
    channel = omero_channel(ome)
    contrast: tuple[float, float] | None = None
    if channel is not None:
        window = channel["window"]
        contrast = (float(window["start"]), float(window["end"]))
    elif not segmentation:
        contrast = contrast_range(store, image)
    return ViewImage(
        path=image.dest_path,
        url=url(image.dest_path),
        kind=image.kind,
        dtype=image.levels[0].dtype,
        axes=tuple(str(axis["name"]) for axis in axes),
        axis_types=tuple(axis.get("type") for axis in axes),
        units=tuple(axis.get("unit") for axis in axes),
        scale=tuple(float(v) for v in scale),
        translation=tuple(float(v) for v in translation),
        shape=image.levels[0].shape,
        contrast=None if segmentation else contrast,
        source_path=image.source_path,
        colour=None if channel is None else str(channel["color"]),
        inverted=bool(channel and channel.get("inverted")),
    )


def omero_channel(ome: dict[str, Any]) -> dict[str, Any] | None:
    """The first ``omero`` channel of an image's OME attributes, when it has a window and a
    colour (what ``convert --registry`` writes); None otherwise."""
    omero = ome.get("omero")
    channels = omero.get("channels") if isinstance(omero, dict) else None
    if not isinstance(channels, list) or not channels or not isinstance(channels[0], dict):
        return None
    channel = channels[0]
    window = channel.get("window")
    if not isinstance(window, dict) or not {"start", "end"} <= set(window):
        return None
    if not isinstance(channel.get("color"), str):
        return None
    return channel


def output_images(
    store: Store, local_base: str | None = None
) -> tuple[NgffVersion, list[ViewImage]]:
    """The OME-NGFF version and every finished image of the output at ``store``; an output
    with none (or with 0.4 and 0.5 images mixed) is an error."""
    found = list(finished_images(store))
    if not found:
        raise MigrationError(
            f"{store.url}: no finished image (no OME-NGFF image cellmap-migrate completed)"
        )
    versions = {image.ngff_version for image in found}
    if len(versions) > 1:
        raise MigrationError(f"{store.url}: holds both OME-NGFF 0.4 and 0.5 images")
    url = browser_base(store, local_base)
    images = store.map(lambda image: view_image(store, image, url), found)
    return found[0].ngff_version, images


def local_root(store: Store) -> str:
    """The directory the local server serves for a local store."""
    if not isinstance(store, LocalStore):
        raise MigrationError(f"{store.url}: only a local output is served")
    return str(store.root)


def convert_hint(store: Store) -> str:
    """What ``convert`` prints once an output is complete: the Neuroglancer link of an S3
    output (its bucket's HTTPS URLs), or how to serve a local one."""
    from migrate.view.link import state_link
    from migrate.view.state import viewer_state

    if isinstance(store, S3Store):
        try:
            version, images = output_images(store)
            link = state_link(viewer_state(images, version))
        except MigrationError as exc:  # the migration itself succeeded: say so, and why not
            return f"no Neuroglancer link: {exc}"
        return f"open it in Neuroglancer: {link}"
    return f"look at it in Neuroglancer: cellmap-migrate view {store.url}"
