"""Every reader a user opens our outputs with, on every output layout: OME-NGFF 0.4 (Zarr
v2), 0.5 (Zarr v3) and 0.5 sharded, of a generated dataset holding an EM image and a label
image made from it.

- ome-zarr-py (``ome_zarr.reader.Reader``): the images, and each label image with the image
  its ``image-label.source`` names found as its parent (no "no parent found" warning);
- ngff-zarr (``from_ngff_zarr(..., validate=True)``: its JSON-schema validation);
- zarr-python 3, TensorStore (``zarr`` / ``zarr3`` drivers);
- ome-zarr-models (``Image`` / ``ImageLabel`` ``from_zarr``).

Every level each of them reads is compared with the source read by the tests' own N5 decoder
(tests/n5_reader.py), which shares no code with the converter.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import ome_zarr_models.v04
import ome_zarr_models.v05
import pytest
import tensorstore as ts
import zarr

from migrate.example.fixture import ImageSpec, example_images, write_dataset
from migrate.target.plan import label_source_image
from tests.helpers import run_cli
from tests.n5_reader import read_n5_array

EM, LABEL = "em/fibsem-uint16", "labels/mito_seg"
SPECS = [spec for spec in example_images("tiny") if spec.path in (EM, LABEL)]
"""The EM image (uint16, gzip, truncated edge blocks, 3 levels) and a uint64 segmentation
at twice its spacing with block sizes that change per level."""
LAYOUTS = {
    "0.4": (),
    "0.5": ("--ngff-version", "0.5"),
    "0.5-sharded": ("--ngff-version", "0.5", "--shard", "64,64,64"),
}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("readers"), "jrc_readers-1", SPECS)


@pytest.fixture(scope="module")
def outputs(source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One migration per layout."""
    made = {}
    for name, args in LAYOUTS.items():
        dest = tmp_path_factory.mktemp("out") / f"{name}.zarr"
        run = run_cli("convert", str(source), str(dest), *args)
        assert run.exit_code == 0, run.stderr
        made[name] = dest
    return made


def expected(source: Path, image: str) -> list[npt.NDArray[Any]]:
    """Every level of a source image, decoded by the tests' own N5 reader (C order)."""
    spec = next(spec for spec in SPECS if spec.path == image)
    return [read_n5_array(source / image / f"s{level}") for level in range(spec.levels)]


def same(got: Any, want: npt.NDArray[Any], what: str) -> None:
    array = np.asarray(got)
    assert array.dtype.newbyteorder("=") == want.dtype.newbyteorder("="), what
    np.testing.assert_array_equal(array, want, err_msg=what)


def ome(dest: Path, image: str) -> dict[str, Any]:
    """The OME metadata of a group (0.4 ``.zattrs``, 0.5 ``zarr.json`` attributes.ome)."""
    if (dest / image / ".zattrs").exists():
        return dict(json.loads((dest / image / ".zattrs").read_text()))
    return dict(json.loads((dest / image / "zarr.json").read_text())["attributes"]["ome"])


parametrize_layouts = pytest.mark.parametrize("layout", list(LAYOUTS))


@parametrize_layouts
def test_ome_zarr_py_reads_the_images_and_finds_each_label_images_parent(
    source: Path, outputs: dict[str, Path], layout: str, caplog: pytest.LogCaptureFixture
) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    dest = outputs[layout]
    with caplog.at_level(logging.WARNING, logger="ome_zarr"):
        location = parse_url(str(dest / EM))
        assert location is not None
        (image,) = list(Reader(location)())
        for level, want in enumerate(expected(source, EM)):
            same(image.data[level], want, f"{EM} s{level}")
        # the labels group lists the label image; the label image names its parent image
        location = parse_url(str(dest / "labels"))
        assert location is not None
        nodes = {str(node.zarr.path).rstrip("/"): node for node in Reader(location)()}
    label, parent = nodes[str(dest / LABEL)], nodes[str(dest / EM)]
    assert label.visible
    assert not parent.visible  # the parent image is loaded, hidden, for context
    assert "no parent found" not in caplog.text
    for level, want in enumerate(expected(source, LABEL)):
        same(label.data[level], want, f"{LABEL} s{level}")
    for level, want in enumerate(expected(source, EM)):
        same(parent.data[level], want, f"{EM} s{level} as the label image's parent")


@parametrize_layouts
def test_ngff_zarr_validates_and_reads_every_image(
    source: Path, outputs: dict[str, Path], layout: str
) -> None:
    from ngff_zarr import from_ngff_zarr

    for image in (EM, LABEL):
        multiscales: Any = from_ngff_zarr(str(outputs[layout] / image), validate=True)
        levels = expected(source, image)
        assert len(multiscales.images) == len(levels)
        for level, (read, want) in enumerate(zip(multiscales.images, levels, strict=True)):
            same(read.data.compute(), want, f"{image} s{level}")
        assert [axis.name for axis in multiscales.metadata.axes] == ["z", "y", "x"]


@parametrize_layouts
def test_zarr_python_reads_every_level(source: Path, outputs: dict[str, Path], layout: str) -> None:
    for image in (EM, LABEL):
        group = zarr.open_group(str(outputs[layout] / image), mode="r")
        for level, want in enumerate(expected(source, image)):
            array: Any = group[f"s{level}"]
            same(array[...], want, f"{image} s{level}")
            if layout != "0.4":
                assert array.metadata.dimension_names == ("z", "y", "x")


@parametrize_layouts
def test_tensorstore_reads_every_level(source: Path, outputs: dict[str, Path], layout: str) -> None:
    driver = "zarr" if layout == "0.4" else "zarr3"
    for image in (EM, LABEL):
        for level, want in enumerate(expected(source, image)):
            path = outputs[layout] / image / f"s{level}"
            spec = {"driver": driver, "kvstore": {"driver": "file", "path": str(path)}}
            array = ts.open(spec, read=True).result()
            same(array.read().result(), want, f"{image} s{level}")


@parametrize_layouts
def test_ome_zarr_models_validate_images_and_label_images(
    outputs: dict[str, Path], layout: str
) -> None:
    models: Any = ome_zarr_models.v04 if layout == "0.4" else ome_zarr_models.v05
    models.Image.from_zarr(zarr.open_group(str(outputs[layout] / EM), mode="r"))
    models.ImageLabel.from_zarr(zarr.open_group(str(outputs[layout] / LABEL), mode="r"))


# --------------------------------------------------------------------------------------
# The metadata behind it (issue 18, item 6)
# --------------------------------------------------------------------------------------


@parametrize_layouts
def test_no_multiscale_level_transform_and_labels_name_their_image(
    outputs: dict[str, Path], layout: str
) -> None:
    """The identity ``coordinateTransformations`` of the multiscale said nothing and made
    ngff-zarr's validator fail every output; the label image's ``source.image`` names the
    EM image (the readers' default, ``../../``, is the dataset root: no image)."""
    for image in (EM, LABEL):
        assert "coordinateTransformations" not in ome(outputs[layout], image)["multiscales"][0]
    assert ome(outputs[layout], LABEL)["image-label"]["source"] == {
        "image": "../../em/fibsem-uint16"
    }
    assert "image-label" not in ome(outputs[layout], EM)


def test_the_label_source_rule() -> None:
    """The dataset's EM image: the one image under em/, the first by name of several, none
    when there is no EM image; relative to the label image, whatever the depth."""
    assert label_source_image("labels/mito_seg", ["em/fibsem-uint16"]) == "../../em/fibsem-uint16"
    both = ["lm/er_palm", "em/fibsem-uint8", "em/fibsem-uint16", "labels/mito_seg"]
    assert label_source_image("labels/mito_seg", both) == "../../em/fibsem-uint16"
    assert label_source_image("labels/mito_seg", ["lm/er_palm", "labels/mito_seg"]) is None
    assert label_source_image("labels/deep/er_seg", both) == "../../../em/fibsem-uint16"
    assert label_source_image("em/cells_seg", both) == "../fibsem-uint16"  # never itself


def test_a_label_image_migrated_with_its_em_image_under_a_prefix(tmp_path: Path) -> None:
    specs = [
        *SPECS,
        ImageSpec(path="em/fibsem-uint8", shape=(20, 20, 20), dtype="uint8", levels=1),
    ]
    n5 = write_dataset(tmp_path, "jrc_labels-2", specs)
    run = run_cli("convert", str(n5), "--prefix", "recon-1", "--dry-run", "--json")
    assert run.exit_code == 0, run.stderr
    (label,) = [i for i in run.json["plan"]["images"] if i["dest_path"] == f"recon-1/{LABEL}"]
    assert label["attributes"]["image-label"]["source"] == {"image": "../../em/fibsem-uint16"}
    alone = run_cli("convert", str(n5 / LABEL), "--dry-run", "--json")  # no EM image with it
    assert alone.exit_code == 0, alone.stderr
    (label,) = alone.json["plan"]["images"]
    assert "source" not in label["attributes"]["image-label"]
