"""The report's pictures as PNG bytes: preview arrays through Pillow, and two drawings made
with matplotlib (no pyplot, so no global state): the pyramid of an image and the throughput
of a run. Axis order: C order (z, y, x), like the levels' scale and translation.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from migrate.report.model import ReportImage, short_unit
from migrate.report.planes import U8
from migrate.report.timeline import Timeline


def png(pixels: U8) -> bytes:
    """An RGB (rows, columns, 3) uint8 array as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def edge_offsets(image: ReportImage) -> list[tuple[float, ...]]:
    """Per level, C order: where its grid begins (the outer edge of voxel 0,
    ``translation − scale/2``) relative to where s0's begins. 0 on every axis of every
    level for a windowed-mean pyramid; ``−(scale − s0 scale)/2`` for a subsampled one."""
    first = image.levels[0]
    origin = [t - s / 2 for s, t in zip(first.scale, first.translation, strict=True)]
    return [
        tuple(
            clean(t - s / 2 - o)
            for s, t, o in zip(level.scale, level.translation, origin, strict=True)
        )
        for level in image.levels
    ]


def clean(value: float) -> float:
    """``value`` without the float noise of the subtraction that made it (1e-9 of a unit):
    2.66e-15 nm is 0 nm, and prints as 0."""
    return round(value, 9) + 0.0


def pyramid_png(image: ReportImage) -> bytes:
    """Per axis, per level: the first voxels of the level as boxes (centres as dots) on
    one physical axis whose 0 is s0's grid edge, so a misplaced level stands out."""
    levels = image.levels
    ndim = len(image.axes)
    figure = _figure(3.2 * ndim, 0.45 * len(levels) + 1.1)
    axes = figure.subplots(1, ndim, squeeze=False)[0]
    offsets = edge_offsets(image)
    colours = ("#4c78a8", "#9ecae9")
    for axis in range(ndim):
        ax = axes[axis]
        s0 = levels[0]
        zero = s0.translation[axis] - s0.scale[axis] / 2
        span = 2 * max(level.scale[axis] for level in levels)
        span = min(span, 64 * s0.scale[axis]) if span > 0 else 1.0
        for row, level in enumerate(levels):
            scale, translation = level.scale[axis], level.translation[axis]
            first_edge = translation - scale / 2 - zero
            count = min(level.shape[axis], max(1, int((span - first_edge) / scale) + 1))
            lefts = first_edge + scale * np.arange(count)
            ax.broken_barh(
                [(float(left), scale) for left in lefts],
                (row - 0.35, 0.7),
                facecolors=[colours[i % 2] for i in range(count)],
                edgecolors="black",
                linewidth=0.5,
            )
            if count <= 24:  # more dots than that merge into a line
                ax.plot(lefts + scale / 2, [row] * count, ".", color="black", markersize=3)
        ax.axvline(0.0, color="#d62728", linewidth=1, linestyle="--")
        ax.set_xlim(-0.1 * span, span * 1.05)
        ax.set_ylim(len(levels) - 0.5, -0.5)
        ax.set_yticks(range(len(levels)))
        ax.set_yticklabels(
            [
                f"{level.name}  {level.scale[axis]:.4g}  {offsets[row][axis]:+.4g}"
                for row, level in enumerate(levels)
            ],
            fontsize=7,
        )
        unit = short_unit(image, axis)
        ax.set_xlabel(f"{image.axes[axis]} ({unit}) from s0's grid edge", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"{image.axes[axis]}: level, voxel size, edge offset ({unit})", fontsize=8)
    return _save(figure)


def throughput_png(timeline: Timeline) -> bytes:
    """MB/s of voxels per time bin (bars) and MB done (line) over the run's seconds."""
    figure = _figure(7.5, 2.6)
    ax = figure.subplots()
    times = np.array([c.seconds for c in timeline.completions], dtype=np.float64)
    sizes = np.array([c.nbytes for c in timeline.completions], dtype=np.float64) / 1e6
    end = max(timeline.seconds, float(times.max()) if times.size else 0.0, 1e-3)
    bins = int(min(60, max(5, times.size // 4)))
    edges = np.linspace(0.0, end, bins + 1)
    per_bin, _ = np.histogram(times, bins=edges, weights=sizes)
    width = edges[1] - edges[0]
    ax.bar(edges[:-1], per_bin / width, width=width, align="edge", color="#4c78a8",
           label="MB/s of voxels")  # fmt: skip
    ax.set_xlabel("seconds since start", fontsize=8)
    ax.set_ylabel("MB/s", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_xlim(0.0, end)
    twin = ax.twinx()
    order = np.argsort(times, kind="stable")
    twin.step(
        np.concatenate([[0.0], times[order], [end]]),
        np.concatenate([[0.0], np.cumsum(sizes[order]), [sizes.sum()]]),
        where="post",
        color="#d62728",
        label="MB done",
    )
    twin.set_ylabel("MB done", fontsize=8)
    twin.tick_params(labelsize=7)
    twin.set_ylim(bottom=0.0)
    return _save(figure)
