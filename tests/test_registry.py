"""Migrating with the OpenOrganelle registry (issue 20): the 32 real manifests parsed, the
111 flipped sources found; a generated dataset shaped like jrc_hela-2 (EM upright, a
prediction stored mirrored with its pyramid made as stored, an odd y extent) migrated with a
manifest saying what the real one says, read back with zarr-python and the tests' own N5
reader and placed in the world by the written OME metadata alone; conflicts and ``--trust``;
``omero`` and label classification validated with ome-zarr-models and read by ome-zarr-py;
``verify`` through the mirror; resume after SIGKILL; S3 registries; the bulk survey.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from migrate.errors import MetadataError
from migrate.example.fixture import ImageSpec, write_dataset
from migrate.source.image import ordered_levels
from migrate.source.mirror import oriented
from migrate.source.reconcile import MappingOptions, map_image
from migrate.source.registry import (
    Matched,
    load_registry,
    parse_manifest,
    registry_statement,
    source_key,
)
from tests import test_mapping as mapping
from tests.conftest import REGISTRY
from tests.helpers import (
    chunk_files,
    freeze_when,
    kill_frozen,
    popen_convert,
    read_zarr,
    run_cli,
    run_subprocess,
    unit_records,
)
from tests.n5_reader import read_n5_array

HELA = "jrc_hela-2"
SHAPE = (10, 25, 14)
"""z, y, x of s0: an odd y extent, so that the mirror moves the partial window."""
VOXEL = (5.24, 4.0, 4.0)


def real_manifest(name: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads((REGISTRY / f"{name}.manifest.json").read_text())
    return value


def hela_specs(pyramid: str = "mean") -> list[ImageSpec]:
    """EM upright and ``er_pred`` stored upside down (same content), pyramids made as
    stored: windowed means (COSEM windowed translations) or subsamples (origin kept)."""
    em = ImageSpec(
        path="em/fibsem-uint16", shape=SHAPE, dtype="uint16", block_size=(8, 8, 8), levels=3,
        voxel_size=VOXEL, content="noise", seed=7, pyramid=pyramid,  # type: ignore[arg-type]
        downsampling="windowed" if pyramid == "mean" else "subsample",
        compression={"type": "gzip", "level": 1},
    )  # fmt: skip
    pred = dataclasses.replace(
        em, path="labels/er_pred", stored_flip=(False, True, False),
        compression={"type": "zstd", "level": 3},
    )  # fmt: skip
    return [em, pred]


def hela_manifest(path: Path, extent_y: int = SHAPE[1]) -> Path:
    """The real jrc_hela-2 manifest, with ``er_pred``'s y translate the fixture's extent
    (the real one says 6400: 1600 voxels of 4 nm)."""
    manifest = real_manifest(HELA)
    assert manifest["sources"]["er_pred"]["transform"]["translate"] == [0.0, 6400.0, 0.0]
    manifest["sources"]["er_pred"]["transform"]["translate"][1] = extent_y * 4.0
    path.write_text(json.dumps(manifest, indent=1))
    return path


@pytest.fixture(scope="module")
def hela(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("hela")
    n5 = write_dataset(root, HELA, hela_specs("mean"))
    return n5, hela_manifest(root / f"{HELA}.manifest.json")


@pytest.fixture(scope="module")
def hela_out(hela: tuple[Path, Path]) -> Path:
    n5, manifest = hela
    dest = n5.parent / "out.zarr"
    run = run_cli("convert", str(n5), str(dest), "--registry", str(manifest))
    assert run.exit_code == 0, run.stderr
    return dest


def zattrs(path: Path) -> dict[str, Any]:
    value: dict[str, Any] = json.loads((path / ".zattrs").read_text())
    return value


def transforms(image: Path) -> list[tuple[list[float], list[float]]]:
    """(scale, translation) of every level, from the written OME metadata (C order)."""
    out = []
    for dataset in zattrs(image)["multiscales"][0]["datasets"]:
        by_type = {t["type"]: t for t in dataset["coordinateTransformations"]}
        out.append((by_type["scale"]["scale"], by_type["translation"]["translation"]))
    return out


# --------------------------------------------------------------------------------------
# The real registry
# --------------------------------------------------------------------------------------


def test_every_real_manifest_parses_and_the_111_flipped_sources_are_found() -> None:
    registry = load_registry(str(REGISTRY))
    assert len(registry.manifests) == 32
    sources = [s for m in registry.manifests.values() for s in m.manifest.sources.values()]
    assert len(sources) == 409
    assert Counter(s.format for s in sources) == {"n5": 400, "precomputed": 9}
    flipped = [s for s in sources if any(v < 0 for v in s.transform.scale)]
    assert len(flipped) == 111
    assert Counter((s.contentType, s.format) for s in flipped) == {
        ("prediction", "n5"): 105,
        ("em", "precomputed"): 5,
        ("segmentation", "n5"): 1,
    }
    for source in flipped:  # upside down along y only, translated by a whole extent
        z, y, x = source.transform.scale
        assert (z > 0, y < 0, x > 0) == (True, True, True), source.url
        translate = source.transform.translate[1]
        assert translate > 0, source.url
        assert translate / abs(y) == int(translate / abs(y)), source.url
    # every source is matched by its path inside the dataset, trailing "/" or not
    for name, loaded in registry.manifests.items():  # one source per path in a dataset
        keys = Counter(source_key(s.url, name) for s in loaded.manifest.sources.values())
        assert None not in keys
        assert max(keys.values()) == 1, name
    assert source_key("s3://a-mirror/x/jrc_mus-liver/jrc_mus-liver.n5/labels/mito_seg/", "z") == (
        "n5",
        "labels/mito_seg",
    )
    assert source_key(
        "https://host/jrc_hela-2/neuroglancer/em/fibsem-uint8.precomputed", "jrc_hela-2"
    ) == ("dataset", "neuroglancer/em/fibsem-uint8.precomputed")


def test_a_single_manifest_and_the_registry_repository_layout(tmp_path: Path) -> None:
    api = tmp_path / "api" / HELA
    api.mkdir(parents=True)
    shutil.copy(REGISTRY / f"{HELA}.manifest.json", api / "manifest.json")
    (tmp_path / "api" / "index.json").write_text("{}")
    folder = load_registry(str(tmp_path / "api"))
    single = load_registry(str(api / "manifest.json"))
    assert list(folder.manifests) == [HELA]
    assert not folder.single
    assert single.single
    assert folder.manifests[HELA].digest == single.manifests[HELA].digest
    # the digest is of the JSON, not of its whitespace
    compact = tmp_path / "compact.manifest.json"
    compact.write_text(json.dumps(real_manifest(HELA), separators=(",", ":")))
    assert load_registry(str(compact)).manifests[HELA].digest == folder.manifests[HELA].digest


# --------------------------------------------------------------------------------------
# Where mirrored levels land (hand-computed numbers)
# --------------------------------------------------------------------------------------


def test_mirrored_translations_of_odd_windowed_and_subsampled_levels() -> None:
    """The README's worked example, by hand: s0 25 voxels of 4 nm at 0; a windowed level of
    13 voxels of 8 nm at 2 (its last window holds one voxel); a subsampled level of 7
    voxels of 16 nm at 0. Mirrored about s0 (24 × 4 = 96 nm long): s1's partial window
    comes first, centred at 96 − 2 − 12 × 8 = −2; s2 ends at 96 − 0 − 6 × 16 = 0."""
    scales = [(4.0,), (8.0,), (16.0,)]
    translations = [(0.0,), (2.0,), (0.0,)]
    shapes = [(25,), (13,), (7,)]
    out_scales, out_translations = oriented(scales, translations, shapes, [True])
    assert out_scales == scales
    assert out_translations == [(0.0,), (-2.0,), (0.0,)]
    # an even extent: the windows fall where they were (s1 at 2 again); the subsample of
    # s0 voxels 0, 4, …, 20 is, mirrored, voxels 23, 19, …, 3: it starts at 3 × 4 = 12
    _, even = oriented(scales, translations, [(24,), (12,), (6,)], [True])
    assert even == [(0.0,), (2.0,), (12.0,)]
    # stated negative (the N5's own metadata): voxel 0 at t, the first output voxel at
    # t + r (N - 1)
    _, negative = oriented([(-4.0,), (-8.0,)], [(96.0,), (94.0,)], [(25,), (13,)], [True])
    assert negative == [(0.0,), (-2.0,)]
    # the same turned back upright (an upright registry trusted over it): reflected
    _, upright = oriented([(-4.0,), (-8.0,)], [(96.0,), (94.0,)], [(25,), (13,)], [False])
    assert upright == [(0.0,), (2.0,)]


def hela_entry(**transform: Any) -> Matched:
    """jrc_hela-2's ``er_pred`` entry of the real manifest (transform changed as given)."""
    loaded = parse_manifest((REGISTRY / f"{HELA}.manifest.json").read_bytes(), "m.json")
    source = loaded.manifest.sources["er_pred"]
    if transform:
        source = source.model_copy(
            update={"transform": source.transform.model_copy(update=transform)}
        )
    return Matched(source, loaded)


def test_the_real_hela_pyramid_mirrored_by_the_registry_keeps_its_translations() -> None:
    """The published hela-2 EM metadata (1600 voxels along y, levels by 2 down to 100)
    with er_pred's registry entry: mirrored along y, and since every level's windows
    divide 1600 they fall where they were (s4: 6396 − 30 − 99 × 64 = 30)."""
    image = mapping.hela()
    levels = ordered_levels(image)
    statement = registry_statement(hela_entry(), levels, allow_unknown_units=False)
    mapped = map_image(image, MappingOptions(), statement)
    assert mapped.mirror == (False, True, False)
    assert [d.scale for d in mapped.datasets] == mapping.HELA_SCALES
    assert [d.translation for d in mapped.datasets] == mapping.HELA_TRANSLATIONS
    assert mapped.conflicts == ()
    assert "stored mirrored along y" in mapped.sources["orientation"]
    # a translate that is not the mirror's is a conflict naming both values
    moved = registry_statement(
        hela_entry(translate=(0.0, 6000.0, 0.0)), levels, allow_unknown_units=False
    )
    [conflict] = map_image(image, MappingOptions(), moved).conflicts
    assert conflict.startswith("registry vs N5: translation of s0: registry m.json ")
    assert "sources.er_pred.transform.translate is [0.0, 6000.0, 0.0]" in conflict
    assert "puts s0 at [0.0, 0.0, 0.0], for which the registry would say [0.0, 6400.0, 0.0]" in (
        conflict
    )


def test_negative_neuroglancer_spacing_and_levels_that_disagree_on_the_sign() -> None:
    """Neuroglancer metadata only, y spacing −4: stored voxel 0 at 0, the others below it:
    s0 is written from −4 × 1599 = −6396 up; s1 (windowed: −2, spacing −8, 800 voxels)
    from −2 − 8 × 799 = −6394."""
    group = mapping.ng_only_group()
    group["pixelResolution"]["dimensions"][1] = -4.0
    mapped = map_image(mapping.hela(group, mapping.ng_only_s0()), MappingOptions())
    assert mapped.mirror == (False, True, False)
    assert [d.scale for d in mapped.datasets][:2] == [(5.24, 4.0, 4.0), (10.48, 8.0, 8.0)]
    assert [d.translation[1] for d in mapped.datasets][:2] == [-6396.0, -6394.0]
    cosem = mapping.cosem_only_group()
    cosem["multiscales"][0]["datasets"][2]["transform"]["scale"][1] = -16.0
    with pytest.raises(MetadataError, match="opposite signs along y"):
        map_image(mapping.hela(cosem, mapping.ng_only_s0()), MappingOptions())
    cosem["multiscales"][0]["datasets"][2]["transform"]["scale"][1] = 0.0
    with pytest.raises(MetadataError, match=r"scale\[1\]: scale must not be 0"):
        map_image(mapping.hela(cosem, mapping.ng_only_s0()), MappingOptions())


# --------------------------------------------------------------------------------------
# The jrc_hela-2-shaped dataset
# --------------------------------------------------------------------------------------


def _windows(
    out_translation: float, out_scale: float, n: int, t0: float, r0: float, n0: int, mean: bool
) -> list[range]:
    """For each of the ``n`` voxels of a level along one axis, the s0 voxels (of an image at
    ``t0`` with spacing ``r0`` and ``n0`` voxels) it stands for in the world: those whose
    centres its window covers (windowed means), or the one at its centre (subsamples)."""
    out = []
    for j in range(n):
        centre = out_translation + out_scale * j
        if mean:
            low = (centre - out_scale / 2 - t0) / r0
            high = (centre + out_scale / 2 - t0) / r0
            indices = range(max(0, math.ceil(low - 1e-9)), min(n0, math.ceil(high - 1e-9)))
        else:
            at = (centre - t0) / r0
            assert abs(at - round(at)) < 1e-9, "a subsampled voxel between s0 voxels"
            indices = range(round(at), round(at) + 1)
        assert len(indices) > 0, f"voxel {j} at {centre} covers no s0 voxel"
        out.append(indices)
    return out


def world_expected(level_shape: tuple[int, ...], level: tuple[list[float], list[float]],
                   s0: np.ndarray[Any, Any], s0_transform: tuple[list[float], list[float]],
                   mean: bool) -> np.ndarray[Any, Any]:  # fmt: skip
    """What a level must hold at each voxel if it sits where its OME metadata says: the
    (rounded) mean, or the value, of the s0 voxels of the reference image it covers."""
    (scale, translation), (r0, t0) = level, s0_transform
    per_axis = [
        _windows(translation[a], scale[a], level_shape[a], t0[a], r0[a], s0.shape[a], mean)
        for a in range(3)
    ]
    expected = np.zeros(level_shape, dtype=s0.dtype)
    for iz, rz in enumerate(per_axis[0]):
        for iy, ry in enumerate(per_axis[1]):
            for ix, rx in enumerate(per_axis[2]):
                window = s0[rz.start : rz.stop, ry.start : ry.stop, rx.start : rx.stop]
                expected[iz, iy, ix] = np.rint(window.astype(np.float64).mean())
    return expected


@pytest.mark.parametrize("pyramid", ["mean", "subsample"])
def test_prediction_stored_upside_down_lands_on_the_em_at_every_level(
    tmp_path: Path, pyramid: str
) -> None:
    """Every level of the prediction is its source level mirrored along y (read back by
    zarr-python and the tests' N5 reader), with positive scales; and placed by its written
    OME metadata alone, each of its voxels holds what the EM's s0 holds where it sits (the
    mean of the s0 voxels its window covers, or the voxel at its centre), at every level.
    With subsampled pyramids of 25 = 1 + 24 voxels the two grids coincide at every level,
    and the arrays are equal voxel for voxel."""
    n5 = write_dataset(tmp_path, HELA, hela_specs(pyramid))
    manifest = hela_manifest(tmp_path / "m.manifest.json")
    dest = tmp_path / "out.zarr"
    run = run_cli("convert", str(n5), str(dest), "--registry", str(manifest))
    assert run.exit_code == 0, run.stderr
    em_levels = transforms(dest / "em/fibsem-uint16")
    pred_levels = transforms(dest / "labels/er_pred")
    em_s0 = read_zarr(dest / "em/fibsem-uint16/s0")
    for k, (em_level, pred_level) in enumerate(zip(em_levels, pred_levels, strict=True)):
        pred = read_zarr(dest / f"labels/er_pred/s{k}")
        source = read_n5_array(n5 / f"labels/er_pred/s{k}")
        np.testing.assert_array_equal(pred, source[:, ::-1, :])
        assert all(v > 0 for v in pred_level[0])
        em = read_zarr(dest / f"em/fibsem-uint16/s{k}")
        mean = pyramid == "mean"
        np.testing.assert_array_equal(  # the check itself, on the upright image
            em, world_expected(em.shape, em_level, em_s0, em_levels[0], mean)
        )
        np.testing.assert_array_equal(
            pred, world_expected(pred.shape, pred_level, em_s0, em_levels[0], mean)
        )
        if pred_level == em_level:
            np.testing.assert_array_equal(pred, em)
    if pyramid == "subsample":
        assert pred_levels == em_levels
    else:  # the partial window moved: s1 of the prediction starts half a window earlier
        assert pred_levels[1][1][1] == em_levels[1][1][1] - 4.0


def test_metadata_display_labels_and_dataset_of_the_hela_output(
    hela: tuple[Path, Path], hela_out: Path
) -> None:
    pred = zattrs(hela_out / "labels/er_pred")
    assert pred["omero"] == {  # the manifest's er_pred: blue, 0…255, "Endoplasmic Reticulum"
        "channels": [
            {
                "active": True, "color": "0000FF", "inverted": False,
                "label": "Endoplasmic Reticulum",
                "window": {"min": 0, "max": 255, "start": 0, "end": 255},
            }
        ]
    }  # fmt: skip
    em = zattrs(hela_out / "em/fibsem-uint16")["omero"]["channels"][0]
    assert (em["color"], em["inverted"]) == ("FFFFFF", True)
    assert em["window"] == {"min": 0, "max": 65535, "start": 24444, "end": 34078}
    assert "image-label" not in pred  # a prediction stays an image
    entry = pred["cellmap-migrate"]["registry_source"]
    assert entry == real_manifest(HELA)["sources"]["er_pred"] | {"transform": entry["transform"]}
    root = zattrs(hela_out)["cellmap-migrate"]["dataset"]
    assert root["name"] == HELA
    assert root["metadata"] == real_manifest(HELA)["metadata"]
    settings = pred["cellmap-migrate"]["settings"]["registry"]
    assert settings == {"dataset": HELA, "digest": root["registry"]}
    # validated by ome-zarr-models, read back by ome-zarr-py
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr_models.common.omero import Omero
    from ome_zarr_models.v04 import Image

    Image.from_zarr(zarr.open_group(str(hela_out / "labels/er_pred"), mode="r"))
    Omero.model_validate(pred["omero"])
    location = parse_url(str(hela_out / "labels/er_pred"))
    assert location is not None
    node = next(iter(Reader(location)()))
    assert node.metadata["channel_names"] == ["Endoplasmic Reticulum"]
    assert node.metadata["contrast_limits"] == [[0, 255]]
    assert node.metadata["colormap"] == [[[0, 0, 0], [0.0, 0.0, 1.0]]]


def test_dry_run_says_which_copy_path_and_why(hela: tuple[Path, Path]) -> None:
    n5, manifest = hela
    run = run_cli("convert", str(n5), "--dry-run", "--registry", str(manifest))
    assert run.exit_code == 0, run.stderr
    pred_levels = [line for line in run.stdout.splitlines() if "mirrored along y (" in line]
    assert len(pred_levels) == 3
    assert all("through TensorStore" in line for line in pred_levels)
    assert "stored mirrored along y" in run.stdout
    assert "in the registry but not in this source (73)" in run.stdout
    plan = run_cli("convert", str(n5), "--dry-run", "--json", "--registry", str(manifest)).json
    mirrors = {i["source_path"]: i["levels"][0].get("mirror") for i in plan["plan"]["images"]}
    assert mirrors == {"em/fibsem-uint16": None, "labels/er_pred": [False, True, False]}


def test_verify_needs_the_recorded_registry_and_reads_through_the_mirror(
    hela: tuple[Path, Path], hela_out: Path, tmp_path: Path
) -> None:
    n5, manifest = hela
    proven = run_cli("verify", str(n5), str(hela_out), "--registry", str(manifest))
    assert proven.exit_code == 0, proven.stdout + proven.stderr
    assert "OK" in proven.stdout
    # the mirrored levels' source blocks are in the ledger, where the copy read them
    listed = run_cli("verify", "--listing", str(n5), str(hela_out), "--registry", str(manifest))
    assert listed.exit_code == 0, listed.stdout + listed.stderr
    assert "proven by listing" in listed.stdout
    missing = run_cli("verify", str(n5), str(hela_out))
    assert missing.exit_code == 1
    assert "--registry" in missing.stderr
    assert "sha256:" in missing.stderr
    other = json.loads(manifest.read_text())
    other["sources"]["er_pred"]["displaySettings"]["color"] = "red"
    other_path = tmp_path / f"{HELA}.manifest.json"
    other_path.write_text(json.dumps(other))
    mismatch = run_cli("verify", str(n5), str(hela_out), "--registry", str(other_path))
    assert mismatch.exit_code == 1
    assert "other settings" in mismatch.stderr
    # the prediction written upright (as the N5 holds it) is not the migration
    copy_dest = tmp_path / "copy.zarr"
    shutil.copytree(hela_out, copy_dest)
    array = zarr.open_array(str(copy_dest / "labels/er_pred/s0"), mode="r+")
    array[...] = read_n5_array(n5 / "labels/er_pred/s0")
    # and its display is not the registry's
    attrs_path = copy_dest / "labels/er_pred/.zattrs"
    attrs = json.loads(attrs_path.read_text())
    attrs["omero"]["channels"][0]["color"] = "FF0000"
    attrs_path.write_text(json.dumps(attrs))
    wrong = run_cli("verify", str(n5), str(copy_dest), "--registry", str(manifest))
    assert wrong.exit_code == 1
    mismatches = [line for line in wrong.stdout.splitlines() if line.startswith("MISMATCH")]
    assert any("labels/er_pred/s0: " in line and "voxel(s) differ" in line for line in mismatches)
    assert any('omero.channels[0].color is "FF0000"' in line for line in mismatches)


def test_ngff_05_keeps_omero_in_ome(hela: tuple[Path, Path], tmp_path: Path) -> None:
    n5, manifest = hela
    dest = tmp_path / "out05.zarr"
    run = run_cli("convert", str(n5), str(dest), "--registry", str(manifest),
                  "--ngff-version", "0.5", "--shard", "16,16,16")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    attributes = json.loads((dest / "labels/er_pred/zarr.json").read_text())["attributes"]
    from ome_zarr_models.common.omero import Omero
    from ome_zarr_models.v05 import Image

    Omero.model_validate(attributes["ome"]["omero"])
    Image.from_zarr(zarr.open_group(str(dest / "labels/er_pred"), mode="r"))
    np.testing.assert_array_equal(
        read_zarr(dest / "labels/er_pred/s1"),
        read_n5_array(n5 / "labels/er_pred/s1")[:, ::-1, :],
    )
    verified = run_cli("verify", str(n5), str(dest), "--registry", str(manifest))
    assert verified.exit_code == 0, verified.stdout
    from migrate.storage import open_store
    from migrate.view.scan import output_images
    from migrate.view.state import viewer_state

    version, images = output_images(open_store(str(dest), read_only=True), "http://h:1")
    layers = {layer["name"]: layer for layer in viewer_state(images, version)["layers"]}
    assert "range=[0, 255]" in layers["labels/er_pred"]["shader"]
    assert 'color(default="#0000ff")' in layers["labels/er_pred"]["shader"]


def test_an_n5_stating_a_negative_scale_is_mirrored_the_same_way(
    hela: tuple[Path, Path], hela_out: Path, tmp_path: Path
) -> None:
    """The prediction's own COSEM metadata says what the registry says (a negative y scale;
    each level's translate the position of its stored voxel 0, by hand: the stored level
    k's first window is the world's last, centred at (N0 - 1) × 4 - (f - 1) × 2): without a
    registry it is written exactly as with one (refused before this issue)."""
    n5, _ = hela
    copy_n5 = tmp_path / HELA / f"{HELA}.n5"
    shutil.copytree(n5, copy_n5)
    group = copy_n5 / "labels/er_pred/attributes.json"
    attrs = json.loads(group.read_text())
    for key in ("axes", "units", "scales", "pixelResolution"):  # COSEM only
        attrs.pop(key)
    for k, dataset in enumerate(attrs["multiscales"][0]["datasets"]):
        f = 2**k
        dataset["transform"]["scale"][1] = -4.0 * f
        dataset["transform"]["translate"][1] = (SHAPE[1] - 1) * 4.0 - (f - 1) * 2.0
        level = copy_n5 / f"labels/er_pred/s{k}/attributes.json"
        level_attrs = json.loads(level.read_text())
        level_attrs["transform"] = dataset["transform"]
        level_attrs.pop("pixelResolution")
        level.write_text(json.dumps(level_attrs))
    group.write_text(json.dumps(attrs))
    dest = tmp_path / "negative.zarr"
    run = run_cli("convert", str(copy_n5), str(dest))
    assert run.exit_code == 0, run.stderr
    assert transforms(dest / "labels/er_pred") == transforms(hela_out / "labels/er_pred")
    for k in range(3):
        np.testing.assert_array_equal(
            read_zarr(dest / f"labels/er_pred/s{k}"), read_zarr(hela_out / f"labels/er_pred/s{k}")
        )


# --------------------------------------------------------------------------------------
# Conflicts and --trust
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def macrophage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """jrc_macrophage-2 with its ``labels/eres_seg`` at 3.36 × 4 × 4 nm: the real manifest
    says scale [1, 1, 1] for it (wrong)."""
    root = tmp_path_factory.mktemp("macrophage")
    spec = ImageSpec(
        path="labels/eres_seg", shape=(8, 12, 10), dtype="uint64", block_size=(8, 8, 8),
        levels=2, voxel_size=(3.36, 4.0, 4.0), content="labels", seed=3,
    )  # fmt: skip
    return write_dataset(root, "jrc_macrophage-2", [spec])


def test_a_wrong_registry_scale_is_refused_naming_both_values(
    macrophage: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "out.zarr"
    run = run_cli("convert", str(macrophage), str(dest), "--registry", str(REGISTRY))
    assert run.exit_code == 1
    [line] = run.stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert str(REGISTRY / "jrc_macrophage-2.manifest.json") in line
    assert "sources.eres_seg.transform.scale is [1.0, 1.0, 1.0]" in line
    assert "[3.36, 4.0, 4.0]" in line
    assert "labels/eres_seg/attributes.json" in line
    assert "--trust registry|n5" in line
    assert not dest.exists()
    dry = run_cli("convert", str(macrophage), str(dest), "--registry", str(REGISTRY), "--dry-run")
    assert dry.exit_code == 1
    assert "CONFLICT: registry vs N5: scale of s0" in dry.stdout


def test_trust_n5_and_trust_registry_each_do_what_they_say(
    macrophage: Path, tmp_path: Path
) -> None:
    n5_dest, registry_dest, one_dest = (tmp_path / name for name in ("n5", "reg", "one"))
    trusted_n5 = run_cli("convert", str(macrophage), str(n5_dest), "--registry", str(REGISTRY),
                         "--trust", "n5")  # fmt: skip
    assert trusted_n5.exit_code == 0, trusted_n5.stderr
    assert "used the COSEM value (--trust n5)" in trusted_n5.stderr
    assert transforms(n5_dest / "labels/eres_seg") == [
        ([3.36, 4.0, 4.0], [0.0, 0.0, 0.0]),
        ([6.72, 8.0, 8.0], [1.68, 2.0, 2.0]),
    ]
    trusted_registry = run_cli("convert", str(macrophage), str(registry_dest), "--registry",
                               str(REGISTRY), "--trust", "registry")  # fmt: skip
    assert trusted_registry.exit_code == 0, trusted_registry.stderr
    # s1 keeps its place in s0 voxels (2 voxels apart, half a voxel in), at 1 per voxel
    assert transforms(registry_dest / "labels/eres_seg") == [
        ([1.0, 1.0, 1.0], [0.0, 0.0, 0.0]),
        ([2.0, 2.0, 2.0], [0.5, 0.5, 0.5]),
    ]
    # the same for one image only; a pattern that names no image leaves the conflict
    one = run_cli("convert", str(macrophage), str(one_dest), "--registry", str(REGISTRY),
                  "--trust", "labels/eres_seg=registry")  # fmt: skip
    assert one.exit_code == 0, one.stderr
    assert transforms(one_dest / "labels/eres_seg") == transforms(registry_dest / "labels/eres_seg")
    other = run_cli("convert", str(macrophage), str(tmp_path / "x"), "--registry", str(REGISTRY),
                    "--trust", "labels/mito_*=registry", "--dry-run")  # fmt: skip
    assert other.exit_code == 1
    assert "--trust registry|n5" in other.stderr
    bad = run_cli("convert", str(macrophage), "--trust", "registry", "--trust", "n5")
    assert bad.exit_code == 2
    assert "contradicts" in bad.stderr
    # the segmentation is a label image either way (contentType: segmentation)
    assert "image-label" in zattrs(n5_dest / "labels/eres_seg")


def test_an_n5_mirrored_where_the_registry_says_upright_is_a_conflict(
    hela: tuple[Path, Path], tmp_path: Path
) -> None:
    n5, manifest = hela
    copy_n5 = tmp_path / HELA / f"{HELA}.n5"
    shutil.copytree(n5, copy_n5)
    group = copy_n5 / "labels/er_pred/attributes.json"
    attrs = json.loads(group.read_text())
    for key in ("axes", "units", "scales", "pixelResolution"):
        attrs.pop(key)
    for k, dataset in enumerate(attrs["multiscales"][0]["datasets"]):
        dataset["transform"]["scale"][1] = -4.0 * 2**k
        dataset["transform"]["translate"][1] = 96.0 - (2**k - 1) * 2.0
        level = copy_n5 / f"labels/er_pred/s{k}/attributes.json"
        level_attrs = json.loads(level.read_text())
        level_attrs.pop("transform")
        level_attrs.pop("pixelResolution")
        level.write_text(json.dumps(level_attrs))
    group.write_text(json.dumps(attrs))
    upright = json.loads(manifest.read_text())
    upright["sources"]["er_pred"]["transform"].update(scale=[5.24, 4.0, 4.0], translate=[0, 0, 0])
    upright_path = tmp_path / f"{HELA}.manifest.json"
    upright_path.write_text(json.dumps(upright))
    refused = run_cli("convert", str(copy_n5), str(tmp_path / "r"), "--registry", str(upright_path))
    assert refused.exit_code == 1
    assert "orientation" in refused.stderr
    source = read_n5_array(copy_n5 / "labels/er_pred/s0")
    for trust, expected in (("n5", source[:, ::-1, :]), ("registry", source)):
        dest = tmp_path / trust
        run = run_cli("convert", str(copy_n5), str(dest), "--registry", str(upright_path),
                      "--trust", trust)  # fmt: skip
        assert run.exit_code == 0, run.stderr
        np.testing.assert_array_equal(read_zarr(dest / "labels/er_pred/s0"), expected)
        assert transforms(dest / "labels/er_pred")[0] == ([5.24, 4.0, 4.0], [0.0, 0.0, 0.0])


def test_the_registry_decides_what_is_a_label_image(tmp_path: Path) -> None:
    """The real hela-2 manifest: ``gt`` is label × segmentation (not named ``_seg``: a label
    image only because the registry says so), ``er_mito_contacts`` label × analysis (stays
    an image)."""
    common: dict[str, Any] = {"shape": (8, 12, 10), "block_size": (8, 8, 8), "levels": 1,
                              "voxel_size": (2.62, 2.0, 2.0), "content": "labels"}  # fmt: skip
    n5 = write_dataset(tmp_path, HELA, [
        ImageSpec(path="labels/gt", dtype="uint8", **common),
        ImageSpec(path="labels/er_mito_contacts", dtype="uint64", **{**common,
                  "voxel_size": (5.24, 4.0, 4.0)}),
    ])  # fmt: skip
    dest = tmp_path / "out.zarr"
    run = run_cli("convert", str(n5), str(dest), "--registry", str(REGISTRY))
    assert run.exit_code == 0, run.stderr
    assert "image-label" in zattrs(dest / "labels/gt")
    assert "image-label" not in zattrs(dest / "labels/er_mito_contacts")
    assert zattrs(dest / "labels")["labels"] == ["gt"]
    from ome_zarr_models.v04 import ImageLabel

    ImageLabel.from_zarr(zarr.open_group(str(dest / "labels/gt"), mode="r"))
    assert zattrs(dest / "labels/gt")["omero"]["channels"][0]["color"] == "FFFFFF"  # null
    without = run_cli("convert", str(n5), str(tmp_path / "plain.zarr"))
    assert without.exit_code == 0
    assert "image-label" not in zattrs(tmp_path / "plain.zarr/labels/gt")


def test_a_malformed_manifest_is_one_line_naming_file_and_field(
    hela: tuple[Path, Path], tmp_path: Path
) -> None:
    n5, manifest = hela
    document = json.loads(manifest.read_text())
    document["sources"]["er_pred"]["transform"]["scale"][1] = "-4.0"
    bad = tmp_path / "bad.manifest.json"
    bad.write_text(json.dumps(document))
    dest = tmp_path / "out.zarr"
    run = run_cli("convert", str(n5), str(dest), "--registry", str(bad))
    assert run.exit_code == 1
    [line] = run.stderr.strip().splitlines()
    assert line.startswith(f"error: {bad}: sources.er_pred.transform.scale[1]:")
    del document["sources"]["er_pred"]["displaySettings"]["contrastLimits"]["end"]
    document["sources"]["er_pred"]["transform"]["scale"][1] = -4.0
    bad.write_text(json.dumps(document))
    run = run_cli("convert", str(n5), str(dest), "--registry", str(bad), "--dry-run")
    assert run.exit_code == 1
    assert f"{bad}: sources.er_pred.displaySettings.contrastLimits.end: required" in run.stderr
    wrong = run_cli("convert", str(n5), str(dest), "--registry",
                    str(REGISTRY / "jrc_hela-3.manifest.json"))  # fmt: skip
    assert wrong.exit_code == 1
    assert "describes 'jrc_hela-3', not 'jrc_hela-2'" in wrong.stderr
    assert not dest.exists()


# --------------------------------------------------------------------------------------
# Resume, S3, bulk, view
# --------------------------------------------------------------------------------------

KILL_ARGS = ("--workers", "1", "--unit-mib", "0.0078125")


def test_resume_after_sigkill_of_a_mirrored_migration_is_byte_identical(
    tmp_path: Path,
) -> None:
    spec = ImageSpec(
        path="labels/er_pred", shape=(48, 101, 64), dtype="uint16", block_size=(16, 16, 16),
        levels=2, content="noise", seed=5, stored_flip=(False, True, False), pyramid="mean",
        compression={"type": "gzip", "level": 1},
    )  # fmt: skip
    n5 = write_dataset(tmp_path, HELA, [spec])
    manifest = hela_manifest(tmp_path / "m.manifest.json", extent_y=101)
    reference = tmp_path / "reference.zarr"
    done = run_subprocess("convert", str(n5), str(reference), "--registry", str(manifest),
                          *KILL_ARGS)  # fmt: skip
    assert done.exit_code == 0, done.stderr
    dest = tmp_path / "killed.zarr"
    proc = popen_convert(str(n5), str(dest), "--registry", str(manifest), *KILL_ARGS)
    freeze_when(proc, lambda: unit_records(dest) >= 1, "a unit record at DEST")
    kill_frozen(proc)
    assert not (dest / "labels/er_pred/.zattrs").exists()
    resumed = run_subprocess("convert", str(n5), str(dest), "--registry", str(manifest),
                             *KILL_ARGS)  # fmt: skip
    assert resumed.exit_code == 0, resumed.stderr
    assert "partial" in resumed.stdout
    got = {key: digest for key, (digest, _) in chunk_files(dest).items()}
    want = {key: digest for key, (digest, _) in chunk_files(reference).items()}
    assert got == want


def test_a_registry_on_s3(aws: Any, hela: tuple[Path, Path]) -> None:
    from tests.s3server import s3_client

    n5, manifest = hela
    client = s3_client(aws.url)
    client.create_bucket(Bucket="registry")
    body = manifest.read_bytes()
    client.put_object(Bucket="registry", Key="flat/jrc_hela-2.manifest.json", Body=body)
    client.put_object(Bucket="registry", Key="api/jrc_hela-2/manifest.json", Body=body)
    local = load_registry(str(manifest)).manifests[HELA].digest
    for where in ("s3://registry/flat", "s3://registry/api/",
                  "s3://registry/flat/jrc_hela-2.manifest.json"):  # fmt: skip
        run = run_cli("convert", str(n5), "--dry-run", "--json", "--registry", where)
        assert run.exit_code == 0, run.stderr
        plan = run.json["plan"]
        assert plan["settings"]["registry"] == {"dataset": HELA, "digest": local}
        pred = next(i for i in plan["images"] if i["source_path"] == "labels/er_pred")
        assert pred["levels"][0]["mirror"] == [False, True, False]
    missing = run_cli("convert", str(n5), "--dry-run", "--registry", "s3://registry/nothing")
    assert missing.exit_code == 1
    assert "no manifest here" in missing.stderr


def test_bulk_survey_counts_what_the_registry_changes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    specs = [
        *hela_specs("mean"),
        ImageSpec(path="labels/gt", shape=(8, 12, 10), dtype="uint8", block_size=(8, 8, 8),
                  levels=1, voxel_size=(2.62, 2.0, 2.0), content="labels"),
        ImageSpec(path="labels/extra_pred", shape=(8, 12, 10), dtype="uint8",
                  block_size=(8, 8, 8), levels=1, content="noise"),
    ]  # fmt: skip
    write_dataset(root, HELA, specs)
    write_dataset(root, "jrc_other-1", hela_specs("mean")[:1])
    registry = tmp_path / "registry"
    registry.mkdir()
    hela_manifest(registry / f"{HELA}.manifest.json")
    run = run_cli("bulk", "convert", str(root), "--dry-run", "--registry", str(registry))
    assert run.exit_code == 0, run.stdout + run.stderr
    assert (
        f"{HELA}: registry: 1 mirrored, 3 restyled, 1 reclassified, 0 in conflict, "
        "1 absent from the registry; 72 registry source(s) without an image"
    ) in run.stdout
    assert "jrc_other-1: registry" not in run.stdout  # no manifest: nothing changes
    single = run_cli("convert", str(root / HELA / f"{HELA}.n5"), "--dry-run", "--registry",
                     str(registry))  # fmt: skip
    extra = single.stdout.split("image labels/extra_pred", 1)[1].split("\n\n", 1)[0]
    assert "registry: no entry for this image" in extra
    rows = run_cli("bulk", "convert", str(root), "--dry-run", "--json", "--registry",
                   str(registry)).json["datasets"]  # fmt: skip
    counts = {row["name"]: row["registry"] for row in rows}
    assert counts["jrc_other-1"] is None
    assert counts[HELA]["mirrored"] == 1
    converted = run_cli("bulk", "convert", str(root), "--registry", str(registry),
                        "--summary", str(tmp_path / "s.json"))  # fmt: skip
    assert converted.exit_code == 0, converted.stderr
    verified = run_cli("bulk", "verify", str(root), "--registry", str(registry))
    assert verified.exit_code == 0, verified.stdout + verified.stderr


def test_view_prints_one_link_per_registry_view(hela_out: Path, tmp_path: Path) -> None:
    """A view re-pointed at the Zarr: its layers, and its position moved by the half voxel
    between the portal's corners and OME's centres (by hand: x 25042 − 2 = 25040 nm, in
    units of the 4 nm state voxel 6260; z (14561 − 2.62) / 5.24)."""
    from migrate.storage import open_store
    from migrate.view.registry_views import registry_view_states
    from migrate.view.scan import output_images
    from schemas.registry import Manifest

    manifest = real_manifest(HELA)
    manifest["views"].append(
        {"name": "upside down", "description": "", "sources": ["er_pred"],
         "position": [10.0, 50.0, 20.0], "scale": 8.0, "orientation": None}
    )  # fmt: skip
    manifest["sources"]["er_pred"]["transform"]["translate"][1] = SHAPE[1] * 4.0
    version, images = output_images(open_store(str(hela_out), read_only=True), "http://h:1")
    states = {v.name: v for v in registry_view_states(Manifest.model_validate(manifest),
                                                       images, version)}  # fmt: skip
    default = states["Default view"].state
    assert default is not None
    assert [layer["name"] for layer in default["layers"]] == ["em/fibsem-uint16"]
    training = states["Microtubule predictions"]
    assert training.state is not None
    assert training.state["position"] == pytest.approx(
        [(28300.0 - 2) / 4, (2288.0 - 2) / 4, (2564.0 - 2.62) / 5.24]
    )
    assert training.state["crossSectionScale"] == pytest.approx(8.7 / 4)
    assert "not in this output: mt-out_pred, mt-out_seg" in training.notes
    assert states["Densely annotated training data"].notes == ["not in this output: gt"]
    flipped = states["upside down"].state
    assert flipped is not None
    assert flipped["position"] == pytest.approx(
        [(10.0 - 2) / 4, (50.0 - 2) / 4, (20 - 2.62) / 5.24]
    )
    assert [layer["name"] for layer in flipped["layers"]] == ["labels/er_pred"]


def test_view_command_prints_the_registry_views_of_an_s3_output(
    aws: Any, hela_out: Path, tmp_path: Path
) -> None:
    from tests.s3server import s3_client, upload_tree

    client = s3_client(aws.url)
    client.create_bucket(Bucket="portal")
    upload_tree(client, hela_out, "portal", f"{HELA}/{HELA}.zarr")
    run = run_cli("view", f"s3://portal/{HELA}/{HELA}.zarr", "--registry", str(REGISTRY))
    assert run.exit_code == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0].startswith("https://neuroglancer-demo.appspot.com/#!")  # today's link
    named = [line.split(":", 1)[0] for line in lines[1:]]
    assert named[0] == "view 'Default view'"
    assert len(named) == 11  # every view of the real manifest has the EM
    assert "not in this output: gt" in run.stderr


# --------------------------------------------------------------------------------------
# The real Neuroglancer client in headless Chromium
# --------------------------------------------------------------------------------------

GREY = (
    "#uicontrol invlerp normalized(range=[0, 65535])\n"
    "void main() {\n  emitGrayscale(normalized());\n}\n"
)


def screenshots(root: Path, states: dict[str, dict[str, Any]], tmp_path: Path) -> dict[str, Any]:
    """Each state drawn by the real client (400 x 300 pixels, once its chunks are drawn)."""
    from tests.test_view import _neuroglancer_and_chromium

    neuroglancer, chromium = _neuroglancer_and_chromium()
    image_module = pytest.importorskip("PIL.Image")
    import io

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
        for name, state in states.items():
            viewer.set_state(neuroglancer.ViewerState(state))
            reply = viewer.screenshot(size=[400, 300])
            pixels = image_module.open(io.BytesIO(reply.screenshot.image))
            shots[name] = np.asarray(pixels)[..., :3].astype(int)
    finally:
        browser.terminate()
        browser.wait(timeout=30)
        neuroglancer.stop()
    return shots


def test_real_neuroglancer_draws_the_mirrored_prediction_on_the_em(tmp_path: Path) -> None:
    """The prediction stored upside down, migrated with the registry, renders the same
    pixels as the EM (same noise, so every boundary between voxels sits on the EM's) at
    2 nm per pixel (s0) and at 8 nm per pixel (the client reads s1); migrated without the
    registry it does not. The chunks the client asked for prove which levels it read."""
    from migrate.view.serve import make_server, serve_in_background

    root = tmp_path / "data"
    shape = (12, 129, 161)  # y: 1 + 128, so that the subsampled grids coincide
    specs = [dataclasses.replace(spec, shape=shape) for spec in hela_specs("subsample")]
    n5 = write_dataset(root, HELA, specs)
    manifest = hela_manifest(tmp_path / "m.manifest.json", extent_y=shape[1])
    for name, extra in (("with.zarr", ["--registry", str(manifest)]), ("without.zarr", [])):
        run = run_cli("convert", str(n5), str(root / name), *extra)
        assert run.exit_code == 0, run.stderr
    log: list[str] = []
    server = make_server(str(root), 0, log)
    serve_in_background(server)

    def state(layer: str, zoom: float) -> dict[str, Any]:
        return {
            "dimensions": {"x": [4e-9, "m"], "y": [4e-9, "m"], "z": [5.24e-9, "m"]},
            "displayDimensions": ["x", "y", "z"],
            "position": [80.0, 64.0, 6.0],
            "crossSectionScale": zoom,
            "layout": "xy",
            "showAxisLines": False,
            "showScaleBar": False,
            "layers": [
                {"type": "image", "source": f"zarr://{server.base_url}/{layer}/",
                 "shader": GREY, "name": "layer"}
            ],
        }  # fmt: skip

    cases = {
        f"{name} {zoom}": state(path, zoom)
        for zoom in (0.5, 2.0)
        for name, path in (
            ("em", "with.zarr/em/fibsem-uint16"),
            ("pred", "with.zarr/labels/er_pred"),
            ("unmirrored", "without.zarr/labels/er_pred"),
        )
    }
    try:
        shots = screenshots(root, cases, tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    for zoom in (0.5, 2.0):
        assert shots[f"em {zoom}"].std() > 10, zoom  # the noise is on screen
        np.testing.assert_array_equal(shots[f"pred {zoom}"], shots[f"em {zoom}"])
        differ = (shots[f"unmirrored {zoom}"] != shots[f"em {zoom}"]).any(axis=2)
        assert np.count_nonzero(differ) > 2000, zoom
    for level in ("s0", "s1"):
        assert any(f" /with.zarr/labels/er_pred/{level}/0/" in line for line in log), level


def test_real_neuroglancer_takes_the_contrast_from_omero(hela_out: Path, tmp_path: Path) -> None:
    """A layer that only names its source (type auto, no shader): the client reads the
    ``omero`` window of the 0.4 output (start…end, reversed when inverted) and its label;
    ``view``'s own state draws the colour, blue for er_pred."""
    from migrate.storage import open_store
    from migrate.view.scan import output_images
    from migrate.view.serve import make_server, serve_in_background
    from migrate.view.state import viewer_state
    from tests.test_view import _neuroglancer_and_chromium

    neuroglancer, chromium = _neuroglancer_and_chromium()
    server = make_server(str(hela_out), 0, [])
    serve_in_background(server)
    base = {
        "dimensions": {"x": [4e-9, "m"], "y": [4e-9, "m"], "z": [5.24e-9, "m"]},
        "displayDimensions": ["x", "y", "z"], "position": [7.0, 12.0, 5.0],
        "crossSectionScale": 0.125, "layout": "xy",
    }  # fmt: skip
    auto = {
        **base,
        "layers": [
            {"type": "auto", "source": f"zarr://{server.base_url}/{path}/", "name": name}
            for name, path in (("em", "em/fibsem-uint16"), ("pred", "labels/er_pred"))
        ],
    }
    neuroglancer.set_server_bind_address("127.0.0.1")
    viewer = neuroglancer.Viewer()
    viewer.set_state(neuroglancer.ViewerState(auto))
    browser = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--use-angle=swiftshader",
         "--enable-unsafe-swiftshader", "--window-size=800,600",
         f"--user-data-dir={tmp_path / 'profile'}", viewer.get_viewer_url()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        layers: dict[str, Any] = {}
        while time.monotonic() < deadline:
            layers = {layer["name"].split()[0]: layer for layer in viewer.state.to_json()["layers"]}
            if all("shaderControls" in layer for layer in layers.values()):
                break
            time.sleep(0.2)
        version, images = output_images(open_store(str(hela_out), read_only=True), server.base_url)
        drawn = viewer_state(images, version)
        layer = next(layer for layer in drawn["layers"] if layer["name"] == "labels/er_pred")
        # view lists a prediction hidden beside the EM: shown alone here, as a click shows it
        pred_only = {**drawn, **base, "layers": [{**layer, "visible": True}],
                     "showAxisLines": False}  # fmt: skip
        viewer.set_state(neuroglancer.ViewerState(pred_only))
        import io

        from PIL import Image

        reply = viewer.screenshot(size=[400, 300])
        pixels = np.asarray(Image.open(io.BytesIO(reply.screenshot.image)))[..., :3].astype(int)
    finally:
        browser.terminate()
        browser.wait(timeout=30)
        server.shutdown()
        server.server_close()
        neuroglancer.stop()
    assert layers["em"]["type"] == "image"
    assert layers["em"]["shaderControls"]["contrast"]["range"] == [34078, 24444]  # inverted
    assert layers["pred"]["shaderControls"]["contrast"]["range"] == [0, 255]
    assert layers["pred"]["name"] == "pred Endoplasmic Reticulum"
    blue = (pixels[..., 2] > 200) & (pixels[..., 0] < 60) & (pixels[..., 1] < 60)
    assert blue.sum() > 1000  # er_pred in its registry colour


def test_view_state_draws_the_omero_window_colour_and_inversion(hela_out: Path) -> None:
    from migrate.storage import open_store
    from migrate.view.scan import output_images
    from migrate.view.state import viewer_state

    version, images = output_images(open_store(str(hela_out), read_only=True), "http://h:1")
    layers = {layer["name"]: layer for layer in viewer_state(images, version)["layers"]}
    em, pred = layers["em/fibsem-uint16"]["shader"], layers["labels/er_pred"]["shader"]
    assert "range=[34078, 24444]" in em  # window start…end of the manifest, inverted
    assert 'color(default="#ffffff")' in em
    assert "range=[0, 255]" in pred
    assert 'color(default="#0000ff")' in pred


def test_a_run_with_another_manifest_is_other_settings(
    hela: tuple[Path, Path], hela_out: Path, tmp_path: Path
) -> None:
    n5, manifest = hela
    other = json.loads(manifest.read_text())
    other["sources"]["er_pred"]["description"] = "ER"
    path = tmp_path / f"{HELA}.manifest.json"
    path.write_text(json.dumps(other))
    run = run_cli("convert", str(n5), str(hela_out), "--registry", str(path), "--dry-run")
    assert run.exit_code == 1
    assert "written with other settings" in run.stderr
    # the setting that differs, named as the option, DEST's manifest → this run's
    digest = re.search(r"--registry \(the manifest of jrc_hela-2, digest (sha256:[0-9a-f]+)\) →",
                       run.stderr)  # fmt: skip
    assert digest is not None, run.stderr
    assert f"→ --registry (the manifest of jrc_hela-2, digest {digest[1]})" not in run.stderr
    assert "--overwrite" in run.stderr


def test_report_shows_the_source_of_a_mirrored_image_through_the_mirror(
    hela: tuple[Path, Path], hela_out: Path
) -> None:
    """The report puts source and output planes side by side: a mirrored level's source is
    read through the mirror, so both sides show the same picture."""
    pytest.importorskip("PIL")
    from migrate.api import prepare
    from migrate.report.model import image_of_plan
    from migrate.report.previews import Reader
    from migrate.source.registry import load_registry
    from migrate.target.plan import PlanOptions

    n5, manifest = hela
    options = PlanOptions(registry=load_registry(str(manifest)))
    prepared = prepare(str(n5), str(hela_out), options, read_only_dest=True)
    image = next(i for i in prepared.plan.images if i.source_path == "labels/er_pred")
    report_image = image_of_plan(prepared.plan, image)
    reader = Reader(prepared.source, prepared.dest)
    level = report_image.levels[0]
    source = reader.plane("source", report_image, level, "xy", 4)
    dest = reader.plane("dest", report_image, level, "xy", 4)
    assert not isinstance(source, str)
    np.testing.assert_array_equal(source, dest)
    assert source.std() > 0


def test_unit_signatures_follow_the_mirror(hela: tuple[Path, Path]) -> None:
    """A source block rewritten is the source of the output units where it lands: for the
    mirrored prediction, the first block along y (rows 0–7 of 25) lands in rows 17–24,
    units 2 and 3 of 8 rows; upright it would be unit 0."""
    from migrate.dest.records import unit_signatures
    from migrate.storage import open_store

    n5, _ = hela
    store = open_store(str(n5), read_only=True)
    plan = run_cli("convert", str(n5), "--dry-run", "--json", "--registry", str(hela[1]),
                   "--unit-mib", "0.0009765625").json["plan"]  # fmt: skip
    from schemas.plan import LevelPlan

    pred = next(i for i in plan["images"] if i["source_path"] == "labels/er_pred")
    level = LevelPlan.model_validate(pred["levels"][0])
    assert level.mirror == (False, True, False)
    assert level.unit_shape == (8, 8, 8)
    assert level.unit_grid == (2, 4, 2)
    upright = level.model_copy(update={"mirror": None})
    before = [unit_signatures(store, level), unit_signatures(store, upright)]
    block = n5 / "labels/er_pred/s0/0/0/0"  # x 0, y 0, z 0
    stat = block.stat()
    os.utime(block, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        after = [unit_signatures(store, level), unit_signatures(store, upright)]
    finally:
        os.utime(block, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    changed = [  # unit index → signature, for the units that have a stored block
        {i for i in old.keys() | new.keys() if old.get(i) != new.get(i)}
        for old, new in zip(before, after, strict=True)
    ]
    # C-order unit index z * 8 + y * 2 + x: z 0, y 2 and 3 (mirrored) or 0, x 0
    assert changed == [{2 * 2, 3 * 2}, {0}]
