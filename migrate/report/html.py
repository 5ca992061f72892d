"""The report page: one HTML document with every picture inline (``data:`` URIs), no
script and no reference to anything outside it; its Content-Security-Policy forbids the
browser to load any. Pure: arrays and texts in, HTML text out (PNG encoding aside).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from migrate.report.figures import (
    clean,
    data_uri,
    edge_offsets,
    png,
    pyramid_png,
    throughput_png,
)
from migrate.report.previews import ImagePreviews, Picture
from migrate.report.timeline import Timeline

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1440px;
       padding: 0 1em; color: #222; background: #fafafa; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 2em;
     border-bottom: 1px solid #ccc; } h3 { font-size: 1em; margin: 1.2em 0 0.4em; }
code, pre { font: 12px/1.35 ui-monospace, monospace; }
pre { background: #fff; border: 1px solid #ddd; padding: 0.6em; overflow-x: auto; }
table { border-collapse: collapse; margin: 0.4em 0; }
td, th { border: 1px solid #ddd; padding: 2px 6px; font-size: 12px; text-align: left;
         vertical-align: top; }
th { background: #eee; }
.ok { color: #1a7f37; font-weight: bold; } .bad { color: #c62828; font-weight: bold; }
.muted { color: #666; }
.pictures { display: flex; flex-wrap: wrap; gap: 12px 28px; align-items: flex-start; }
.pair { display: flex; flex-direction: column; width: min-content; min-width: 260px; }
.pair h3 { margin: 0 0 4px; }
.sides { display: flex; gap: 6px; align-items: flex-start; }
.caption { font-size: 11px; color: #555; }
figure { margin: 0; } figcaption { font-size: 11px; color: #555; max-width: 300px; }
img.preview { image-rendering: pixelated; border: 1px solid #999; background: #000; }
.problem { display: inline-block; padding: 1em; border: 1px dashed #c62828; color: #c62828;
           max-width: 380px; font-size: 12px; }
.add { color: #1a7f37; } .del { color: #c62828; } .hunk { color: #1f5fa8; }
"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

DISPLAY_SIDE = 200
"""Previews are shown at least about this many CSS pixels on their longer side (whole
multiples of their own pixels, so none is blurred)."""


def e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _anchor(path: str) -> str:
    return "image-" + "".join(ch if ch.isalnum() else "-" for ch in path)


@dataclass
class Page:
    """Everything the page shows; ``None`` sections are said to be missing."""

    title: str
    source: str
    dest: str
    created: str
    tool_version: str
    previews: list[ImagePreviews]
    plan_text: str | None = None
    diff: list[str] | None = None
    run: dict[str, Any] | None = None
    timeline: Timeline | None = None
    verify: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def zoom_for(pictures: list[Picture]) -> int:
    """One whole magnification for pictures shown together, so that equal lengths in
    space look equal on screen."""
    sides = [max(p.pixels.shape[:2]) for p in pictures if p.pixels is not None]
    return max(1, DISPLAY_SIDE // max(sides)) if sides else 1


def _img(picture: Picture, zoom: int, **data: str) -> str:
    if picture.pixels is None:
        return f'<div class="problem">{e(picture.problem or "no picture")}</div>'
    rows, columns = picture.pixels.shape[:2]
    attributes = " ".join(f'data-{k}="{e(v)}"' for k, v in data.items())
    return (
        f'<img class="preview" {attributes} alt="{e(picture.title + ": " + picture.caption)}" '
        f'width="{columns * zoom}" height="{rows * zoom}" src="{data_uri(png(picture.pixels))}">'
    )


def _figure(picture: Picture, zoom: int, **data: str) -> str:
    return (
        f"<figure>{_img(picture, zoom, **data)}<figcaption><b>{e(picture.title)}</b>"
        f"</figcaption></figure>"
    )


def _vec(values: tuple[float, ...]) -> str:
    return ", ".join(f"{v:.6g}" for v in values)


def _levels_table(previews: ImagePreviews) -> str:
    image = previews.image
    header = (
        "level", "shape", "dtype", "chunks or shards", "codec", "copy path", "voxel size",
        "translation", "origin − s0 origin", "grid edge − s0 grid edge",
    )  # fmt: skip
    cells = []
    first = image.levels[0]
    for level, edge in zip(image.levels, edge_offsets(image), strict=True):
        origin = tuple(
            clean(t - t0) for t, t0 in zip(level.translation, first.translation, strict=True)
        )
        shown = " (previews)" if previews.level is level else ""
        cells.append(
            (
                level.name + shown,
                "×".join(map(str, level.shape)),
                level.dtype,
                "×".join(map(str, level.chunks)) if level.chunks else "",
                level.codec or "",
                level.copy_path or "",
                _vec(level.scale),
                _vec(level.translation),
                _vec(origin),
                _vec(edge),
            )
        )
    shown_columns = [i for i in range(len(header)) if any(row[i] for row in cells)]
    rows = ["<tr>" + "".join(f"<th>{e(header[i])}</th>" for i in shown_columns) + "</tr>"]
    rows += [
        "<tr>" + "".join(f"<td>{e(row[i])}</td>" for i in shown_columns) + "</tr>" for row in cells
    ]
    axes = ", ".join(f"{a} ({u})" for a, u in zip(image.axes, image.units, strict=False))
    return f'<p class="muted">axes {e(axes)}</p><table>{"".join(rows)}</table>'


def _image_section(previews: ImagePreviews) -> str:
    image = previews.image
    out = [f'<h2 id="{_anchor(image.dest_path)}">{e(image.kind)} {e(image.dest_path)}</h2>']
    out.append(
        f'<p class="muted">from <code>{e(image.source_path)}</code>'
        + (
            f"; contrast {previews.window[0]:.6g} – {previews.window[1]:.6g} "
            "(0.5–99.5th percentile of the source planes, the same on both sides)"
            if previews.window
            else "; label ids in colours, 0 black"
            if image.kind == "label"
            else ""
        )
        + "</p>"
    )
    if previews.problem:
        out.append(f'<div class="problem">{e(previews.problem)}</div>')
    if previews.pairs:
        zoom = zoom_for([p for pair in previews.pairs for p in (pair.source, pair.dest)])
        out.append('<div class="pictures">')
        for pair in previews.pairs:
            data = {"image": image.dest_path, "plane": pair.plane}
            out.append(
                f'<div class="pair"><h3>{e(pair.plane)}</h3><div class="sides">'
                f"{_figure(pair.source, zoom, **data, side='source')}"
                f"{_figure(pair.dest, zoom, **data, side='dest')}</div>"
                f'<div class="caption">{e(pair.caption)}</div></div>'
            )
        out.append("</div>")
    if previews.overlay:
        where = "DEST" if previews.overlay_side == "dest" else "the source, placed as planned"
        out.append(f"<h3>{e(image.dest_path)} over {e(previews.overlay_on or '')} ({where})</h3>")
        zoom = zoom_for(previews.overlay)
        out.append('<div class="pictures">')
        for picture in previews.overlay:
            plane = picture.title.split()[-1]
            out.append(
                f'<div class="pair">'
                f"{_figure(picture, zoom, image=image.dest_path, plane=plane, side='overlay')}"
                f'<div class="caption">{e(picture.caption)}</div></div>'
            )
        out.append("</div>")
    out.append("<h3>pyramid</h3>")
    out.append(_levels_table(previews))
    out.append(
        f'<img class="figure" data-image="{e(image.dest_path)}" data-side="pyramid" '
        f'alt="pyramid of {e(image.dest_path)}" src="{data_uri(pyramid_png(image))}">'
        '<p class="muted">Per axis, the first voxels of each level on one physical axis whose '
        "0 (dashed) is the outer edge of s0's first voxel; dots are voxel centres. In a "
        "windowed-mean pyramid every level starts at the dashed line; a subsampled one "
        "(labels) starts half a coarse voxel minus half an s0 voxel before it.</p>"
    )
    return "\n".join(out)


def _diff(lines: list[str]) -> str:
    out = []
    for line in lines:
        kind = (
            "hunk"
            if line.startswith("@@")
            else "add"
            if line.startswith("+") and not line.startswith("+++")
            else "del"
            if line.startswith("-") and not line.startswith("---")
            else ""
        )
        text = e(line.rstrip("\n"))
        out.append(f'<span class="{kind}">{text}</span>' if kind else text)
    return "<pre>" + "\n".join(out) + "</pre>"


def _run_summary(run: dict[str, Any]) -> str:
    images = run.get("images", [])
    copied = sum(i["units_copied"] for i in images)
    skipped = sum(i["units_skipped"] for i in images)
    megabytes = sum(i["bytes_read"] for i in images) / 1e6
    failures = [f for i in images for f in i.get("failures", [])]
    state = (
        '<span class="ok">complete</span>'
        if run.get("complete")
        else f'<span class="bad">INCOMPLETE: {len(failures)} unit(s) failed</span>'
    )
    if images and all(i["state_before"] == "complete" for i in images):
        return f"<p>run: {state} already; nothing to copy</p>"
    rows = "".join(
        f"<tr><td>{e(i['dest_path'])}</td><td>{e(i['state_before'])}</td>"
        f"<td>{i['units_copied']}</td><td>{i['units_skipped']}</td><td>{i['units_total']}</td>"
        f"<td>{i['bytes_read'] / 1e6:.1f}</td>"
        f"<td>{'complete' if i['complete'] else 'INCOMPLETE'}</td></tr>"
        for i in images
    )
    failed = "".join(f"<li><code>{e(f)}</code></li>" for f in failures[:20])
    return (
        f"<p>run: {state}; {copied} unit(s) copied, {skipped} already done, "
        f"{megabytes:.1f} MB of voxels in {float(run.get('seconds', 0)):.1f} s</p>"
        "<table><tr><th>image</th><th>before</th><th>copied</th><th>skipped</th>"
        f"<th>total units</th><th>MB read</th><th>status</th></tr>{rows}</table>"
        + (f"<ul>{failed}</ul>" if failed else "")
    )


def _verify_summary(verify: dict[str, Any] | None) -> str:
    if verify is None:
        return (
            '<p>verify: <span class="bad">not run</span> — '
            "<code>cellmap-migrate verify SRC DEST --report DIR</code> adds its result here.</p>"
        )
    result = verify["result"]
    problems = result.get("problems", [])
    state = (
        '<span class="ok">OK</span>'
        if not problems
        else f'<span class="bad">{len(problems)} problem(s)</span>'
    )
    sample = verify.get("sample", 1.0)
    what = "every voxel" if sample >= 1.0 else f"a random {sample:.0%} of the units"
    listed = "".join(f"<li><code>{e(p)}</code></li>" for p in problems[:50])
    more = f"<p>… {len(problems) - 50} more</p>" if len(problems) > 50 else ""
    return (
        f"<p>verify ({e(verify.get('created', ''))}, {what}): {state}; {result['images']} "
        f"image(s), {result['units_checked']} unit(s), "
        f"{result['bytes_compared'] / 1e6:.1f} MB of voxels compared</p>"
        + (f"<ul>{listed}</ul>{more}" if listed else "")
    )


def render_page(page: Page) -> str:
    """The whole report as one HTML document."""
    index = "".join(
        f'<li><a href="#{_anchor(p.image.dest_path)}">{e(p.image.kind)} '
        f"{e(p.image.dest_path)}</a></li>"
        for p in page.previews
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        f"<title>{e(page.title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{e(page.title)}</h1>",
        f'<p class="muted">source <code>{e(page.source)}</code><br>destination '
        f"<code>{e(page.dest)}</code><br>written {e(page.created)} by cellmap-migrate "
        f"{e(page.tool_version)}</p>",
        '<h2 id="summary">summary</h2>',
        _run_summary(page.run) if page.run is not None else "<p>run: not recorded here</p>",
        _verify_summary(page.verify),
        "".join(f'<p class="muted">{e(note)}</p>' for note in page.notes),
        f"<ul>{index}</ul>",
    ]
    parts.extend(_image_section(p) for p in page.previews)
    if page.timeline is not None:
        parts.append('<h2 id="throughput">throughput</h2>')
        if page.timeline.completions:
            parts.append(
                '<img class="figure" data-side="throughput" alt="throughput over time" '
                f'src="{data_uri(throughput_png(page.timeline))}">'
                f'<p class="muted">{len(page.timeline.completions)} work unit(s) finished in '
                f"{page.timeline.seconds:.2f} s (bars: MB/s of voxels per time bin; line: MB "
                "done).</p>"
            )
        else:
            parts.append("<p>nothing was copied in this run (already complete).</p>")
    if page.plan_text is not None:
        parts.append('<h2 id="plan">plan</h2>')
        parts.append(f"<pre>{e(page.plan_text)}</pre>")
    if page.diff is not None:
        parts.append('<h2 id="diff">metadata diff (before the run)</h2>')
        files = sum(1 for line in page.diff if line.startswith("+++ "))
        parts.append(
            f"<details><summary>{files} metadata file(s) change, {len(page.diff)} diff "
            f"line(s)</summary>{_diff(page.diff)}</details>"
            if page.diff
            else "<p>no metadata changes</p>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


@dataclass(frozen=True)
class IndexEntry:
    """One dataset of a bulk run in the index page: its report (a path relative to the
    index, None when it has none) and its state in a word or two, with details."""

    name: str
    report: str | None
    state: str
    detail: str = ""


def render_index(title: str, created: str, entries: list[IndexEntry]) -> str:
    """The index of a bulk run's reports, one row per dataset, linking each report."""
    rows = "".join(
        f"<tr><td>{e(entry.name)}</td><td>"
        + (
            f'<a href="{e(entry.report)}">report</a>'
            if entry.report is not None
            else '<span class="muted">none</span>'
        )
        + f'</td><td class="{"ok" if entry.state == "complete" else "bad"}">'
        f"{e(entry.state)}</td><td>{e(entry.detail)}</td></tr>"
        for entry in entries
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>"
        f'<h1>{e(title)}</h1><p class="muted">written {e(created)}</p>'
        "<table><tr><th>dataset</th><th>report</th><th>state</th><th>details</th></tr>"
        f"{rows}</table></body></html>\n"
    )
