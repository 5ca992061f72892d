"""Mirrored images: where each level lands once its stored order is turned around. Pure.

An image is *stored mirrored* along an axis when its stored index runs against that axis:
a negative scale in its COSEM or Neuroglancer metadata, or in its OpenOrganelle registry
transform (:mod:`migrate.source.registry`). OME-NGFF readers and Neuroglancer need positive
scales, so such an image is written mirrored along that axis (output voxel ``j`` is stored
voxel ``N − 1 − j``, ``N`` the level's extent), and every level gets the translation that
puts each voxel where it was. Per axis, with ``t`` the translation (position of the centre of
stored voxel 0), ``r`` the scale and ``N`` the extent of a level:

- Stated with a negative scale (``r < 0``): stored voxel ``i`` is at ``t + r·i``, so the
  first output voxel (stored ``N − 1``) is at ``t + r·(N − 1)``: that is the translation,
  and ``|r|`` the scale.
- Stated upright (``r > 0``) but known to be mirrored (the registry says so): the image is
  mirrored about the middle of its s0 extent, ``c = t₀ + (N₀ − 1)·r₀ / 2``, so stored voxel
  ``i`` of level ``k`` is at ``2c − t_k − r_k·i`` and level ``k``'s translation is

      t'_k = 2·t₀ + (N₀ − 1)·r₀ − t_k − (N_k − 1)·r_k

  s0 keeps its translation; a level's own translation and extent decide the rest. A
  windowed level whose last window was partial (``N_k > N₀ / f``) now starts with that
  partial window, half a window before s0's first voxel instead of half a window in.

The same reflection turns a level stated negative back upright when the user trusts an
upright registry entry over the N5 (the orientation is then the registry's). Sums of several
terms are computed with :func:`math.fsum` (one rounding). All vectors are in **C order**.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Vector = tuple[float, ...]


def stored_reversed(scale: Sequence[float]) -> tuple[bool, ...]:
    """Per axis: does the stated scale run against the axis (is it negative)? C order."""
    return tuple(value < 0 for value in scale)


def first_position(translation: float, scale: float, extent: int) -> float:
    """The lowest voxel centre of a level along one axis (stored voxel 0 is at
    ``translation``, each next one ``scale`` further; ``scale`` may be negative)."""
    if scale >= 0 or extent <= 1:
        return translation
    return math.fsum([translation, scale * (extent - 1)])


def oriented(
    scales: Sequence[Vector],
    translations: Sequence[Vector],
    shapes: Sequence[tuple[int, ...]],
    mirror: Sequence[bool],
) -> tuple[list[Vector], list[Vector]]:
    """The OME-NGFF scale and translation of every level (positive scales) when the output
    is mirrored along the axes ``mirror`` names (C order), from each level's stated signed
    scale and translation and its shape (see the module docstring)."""
    ndim = len(mirror)
    out_scales: list[list[float]] = [[0.0] * ndim for _ in scales]
    out_translations: list[list[float]] = [[0.0] * ndim for _ in scales]
    for axis in range(ndim):
        r0, t0, n0 = scales[0][axis], translations[0][axis], shapes[0][axis]
        reflect = mirror[axis] != (r0 < 0)
        low0 = first_position(t0, r0, n0)
        high0 = math.fsum([low0, abs(r0) * max(n0 - 1, 0)])
        for k, (scale, translation, shape) in enumerate(
            zip(scales, translations, shapes, strict=True)
        ):
            r, t, n = scale[axis], translation[axis], shape[axis]
            out_scales[k][axis] = abs(r)
            if not reflect:
                out_translations[k][axis] = first_position(t, r, n)
            elif r >= 0:  # the rule of the module docstring
                out_translations[k][axis] = math.fsum(
                    [2 * t0, r0 * max(n0 - 1, 0), -t, -r * max(n - 1, 0)]
                )
            else:  # positions p ↦ low0 + high0 − p: the lowest is stored voxel 0's image
                out_translations[k][axis] = math.fsum([low0, high0, -t])
    return [tuple(s) for s in out_scales], [tuple(t) for t in out_translations]


def retarget(
    scales: Sequence[Vector],
    translations: Sequence[Vector],
    axis: int,
    scale0: float,
    translation0: float,
) -> tuple[list[Vector], list[Vector]]:
    """Every level's (upright) scale and translation along ``axis`` moved and stretched so
    that s0 has ``scale0`` and ``translation0``: each level keeps its place and spacing in s0
    voxels. Used when the registry's s0 is trusted over the N5's (C order)."""
    old0 = scales[0][axis]
    base = translations[0][axis]
    new_scales, new_translations = [], []
    for scale, translation in zip(scales, translations, strict=True):
        s, t = list(scale), list(translation)
        if scale0 != old0:  # multiplied before divided: 6.72 * 1.0 / 3.36 is exactly 2.0
            s[axis] = scale[axis] * scale0 / old0
        t[axis] = math.fsum([translation0, (translation[axis] - base) * scale0 / old0])
        new_scales.append(tuple(s))
        new_translations.append(tuple(t))
    return new_scales, new_translations
