"""The metadata documents a plan writes at DEST, rendered as JSON values. Pure.

Zarr v2 (OME-NGFF 0.4): ``.zgroup`` / ``.zattrs`` / ``.zarray``. Zarr v3 (0.5): ``zarr.json``.
Array shapes and chunk shapes are in **C order** (z, y, x). We render array metadata
ourselves (TensorStore then opens it) so that the dry-run diff shows exactly what is written.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from migrate.storage import join_key
from migrate.target.codecs import zarr_v2_compressor, zarr_v3_codecs
from schemas.n5 import ITEMSIZE
from schemas.plan import ImagePlan, LevelPlan, Plan

V2_KINDS = {"uint": "u", "int": "i", "float": "f"}
"""numpy's kind letter of each N5 data type family."""

PROVENANCE_KEY = "cellmap-migrate"
"""The attribute under which every group and array we write keeps its provenance."""

METADATA_NAMES = (".zgroup", ".zattrs", ".zarray", "zarr.json")

Documents = dict[str, dict[str, Any]]
"""Metadata file key (relative to DEST) → its JSON content."""


def dumps(value: Any) -> bytes:
    """Stable, readable JSON text: same value, same bytes (floats in shortest round-trip form).

    Objects are indented; lists of plain values (shapes, scales, axis names) and small objects
    of them (an axis, a transform) stay on one line when they fit, so a metadata diff shows
    one line per changed item.
    """
    return (_render(value, 0) + "\n").encode()


def _scalar(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _flat(value: Any) -> bool:
    """A scalar, or a list of scalars."""
    if isinstance(value, list | tuple):
        return not any(isinstance(item, dict | list | tuple) for item in value)
    return not isinstance(value, dict)


def _render(value: Any, depth: int) -> str:
    pad, inner = "  " * depth, "  " * (depth + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        if all(_flat(v) for v in value.values()):
            line = (
                "{"
                + ", ".join(f"{_scalar(str(k))}: {_render(v, 0)}" for k, v in value.items())
                + "}"
            )
            if len(line) + len(inner) <= 100:
                return line
        items = [f"{inner}{_scalar(str(k))}: {_render(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        if _flat(value):
            flat = "[" + ", ".join(_scalar(item) for item in value) + "]"
            if len(flat) + len(inner) <= 100:
                return flat
        items = [inner + _render(item, depth + 1) for item in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return _scalar(value)


def _v2_dtype(level: LevelPlan) -> str:
    """The ``.zarray`` dtype (numpy's type string): byte order, kind and itemsize."""
    itemsize = ITEMSIZE[level.dtype]
    kind = level.dtype.rstrip("0123456789")
    order = "|" if itemsize == 1 else ">" if level.codec.endian == "big" else "<"
    return f"{order}{V2_KINDS[kind]}{itemsize}"


def array_documents(plan: Plan, image: ImagePlan, level: LevelPlan) -> Documents:
    """The metadata of one level array (written before any of its chunks)."""
    if plan.ngff_version == "0.4":
        zarray = {
            "zarr_format": 2,
            "shape": list(level.shape),
            "chunks": list(level.chunks),
            "dtype": _v2_dtype(level),
            "compressor": zarr_v2_compressor(level.codec),
            "fill_value": 0,
            "order": "C",
            "filters": None,
            "dimension_separator": "/",
        }
        return {
            join_key(level.dest_path, ".zarray"): zarray,
            join_key(level.dest_path, ".zattrs"): level.attributes,
        }
    itemsize = ITEMSIZE[level.dtype]
    inner = zarr_v3_codecs(level.codec, itemsize)
    if level.shard is None:
        codecs, grid = inner, level.chunks
    else:
        grid = level.shard
        codecs = [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": list(level.chunks),
                    "codecs": inner,
                    "index_codecs": [
                        {"name": "bytes", "configuration": {"endian": "little"}},
                        {"name": "crc32c"},
                    ],
                    "index_location": "end",
                },
            }
        ]
    axes = _axis_names(image)
    return {
        join_key(level.dest_path, "zarr.json"): {
            "zarr_format": 3,
            "node_type": "array",
            "shape": list(level.shape),
            "data_type": level.dtype,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(grid)}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": 0,
            "codecs": codecs,
            "attributes": level.attributes,
            "dimension_names": axes,
        }
    }


def _axis_names(image: ImagePlan) -> list[str]:
    multiscales = image.attributes.get("multiscales") or image.attributes["ome"]["multiscales"]
    return [axis["name"] for axis in multiscales[0]["axes"]]


def group_documents(plan: Plan, path: str, attributes: dict[str, Any]) -> Documents:
    """A group's metadata; an empty ``attributes`` writes the bare group."""
    if plan.ngff_version == "0.4":
        docs: Documents = {join_key(path, ".zgroup"): {"zarr_format": 2}}
        if attributes:
            docs[join_key(path, ".zattrs")] = attributes
        return docs
    return {
        join_key(path, "zarr.json"): {
            "zarr_format": 3,
            "node_type": "group",
            "attributes": attributes,
        }
    }


def image_start_documents(plan: Plan, image: ImagePlan) -> Documents:
    """What is written before copying: the bare image group and every level array."""
    docs = group_documents(plan, image.dest_path, {})
    for level in image.levels:
        docs.update(array_documents(plan, image, level))
    return docs


def final_image_attributes(plan: Plan, image: ImagePlan) -> dict[str, Any]:
    """The image group's attributes with the completion mark (the image's fingerprint)."""
    attributes = copy.deepcopy(image.attributes)
    attributes[PROVENANCE_KEY]["fingerprint"] = plan.image_fingerprint(image)
    return attributes


def image_final_documents(plan: Plan, image: ImagePlan) -> Documents:
    """What finalize writes once every level is copied: the OME metadata of the image."""
    return group_documents(plan, image.dest_path, final_image_attributes(plan, image))


def all_documents(plan: Plan) -> Documents:
    """Every metadata file of a finished migration, sorted by key (what the dry run diffs)."""
    docs: Documents = {}
    for group in plan.groups:
        docs.update(group_documents(plan, group.path, group.attributes))
    for image in plan.images:
        docs.update(image_start_documents(plan, image))
        docs.update(image_final_documents(plan, image))
    return dict(sorted(docs.items()))
