"""``convert --report`` / ``verify --report``: the previews' pixels, the page's independence
from anything outside it, and the page in a real headless Chromium.

The fixture is a known scene, written block by block with the fixture's N5 encoder: an EM
image on an anisotropic grid (z 8 nm, y and x 4 nm) that is dark (100) except for one bright
box (60000), and a label image on a grid twice as coarse, offset half an EM voxel the way a
windowed-mean pyramid is, holding one object inside the box and one in a corner. Every
expected pixel below is worked out by hand from those numbers (see the comments), never
computed with the code under test. Arrays and boxes are C order (z, y, x); a picture is
(rows, columns): xy is (y, x), xz is (z, x), yz is (z, y).
"""

from __future__ import annotations

import base64
import html.parser
import io
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tensorstore as ts
from PIL import Image

from migrate.copy.engine import run_plan
from migrate.copy.options import EngineOptions
from migrate.example.fixture import (
    ImageSpec,
    array_attributes,
    encode_block,
    group_attributes,
    write_dataset,
)
from migrate.report import RecordingProgress
from tests.chromium import Browser, chromium_path
from tests.helpers import REPO, run_cli

EM = ImageSpec(
    path="em/fibsem-uint16",
    shape=(24, 64, 80),
    dtype="uint16",
    block_size=(16, 16, 16),
    levels=2,
    factors=(2, 2, 2),
    voxel_size=(8.0, 4.0, 4.0),
    compression={"type": "gzip", "level": -1},
    metadata="both",
    downsampling="windowed",
)
BOX = (slice(12, 20), slice(20, 44), slice(24, 56))
"""The bright box in EM s0 voxels: z 96–160 nm, y 80–176 nm, x 96–224 nm (voxel edges)."""

SEG = ImageSpec(
    path="labels/cube_seg",
    shape=(12, 32, 40),
    dtype="uint64",
    block_size=(16, 16, 16),
    levels=2,
    voxel_size=(16.0, 8.0, 8.0),
    offset=(4.0, 2.0, 2.0),
    compression={"type": "gzip", "level": -1},
    metadata="both",
    downsampling="subsample",
)
"""Labels on a grid twice as coarse whose voxel 0 covers EM voxels 0 and 1 on every axis
(centre at half an EM voxel: translation 4, 2, 2 nm); s1 subsamples s0 (same translation)."""
OBJECT = (slice(6, 10), slice(10, 22), slice(12, 22))
"""Object 7 in label voxels: the EM box's z and y, and x 96–176 nm (EM x voxels 24–43)."""
CORNER = (slice(6, 10), slice(0, 4), slice(0, 4))
"""Object 2**40 + 9 in label voxels: EM y and x voxels 0–7, outside the box."""
CORNER_ID = 2**40 + 9


def em_volume() -> npt.NDArray[np.uint16]:
    volume = np.full(EM.shape, 100, dtype=np.uint16)
    volume[BOX] = 60000
    return volume


def seg_volume() -> npt.NDArray[np.uint64]:
    volume = np.zeros(SEG.shape, dtype=np.uint64)
    volume[OBJECT] = 7
    volume[CORNER] = CORNER_ID
    return volume


def mean2(volume: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """2×2×2 windowed mean (the box's edges are even, so it stays exact)."""
    z, y, x = (n // 2 for n in volume.shape)
    blocks = volume[: 2 * z, : 2 * y, : 2 * x].reshape(z, 2, y, 2, x, 2).astype(np.float64)
    mean: npt.NDArray[Any] = blocks.mean(axis=(1, 3, 5)).astype(volume.dtype)
    return mean


def write_n5_image(root: Path, spec: ImageSpec, levels: list[npt.NDArray[Any]]) -> None:
    """The image's attributes as the fixture writes them, with these voxels per level."""
    (root / "attributes.json").write_text(json.dumps({"n5": "2.5.0"}))
    group = root.joinpath(*spec.path.split("/"))
    group.parent.mkdir(parents=True, exist_ok=True)
    (group.parent / "attributes.json").write_text("{}")
    group.mkdir()
    (group / "attributes.json").write_text(json.dumps(group_attributes(spec)))
    block = spec.block_size
    assert isinstance(block[0], int)
    for level, data in enumerate(levels):
        array = group / f"s{level}"
        array.mkdir()
        attributes = array_attributes(spec, level)
        assert attributes["dimensions"] == list(data.shape)[::-1]
        (array / "attributes.json").write_text(json.dumps(attributes))
        grid = [range(-(-n // b)) for n, b in zip(data.shape, block, strict=True)]
        for index in itertools.product(*grid):
            part = data[tuple(slice(i * b, (i + 1) * b) for i, b in zip(index, block, strict=True))]
            if part.any():
                path = array.joinpath(*(str(i) for i in reversed(index)))
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(encode_block(part, spec.compression))


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The N5 root of the known scene."""
    root = tmp_path_factory.mktemp("scene") / "jrc_cube-1" / "jrc_cube-1.n5"
    root.mkdir(parents=True)
    em = em_volume()
    write_n5_image(root, EM, [em, mean2(em)])
    seg = seg_volume()
    write_n5_image(root, SEG, [seg, seg[::2, ::2, ::2]])
    return root


@pytest.fixture(scope="module", params=["0.4", "0.5"])
def converted(
    scene: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> tuple[Path, Path, Path]:
    """(N5 root, DEST, report directory) after ``convert --report`` and ``verify --report``."""
    out = tmp_path_factory.mktemp(f"out-{request.param}")
    dest, report = out / "jrc_cube-1.zarr", out / "report"
    run = run_cli("convert", str(scene), str(dest), "--ngff-version", request.param,
                  "--report", str(report))  # fmt: skip
    assert run.exit_code == 0, run.stderr
    assert f"report: {report / 'index.html'}" in run.stderr
    run = run_cli("verify", str(scene), str(dest), "--report", str(report))
    assert run.exit_code == 0, run.stderr
    return scene, dest, report


class Images(html.parser.HTMLParser):
    """Every ``<img>`` of a page: its attributes, and the decoded picture of a data: URI."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.found.append({k: v or "" for k, v in attrs})


def page_images(report: Path) -> list[dict[str, str]]:
    parser = Images()
    parser.feed((report / "index.html").read_text(encoding="utf-8"))
    return parser.found


def picture(report: Path, image: str, plane: str, side: str) -> npt.NDArray[np.uint8]:
    """The RGB pixels of one preview, decoded with Pillow from the page's data: URI."""
    matches = [
        img
        for img in page_images(report)
        if (img.get("data-image"), img.get("data-plane"), img.get("data-side"))
        == (image, plane, side)
    ]
    assert len(matches) == 1, f"{image} {plane} {side}: {len(matches)} pictures"
    src = matches[0]["src"]
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    with Image.open(io.BytesIO(base64.b64decode(src[len(prefix) :]))) as png:
        assert png.format == "PNG"
        return np.asarray(png.convert("RGB"))


def box_mask(shape: tuple[int, int], rows: tuple[int, int], columns: tuple[int, int]) -> Any:
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0] : rows[1], columns[0] : columns[1]] = True
    return mask


# The EM previews are drawn on 4 nm pixels (the finest spacing): each EM voxel is 1 pixel
# along y and x and 2 pixels along z. The volume is 192 × 256 × 320 nm (z, y, x), so the
# pictures are xy 64 × 80, xz 48 × 80 and yz 48 × 64 pixels, and the box (z voxels 12–19,
# y 20–43, x 24–55) covers xy rows 20–43 / columns 24–55, xz rows 24–39 / columns 24–55,
# yz rows 24–39 / columns 20–43. The mid-planes (z 12, y 32, x 40) all cut the box.
EM_PLANES = {
    "xy": ((64, 80), (20, 44), (24, 56)),
    "xz": ((48, 80), (24, 40), (24, 56)),
    "yz": ((48, 64), (24, 40), (20, 44)),
}


@pytest.mark.parametrize("plane", EM_PLANES)
@pytest.mark.parametrize("side", ["source", "dest"])
def test_em_preview_shows_the_box_in_place_at_true_aspect(
    converted: tuple[Path, Path, Path], plane: str, side: str
) -> None:
    """Each mid-plane, from SRC and from DEST, is the physical shape of the volume (z
    stretched twice: 8 nm voxels on 4 nm pixels) with the box white exactly where it is and
    the rest black (contrast from the 0.5–99.5th percentiles: 100 → 0, 60000 → 255)."""
    _, _, report = converted
    pixels = picture(report, EM.path, plane, side)
    shape, rows, columns = EM_PLANES[plane]
    assert pixels.shape == (*shape, 3)
    inside = box_mask(shape, rows, columns)
    assert (pixels[inside] == 255).all()
    assert (pixels[~inside] == 0).all()


# The labels' own previews use their 8 nm pixels (one per label voxel along y and x, two
# along z: 16 nm): 24 × 32 × 40 (z, y, x) pixels; mid-planes z 6, y 16, x 20. Object 7:
# xy rows 10–21 / columns 12–21, xz rows 12–19 / columns 12–21, yz rows 12–19 / columns
# 10–21; the corner object only in xy (z 6), rows 0–3 / columns 0–3.
SEG_PLANES = {
    "xy": ((32, 40), (10, 22), (12, 22), ((0, 4), (0, 4))),
    "xz": ((24, 40), (12, 20), (12, 22), None),
    "yz": ((24, 32), (12, 20), (10, 22), None),
}


@pytest.mark.parametrize("plane", SEG_PLANES)
def test_label_preview_is_coloured_by_id_in_place(
    converted: tuple[Path, Path, Path], plane: str
) -> None:
    """Label pictures: background black, each object one saturated colour where it is, the
    same colour in SRC and DEST, different colours for different ids."""
    _, _, report = converted
    shape, rows, columns, corner = SEG_PLANES[plane]
    source = picture(report, SEG.path, plane, "source")
    dest = picture(report, SEG.path, plane, "dest")
    assert source.shape == (*shape, 3)
    np.testing.assert_array_equal(source, dest)
    inside = box_mask(shape, rows, columns)
    colour = source[rows[0], columns[0]]
    assert (source[inside] == colour).all()
    assert colour.max() - colour.min() > 60, f"not a saturated colour: {colour}"
    others = ~inside
    if corner is not None:
        corner_mask = box_mask(shape, *corner)
        corner_colour = source[corner[0][0], corner[1][0]]
        assert (source[corner_mask] == corner_colour).all()
        assert corner_colour.max() > 0
        assert not (corner_colour == colour).all()
        others &= ~corner_mask
    assert (source[others] == 0).all()


# The overlay is drawn on the EM's 4 nm grid, through the centre of the label image (label
# voxels z 6, y 16, x 20: z 100 nm, y 130 nm, x 162 nm, inside the box). Label voxel i
# spans [8i − 2, 8i + 6) nm along y and x, [16i − 4, 16i + 12) along z; EM voxel j spans
# [4j − 2, 4j + 2) along y and x, [8j − 4, 8j + 4) along z. So object 7 (label x 12–21,
# y 10–21, z 6–9) lies on EM x voxels 24–43, y 20–43, z 12–19 (z pixels 24–39): xy rows
# 20–43 / columns 24–43 (and the corner, rows 0–7 / columns 0–7), xz rows 24–39 / columns
# 24–43, yz rows 24–39 / columns 20–43. Elsewhere the EM shows in grey: white in the box,
# black outside.
OVERLAY_PLANES = {
    "xy": ((64, 80), (20, 44), (24, 44), ((0, 8), (0, 8))),
    "xz": ((48, 80), (24, 40), (24, 44), None),
    "yz": ((48, 64), (24, 40), (20, 44), None),
}


@pytest.mark.parametrize("plane", OVERLAY_PLANES)
def test_label_overlay_lies_on_the_em_where_the_metadata_puts_it(
    converted: tuple[Path, Path, Path], plane: str
) -> None:
    """The labels' colours appear on exactly the EM pixels their scale and translation put
    them on (half an EM voxel off and it would be a pixel off), over the bright box; the
    other pixels are the EM's grey."""
    _, _, report = converted
    shape, rows, columns, corner = OVERLAY_PLANES[plane]
    pixels = picture(report, SEG.path, plane, "overlay").astype(int)
    assert pixels.shape == (*shape, 3)
    grey = (pixels[..., 0] == pixels[..., 1]) & (pixels[..., 1] == pixels[..., 2])
    labelled = box_mask(shape, rows, columns)
    if corner is not None:
        labelled |= box_mask(shape, *corner)
    assert not grey[labelled].any()
    assert grey[~labelled].all()
    em_box = box_mask(shape, *EM_PLANES[plane][1:])
    assert (pixels[~labelled & em_box] == 255).all()
    assert (pixels[~labelled & ~em_box] == 0).all()
    if corner is not None:  # the same alpha: light over the bright box, dark over the rest
        assert pixels[rows[0], columns[0]].sum() > pixels[corner[0][0], corner[1][0]].sum()


def level_rows(report: Path, image: str) -> list[list[str]]:
    """The cells of an image's level table, header first."""
    text = (report / "index.html").read_text(encoding="utf-8")
    anchor = "image-" + re.sub(r"[^0-9A-Za-z]", "-", image)
    section = text.split(f'id="{anchor}"', 1)[1].split("<h2", 1)[0]
    table = section.split("<h3>pyramid</h3>", 1)[1].split("</table>", 1)[0]
    return [
        [re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<t[dh]>(.*?)</t[dh]>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", table)
    ]


def test_pyramid_lists_voxel_sizes_and_grid_offsets(converted: tuple[Path, Path, Path]) -> None:
    """Per level: voxel size and translation as written, offset of the origin and of the
    grid edge from s0's: EM s1 (16, 8, 8 nm, windowed) is centred 4, 2, 2 nm further on and
    starts at s0's edge; the labels' s1 (subsampled) does not; the drawings are there."""
    _, _, report = converted
    rows = level_rows(report, EM.path)
    header = rows[0]
    cells = [dict(zip(header, row, strict=True)) for row in rows[1:]]
    assert [c["level"] for c in cells] == ["s0 (previews)", "s1"]
    assert [c["voxel size"] for c in cells] == ["8, 4, 4", "16, 8, 8"]
    assert [c["translation"] for c in cells] == ["0, 0, 0", "4, 2, 2"]
    assert [c["origin − s0 origin"] for c in cells] == ["0, 0, 0", "4, 2, 2"]
    assert [c["grid edge − s0 grid edge"] for c in cells] == ["0, 0, 0", "0, 0, 0"]
    # the subsampled labels: s1 (32, 16, 16 nm) centred where s0 is, so its grid starts
    # half an s1 voxel minus half an s0 voxel before s0's: 8, 4, 4 nm
    rows = level_rows(report, SEG.path)
    cells = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert [c["voxel size"] for c in cells] == ["16, 8, 8", "32, 16, 16"]
    assert [c["origin − s0 origin"] for c in cells] == ["0, 0, 0", "0, 0, 0"]
    assert [c["grid edge − s0 grid edge"] for c in cells] == ["0, 0, 0", "-8, -4, -4"]
    pyramid = [i for i in page_images(report) if i.get("data-side") == "pyramid"]
    assert {i["data-image"] for i in pyramid} == {EM.path, SEG.path}


def test_report_is_self_contained(converted: tuple[Path, Path, Path]) -> None:
    """One file: every picture a data: URI, no script, no link, no URL of any kind, and a
    Content-Security-Policy that forbids the browser to load anything from outside."""
    _, _, report = converted
    text = (report / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"https?:", text)
    assert "<script" not in text
    assert "<link" not in text
    assert "url(" not in text
    assert "default-src 'none'; img-src data:" in text
    images = page_images(report)
    assert len(images) == 3 * 2 * 2 + 3 + 2 + 1  # previews, overlays, pyramids, throughput
    assert all(img["src"].startswith("data:image/png;base64,") for img in images)
    assert sorted(p.name for p in report.iterdir()) == ["index.html", "report.json"]


def test_report_keeps_the_run_and_adds_the_verify_result(
    converted: tuple[Path, Path, Path],
) -> None:
    """``verify --report`` into the directory of ``convert --report`` keeps the plan, the
    metadata diff and the throughput, and adds its verdict."""
    _, _, report = converted
    text = (report / "index.html").read_text(encoding="utf-8")
    assert 'id="plan"' in text
    assert "blocks moved as bytes" in text
    assert 'id="diff"' in text
    assert "+++ b/em/fibsem-uint16/s0/" in text
    assert 'data-side="throughput"' in text
    assert re.search(r'verify \([^)]*every voxel\): <span class="ok">OK</span>; 2 image', text)
    assert 'run: <span class="ok">complete</span>; 4 unit(s) copied' in text


def test_destination_that_differs_shows_beside_its_source(scene: Path, tmp_path: Path) -> None:
    """A DEST whose box was erased after the migration: verify reports it, and its xy
    picture is black where the source's is white."""
    dest, report = tmp_path / "out.zarr", tmp_path / "report"
    assert run_cli("convert", str(scene), str(dest)).exit_code == 0
    s0 = {"driver": "file", "path": str(dest / EM.path / "s0")}
    array = ts.open({"driver": "zarr", "kvstore": s0}).result()
    array[BOX].write(np.full((8, 24, 32), 100, dtype=np.uint16)).result()
    run = run_cli("verify", str(scene), str(dest), "--report", str(report))
    assert run.exit_code == 1
    source = picture(report, EM.path, "xy", "source")
    erased = picture(report, EM.path, "xy", "dest")
    assert (source[20:44, 24:56] == 255).all()
    assert (erased == 0).all()
    text = (report / "index.html").read_text(encoding="utf-8")
    assert re.search(r'<span class="bad">\d+ problem\(s\)</span>', text)
    assert "voxel(s) differ" in text


def test_dry_run_report_shows_the_source_and_writes_no_destination(
    scene: Path, tmp_path: Path
) -> None:
    """A dry run's report: the source planes and the overlay drawn from the source with the
    planned transforms; DEST is neither read nor written."""
    dest, report = tmp_path / "out.zarr", tmp_path / "report"
    run = run_cli("convert", str(scene), str(dest), "--dry-run", "--report", str(report))
    assert run.exit_code == 0, run.stderr
    assert not dest.exists()
    source = picture(report, EM.path, "xz", "source")
    assert (source[24:40, 24:56] == 255).all()
    text = (report / "index.html").read_text(encoding="utf-8")
    assert "dry run: nothing was written at the destination" in text
    assert text.count('class="problem">not written: a dry run') == 3 * 2
    # the labels over the EM as the plan places them: from the source
    overlay = picture(report, SEG.path, "xy", "overlay").astype(int)
    grey = (overlay[..., 0] == overlay[..., 1]) & (overlay[..., 1] == overlay[..., 2])
    assert not grey[20:44, 24:44].any()
    assert grey[20:44, 44:56].all()


class Calls:
    """A progress that remembers every call it gets, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def start(self, *args: Any) -> None:
        self.calls.append(("start", *args))

    def advance(self, *args: Any) -> None:
        self.calls.append(("advance", *args))

    def message(self, text: str) -> None:
        self.calls.append(("message", text))

    def close(self) -> None:
        self.calls.append(("close",))


def test_recording_progress_passes_every_call_on_and_times_each_unit(
    scene: Path, tmp_path: Path
) -> None:
    """Wrapped around a real run: the wrapped progress sees what the engine sent (the same
    calls as in an unwrapped run), and the timeline has one completion per unit copied, as
    reported, in time order, adding up to the run's bytes."""
    from migrate.api import prepare
    from migrate.target.plan import PlanOptions

    def run(dest: Path, wrap: bool) -> tuple[Calls, Any, Any]:
        prepared = prepare(str(scene), str(dest), PlanOptions(), read_only_dest=False)
        calls = Calls()
        progress = RecordingProgress(calls) if wrap else calls
        options = EngineOptions(workers=1)
        result = run_plan(prepared.plan, prepared.source, prepared.dest, options, progress)
        return calls, progress, result

    plain, _, _ = run(tmp_path / "plain.zarr", wrap=False)
    wrapped, recording, result = run(tmp_path / "wrapped.zarr", wrap=True)
    # the engine reports outcomes as they arrive: the same calls, in an order that may vary
    assert sorted(wrapped.calls, key=repr) == sorted(plain.calls, key=repr)
    assert wrapped.calls[-1] == ("close",)
    completions = recording.timeline.completions
    advances = [call[1:] for call in wrapped.calls if call[0] == "advance"]
    assert [(c.name, c.units, c.nbytes) for c in completions] == advances
    assert len(completions) == sum(i.units_copied for i in result.images) == 4
    assert sum(c.nbytes for c in completions) == sum(i.bytes_read for i in result.images)
    times = [c.seconds for c in completions]
    assert times == sorted(times)
    assert recording.timeline.seconds >= times[-1] >= 0


def test_missing_extra_is_one_line_and_nothing_is_written(scene: Path, tmp_path: Path) -> None:
    """Without matplotlib (a package of that name that cannot be imported shadows it)."""
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    env = {**os.environ, "PYTHONPATH": f"{shadow.parent}{os.pathsep}{REPO}"}
    dest, report = tmp_path / "out.zarr", tmp_path / "report"
    for args in (("convert", str(scene), str(dest)), ("verify", str(scene), str(dest))):
        proc = subprocess.run(
            [sys.executable, "-m", "migrate", *args, "--report", str(report)],
            capture_output=True, text=True, env=env, cwd=REPO, check=False, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 1
        assert proc.stderr == (
            "error: --report needs the report extra: pip install 'cellmap-migrate[report]'\n"
        )
    assert not dest.exists()
    assert not report.exists()


CHROMIUM = chromium_path()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install -y chromium)"
)
RENDERED = (
    "JSON.stringify([...document.images].map(i => ({side: i.dataset.side || '', "
    "image: i.dataset.image || '', complete: i.complete, width: i.naturalWidth})))"
)


@needs_chromium
def test_report_renders_in_headless_chromium(
    converted: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """The page loads from disk in a real browser, every picture decodes (naturalWidth >
    0), nothing lands on the console or the browser's log, and the screen shows the box
    where it is. The same check on a page with a broken picture and a console error finds
    both, so it can fail."""
    _, _, report = converted
    broken = tmp_path / "broken.html"
    broken.write_text(
        '<!DOCTYPE html><html><body><img src="data:image/png;base64,AAAA">'
        "<script>console.error('boom')</script></body></html>"
    )
    assert CHROMIUM is not None
    with Browser(CHROMIUM) as browser:
        browser.load(broken)
        images = json.loads(browser.evaluate(RENDERED))
        assert [i["width"] for i in images] == [0]
        assert any("boom" in p for p in browser.problems())

        browser.load(report / "index.html")
        images = json.loads(browser.evaluate(RENDERED))
        assert browser.problems() == []
        assert len(images) == len(page_images(report))
        assert all(i["complete"] and i["width"] > 0 for i in images), images
        sides = {i["side"] for i in images}
        assert {"source", "dest", "overlay", "pyramid", "throughput"} <= sides
        assert browser.evaluate("document.title") == "cellmap-migrate report: jrc_cube-1.zarr"

        # what the browser drew: the DEST xz plane (48 × 80 pixels, shown 2× magnified,
        # inside a 1 px border) is white exactly over the box, rows 48–79, columns 48–111
        shot = tmp_path / "page.png"
        browser.screenshot(shot)
        selector = f'img[data-image="{EM.path}"][data-plane="xz"][data-side="dest"]'
        box = browser.evaluate(
            f"(r => [r.top, r.left, r.width, r.height])"
            f"(document.querySelector('{selector}').getBoundingClientRect())"
        )
        top, left, width, height = (round(v) for v in box)
        assert (width, height) == (160 + 2, 96 + 2)
        with Image.open(shot) as png:
            drawn = np.asarray(png.convert("L"))[top + 1 : top + 97, left + 1 : left + 161]
        inside = box_mask((96, 160), (48, 80), (48, 112))
        assert (drawn[inside] == 255).all()
        assert (drawn[~inside] == 0).all()


def test_bulk_index_links_each_dataset_report(
    converted: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """The index of a bulk run: one row per dataset, a relative link to each report that
    exists beside it, the state, and nothing outside the file."""
    from migrate.report.html import IndexEntry
    from migrate.report.write import write_index

    _, _, report = converted
    root = tmp_path / "reports"
    (root / "jrc_cube-1").mkdir(parents=True)
    for name in ("index.html", "report.json"):
        (root / "jrc_cube-1" / name).write_bytes((report / name).read_bytes())
    index = write_index(
        str(root),
        "bulk report",
        [
            IndexEntry("jrc_cube-1", "jrc_cube-1/index.html", "complete", "4 unit(s)"),
            IndexEntry("jrc_<bad>-2", None, "failed", "error: no <dataset>.n5"),
        ],
    )
    text = index.read_text(encoding="utf-8")
    links = re.findall(r'<a href="([^"]+)">', text)
    assert links == ["jrc_cube-1/index.html"]
    assert (root / links[0]).is_file()
    assert "jrc_&lt;bad&gt;-2" in text
    assert "<bad>" not in text
    assert not re.search(r"https?:", text)
    if CHROMIUM is not None:
        with Browser(CHROMIUM) as browser:
            browser.load(index)
            assert browser.problems() == []
            assert browser.evaluate("document.querySelectorAll('tr').length") == 3


def test_report_of_an_s3_to_s3_migration(scene: Path, tmp_path: Path, aws: Any) -> None:
    """SRC and DEST on S3 (moto's server on 127.0.0.1): the previews are read through the
    same S3 access as the copy, show the box, and reading them writes nothing to S3."""
    from tests.s3server import s3_client, snapshot, upload_tree

    client = s3_client(aws.url)
    client.create_bucket(Bucket="cubes")
    upload_tree(client, scene.parent, "cubes", "jrc_cube-1")
    src, dest = "s3://cubes/jrc_cube-1/jrc_cube-1.n5", "s3://cubes/jrc_cube-1/jrc_cube-1.zarr"
    report = tmp_path / "report"
    assert run_cli("convert", src, "--report", str(report)).exit_code == 0
    converted = snapshot(client)
    run = run_cli("verify", src, dest, "--report", str(report))
    assert run.exit_code == 0, run.stderr
    certificate = ("cubes", "jrc_cube-1/jrc_cube-1.zarr/.cellmap-migrate/certificate.json")
    after = snapshot(client)  # the previews wrote nothing; verify wrote its certificate
    assert {key: etag for key, etag in after.items() if key != certificate} == converted
    assert certificate in after
    for side in ("source", "dest"):
        pixels = picture(report, EM.path, "yz", side)
        shape, rows, columns = EM_PLANES["yz"]
        assert pixels.shape == (*shape, 3)
        assert (pixels[box_mask(shape, rows, columns)] == 255).all()
    assert not grey_everywhere(picture(report, SEG.path, "xy", "overlay"))


def grey_everywhere(pixels: npt.NDArray[np.uint8]) -> bool:
    return bool(((pixels[..., 0] == pixels[..., 1]) & (pixels[..., 1] == pixels[..., 2])).all())


def test_a_long_timeline_is_kept_as_time_slices() -> None:
    """Ten completions over 10 s kept as 2 slices of 5 s: units and bytes add up per slice,
    at the slice's last completion; a short timeline is kept as it is."""
    from migrate.report.timeline import Completion, Timeline

    timeline = Timeline([Completion(i + 0.5, "a", 1, 100 * i) for i in range(10)], 10.0)
    binned = timeline.binned(2)
    assert binned.completions == [
        Completion(4.5, "*", 5, 100 * (0 + 1 + 2 + 3 + 4)),
        Completion(9.5, "*", 5, 100 * (5 + 6 + 7 + 8 + 9)),
    ]
    assert binned.seconds == 10.0
    assert timeline.binned(10) is timeline
    assert Timeline.from_json(timeline.to_json(2)) == binned


LONG = ImageSpec(
    path="em/fibsem-uint16",
    shape=(5, 6, 4096),
    dtype="uint16",
    block_size=(8, 8, 512),
    levels=1,
    voxel_size=(4.0, 4.0, 4.0),
    compression={"type": "gzip", "level": -1},
    content="gradient",
)
"""A long, thin image (z, y, x) with a single level: no coarser level fits 512 pixels."""
# Its previews use 32 nm pixels (4096 × 4 nm / 512): x 512 pixels, y 6 × 4 / 32 = 0.75 and
# z 5 × 4 / 32 = 0.625, each one pixel.
LONG_PLANES = {"xy": (1, 512), "xz": (1, 512), "yz": (1, 1)}


@needs_chromium
def test_a_long_thin_image_fits_a_laptop_screen(tmp_path: Path) -> None:
    """A 5 × 6 × 4096 image: its previews keep their true aspect on square pixels but fit a
    512-pixel box, and the page, 1400 CSS pixels wide in headless Chromium, does not scroll
    sideways; every destination preview is on screen, the xz one drawn pixel for pixel."""
    n5 = write_dataset(tmp_path, "jrc_long-1", [LONG])
    report = tmp_path / "report"
    run = run_cli("convert", str(n5), str(tmp_path / "out.zarr"), "--report", str(report))
    assert run.exit_code == 0, run.stderr
    for plane, shape in LONG_PLANES.items():
        for side in ("source", "dest"):
            assert picture(report, LONG.path, plane, side).shape == (*shape, 3), (plane, side)
    assert CHROMIUM is not None
    with Browser(CHROMIUM) as browser:
        browser.load(report / "index.html")
        assert browser.problems() == []
        shot = tmp_path / "page.png"
        browser.screenshot(shot, width=1400)
        assert browser.evaluate("document.documentElement.scrollWidth") <= 1400
        boxes = {}
        for plane in LONG_PLANES:
            selector = f'img[data-image="{LONG.path}"][data-plane="{plane}"][data-side="dest"]'
            boxes[plane] = browser.evaluate(
                f"(r => [r.top, r.left, r.right, r.width])"
                f"(document.querySelector('{selector}').getBoundingClientRect())"
            )
        for plane, (_top, left, right, width) in boxes.items():
            assert left >= 0, (plane, boxes)
            assert right <= 1400, (plane, boxes)
            assert width == LONG_PLANES[plane][1] + 2  # shown 1:1 inside a 1 px border
        top, left = (round(v) for v in boxes["xz"][:2])
        with Image.open(shot) as png:
            drawn = np.asarray(png.convert("RGB"))[top + 1, left + 1 : left + 513]
    np.testing.assert_array_equal(drawn, picture(report, LONG.path, "xz", "dest")[0])
