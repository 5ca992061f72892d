"""The per-level placement an OME-NGFF image group states: the first ``multiscales``
entry of its attributes and, per dataset, the scale and translation it gives voxel
indices. Pure. Every tuple in **C order** (the OME axes order, z, y, x for 3-D).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def ome_multiscale(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The first ``multiscales`` entry of image group attributes (0.4, or 0.5's ``ome``)."""
    ome = attributes.get("ome", attributes)
    return dict(ome["multiscales"][0])


def _transform(transforms: Any, ndim: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(scale, translation) of a list of OME coordinate transformations (scale first)."""
    scale, translation = [1.0] * ndim, [0.0] * ndim
    for item in transforms or ():
        if item.get("type") == "scale":
            scale = [float(v) for v in item["scale"]]
        elif item.get("type") == "translation":
            translation = [float(v) for v in item["translation"]]
    return tuple(scale), tuple(translation)


def level_transforms(
    multiscale: Mapping[str, Any],
) -> dict[str, tuple[tuple[float, ...], tuple[float, ...]]]:
    """Per dataset path: (scale, translation), C order, with the multiscale's own transform
    composed after the dataset's (``x ↦ (x · s + t) · S + T``)."""
    ndim = len(multiscale["axes"])
    outer_scale, outer_translation = _transform(multiscale.get("coordinateTransformations"), ndim)
    out = {}
    for dataset in multiscale["datasets"]:
        scale, translation = _transform(dataset.get("coordinateTransformations"), ndim)
        out[str(dataset["path"])] = (
            tuple(s * o for s, o in zip(scale, outer_scale, strict=True)),
            tuple(
                t * o + ot
                for t, o, ot in zip(translation, outer_scale, outer_translation, strict=True)
            ),
        )
    return out
