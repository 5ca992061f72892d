"""Preview planes, pure numpy: place a plane's voxels on a square physical pixel grid, set
its contrast from percentiles, colour label ids, and lay labels over EM.

Axis order: volumes and their ``scale``/``translation`` are **C order** (z, y, x). A plane
is a 2-D array ``(rows, columns)``: ``xy`` is (y, x), ``xz`` is (z, x), ``yz`` is (z, y) —
each shown as if looked at along the missing axis, rows growing downwards. Voxel ``i`` of
an axis has its centre at ``i * scale + translation`` and spans half a voxel either side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

PLANES: dict[str, tuple[int, int, int]] = {"xy": (0, 1, 2), "xz": (1, 0, 2), "yz": (2, 0, 1)}
"""Plane name → (normal axis, row axis, column axis), as C-order axis indices of (z, y, x)."""

U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class AxisGrid:
    """Display pixels along one axis: ``count`` pixels of ``pixel`` physical units each,
    the first starting at ``start``."""

    start: float
    pixel: float
    count: int

    def centres(self) -> npt.NDArray[np.float64]:
        return self.start + (np.arange(self.count, dtype=np.float64) + 0.5) * self.pixel


def pixel_size(scale: tuple[float, ...]) -> float:
    """The display pixel of a level: its finest voxel spacing, so that no axis loses detail
    and a coarser axis is stretched to its true length."""
    return min(scale)


def image_grid(
    shape: tuple[int, ...], scale: tuple[float, ...], translation: tuple[float, ...], pixel: float
) -> tuple[AxisGrid, ...]:
    """Per axis (C order), the grid of square ``pixel``-sized display pixels covering the
    level's physical extent, from the outer edge of voxel 0 to that of the last voxel."""
    return tuple(
        AxisGrid(t - s / 2, pixel, max(1, round(n * s / pixel)))
        for n, s, t in zip(shape, scale, translation, strict=True)
    )


def voxel_indices(
    grid: AxisGrid, size: int, scale: float, translation: float
) -> npt.NDArray[np.int64]:
    """For each display pixel of ``grid``, the index of the voxel (of an axis of ``size``
    voxels placed by ``scale``/``translation``) under its centre; -1 outside the axis."""
    index = np.floor((grid.centres() - (translation - scale / 2)) / scale + 1e-9).astype(np.int64)
    index[(index < 0) | (index >= size)] = -1
    return index


def voxel_index(position: float, size: int, scale: float, translation: float) -> int:
    """The voxel whose extent holds physical ``position`` (clamped to the axis)."""
    index = math.floor((position - (translation - scale / 2)) / scale + 1e-9)
    return min(max(index, 0), size - 1)


def resample(
    plane: npt.NDArray[Any],
    rows: npt.NDArray[np.int64],
    columns: npt.NDArray[np.int64],
    fill: Any = 0,
) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
    """``plane`` (rows, columns) sampled at voxel indices ``rows`` × ``columns`` (nearest
    voxel, -1: outside): the resampled plane and the mask of pixels inside the plane."""
    inside = (rows >= 0)[:, None] & (columns >= 0)[None, :]
    out = plane[np.ix_(np.maximum(rows, 0), np.maximum(columns, 0))].copy()
    out[~inside] = fill
    return out, inside


def percentile_window(
    planes: list[npt.NDArray[Any]], low: float = 0.5, high: float = 99.5
) -> tuple[float, float]:
    """The contrast window (``low``-th, ``high``-th percentile) of the finite values of
    ``planes`` together; never empty (``hi > lo``)."""
    values = np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in planes])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(values, [low, high]))
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def to_grey(plane: npt.NDArray[Any], window: tuple[float, float]) -> U8:
    """``plane`` as 8-bit grey: ``window[0]`` and below black, ``window[1]`` and above white."""
    lo, hi = window
    values = np.asarray(plane, dtype=np.float64)
    scaled = np.clip((values - lo) / (hi - lo), 0.0, 1.0) * 255.0
    return np.nan_to_num(np.rint(scaled), nan=0.0).astype(np.uint8)


def _mix(ids: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64's finaliser: neighbouring ids get unrelated hashes."""
    h = ids + np.uint64(0x9E3779B97F4A7C15)
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def label_colours(ids: npt.NDArray[Any]) -> U8:
    """An RGB colour per label id (..., 3): 0 (background) black; every other id a bright,
    saturated colour chosen by hashing the id, the same in every plane and image."""
    flat = np.asarray(ids).ravel()
    unique, inverse = np.unique(flat, return_inverse=True)
    with np.errstate(over="ignore"):
        hashed = _mix(unique.astype(np.uint64))
    hue = (hashed >> np.uint64(40)).astype(np.float64) / float(1 << 24)
    saturation = 0.65 + (hashed >> np.uint64(20) & np.uint64(255)).astype(np.float64) / 255 * 0.3
    colours = _hsv_to_rgb(hue, saturation, np.ones_like(hue))
    colours[unique == 0] = 0
    return colours[inverse].reshape((*np.shape(ids), 3))


def _hsv_to_rgb(
    h: npt.NDArray[np.float64], s: npt.NDArray[np.float64], v: npt.NDArray[np.float64]
) -> U8:
    i = np.floor(h * 6).astype(np.int64) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack(
        [
            np.stack([v, t, p], -1),
            np.stack([q, v, p], -1),
            np.stack([p, v, t], -1),
            np.stack([p, q, v], -1),
            np.stack([t, p, v], -1),
            np.stack([v, p, q], -1),
        ]
    )
    rgb: npt.NDArray[np.float64] = table[i, np.arange(h.size)]
    return np.rint(rgb * 255).astype(np.uint8)


def grey_rgb(grey: U8) -> U8:
    return np.repeat(grey[..., None], 3, axis=-1)


def overlay(grey: U8, ids: npt.NDArray[Any], alpha: float = 0.5) -> U8:
    """Label ``ids`` (0: none) laid over the ``grey`` plane of the same shape, RGB: each
    labelled pixel mixes its label's colour with the grey, others stay grey."""
    rgb = grey_rgb(grey).astype(np.float64)
    labelled = np.asarray(ids) != 0
    colours = label_colours(ids).astype(np.float64)
    rgb[labelled] = (1 - alpha) * rgb[labelled] + alpha * colours[labelled]
    return np.rint(rgb).astype(np.uint8)
