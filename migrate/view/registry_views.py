"""The registry's named views of a dataset, re-pointed at its migrated Zarr. Pure.

A manifest's ``views`` list, per view, its layers (source names), a ``position`` (x, y, z,
in the units of the sources' transforms: nanometres) and a zoom (``scale``). The portal drew
each source with Neuroglancer through its registry transform: voxel ``i`` over
``[T + S·i, T + S·(i + 1)]`` (corner-based; a negative ``S`` mirrored). Neuroglancer draws
the Zarr by its OME metadata: voxel ``j`` over ``t + r·j ± r/2``. A point ``P`` of the portal
is at the fractional voxel ``v = (P − L) / |S|`` of the upright image, ``L`` the low end of
the source's extent (``T``, or ``T − N·|S|`` when mirrored: ``N`` the s0 extent), so it is at
``t − r/2 + r·v`` in the Zarr (per axis; ``t``, ``r`` of s0 of the view's first layer in the
output, its reference). For a source whose registry transform agrees with its OME metadata
that is ``P − r/2``: the half voxel between corner and centre.

The zoom is read as the portal's: ``scale`` nanometres (the transform's unit) per screen
pixel, so ``crossSectionScale`` is that length over the state's finest voxel size along x.
A view without a position is centred like ``view``'s own state; a view none of whose
layers is in the output gets no link (a note says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from migrate.errors import MigrationError
from migrate.source.registry import n5_image_key, source_key
from migrate.source.units import normalize_unit
from migrate.view.state import ViewImage, si_unit, tidy, viewer_state
from schemas.plan import NgffVersion
from schemas.registry import Manifest, RegistrySource, RegistryView

POSITION_AXES = ("x", "y", "z")
"""The order of a registry view's ``position``."""


@dataclass
class ViewState:
    """One registry view as a state of the output (None: nothing of it is there)."""

    name: str
    state: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)


def _by_source(manifest: Manifest, images: Sequence[ViewImage]) -> dict[str, ViewImage]:
    """Each registry source name → the output image migrated from it."""
    keys = {n5_image_key(image.source_path): image for image in images if image.source_path}
    found = {}
    for source in manifest.sources.values():
        key = source_key(source.url, manifest.name)
        if key is not None and key in keys:
            found[source.name] = keys[key]
    return found


def _unit_factor(unit: str) -> float:
    """Metres (or seconds) per ``unit`` as a registry transform writes it (``nm``)."""
    try:
        name = normalize_unit(unit, location="registry", field="units")
    except MigrationError:
        return 1.0
    return si_unit(name, "registry")[0]


def _moved_position(
    view: RegistryView,
    source: RegistrySource,
    image: ViewImage,
    dimensions: dict[str, list[float | str]],
) -> list[float] | None:
    """The view's position in the state's coordinates (see the module docstring); None when
    the view has none or an axis cannot be matched by name."""
    if view.position is None or len(view.position) != len(POSITION_AXES):
        return None
    transform = source.transform
    spatial = image.spatial()
    out = []
    for name, (size, _unit) in dimensions.items():
        if name not in POSITION_AXES or name not in transform.axes or name not in spatial:
            return None
        k = transform.axes.index(name)
        factor = _unit_factor(transform.units[k])
        point = view.position[POSITION_AXES.index(name)] * factor
        scale = transform.scale[k] * factor
        translate = transform.translate[k] * factor
        extent = image.shape[image.axes.index(name)]
        low = translate if scale > 0 else translate - extent * abs(scale)
        voxel, origin, _ = spatial[name]
        voxels = (point - low) / abs(scale)
        out.append(tidy((origin - voxel / 2 + voxel * voxels) / float(size)))
    return out


def registry_view_states(
    manifest: Manifest, images: Sequence[ViewImage], version: NgffVersion
) -> list[ViewState]:
    """Every view of ``manifest`` as a state of the output whose finished ``images`` are
    given (each with its source path, to be matched with the registry's sources)."""
    by_source = _by_source(manifest, images)
    states = []
    for view in manifest.views:
        present = [by_source[name] for name in view.sources if name in by_source]
        missing = [name for name in view.sources if name not in by_source]
        notes = [f"not in this output: {', '.join(missing)}"] if missing else []
        if not present:
            states.append(ViewState(view.name, None, notes))
            continue
        state = viewer_state(present, version)
        reference = next(name for name in view.sources if name in by_source)
        position = _moved_position(
            view, manifest.sources[reference], by_source[reference], state["dimensions"]
        )
        if position is not None:
            state["position"] = position
        elif view.position is not None:
            notes.append("its position could not be matched to the output's axes (centred)")
        if view.scale is not None and "x" in state["dimensions"]:
            unit = manifest.sources[reference].transform.units[0]
            size = float(state["dimensions"]["x"][0])
            state["crossSectionScale"] = tidy(view.scale * _unit_factor(unit) / size)
        states.append(ViewState(view.name, state, notes))
    return states
