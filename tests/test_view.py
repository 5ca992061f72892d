"""Seeing an output in Neuroglancer: the state ``view`` builds (layer types, sources,
dimensions, contrast), the local server answering requests the way Neuroglancer sends them
(real HTTP against the real server on 127.0.0.1), old N5 states re-pointed at the Zarr
(hand-computed numbers), the output codec table checked against every reader, and — when
Chromium and the neuroglancer package are installed — the real Neuroglancer client loading
an output in headless Chromium.
"""

from __future__ import annotations

import http.client
import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
import tensorstore as ts
import zarr

from migrate.example.fixture import ImageSpec, write_dataset
from migrate.storage import open_store
from migrate.target.codecs import READ_BY_EVERY_READER
from migrate.view.from_state import convert_state, n5_image_path
from migrate.view.scan import output_images
from migrate.view.serve import make_server, serve_in_background
from migrate.view.state import ViewImage, viewer_state
from tests.helpers import REPO, run_cli

DATASET = "jrc_view-1"
SPECS = [
    ImageSpec(
        path="em/fibsem-uint16",
        shape=(20, 24, 28),
        dtype="uint16",
        block_size=(8, 8, 8),
        levels=2,
        voxel_size=(5.24, 4.0, 4.0),
        compression={"type": "gzip", "level": -1},
        content="gradient",
        seed=1,
    ),
    ImageSpec(
        path="lm/b2",
        shape=(6, 8, 9),
        dtype="uint8",
        block_size=(4, 4, 4),
        levels=1,
        voxel_size=(20.0, 16.0, 16.0),
        offset=(100.0, 48.0, 48.0),
        compression={"type": "bzip2", "blockSize": 9},
        content="noise",
        seed=2,
    ),
    ImageSpec(
        path="lm/blosc",
        shape=(6, 8, 9),
        dtype="float32",
        block_size=(4, 4, 4),
        levels=1,
        voxel_size=(20.0, 16.0, 16.0),
        offset=(100.0, 48.0, 48.0),
        compression={"type": "blosc", "cname": "zstd", "clevel": 5, "shuffle": 1},
        metadata="cosem",
        content="noise",
        seed=3,
    ),
    ImageSpec(
        path="labels/mito_seg",
        shape=(10, 12, 14),
        dtype="uint64",
        block_size=(8, 8, 8),
        levels=2,
        voxel_size=(10.48, 8.0, 8.0),
        offset=(2.62, 2.0, 2.0),
        downsampling="subsample",
        compression={"type": "zstd", "level": 3},
        content="labels",
        seed=4,
    ),
    ImageSpec(
        path="labels/er_pred",
        shape=(10, 12, 14),
        dtype="uint8",
        block_size=(8, 8, 8),
        levels=1,
        voxel_size=(10.48, 8.0, 8.0),
        offset=(2.62, 2.0, 2.0),
        compression={"type": "gzip", "level": 1, "useZlib": True},
        content="sparse",
        seed=5,
    ),
]
SERVER = "http://127.0.0.1:9"  # a base address for states that are only looked at


@pytest.fixture(scope="module")
def n5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("view"), DATASET, SPECS)


@pytest.fixture(scope="module")
def out04(n5: Path) -> Path:
    dest = n5.parent / "out04.zarr"
    result = run_cli("convert", str(n5), str(dest))
    assert result.exit_code == 0, result.stderr
    return dest


@pytest.fixture(scope="module")
def out05(n5: Path) -> Path:
    dest = n5.parent / "out05.zarr"
    result = run_cli("convert", str(n5), str(dest), "--ngff-version", "0.5", "--shard", "16,16,16")
    assert result.exit_code == 0, result.stderr
    return dest


def layers_by_name(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {layer["name"]: layer for layer in state["layers"]}


def decode_link(link: str) -> dict[str, Any]:
    """The state in a Neuroglancer link, decoded here with the standard library alone."""
    fragment = link.split("#!", 1)[1]
    value: dict[str, Any] = json.loads(unquote(fragment))
    return value


def shader_range(shader: str) -> tuple[float, float]:
    head = shader.split("range=[", 1)[1].split("]", 1)[0]
    low, high = (float(v) for v in head.split(","))
    return low, high


# --------------------------------------------------------------------------------------
# The state
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_state_shows_every_image_in_one_xyz_space(out04: Path, out05: Path, version: str) -> None:
    out = out04 if version == "0.4" else out05
    found_version, images = output_images(open_store(str(out), read_only=True), SERVER)
    assert found_version == version
    state = viewer_state(images, found_version)
    layers = layers_by_name(state)
    assert set(layers) == {spec.path for spec in SPECS}
    # label images (image-label) are segmentations; EM, LM and predictions are images
    assert {name: layer["type"] for name, layer in layers.items()} == {
        "em/fibsem-uint16": "image",
        "lm/b2": "image",
        "lm/blosc": "image",
        "labels/er_pred": "image",
        "labels/mito_seg": "segmentation",
    }
    scheme = "zarr://" if version == "0.4" else "zarr3://"
    for name, layer in layers.items():
        assert layer["source"] == f"{scheme}{SERVER}/{name}/"
    # one coordinate space, x, y, z first and displayed in that order (finest s0 spacing)
    assert state["dimensions"] == {"x": [4e-9, "m"], "y": [4e-9, "m"], "z": [5.24e-9, "m"]}
    assert list(state["dimensions"]) == ["x", "y", "z"]
    assert state["displayDimensions"] == ["x", "y", "z"]
    # centred on the EM image: s0 voxel centres 0 … 27 (x), 0 … 23 (y), 0 … 19 (z)
    assert state["position"] == [13.5, 11.5, 9.5]
    assert state["layers"][0]["name"] == "em/fibsem-uint16"  # EM first, labels on top
    assert state["layers"][-1]["type"] == "segmentation"


def test_state_shows_the_first_em_image_and_the_labels_the_rest_hidden(out04: Path) -> None:
    """Five images drawn on top of each other hide one another: the state shows the first
    EM image and the label images (segmentations); LM and predictions are listed as layers
    with ``visible: false`` (a click on the name shows them). Neuroglancer's own state
    model reads the same visibility back."""
    version, images = output_images(open_store(str(out04), read_only=True), SERVER)
    state = viewer_state(images, version)
    visible = {layer["name"]: layer.get("visible", True) for layer in state["layers"]}
    assert visible == {
        "em/fibsem-uint16": True,
        "labels/mito_seg": True,
        "lm/b2": False,
        "lm/blosc": False,
        "labels/er_pred": False,
    }
    neuroglancer = pytest.importorskip("neuroglancer", reason="pip install neuroglancer")
    parsed = neuroglancer.ViewerState(state)
    assert {layer.name: layer.visible for layer in parsed.layers} == visible
    # without an EM image, the first image layer (images by path) and the labels
    no_em = [image for image in images if not image.path.startswith("em/")]
    shown = [
        layer["name"]
        for layer in viewer_state(no_em, version)["layers"]
        if layer.get("visible", True)
    ]
    assert shown == ["labels/er_pred", "labels/mito_seg"]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_image_layers_carry_the_data_percentiles(out04: Path, out05: Path, version: str) -> None:
    """The shader's range is the 0.5–99.5th percentile of the non-zero voxels of s0 (the
    finest level small enough), read back here with zarr-python."""
    out = out04 if version == "0.4" else out05
    found_version, images = output_images(open_store(str(out), read_only=True), SERVER)
    layers = layers_by_name(viewer_state(images, found_version))
    for name in ("em/fibsem-uint16", "lm/blosc", "labels/er_pred"):
        values = np.asarray(zarr.open_array(str(out / name / "s0"), mode="r")[...]).ravel()
        values = values[values != 0]
        low, high = np.percentile(values, [0.5, 99.5])
        got = shader_range(layers[name]["shader"])
        assert got == pytest.approx((low, high), rel=1e-5, abs=0.5), name
        assert got[1] > got[0]
        assert "emitGrayscale(normalized())" in layers[name]["shader"]
    assert "shader" not in layers["labels/mito_seg"]


def test_neuroglancer_python_parses_the_state(out04: Path) -> None:
    """Neuroglancer's own state model (the Python package's ``ViewerState``) reads the state
    back with the same layer types, sources and dimensions."""
    neuroglancer = pytest.importorskip("neuroglancer", reason="pip install neuroglancer")
    version, images = output_images(open_store(str(out04), read_only=True), SERVER)
    state = viewer_state(images, version)
    parsed = neuroglancer.ViewerState(state)
    assert [layer.type for layer in parsed.layers] == [layer["type"] for layer in state["layers"]]
    assert list(parsed.dimensions.names) == ["x", "y", "z"]
    assert list(parsed.display_dimensions) == ["x", "y", "z"]
    again = parsed.to_json()
    assert [layer["source"] for layer in again["layers"]] == [
        layer["source"] for layer in state["layers"]
    ]


def test_view_with_nothing_finished_says_so(tmp_path: Path) -> None:
    (tmp_path / "empty.zarr").mkdir()
    result = run_cli("view", str(tmp_path / "empty.zarr"), "--port", "0")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert "no finished image" in result.stderr


def test_view_names_images_still_being_migrated(n5: Path, tmp_path: Path) -> None:
    """An image whose migration started and did not finish is not presented as an image."""
    from migrate.api import prepare
    from migrate.dest import records
    from migrate.target.plan import PlanOptions

    dest = tmp_path / "half.zarr"
    prepared = prepare(str(n5 / "em/fibsem-uint16"), str(dest), PlanOptions(), read_only_dest=False)
    records.record_start(prepared.dest, prepared.plan, prepared.plan.images[0])
    result = run_cli("view", str(dest), "--port", "0")
    assert result.exit_code == 1
    assert "not shown, still being migrated: em/fibsem-uint16" in result.stderr
    assert "error: " in result.stderr
    assert "no finished image" in result.stderr


# --------------------------------------------------------------------------------------
# The local server, with a real HTTP client
# --------------------------------------------------------------------------------------


@pytest.fixture
def served(out05: Path) -> Iterator[tuple[str, Path, list[str]]]:
    log: list[str] = []
    server = make_server(str(out05), 0, log)
    serve_in_background(server)
    yield server.base_url, out05, log
    server.shutdown()
    server.server_close()


def request(base: str, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    connection.request(method, path, headers=headers or {})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def a_shard(out: Path) -> tuple[str, bytes]:
    shard = next(p for p in sorted((out / "em/fibsem-uint16/s0/c").rglob("*")) if p.is_file())
    return "/" + shard.relative_to(out).as_posix(), shard.read_bytes()


def test_server_answers_range_requests_like_neuroglancer_sends(
    served: tuple[str, Path, list[str]],
) -> None:
    base, out, _ = served
    path, data = a_shard(out)
    size = len(data)
    origin = {"Origin": "https://neuroglancer-demo.appspot.com"}
    status, headers, body = request(base, "GET", path, origin)
    assert (status, body) == (200, data)
    assert headers["access-control-allow-origin"] == "*"
    assert headers["accept-ranges"] == "bytes"
    for header, start, stop in (
        ("bytes=0-9", 0, 10),  # a chunk inside a shard
        (f"bytes=-{16 * 8 + 4}", size - 132, size),  # the shard index at the end (suffix)
        ("bytes=5-", 5, size),
        (f"bytes=3-{size + 100}", 3, size),  # clipped to the object
    ):
        status, headers, body = request(base, "GET", path, {**origin, "Range": header})
        assert status == 206, header
        assert body == data[start:stop], header
        assert headers["content-range"] == f"bytes {start}-{stop - 1}/{size}", header
        assert headers["content-length"] == str(stop - start)
        assert headers["access-control-allow-origin"] == "*"
        assert "Content-Range" in headers["access-control-expose-headers"]
    status, headers, body = request(base, "GET", path, {"Range": f"bytes={size}-"})
    assert (status, headers["content-range"], body) == (416, f"bytes */{size}", b"")


def test_server_head_preflight_and_missing_keys(served: tuple[str, Path, list[str]]) -> None:
    base, out, log = served
    path, data = a_shard(out)
    status, headers, body = request(base, "HEAD", path)
    assert (status, headers["content-length"], body) == (200, str(len(data)), b"")
    # the preflight a page of another origin sends before a Range request
    status, headers, body = request(
        base,
        "OPTIONS",
        path,
        {
            "Origin": "https://neuroglancer-demo.appspot.com",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "range",
            "Access-Control-Request-Private-Network": "true",
        },
    )
    assert status == 204
    assert headers["access-control-allow-origin"] == "*"
    assert "GET" in headers["access-control-allow-methods"]
    assert "range" in headers["access-control-allow-headers"].lower()
    assert headers["access-control-allow-private-network"] == "true"
    # metadata as JSON; missing keys (Neuroglancer probes .zarray, .zattrs) are 404 with CORS
    status, headers, body = request(base, "GET", "/em/fibsem-uint16/zarr.json")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["node_type"] == "group"
    for missing in ("/em/fibsem-uint16/.zarray", "/em/nothing/zarr.json", "/em", "/../x"):
        status, headers, _ = request(base, "GET", missing)
        assert status == 404, missing
        assert headers["access-control-allow-origin"] == "*"
    status, _, _ = request(base, "GET", "/%2e%2e/" + out.name + "/zarr.json")
    assert status == 404
    assert any(line.startswith("HEAD ") for line in log)


def test_view_serves_a_local_output_until_interrupted(out04: Path, tmp_path: Path) -> None:
    """``view PATH --open`` (a real process): prints the link, hands it to the browser
    ($BROWSER, here a script that writes it down), serves the tree the link reads on
    127.0.0.1, and stops cleanly on Ctrl-C."""
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.py"
    browser.write_text(f"import sys; open({str(opened)!r}, 'w').write(sys.argv[1])\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "migrate", "view", str(out04), "--port", "0", "--open"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "BROWSER": f"{sys.executable} {browser} %s"},
    )
    try:
        assert process.stdout is not None
        link = process.stdout.readline().strip()
        assert link.startswith("https://neuroglancer-demo.appspot.com/#!")
        state = decode_link(link)
        source = layers_by_name(state)["em/fibsem-uint16"]["source"]
        url = source.removeprefix("zarr://")
        parts = urlsplit(url)
        assert parts.hostname == "127.0.0.1"
        status, _headers, body = request(
            f"http://127.0.0.1:{parts.port}", "GET", parts.path + ".zattrs"
        )
        assert status == 200
        assert json.loads(body)["multiscales"][0]["axes"][2]["name"] == "x"
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "serving" in err
    assert "stopped serving" in err
    assert opened.read_text() == link
    # what the link shows and what it lists hidden, said on the terminal
    assert (
        "shown: em/fibsem-uint16, labels/mito_seg; listed but hidden (click a layer's name in "
        "Neuroglancer to show it): labels/er_pred, lm/b2, lm/blosc"
    ) in err


def test_from_state_reads_links_and_files(tmp_path: Path) -> None:
    from migrate.cli.view import read_old_state

    encoded = "https://neuroglancer-demo.appspot.com/#!%7B%22layers%22%3A%5B%5D%7D"
    assert read_old_state(encoded) == {"layers": []}
    assert read_old_state('http://x/#!{"layers":[1]}') == {"layers": [1]}
    file = tmp_path / "link.txt"
    file.write_text(encoded + "\n")
    assert read_old_state(str(file)) == {"layers": []}
    file.write_text('{"position": [1, 2, 3]}')
    assert read_old_state(str(file)) == {"position": [1, 2, 3]}
    long_link = "https://neuroglancer-demo.appspot.com/#!" + json.dumps({"note": "n" * 600})
    assert read_old_state(long_link) == {"note": "n" * 600}  # too long for a file name


def test_convert_says_how_to_view_a_local_output(n5: Path, tmp_path: Path) -> None:
    result = run_cli("convert", str(n5 / "em/fibsem-uint16"), str(tmp_path / "o.zarr"))
    assert result.exit_code == 0
    assert f"cellmap-migrate view {tmp_path / 'o.zarr'}" in result.stderr


# --------------------------------------------------------------------------------------
# S3: the bucket's HTTPS URLs
# --------------------------------------------------------------------------------------


def test_s3_output_links_read_the_bucket_over_https(
    n5: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.s3server import CLEARED_AWS_VARIABLES, MotoServer, fake_aws_environment, s3_client

    moto = MotoServer()
    moto.start()
    try:
        for name in CLEARED_AWS_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        home = tmp_path / "home"
        home.mkdir()
        for name, value in fake_aws_environment(moto.url, home).items():
            monkeypatch.setenv(name, value)
        bucket = f"view-{uuid.uuid4().hex[:8]}"
        s3_client(moto.url).create_bucket(Bucket=bucket)
        dest = f"s3://{bucket}/{DATASET}/{DATASET}.zarr"
        converted = run_cli("convert", str(n5 / "labels/mito_seg"), dest)
        assert converted.exit_code == 0, converted.stderr
        hint = next(line for line in converted.stderr.splitlines() if "Neuroglancer" in line)
        viewed = run_cli("view", dest)
        assert viewed.exit_code == 0, viewed.stderr
        assert hint == f"open it in Neuroglancer: {viewed.stdout.strip()}"
        state = decode_link(viewed.stdout.strip())
        # a custom endpoint: path style under it
        assert state["layers"] == [
            {
                "type": "segmentation",
                "source": f"zarr://{moto.url}/{bucket}/{DATASET}/{DATASET}.zarr/labels/mito_seg/",
                "name": "labels/mito_seg",
            }
        ]
        # AWS itself: virtual-hosted style
        from migrate.storage import S3Store
        from migrate.view.scan import s3_https_url

        monkeypatch.delenv("AWS_ENDPOINT_URL")
        aws = S3Store("s3://janelia-cosem-datasets/jrc_hela-2/jrc_hela-2.zarr", read_only=True)
        assert s3_https_url(aws, "em/fibsem-uint16") == (
            "https://janelia-cosem-datasets.s3.amazonaws.com/jrc_hela-2/jrc_hela-2.zarr/"
            "em/fibsem-uint16"
        )
    finally:
        moto.stop()


# --------------------------------------------------------------------------------------
# Old N5 states → the Zarr, with numbers computed by hand
# --------------------------------------------------------------------------------------

EM = ViewImage(
    path="recon-1/em/fibsem-uint16",
    url="https://bucket.s3.amazonaws.com/jrc_x/jrc_x.zarr/recon-1/em/fibsem-uint16",
    kind="image",
    dtype="uint16",
    axes=("z", "y", "x"),
    axis_types=("space", "space", "space"),
    units=("nanometer",) * 3,
    scale=(5.24, 4.0, 4.0),
    translation=(0.0, 0.0, 0.0),
    shape=(1000, 2000, 3000),
    contrast=(100.0, 200.0),
    source_path="em/fibsem-uint16",
)
SEG = ViewImage(
    path="recon-1/labels/mito_seg",
    url="https://bucket.s3.amazonaws.com/jrc_x/jrc_x.zarr/recon-1/labels/mito_seg",
    kind="label",
    dtype="uint64",
    axes=("z", "y", "x"),
    axis_types=("space", "space", "space"),
    units=("nanometer",) * 3,
    scale=(10.48, 8.0, 8.0),
    translation=(2.62, 2.0, 2.0),
    shape=(500, 1000, 1500),
    source_path="labels/mito_seg",
)
LM = ViewImage(
    path="lm/er_palm",
    url="https://bucket.s3.amazonaws.com/jrc_x/jrc_x.zarr/lm/er_palm",
    kind="image",
    dtype="float32",
    axes=("z", "y", "x"),
    axis_types=("space", "space", "space"),
    units=("nanometer",) * 3,
    scale=(20.0, 16.0, 16.0),
    translation=(100.0, 48.0, 48.0),
    shape=(10, 20, 30),
    contrast=(0.0, 1.0),
    source_path="lm/er_palm",
)
OLD_N5 = "s3://janelia-cosem-datasets/jrc_x/jrc_x.n5"


def old_state() -> dict[str, Any]:
    """A state as the portal published it for the N5: x, y, z at the EM's voxel size."""
    return {
        "dimensions": {"x": [4e-9, "m"], "y": [4e-9, "m"], "z": [5.24e-9, "m"]},
        "position": [100.5, 200.5, 50.5],
        "crossSectionScale": 2.5,
        "layers": [
            {"type": "image", "source": f"n5://{OLD_N5}/em/fibsem-uint16", "name": "fibsem"},
            {
                "type": "segmentation",
                "source": {"url": f"n5://{OLD_N5}/labels/mito_seg/s0/"},
                "segments": ["7"],
                "name": "mito",
            },
            {"type": "mesh", "source": "precomputed://s3://x/mesh/mito", "name": "meshes"},
            {
                "type": "annotation",
                "source": {
                    "url": "local://annotations",
                    "transform": {
                        "outputDimensions": {
                            "x": [4e-9, "m"],
                            "y": [4e-9, "m"],
                            "z": [5.24e-9, "m"],
                        }
                    },
                },
                "annotations": [
                    {"type": "point", "id": "a", "point": [10.5, 20.5, 30.5]},
                    {
                        "type": "line",
                        "id": "b",
                        "pointA": [0.0, 0.0, 0.0],
                        "pointB": [1.0, 2.0, 3.0],
                    },
                    {
                        "type": "ellipsoid",
                        "id": "c",
                        "center": [50.5, 60.5, 70.5],
                        "radii": [2.0, 3.0, 4.0],
                    },
                ],
                "name": "notes",
            },
        ],
        "layout": "4panel",
    }


def test_from_state_moves_positions_half_a_voxel_and_repoints_layers() -> None:
    """EM s0: 4 nm (x, y), 5.24 nm (z), translation 0. The old state showed voxel i over
    [i, i + 1) (corner at i); the Zarr centres it at i × spacing. So every point moves by
    −½ voxel: x 100.5 → 100.0 (402 nm → 400 nm), y 200.5 → 200.0, z 50.5 → 50.0
    (264.62 nm → 262 nm)."""
    converted = convert_state(old_state(), [EM, SEG, LM], "0.4")
    state = converted.state
    assert state["dimensions"] == {"x": [4e-9, "m"], "y": [4e-9, "m"], "z": [5.24e-9, "m"]}
    assert state["displayDimensions"] == ["x", "y", "z"]
    assert state["position"] == [100.0, 200.0, 50.0]
    layers = layers_by_name(state)
    assert layers["fibsem"]["source"] == (
        "zarr://https://bucket.s3.amazonaws.com/jrc_x/jrc_x.zarr/recon-1/em/fibsem-uint16/"
    )
    assert layers["mito"]["source"] == (
        "zarr://https://bucket.s3.amazonaws.com/jrc_x/jrc_x.zarr/recon-1/labels/mito_seg/"
    )
    assert layers["mito"]["segments"] == ["7"]  # the rest of each layer is kept
    assert layers["meshes"]["source"] == "precomputed://s3://x/mesh/mito"  # not an N5 image
    notes = layers["notes"]["annotations"]
    assert notes[0]["point"] == [10.0, 20.0, 30.0]
    assert notes[1]["pointA"] == [-0.5, -0.5, -0.5]
    assert notes[1]["pointB"] == [0.5, 1.5, 2.5]
    assert notes[2]["center"] == [50.0, 60.0, 70.0]
    assert notes[2]["radii"] == [2.0, 3.0, 4.0]  # lengths do not move
    assert state["crossSectionScale"] == 2.5
    assert len(converted.repointed) == 2


def test_from_state_matches_axes_by_name_and_converts_units() -> None:
    """An old state in z, y, x order, with 1 nm dimensions (positions in nm): the same voxel
    as above, x 402 nm → 400 nm = 100 × 4 nm, y 802 → 800 = 200 × 4, z 264.62 → 262 =
    50 × 5.24, in a new state listed x, y, z."""
    old = old_state()
    old["dimensions"] = {"z": [1, "nm"], "y": [1e-9, "m"], "x": [1e-9, "m"]}
    old["position"] = [264.62, 802.0, 402.0]
    old["layers"] = old["layers"][:1]
    state = convert_state(old, [EM], "0.5").state
    assert list(state["dimensions"]) == ["x", "y", "z"]
    assert state["position"] == [100.0, 200.0, 50.0]
    assert state["layers"][0]["source"].startswith("zarr3://https://bucket.s3.amazonaws.com/")


def test_from_state_uses_the_reference_images_translation() -> None:
    """LM alone: 16 nm (x, y), 20 nm (z), translation (z, y, x) 100, 48, 48 nm. Old x 10.5
    × 16 = 168 nm → 168 + 48 − 8 = 208 nm = 13 × 16 nm (voxel 10's centre: 48 + 10 × 16);
    z 5.5 × 20 = 110 nm → 110 + 100 − 10 = 200 nm = 10 × 20 nm. With no ``dimensions`` in
    the old state, Neuroglancer had used the N5's voxel size in x, y, z order."""
    old = {
        "position": [10.5, 10.5, 5.5],
        "layers": [{"type": "image", "source": f"{OLD_N5}/lm/er_palm|n5:", "name": "lm"}],
    }
    state = convert_state(old, [EM, LM], "0.4").state
    assert state["dimensions"] == {"x": [1.6e-8, "m"], "y": [1.6e-8, "m"], "z": [2e-8, "m"]}
    assert state["position"] == [13.0, 13.0, 10.0]


def test_n5_sources_are_recognised_in_every_spelling() -> None:
    assert n5_image_path(f"n5://{OLD_N5}/em/fibsem-uint16") == "em/fibsem-uint16"
    assert n5_image_path(f"n5://{OLD_N5}/em/fibsem-uint16/s3/") == "em/fibsem-uint16"
    assert n5_image_path(f"{OLD_N5}/labels/gt|n5:") == "labels/gt"
    https = "n5://https://janelia-cosem-datasets.s3.amazonaws.com/jrc_x/jrc_x.n5/lm/er_palm"
    assert n5_image_path(https) == "lm/er_palm"
    assert n5_image_path("zarr://s3://b/x.zarr/em/a") is None
    assert n5_image_path("precomputed://gs://b/x") is None


def test_view_from_state_end_to_end(out04: Path, tmp_path: Path) -> None:
    """``view --from-state FILE`` on a real output re-points the old N5 layer at the served
    Zarr and moves the position (EM of the fixture: translation 0, so −½ voxel)."""
    old: dict[str, Any] = {
        "dimensions": {"x": [4e-9, "m"], "y": [4e-9, "m"], "z": [5.24e-9, "m"]},
        "position": [3.5, 4.5, 5.5],
        "layers": [{"type": "image", "source": f"n5://{out04}/../{DATASET}.n5/em/fibsem-uint16"}],
    }
    old["layers"][0]["name"] = "em"
    file = tmp_path / "old.json"
    file.write_text(json.dumps(old))
    process = subprocess.Popen(
        [sys.executable, "-m", "migrate", "view", str(out04), "--port", "0", "--from-state",
         str(file), "--neuroglancer-url", "http://127.0.0.1:1/ng/"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        link = process.stdout.readline().strip()
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert link.startswith("http://127.0.0.1:1/ng/#!"), err
    state = decode_link(link)
    assert state["position"] == [3.0, 4.0, 5.0]
    source = state["layers"][0]["source"]
    assert source.startswith("zarr://http://127.0.0.1:")
    assert source.endswith("/em/fibsem-uint16/")
    assert "re-pointed" in err


def test_from_state_without_any_layer_of_the_output_is_an_error(
    out04: Path, tmp_path: Path
) -> None:
    file = tmp_path / "old.json"
    file.write_text(json.dumps({"layers": [{"type": "image", "source": "n5://s3://b/o.n5/x"}]}))
    result = run_cli("view", str(out04), "--port", "0", "--from-state", str(file))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert "no layer shows an N5 image" in result.stderr


# --------------------------------------------------------------------------------------
# Every output opens in every reader: the codec table
# --------------------------------------------------------------------------------------

NEUROGLANCER_ZARR_V2_COMPRESSORS = {None, "blosc", "zlib", "gzip", "zstd", "imagecodecs_jpegxl"}
"""What Neuroglancer reads as a Zarr v2 ``compressor``: google/neuroglancer
``src/datasource/zarr/metadata/parse.ts`` (``parseV2Metadata``: null, blosc, zlib, gzip, zstd,
imagecodecs_jpegxl; anything else throws "Unsupported compressor")."""
NEUROGLANCER_ZARR_V3_CODECS = {
    "bytes", "transpose", "sharding_indexed", "crc32c", "gzip", "blosc", "zstd", "jpegxl",
}  # fmt: skip
"""The Zarr v3 codecs Neuroglancer registers: google/neuroglancer
``src/datasource/zarr/codec/*/resolve.ts`` (blosc, bytes, crc32c, gzip, jpegxl,
sharding_indexed, transpose, zstd)."""

V2_CANDIDATES = {
    "gzip": {"id": "gzip", "level": 1},
    "zlib": {"id": "zlib", "level": 1},
    "bz2": {"id": "bz2", "level": 1},
    "blosc": {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0},
    "zstd": {"id": "zstd", "level": 1},
    "lzma": {"id": "lzma", "format": 1, "check": -1, "preset": None, "filters": None},
}
"""Zarr v2 compressors the tool could write (and lzma, which N5 xz would need)."""


def _tensorstore_reads_v2(path: Path, expected: np.ndarray[Any, Any]) -> bool:
    try:
        spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(path) + "/"}}
        got = ts.open(spec, open=True, read=True).result().read().result()
    except Exception:
        return False
    return bool(np.array_equal(got, expected))


def test_codec_table_is_what_every_reader_reads(tmp_path: Path) -> None:
    """``READ_BY_EVERY_READER['0.4']`` is exactly the Zarr v2 compressors that zarr-python
    and TensorStore read here, for real, and Neuroglancer lists in its source."""
    from numcodecs import get_codec
    from zarr.storage import LocalStore

    data = np.arange(4 * 5 * 6, dtype="uint16").reshape(4, 5, 6)
    read_by_all = {"raw"}
    for name, config in V2_CANDIDATES.items():
        path = tmp_path / name
        array = zarr.create_array(
            LocalStore(str(path)), shape=data.shape, chunks=(2, 5, 6), dtype=data.dtype,
            zarr_format=2, compressors=get_codec(config),
        )  # fmt: skip
        array[...] = data
        zarr_python = bool(np.array_equal(zarr.open_array(str(path), mode="r")[...], data))
        readers = zarr_python and _tensorstore_reads_v2(path, data)
        if readers and name in NEUROGLANCER_ZARR_V2_COMPRESSORS:
            read_by_all.add(name)
    assert read_by_all == READ_BY_EVERY_READER["0.4"]
    assert "bz2" not in read_by_all
    assert "zstd" in read_by_all
    assert set(READ_BY_EVERY_READER["0.5"]) - {"raw"} <= NEUROGLANCER_ZARR_V3_CODECS


def output_codecs(out: Path, version: str) -> dict[str, set[str]]:
    """Per level array: the compressor (v2) or codec names (v3, inner ones too)."""
    found: dict[str, set[str]] = {}
    if version == "0.4":
        for zarray in out.rglob(".zarray"):
            compressor = json.loads(zarray.read_text())["compressor"]
            key = zarray.parent.relative_to(out).as_posix()
            found[key] = {compressor["id"] if compressor else "raw"}
        return found
    for meta in out.rglob("zarr.json"):
        doc = json.loads(meta.read_text())
        if doc["node_type"] != "array":
            continue
        names: set[str] = set()
        stack = list(doc["codecs"])
        while stack:
            codec = stack.pop()
            names.add(codec["name"])
            config = codec.get("configuration", {})
            stack += config.get("codecs", []) + config.get("index_codecs", [])
        found[meta.parent.relative_to(out).as_posix()] = names
    return found


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_every_kept_codec_opens_in_every_reader(
    n5: Path, out04: Path, out05: Path, version: str
) -> None:
    """The outputs of gzip, zlib, bzip2, blosc and zstd sources (``--codec keep``) use only
    codecs Neuroglancer lists, and read back equal in zarr-python, TensorStore and
    ome-zarr-py."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    from tests.n5_reader import read_n5_array

    out = out04 if version == "0.4" else out05
    codecs = output_codecs(out, version)
    assert len(codecs) == sum(spec.levels for spec in SPECS)
    for array, names in codecs.items():
        allowed = (
            NEUROGLANCER_ZARR_V2_COMPRESSORS | {"raw"}
            if version == "0.4"
            else NEUROGLANCER_ZARR_V3_CODECS
        )
        assert names <= allowed, array
        expected = read_n5_array(n5 / array)
        np.testing.assert_array_equal(zarr.open_array(str(out / array), mode="r")[...], expected)
        driver = "zarr" if version == "0.4" else "zarr3"
        spec = {"driver": driver, "kvstore": {"driver": "file", "path": str(out / array) + "/"}}
        np.testing.assert_array_equal(ts.open(spec, open=True).result().read().result(), expected)
    for spec_ in SPECS:
        # a label image's node comes after its parent image's (image-label.source)
        nodes = Reader(parse_url(str(out / spec_.path)))()
        node = next(n for n in nodes if str(n.zarr.path).rstrip("/") == str(out / spec_.path))
        np.testing.assert_array_equal(
            np.asarray(node.data[0]), read_n5_array(n5 / spec_.path / "s0"), spec_.path
        )


def test_bzip2_is_reencoded_for_04_and_the_plan_says_why(n5: Path, out04: Path) -> None:
    """Neuroglancer refuses Zarr v2 ``bz2`` ("Unsupported compressor"): ``--codec keep``
    re-encodes a bzip2 source as zstd, and the dry run says so."""
    zarray = json.loads((out04 / "lm/b2/s0/.zarray").read_text())
    assert zarray["compressor"] == {"id": "zstd", "level": 3}
    result = run_cli("convert", str(n5 / "lm/b2"), "--dry-run", "--json")
    assert result.exit_code == 0
    codec = result.json["plan"]["images"][0]["levels"][0]["codec"]
    assert codec["name"] == "zstd"
    assert not codec["transplant"]
    assert "not read by Neuroglancer" in codec["reason"]
    text = run_cli("convert", str(n5 / "lm/b2"), "--dry-run").stdout
    assert "not read by Neuroglancer" in text


# --------------------------------------------------------------------------------------
# The real Neuroglancer client in headless Chromium
# --------------------------------------------------------------------------------------


def _neuroglancer_and_chromium() -> tuple[Any, str]:
    if importlib.util.find_spec("neuroglancer") is None:
        pytest.skip("the neuroglancer package (its built client) is not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium (apt-get install -y chromium)")
    import neuroglancer

    return neuroglancer, chromium


def load_in_neuroglancer(
    out: Path,
    tmp_path: Path,
    done: Callable[[list[str]], bool],
    *,
    all_visible: bool = False,
) -> tuple[dict[str, Any], list[str], list[str]]:
    """Open the ``view`` state of ``out`` in the real Neuroglancer client in headless
    Chromium, the data read from our server (``all_visible``: every layer shown, hidden
    ones too). Returns the state as the client echoes it, the server's request lines and
    the browser console's lines, once ``done(requests)`` (or after 90 s, with whatever was
    requested: the assertions then say what is missing)."""
    neuroglancer, chromium = _neuroglancer_and_chromium()
    log: list[str] = []
    server = make_server(str(out), 0, log)
    serve_in_background(server)
    version, images = output_images(open_store(str(out), read_only=True), server.base_url)
    state = viewer_state(images, version)
    if all_visible:
        state["layers"] = [{**layer, "visible": True} for layer in state["layers"]]
    neuroglancer.set_server_bind_address("127.0.0.1")
    viewer = neuroglancer.Viewer()
    viewer.set_state(neuroglancer.ViewerState(state))
    console = tmp_path / "chromium.log"
    with console.open("w") as err:
        browser = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--use-angle=swiftshader",
             "--enable-unsafe-swiftshader", "--enable-logging=stderr", "--v=0",
             "--window-size=1000,800", f"--user-data-dir={tmp_path / 'profile'}",
             viewer.get_viewer_url()],
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not done(list(log)):
                time.sleep(0.2)
            echoed = viewer.state.to_json()
        finally:
            browser.terminate()
            browser.wait(timeout=30)
            server.shutdown()
            server.server_close()
            neuroglancer.stop()
    lines = [line for line in console.read_text().splitlines() if ":CONSOLE" in line]
    return echoed, log, lines


def chunk_requests(log: list[str], layer: str) -> list[str]:
    """Answered requests of data (not metadata) under ``layer``."""
    metadata = (".zarray", ".zattrs", ".zgroup", "zarr.json")
    return [
        line
        for line in log
        if line.split()[1].startswith(f"/{layer}/")
        and not line.split()[1].endswith(metadata)
        and line.split()[2] in ("200", "206")
    ]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_real_neuroglancer_loads_every_layer(
    out04: Path, out05: Path, tmp_path: Path, version: str
) -> None:
    out = out04 if version == "0.4" else out05

    def every_layer_read(log: list[str]) -> bool:
        return all(chunk_requests(log, spec.path) for spec in SPECS)

    # every layer, the hidden ones made visible: each loads in the real client
    echoed, log, console = load_in_neuroglancer(out, tmp_path, every_layer_read, all_visible=True)
    for spec in SPECS:  # the client parsed each layer's metadata and asked for its chunks
        assert chunk_requests(log, spec.path), f"{spec.path}: no chunk read\n" + "\n".join(log)
    if version == "0.5":
        assert any(line.split()[2] == "206" for line in log)  # shards are read by range
    errors = [line for line in console if "rror" in line or "nsupported" in line]
    assert not errors, "\n".join(errors)
    assert echoed["displayDimensions"] == ["x", "y", "z"]
    assert {layer["name"]: layer["type"] for layer in echoed["layers"]}["labels/mito_seg"] == (
        "segmentation"
    )


HIDDEN = ("labels/er_pred", "lm/b2", "lm/blosc")
"""The layers ``view`` lists hidden, in layer order (images by path, then labels)."""


def test_real_neuroglancer_reads_only_the_shown_layers(out04: Path, tmp_path: Path) -> None:
    """The state as ``view`` makes it, in the real client: the EM image and the labels are
    drawn (their chunks read), the hidden layers are listed (their metadata read) and none
    of their chunks is asked for."""

    def shown_read_and_hidden_listed(log: list[str]) -> bool:
        shown = all(chunk_requests(log, path) for path in ("em/fibsem-uint16", "labels/mito_seg"))
        listed = all(any(f" /{path}/" in f" {line}" for line in log) for path in HIDDEN)
        return shown and listed

    echoed, log, console = load_in_neuroglancer(out04, tmp_path, shown_read_and_hidden_listed)
    assert shown_read_and_hidden_listed(log), "\n".join(log)
    for path in HIDDEN:
        assert not chunk_requests(log, path), path
    visible = {layer["name"]: layer.get("visible", True) for layer in echoed["layers"]}
    assert [name for name, shown in visible.items() if not shown] == list(HIDDEN)
    errors = [line for line in console if "rror" in line]
    assert not errors, "\n".join(errors)


def test_real_neuroglancer_refuses_bz2(out04: Path, tmp_path: Path) -> None:
    """The control for the test above: the same image with the compressor ``--codec keep``
    used to write for a bzip2 source (Zarr v2 ``bz2``) gets no chunk read at all."""
    copy = tmp_path / "bz2.zarr"
    shutil.copytree(out04, copy)
    from numcodecs import BZ2, Zstd

    for zarray in (copy / "lm/b2").rglob(".zarray"):
        meta = json.loads(zarray.read_text())
        meta["compressor"] = {"id": "bz2", "level": 9}
        zarray.write_text(json.dumps(meta))
        for chunk in zarray.parent.rglob("*"):
            if chunk.is_file() and not chunk.name.startswith("."):
                chunk.write_bytes(BZ2(9).encode(Zstd().decode(chunk.read_bytes())))
    bz2_array = zarr.open_array(str(copy / "lm/b2/s0"), mode="r")[...]
    np.testing.assert_array_equal(bz2_array, zarr.open_array(str(out04 / "lm/b2/s0"))[...])

    def others_read(log: list[str]) -> bool:
        asked = any(line.startswith("GET /lm/b2/s0/.zarray ") for line in log)
        others = [spec.path for spec in SPECS if spec.path != "lm/b2"]
        return asked and all(chunk_requests(log, path) for path in others)

    _, log, _ = load_in_neuroglancer(copy, tmp_path, others_read)
    assert chunk_requests(log, "em/fibsem-uint16")  # the others load…
    assert not chunk_requests(log, "lm/b2")  # …this one does not


@pytest.mark.parametrize(
    ("offset", "version"), [((0.0, 0.0, 0.0), "0.4"), ((100.0, 48.0, 40.0), "0.5")]
)
def test_real_neuroglancer_shows_the_same_voxels_after_from_state(
    tmp_path: Path, offset: tuple[float, float, float], version: str
) -> None:
    """The proof of the ``--from-state`` arithmetic in the real client: an old state of the
    N5 (read by Neuroglancer's own n5 source from our server) and the converted state of
    the Zarr render the same pixels at 20 screen pixels per voxel; the old position on the
    Zarr (layers re-pointed, nothing moved) does not. Noise content: every voxel differs."""
    neuroglancer, chromium = _neuroglancer_and_chromium()
    image_module = pytest.importorskip("PIL.Image")
    root = tmp_path / "data"
    spec = ImageSpec(
        path="em/noise", shape=(20, 24, 28), dtype="uint8", block_size=(8, 8, 8), levels=2,
        voxel_size=(5.24, 4.0, 4.0), offset=offset, compression={"type": "gzip", "level": 1},
        content="noise", seed=9,
    )  # fmt: skip
    n5_root = write_dataset(root, "jrc_shot-1", [spec])
    converted = run_cli("convert", str(n5_root), str(root / "out.zarr"), "--ngff-version", version)
    assert converted.exit_code == 0, converted.stderr
    server = make_server(str(root), 0, [])
    serve_in_background(server)
    found, images = output_images(
        open_store(str(root / "out.zarr"), read_only=True), server.base_url + "/out.zarr"
    )
    shader = "#uicontrol invlerp normalized(range=[0, 255])\nvoid main() {\n  emitGrayscale(normalized());\n}\n"  # noqa: E501
    old = {
        "dimensions": {"x": [4e-9, "m"], "y": [4e-9, "m"], "z": [5.24e-9, "m"]},
        "position": [10.3, 12.7, 9.6],
        "crossSectionScale": 0.05,
        "layout": "xy",
        "showAxisLines": False,
        "showScaleBar": False,
        "layers": [
            {
                "type": "image",
                "source": f"n5://{server.base_url}/jrc_shot-1/jrc_shot-1.n5/em/noise",
                "shader": shader,
                "name": "em",
            }
        ],
    }
    new = convert_state(old, images, found).state
    unmoved = {**old, "layers": new["layers"]}
    neuroglancer.set_server_bind_address("127.0.0.1")
    viewer = neuroglancer.Viewer()
    browser = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--use-angle=swiftshader",
         "--enable-unsafe-swiftshader", "--window-size=800,600",
         f"--user-data-dir={tmp_path / 'profile'}", viewer.get_viewer_url()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    shots = {}
    try:
        for name, state in (("old", old), ("new", new), ("unmoved", unmoved)):
            viewer.set_state(neuroglancer.ViewerState(state))
            reply = viewer.screenshot(size=[400, 300])  # waits until the chunks are drawn
            pixels = image_module.open(io.BytesIO(reply.screenshot.image))
            shots[name] = np.asarray(pixels)[..., :3].astype(int)
    finally:
        browser.terminate()
        browser.wait(timeout=30)
        server.shutdown()
        server.server_close()
        neuroglancer.stop()
    assert shots["old"].std() > 20  # the noise is on screen, not a blank panel
    np.testing.assert_array_equal(shots["new"], shots["old"])
    assert np.abs(shots["unmoved"] - shots["old"]).mean() > 10


def test_real_neuroglancer_draws_x_across_contrast_and_segments(tmp_path: Path) -> None:
    """What the issue saw Neuroglancer do with a state that only names the layers, fixed by
    ``view``'s state, seen in screenshots of the real client ("xy" panel, 4 px per voxel):
    the image (z 8, y 16, x 48 voxels) is 48 voxels wide, not 8 (x, y, z display); the EM
    shader's range spreads the data over the grey scale (the default full uint16 range shows
    it nearly flat); the label image is drawn in segment colours, not grey."""
    neuroglancer, chromium = _neuroglancer_and_chromium()
    image_module = pytest.importorskip("PIL.Image")
    root = tmp_path / "data"
    common: dict[str, Any] = {
        "shape": (8, 16, 48), "block_size": (8, 8, 8), "levels": 1,
        "voxel_size": (4.0, 4.0, 4.0), "compression": {"type": "gzip", "level": 1},
    }  # fmt: skip
    n5_root = write_dataset(
        root, "jrc_draw-1",
        [ImageSpec(path="em/fibsem-uint16", dtype="uint16", content="gradient", **common),
         ImageSpec(path="labels/cells_seg", dtype="uint64", content="labels", **common)],
    )  # fmt: skip
    assert run_cli("convert", str(n5_root), str(root / "out.zarr")).exit_code == 0
    server = make_server(str(root / "out.zarr"), 0, [])
    serve_in_background(server)
    version, images = output_images(
        open_store(str(root / "out.zarr"), read_only=True), server.base_url
    )
    state = viewer_state(images, version)
    view = {**state, "layout": "xy", "crossSectionScale": 0.25, "showAxisLines": False}
    em, seg = view["layers"]
    assert (em["type"], seg["type"]) == ("image", "segmentation")
    plain = {k: v for k, v in em.items() if k != "shader"}
    cases = {
        "em": {**view, "layers": [em]},
        "em, default shader": {**view, "layers": [plain]},
        "em, OME axis order": {
            **{k: v for k, v in view.items() if k != "displayDimensions"},
            "dimensions": dict(reversed(list(view["dimensions"].items()))),
            "layers": [em],
        },
        "labels": {**view, "layers": [{**seg, "segments": []}]},
    }
    neuroglancer.set_server_bind_address("127.0.0.1")
    viewer = neuroglancer.Viewer()
    browser = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--use-angle=swiftshader",
         "--enable-unsafe-swiftshader", "--window-size=800,600",
         f"--user-data-dir={tmp_path / 'profile'}", viewer.get_viewer_url()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    shots: dict[str, np.ndarray[Any, Any]] = {}
    try:
        for name, case in cases.items():
            viewer.set_state(neuroglancer.ViewerState(case))
            reply = viewer.screenshot(size=[400, 300])
            pixels = image_module.open(io.BytesIO(reply.screenshot.image))
            shots[name] = np.asarray(pixels)[..., :3].astype(int)
    finally:
        browser.terminate()
        browser.wait(timeout=30)
        server.shutdown()
        server.server_close()
        neuroglancer.stop()

    def outline(pixels: np.ndarray[Any, Any]) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the yellow box Neuroglancer draws around a volume."""
        yellow = (pixels[..., 0] > 200) & (pixels[..., 1] > 200) & (pixels[..., 2] < 100)
        rows, cols = np.nonzero(yellow)
        return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())

    def inside(pixels: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        left, top, right, bottom = outline(pixels)
        return pixels[top + 3 : bottom - 2, left + 3 : right - 2]

    left, top, right, bottom = outline(shots["em"])
    assert right - left == pytest.approx(48 * 4, abs=4)  # x across
    assert bottom - top == pytest.approx(16 * 4, abs=4)
    left, _, right, _ = outline(shots["em, OME axis order"])
    assert right - left == pytest.approx(8 * 4, abs=4)  # what a state without them shows: z
    assert inside(shots["em"]).std() > 4 * inside(shots["em, default shader"]).std()
    labels = inside(shots["labels"])
    coloured = labels.max(axis=2) - labels.min(axis=2) > 30
    assert coloured.sum() > 100  # segment colours, not shades of grey
