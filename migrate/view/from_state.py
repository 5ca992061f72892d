"""Old Neuroglancer states of an N5 tree (and of a dataset's precomputed volumes), re-pointed
at its migrated Zarr. Pure.

A state that showed the N5 (``n5://…/<dataset>.n5/em/fibsem-uint16``) places each voxel by
its N5 grid alone: dimensions x, y, z (the N5 order), voxel ``i`` covering
``[i, i + 1) × voxel size`` (its corner at ``i``), and no COSEM translation. Neuroglancer
places an OME-NGFF image by its metadata instead: voxel ``i``'s centre is at
``translation + i × scale``. So the same voxel is ``translation − scale / 2`` away, per axis
(``scale`` and ``translation`` of s0; every level of a Cellmap pyramid gives the same offset,
since a windowed level's origin moves by ``(f − 1) / 2`` s0 voxels). Moving a point of the
old state by that offset puts it on the same voxel of the Zarr:

    new physical position = old physical position + (translation − scale / 2)

with the old physical position = coordinate × the old dimension's scale. Positions and
annotations are moved by the offset of the state's first re-pointed layer (its reference
image: EM is usually first); the other layers now sit where their own metadata puts them.

Axes are matched by name, never by index: the new state lists its dimensions x, y, z (like
``view``'s states) whatever order the old one used, and rewrites every coordinate in that
order. OME-side values (:class:`~migrate.view.state.ViewImage`) are in C order (z, y, x).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from migrate.view.state import ViewImage, coordinate_space, layer_source, tidy
from schemas.plan import NgffVersion

N5_SOURCE = re.compile(r"^(?:n5://)?(?P<url>.*?\.n5)(?:/(?P<path>[^|]*?))?/?(?:\|n5:?.*)?$")
"""An N5 data source, legacy (``n5://s3://bucket/ds/ds.n5/em/x``) or pipeline style
(``s3://bucket/ds/ds.n5/em/x|n5:``): the N5 root and the path inside it."""
LEVEL = re.compile(r"/s\d+$")

UNIT_FACTORS = {
    "m": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "nm": 1e-9, "pm": 1e-12, "s": 1.0,
    "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9, "": 1.0,
}  # fmt: skip
"""Unit symbols of Neuroglancer state dimensions (normally plain ``m``), in base units."""

POINT_KEYS = ("point", "pointA", "pointB", "center")
"""Annotation coordinates that are positions (moved); ``radii`` are lengths (only rescaled)."""


class StateError(ValueError):
    """The old state cannot be converted (the message says which key)."""


@dataclass
class Converted:
    state: dict[str, Any]
    repointed: list[str] = field(default_factory=list)
    """``old source → new source`` for every re-pointed layer."""
    notes: list[str] = field(default_factory=list)
    """What was left as it was, or dropped, and why."""


def n5_image_path(source: str) -> str | None:
    """The image group inside the N5 root that a layer source names, or None when the
    source is not N5 (a scale level names its image: ``…/fibsem-uint16/s0``)."""
    if ".n5" not in source or (source.startswith(("zarr", "precomputed")) and "|n5" not in source):
        return None
    match = N5_SOURCE.match(source.strip())
    if match is None or not match.group("path"):
        return None
    return LEVEL.sub("", match.group("path").strip("/"))


PRECOMPUTED_SOURCE = re.compile(
    r"^(?:precomputed://)?.*?/(?P<path>neuroglancer/[^/|]+/[^/|]+\.precomputed)/?"
    r"(?:\|neuroglancer-precomputed:?.*)?$"
)
"""A precomputed volume of a Cellmap dataset, legacy (``precomputed://s3://bucket/ds/
neuroglancer/em/x.precomputed``) or pipeline style (``…x.precomputed|neuroglancer-
precomputed:``): its path inside the dataset folder."""


def precomputed_volume_path(source: str) -> str | None:
    """The volume path inside its dataset (``neuroglancer/em/x.precomputed``) that a layer
    source names, or None when the source is not a precomputed volume of a dataset."""
    if not (source.startswith("precomputed://") or "|neuroglancer-precomputed" in source):
        return None
    match = PRECOMPUTED_SOURCE.match(source.strip())
    return match.group("path") if match else None


def _source_url(source: Any) -> str | None:
    if isinstance(source, str):
        return source
    if isinstance(source, dict) and isinstance(source.get("url"), str):
        return str(source["url"])
    return None


def _dimensions(value: Any, where: str) -> dict[str, tuple[float, str]]:
    """A state's ``dimensions`` as name → (scale, unit), in its order."""
    if not isinstance(value, dict):
        raise StateError(f"{where}: expected an object of name: [scale, unit]")
    out = {}
    for name, entry in value.items():
        if (
            not isinstance(entry, list)
            or len(entry) != 2
            or not isinstance(entry[0], int | float)
            or not isinstance(entry[1], str)
        ):
            raise StateError(f"{where}.{name}: expected [scale, unit], got {entry!r}")
        if entry[1] not in UNIT_FACTORS:
            raise StateError(f"{where}.{name}: unknown unit {entry[1]!r}")
        out[str(name)] = (float(entry[0]) * UNIT_FACTORS[entry[1]], entry[1])
    return out


def _n5_dimensions(image: ViewImage) -> dict[str, tuple[float, str]]:
    """What Neuroglancer shows the N5 of ``image`` in when a state names no dimensions:
    its s0 voxel size, N5 order (x, y, z)."""
    spatial = image.spatial()
    return {name: (spatial[name][0], spatial[name][2]) for name in reversed(image.axes)}


class _Mover:
    """Rewrites coordinates from the old dimensions to the new ones, shifted by ``offset``
    (base units per axis name)."""

    def __init__(
        self, new: dict[str, list[float | str]], offset: dict[str, float], images: str
    ) -> None:
        self.new = {name: float(entry[0]) for name, entry in new.items()}
        self.offset = offset
        self.images = images

    def point(
        self, values: Any, old: dict[str, tuple[float, str]], where: str, *, shift: bool
    ) -> list[float]:
        if not isinstance(values, list) or len(values) != len(old):
            raise StateError(f"{where}: expected {len(old)} coordinates, got {values!r}")
        by_name = dict(zip(old, values, strict=True))
        out = []
        for name, size in self.new.items():
            if name not in by_name:
                out.append(0.0)
                continue
            physical = float(by_name[name]) * old[name][0]
            if shift:
                physical += self.offset.get(name, 0.0)
            out.append(tidy(physical / size))
        return out


def _annotations(
    layer: dict[str, Any],
    mover: _Mover,
    old_global: dict[str, tuple[float, str]],
    new_dims: dict[str, list[float | str]],
    where: str,
) -> None:
    """Move a local annotation layer's annotations (in place), in its own dimensions."""
    source = layer.get("source")
    old = old_global
    if isinstance(source, dict) and isinstance(source.get("transform"), dict):
        transform = source["transform"]
        if "outputDimensions" in transform:
            old = _dimensions(transform["outputDimensions"], f"{where}.source.transform")
        if "matrix" in transform:
            raise StateError(f"{where}.source.transform: an annotation matrix is not supported")
        transform["outputDimensions"] = copy.deepcopy(new_dims)
    for index, annotation in enumerate(layer.get("annotations") or []):
        here = f"{where}.annotations[{index}]"
        if not isinstance(annotation, dict):
            raise StateError(f"{here}: expected an object")
        for key in POINT_KEYS:
            if key in annotation:
                annotation[key] = mover.point(annotation[key], old, f"{here}.{key}", shift=True)
        if "radii" in annotation:
            radii = annotation["radii"]
            annotation["radii"] = mover.point(radii, old, f"{here}.radii", shift=False)


def convert_state(
    old: dict[str, Any], images: Sequence[ViewImage], version: NgffVersion
) -> Converted:
    """The state that shows the migrated ``images`` (one output, OME ``version``) where
    ``old`` showed their N5 sources; raises :class:`StateError` naming the key at fault."""
    by_source = {image.source_path.strip("/"): image for image in images}
    state = copy.deepcopy(old)
    layers = state.get("layers")
    if isinstance(layers, dict):  # the old object form: name → layer
        layers = [{"name": name, **layer} for name, layer in layers.items()]
    if not isinstance(layers, list):
        raise StateError("layers: expected a list of layers")
    if "navigation" in state:
        raise StateError(
            "navigation: states older than Neuroglancer's 2020 format are not supported"
        )
    result = Converted(state)
    matched: list[tuple[dict[str, Any], ViewImage]] = []
    for index, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise StateError(f"layers[{index}]: expected an object")
        sources = layer.get("source")
        url = _source_url(sources[0] if isinstance(sources, list) and sources else sources)
        path = (n5_image_path(url) or precomputed_volume_path(url)) if url else None
        if path is None:
            continue
        image = by_source.get(path)
        if image is None:
            result.notes.append(f"layer {layer.get('name')!r}: {url} is not in this output; kept")
            continue
        new_source = layer_source(version, image.url)
        if isinstance(sources, dict | list) and (
            "transform" in (sources if isinstance(sources, dict) else sources[0])
        ):
            result.notes.append(
                f"layer {layer.get('name')!r}: its source transform (in N5 axes) was dropped"
            )
        layer["source"] = new_source
        result.repointed.append(f"{url} → {new_source}")
        matched.append((layer, image))
    if not matched:
        raise StateError(
            "layers: no layer shows an N5 image or precomputed volume of this output "
            "(sources like n5://…/<dataset>.n5/em/fibsem-uint16 or "
            "precomputed://…/<dataset>/neuroglancer/em/fibsem-uint8.precomputed)"
        )
    reference = next((image for layer, image in matched if layer.get("type") == "image"), None)
    reference = reference or matched[0][1]
    offset = {name: origin - size / 2 for name, (size, origin, _) in reference.spatial().items()}
    if reference.source_path.endswith(".precomputed"):
        # the old state placed the volume's voxel i at its corner (voxel_offset + i) × r:
        # its migration moved every voxel by −r_0 / 2 (README: the coordinate rule)
        offset = {name: -size / 2 for name, (size, _, _) in reference.spatial().items()}
    new_dims = coordinate_space([image for _, image in matched])
    old_dims = (
        _dimensions(state["dimensions"], "dimensions")
        if "dimensions" in state
        else _n5_dimensions(reference)
    )
    mover = _Mover(new_dims, offset, reference.path)
    if "position" in state:
        state["position"] = mover.point(state["position"], old_dims, "position", shift=True)
    for index, layer in enumerate(layers):
        if layer.get("type") == "annotation" and "annotations" in layer:
            _annotations(layer, mover, old_dims, new_dims, f"layers[{index}]")
    state["dimensions"] = new_dims
    state["displayDimensions"] = [name for name in ("x", "y", "z") if name in new_dims]
    state["layers"] = layers
    shift = ", ".join(f"{name} {value * 1e9:+g} nm" for name, value in offset.items())
    result.notes.append(f"positions moved by the offset of {reference.path}: {shift}")
    return result
