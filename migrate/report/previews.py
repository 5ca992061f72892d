"""The preview pictures of a report, as arrays: per image the three mid-planes of a coarse
level read from SRC (N5) and from DEST (Zarr) side by side, and per label image one overlay
on the EM. Reading goes through TensorStore (:mod:`migrate.copy.tsio`); the rest is
:mod:`migrate.report.planes`.

Axis order: C order (z, y, x) throughout; planes as described in :mod:`planes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from migrate.copy.tsio import open_dest_readonly, open_source_array, ts_error_text
from migrate.report.model import ReportImage, ReportLevel, short_unit
from migrate.report.planes import (
    PLANES,
    U8,
    grey_rgb,
    image_grid,
    label_colours,
    overlay,
    percentile_window,
    pixel_size,
    resample,
    to_grey,
    voxel_index,
    voxel_indices,
)
from migrate.storage import Store

MAX_SIDE = 512
"""The previews use the finest level whose planes fit in this many display pixels a side."""


@dataclass
class Picture:
    """One preview: an RGB array (rows, columns, 3), or why there is none."""

    title: str
    caption: str
    pixels: U8 | None = None
    problem: str | None = None


@dataclass
class PlanePair:
    plane: str
    caption: str
    source: Picture
    dest: Picture


@dataclass
class ImagePreviews:
    image: ReportImage
    level: ReportLevel | None
    pixel: float = 0.0
    window: tuple[float, float] | None = None
    pairs: list[PlanePair] = field(default_factory=list)
    overlay: list[Picture] = field(default_factory=list)
    overlay_on: str | None = None
    overlay_side: str = "dest"
    problem: str | None = None


def plane_sides(level: ReportLevel, pixel: float) -> dict[str, tuple[int, int]]:
    """(rows, columns) in display pixels of each plane of ``level`` at ``pixel``."""
    grid = image_grid(level.shape, level.scale, level.translation, pixel)
    return {name: (grid[r].count, grid[c].count) for name, (_, r, c) in PLANES.items()}


def preview_level(image: ReportImage, max_side: int = MAX_SIDE) -> ReportLevel:
    """The finest level whose planes fit in ``max_side`` display pixels, else the coarsest."""
    for level in image.levels:
        sides = plane_sides(level, pixel_size(level.scale))
        if max(max(side) for side in sides.values()) <= max_side:
            return level
    return image.levels[-1]


def display_pixel(level: ReportLevel, max_side: int = MAX_SIDE) -> float:
    """The side of a square display pixel, in physical units, for the previews of
    ``level``: its finest spacing, or, when the planes would still be longer than
    ``max_side`` pixels (the coarsest level of a long, thin image, say 5 × 6 × 4096),
    the length that makes the longest side ``max_side`` pixels. Square pixels keep the
    true aspect either way; a thin side keeps at least one pixel."""
    extent = max(n * s for n, s in zip(level.shape, level.scale, strict=True))
    return max(pixel_size(level.scale), extent / max_side)


def _read(array: Any, plane: str, index: int) -> npt.NDArray[Any]:
    """The 2-D plane ``plane`` at ``index`` along its normal axis of a C-order 3-D array."""
    normal = PLANES[plane][0]
    region: list[Any] = [slice(None)] * 3
    region[normal] = index
    return np.asarray(array[tuple(region)].read().result())


class Reader:
    """Opens each level once per side; an array that cannot be opened reads as a problem.
    Without ``dest_written`` (a dry run) DEST is not read at all, and overlays are drawn
    from the source."""

    def __init__(
        self, source: Store | None, dest: Store, workers: int = 2, *, dest_written: bool = True
    ) -> None:
        self.source = source
        self.dest = dest
        self.workers = workers
        self.dest_written = dest_written
        self.overlay_side = "dest" if dest_written else "source"
        self._open: dict[tuple[str, str], Any] = {}

    def array(self, side: str, image: ReportImage, level: ReportLevel) -> Any:
        key = (side, level.dest_path)
        if key not in self._open:
            try:
                if side == "source":
                    if self.source is None or level.source_metadata is None:
                        raise ValueError("the source is not known")
                    self._open[key] = open_source_array(
                        self.source, level.source_path, level.source_metadata, self.workers
                    )
                else:
                    self._open[key] = open_dest_readonly(
                        self.dest, level.dest_path, image.ngff_version, self.workers
                    )
            except Exception as exc:
                self._open[key] = exc
        return self._open[key]

    def plane(
        self, side: str, image: ReportImage, level: ReportLevel, plane: str, index: int
    ) -> npt.NDArray[Any] | str:
        """The plane, or why it cannot be read."""
        if side == "dest" and not self.dest_written:
            return "not written: a dry run"
        array = self.array(side, image, level)
        if isinstance(array, Exception):
            return f"cannot open {side}: {ts_error_text(array)}"
        try:
            return _read(array, plane, index)
        except Exception as exc:
            return f"cannot read {side}: {ts_error_text(exc)}"


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def image_previews(reader: Reader, image: ReportImage, max_side: int = MAX_SIDE) -> ImagePreviews:
    """Source beside destination, for the three mid-planes of the preview level."""
    if not image.spatial:
        return ImagePreviews(
            image, None, problem=f"no previews: axes {', '.join(image.axes)} are not 3 space axes"
        )
    level = preview_level(image, max_side)
    pixel = display_pixel(level, max_side)
    grid = image_grid(level.shape, level.scale, level.translation, pixel)
    unit = short_unit(image)
    raw: dict[tuple[str, str], npt.NDArray[Any] | str] = {}
    for name, (normal, _, _) in PLANES.items():
        index = level.shape[normal] // 2
        for side in ("source", "dest"):
            raw[side, name] = reader.plane(side, image, level, name, index)
    read = [v for v in raw.values() if not isinstance(v, str)]
    source_planes = [
        v for (side, _), v in raw.items() if side == "source" and not isinstance(v, str)
    ]
    window = percentile_window(source_planes or read) if image.kind == "image" and read else None
    result = ImagePreviews(image, level, pixel, window)
    for name, (normal, r, c) in PLANES.items():
        index = level.shape[normal] // 2
        position = index * level.scale[normal] + level.translation[normal]
        caption = (
            f"{image.axes[normal]} = {_fmt(position)} {unit} ({level.name} index {index}); "
            f"rows {image.axes[r]}, columns {image.axes[c]}; 1 px = {_fmt(pixel)} {unit}"
        )
        rows = voxel_indices(grid[r], level.shape[r], level.scale[r], level.translation[r])
        columns = voxel_indices(grid[c], level.shape[c], level.scale[c], level.translation[c])
        pictures = []
        for side, title in (("source", "source (N5)"), ("dest", "destination (Zarr)")):
            value = raw[side, name]
            if isinstance(value, str):
                pictures.append(Picture(title, caption, problem=value))
                continue
            plane, _ = resample(value, rows, columns)
            pixels = (
                label_colours(plane)
                if image.kind == "label" or window is None
                else grey_rgb(to_grey(plane, window))
            )
            pictures.append(Picture(title, caption, pixels))
        result.pairs.append(PlanePair(name, caption, pictures[0], pictures[1]))
    return result


def closest_level(image: ReportImage, pixel: float) -> ReportLevel:
    """The level of ``image`` whose finest spacing is closest to ``pixel`` (by ratio)."""
    return min(image.levels, key=lambda level: abs(math.log(pixel_size(level.scale) / pixel)))


def overlay_previews(
    reader: Reader, labels: ReportImage, em: ReportImage, max_side: int = MAX_SIDE
) -> list[Picture]:
    """The label image laid over the EM (at DEST, or the source for a dry run), on the EM's
    display grid, in the three planes through the centre of the label image; both placed by
    their own OME scale/translation."""
    em_level = preview_level(em, max_side)
    pixel = display_pixel(em_level, max_side)
    grid = image_grid(em_level.shape, em_level.scale, em_level.translation, pixel)
    label_level = closest_level(labels, pixel)
    unit = short_unit(em)
    pictures = []
    for name, (normal, r, c) in PLANES.items():
        centre = label_level.shape[normal] // 2
        position = centre * label_level.scale[normal] + label_level.translation[normal]
        em_index = voxel_index(
            position, em_level.shape[normal], em_level.scale[normal], em_level.translation[normal]
        )
        caption = (
            f"{labels.dest_path} {label_level.name} over {em.dest_path} {em_level.name} at "
            f"{em.axes[normal]} = {_fmt(position)} {unit}; rows {em.axes[r]}, columns "
            f"{em.axes[c]}; 1 px = {_fmt(pixel)} {unit}"
        )
        title = f"overlay {name}"
        side = reader.overlay_side
        em_plane = reader.plane(side, em, em_level, name, em_index)
        label_plane = reader.plane(side, labels, label_level, name, centre)
        if isinstance(em_plane, str) or isinstance(label_plane, str):
            problem = em_plane if isinstance(em_plane, str) else label_plane
            pictures.append(Picture(title, caption, problem=str(problem)))
            continue
        em_rows = voxel_indices(
            grid[r], em_level.shape[r], em_level.scale[r], em_level.translation[r]
        )
        em_columns = voxel_indices(
            grid[c], em_level.shape[c], em_level.scale[c], em_level.translation[c]
        )
        label_rows = voxel_indices(
            grid[r], label_level.shape[r], label_level.scale[r], label_level.translation[r]
        )
        label_columns = voxel_indices(
            grid[c], label_level.shape[c], label_level.scale[c], label_level.translation[c]
        )
        grey, _ = resample(em_plane, em_rows, em_columns)
        ids, _ = resample(label_plane, label_rows, label_columns, fill=0)
        window = percentile_window([em_plane])
        pictures.append(Picture(title, caption, overlay(to_grey(grey, window), ids)))
    return pictures


def em_for_overlay(images: list[ReportImage]) -> ReportImage | None:
    """The image labels are laid over: the first spatial ``em/`` image, else any image."""
    candidates = [i for i in images if i.kind == "image" and i.spatial]
    for image in candidates:
        if image.dest_path.split("/")[-2:-1] == ["em"] or "/em/" in f"/{image.dest_path}":
            return image
    return candidates[0] if candidates else None


def all_previews(
    reader: Reader, images: list[ReportImage], max_side: int = MAX_SIDE
) -> list[ImagePreviews]:
    em = em_for_overlay(images)
    out = []
    for image in images:
        previews = image_previews(reader, image, max_side)
        if image.kind == "label" and image.spatial and em is not None:
            previews.overlay = overlay_previews(reader, image, em, max_side)
            previews.overlay_on = em.dest_path
            previews.overlay_side = reader.overlay_side
        out.append(previews)
    return out
