"""The Neuroglancer viewer state of an OME-NGFF output. Pure: values in, JSON value out.

Every finished image of the output is one layer: label images (``image-label``) are
``segmentation`` layers, everything else ``image`` layers with a contrast range in their
shader (Neuroglancer shows uint16 EM flat grey without one, and ignores ``image-label``).
The first EM image and the label images are shown; the other layers are listed, hidden.
All layers share one coordinate space named by the OME axes; the state lists its dimensions
**x, y, z first** and displays x, y, z, so the "xy" panel shows x horizontally (Neuroglancer
would otherwise take the OME order z, y, x from the first layer).

OME axes, scales, translations and shapes are in **C order** (z, y, x) here, as in the
metadata; the state's ``dimensions`` and ``position`` are in display order (x, y, z, ...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from migrate.errors import MigrationError
from schemas.plan import NgffVersion

SI_PREFIXES = {
    "yocto": -24, "zepto": -21, "atto": -18, "femto": -15, "pico": -12, "nano": -9,
    "micro": -6, "milli": -3, "centi": -2, "deci": -1, "": 0, "deca": 1, "hecto": 2,
    "kilo": 3, "mega": 6, "giga": 9, "tera": 12, "peta": 15, "exa": 18, "zetta": 21,
    "yotta": 24,
}  # fmt: skip
OTHER_UNITS = {
    "angstrom": (1e-10, "m"), "foot": (0.3048, "m"), "inch": (0.0254, "m"),
    "mile": (1609.34, "m"), "parsec": (3.0856775814913673e16, "m"), "yard": (0.9144, "m"),
    "minute": (60.0, "s"), "hour": (3600.0, "s"), "day": (86400.0, "s"),
}  # fmt: skip
"""OME unit names Neuroglancer reads besides the SI-prefixed meters and seconds (its
``src/datasource/zarr/ome.ts`` has the same table)."""

DISPLAY_FIRST = ("x", "y", "z")
"""Spatial axes in the order Neuroglancer should display them."""


def si_unit(unit: str | None, where: str) -> tuple[float, str]:
    """(factor, base unit) of an OME unit name: ``nanometer`` → (1e-9, "m"); none → (1, "")."""
    if unit is None:
        return 1.0, ""
    if unit in OTHER_UNITS:
        return OTHER_UNITS[unit]
    for base, symbol in (("meter", "m"), ("second", "s")):
        if unit.endswith(base) and unit[: -len(base)] in SI_PREFIXES:
            return 10.0 ** SI_PREFIXES[unit[: -len(base)]], symbol
    raise MigrationError(f"{where}: unit {unit!r} has no Neuroglancer equivalent")


@dataclass(frozen=True)
class ViewImage:
    """One finished image of an output, as the viewer needs it. Per-axis values: C order."""

    path: str
    """The image group inside the output, e.g. ``em/fibsem-uint16``."""
    url: str
    """Where a browser reads the image group (https://… or http://127.0.0.1:PORT/…)."""
    kind: Literal["image", "label"]
    dtype: str
    axes: tuple[str, ...]
    axis_types: tuple[str | None, ...]
    units: tuple[str | None, ...]
    scale: tuple[float, ...]
    """s0's OME scale."""
    translation: tuple[float, ...]
    """s0's OME translation: the physical position of voxel 0's centre."""
    shape: tuple[int, ...]
    """s0's shape."""
    contrast: tuple[float, float] | None = None
    """The shader's display range (image layers), from the data's percentiles."""
    source_path: str = ""
    """The image's group in the source N5 root (from the output's provenance)."""

    def spatial(self) -> dict[str, tuple[float, float, str]]:
        """Axis name → (s0 voxel size in base units, translation in base units, base unit),
        for every axis Neuroglancer places in the global coordinate space (not channels)."""
        out = {}
        for i, name in enumerate(self.axes):
            if self.axis_types[i] == "channel":
                continue
            factor, base = si_unit(self.units[i], f"{self.path}: axis {name!r}")
            out[name] = (self.scale[i] * factor, self.translation[i] * factor, base)
        return out


def layer_source(version: NgffVersion, url: str) -> str:
    """Neuroglancer's data source of an OME-NGFF image group: ``zarr://`` reads Zarr v2
    (OME 0.4), ``zarr3://`` Zarr v3 (OME 0.5)."""
    return ("zarr://" if version == "0.4" else "zarr3://") + url.rstrip("/") + "/"


def _number(value: float, dtype: str) -> float | int:
    return round(value) if not dtype.startswith("float") else float(f"{value:.6g}")


def image_shader(contrast: tuple[float, float], dtype: str) -> str:
    """A grayscale shader whose ``invlerp`` control maps ``contrast`` to black…white."""
    low, high = (_number(v, dtype) for v in contrast)
    return (
        f"#uicontrol invlerp normalized(range=[{low}, {high}])\n"
        "void main() {\n  emitGrayscale(normalized());\n}\n"
    )


def image_layer(image: ViewImage, version: NgffVersion) -> dict[str, Any]:
    """The layer of one image: ``segmentation`` for an unsigned-integer label image
    (Neuroglancer's segmentations are unsigned), ``image`` with a contrast shader otherwise."""
    source = layer_source(version, image.url)
    if image.kind == "label" and image.dtype.startswith("uint"):
        return {"type": "segmentation", "source": source, "name": image.path}
    layer: dict[str, Any] = {"type": "image", "source": source, "name": image.path}
    if image.contrast is not None:
        layer["shader"] = image_shader(image.contrast, image.dtype)
    return layer


def layer_order(images: Sequence[ViewImage]) -> list[ViewImage]:
    """Image layers first (EM before LM and others), then label images on top."""

    def key(image: ViewImage) -> tuple[int, int, str]:
        em = 0 if "/em/" in f"/{image.path}/" else 1
        return (0 if image.kind == "image" else 1, em, image.path)

    return sorted(images, key=key)


def shown_images(ordered: Sequence[ViewImage]) -> list[ViewImage]:
    """The images a state shows when it opens: the first image layer of ``ordered`` (the
    first EM image, see :func:`layer_order`) and every label image. The others are listed
    as hidden layers (``"visible": false``): drawn on top of each other they would hide
    one another, and a click on a layer's name shows it."""
    first = next((image for image in ordered if image.kind == "image"), None)
    return [image for image in ordered if image is first or image.kind == "label"]


def coordinate_space(images: Sequence[ViewImage]) -> dict[str, list[float | str]]:
    """The state's ``dimensions``: every axis of every image, x, y, z first, each with the
    finest s0 voxel size any image has on it (in meters for space axes)."""
    sizes: dict[str, tuple[float, str]] = {}
    for image in images:
        for name, (size, _, unit) in image.spatial().items():
            if name in sizes and sizes[name][1] != unit:
                raise MigrationError(
                    f"{image.path}: axis {name!r} is in {unit or 'no unit'} here and in "
                    f"{sizes[name][1] or 'no unit'} elsewhere; one viewer cannot show both"
                )
            if name not in sizes or size < sizes[name][0]:
                sizes[name] = (size, unit)
    order = [n for n in DISPLAY_FIRST if n in sizes] + [n for n in sizes if n not in DISPLAY_FIRST]
    return {name: [tidy(sizes[name][0]), sizes[name][1]] for name in order}


def centre(image: ViewImage, dimensions: dict[str, list[float | str]]) -> list[float]:
    """The middle of ``image`` in the state's coordinates (units of ``dimensions``, in its
    order): halfway between the centres of its first and last s0 voxels."""
    spatial = image.spatial()
    position = []
    for name, (size, _unit) in dimensions.items():
        if name not in spatial:
            position.append(0.0)
            continue
        voxel, origin, _ = spatial[name]
        extent = image.shape[image.axes.index(name)]
        position.append(tidy((origin + voxel * (extent - 1) / 2) / float(size)))
    return position


def tidy(value: float) -> float:
    """``value`` without float noise (``5.240000000000001e-09`` → ``5.24e-09``): rounded at
    12 significant digits, far below any voxel size's precision."""
    return float(f"{value:.12g}")


def viewer_state(images: Sequence[ViewImage], version: NgffVersion) -> dict[str, Any]:
    """The Neuroglancer state of every image of an output (at least one): all listed as
    layers, the first EM image and the label images shown, the rest hidden
    (:func:`shown_images`)."""
    if not images:
        raise MigrationError("no finished image to show")
    ordered = layer_order(images)
    dimensions = coordinate_space(ordered)
    display = [name for name in DISPLAY_FIRST if name in dimensions]
    reference = ordered[0]
    shown = shown_images(ordered)
    widest = max(
        reference.shape[reference.axes.index(name)] * reference.spatial()[name][0] / float(size)
        for name, (size, _unit) in dimensions.items()
        if name in reference.spatial()
    )
    return {
        "dimensions": dimensions,
        "displayDimensions": display,
        "position": centre(reference, dimensions),
        "crossSectionScale": max(1.0, float(f"{widest / 800:.3g}")),
        "layers": [
            image_layer(image, version)
            if image in shown
            else {**image_layer(image, version), "visible": False}
            for image in ordered
        ],
        "selectedLayer": {"layer": reference.path, "visible": False},
        "layout": "4panel" if len(display) == 3 else "xy",
    }


def percentile_range(values: Any) -> tuple[float, float]:
    """The 0.5th and 99.5th percentiles of the non-zero ``values`` (a numpy array; zero is
    what missing blocks and padding read as), or (0, 1) when all are zero."""
    import numpy as np

    flat = np.asarray(values).ravel()
    flat = flat[flat != 0]
    if flat.dtype.kind == "f":
        flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(flat, [0.5, 99.5]))
    if not math.isfinite(low) or not math.isfinite(high):  # pragma: no cover
        return 0.0, 1.0
    return (low, high) if high > low else (low, low + 1.0)
