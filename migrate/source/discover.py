"""Discovery: find every multiscale image (a group of ``s0 … sN`` arrays) under a source.

Reads only ``attributes.json`` files and directory listings; never descends into an
array's chunk directories, so it costs a few requests per group whatever the data size.
The tree is read breadth first, every listing and attributes file of one depth at once
(:meth:`~migrate.storage.Store.map`: many requests in flight on S3), then walked depth first
to build the result, so the outcome, including which error is reported first, does not
depend on the order the requests complete in.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from migrate.errors import MetadataError, StoreError
from migrate.source.image import SourceImage, SourceLevel, sort_level_names
from migrate.storage import Store, check_segment, join_key
from schemas.n5 import is_array_attributes

ATTRIBUTES = "attributes.json"
LEVEL_NAME = re.compile(r"^s(0|[1-9][0-9]*)$")
ARRAY_KEYS = ("dimensions", "dataType")
"""The attributes that make an N5 node an array (:func:`schemas.n5.is_array_attributes`)."""


@dataclass(frozen=True)
class Discovery:
    """What lives under a source: multiscale images and arrays that belong to none."""

    images: tuple[SourceImage, ...]
    orphan_arrays: tuple[str, ...]


def normalize_url(url: str) -> str:
    """``url`` (a path or ``s3://bucket/key``) with ``.`` and ``..`` components and repeated
    or trailing slashes resolved lexically; ``..`` never climbs above a bucket."""
    scheme, separator, rest = url.rpartition("://")
    if separator:
        bucket, _, key = rest.partition("/")
        path = posixpath.normpath("/" + key).lstrip("/")
        return f"{scheme}://{bucket}/{path}".rstrip("/") if path else f"{scheme}://{bucket}"
    return posixpath.normpath(url) if url else url


def split_n5_url(url: str) -> tuple[str, str]:
    """Split ``…/<dataset>.n5/<inner/path>`` into (N5 root URL, inner path), after
    :func:`normalize_url` (so ``x.n5/em/..`` is the root ``x.n5``).

    A URL with no ``.n5`` component is taken to be the N5 root itself.
    """
    url = normalize_url(url)
    parts = url.rstrip("/").split("/")
    for index in range(len(parts) - 1, -1, -1):
        if parts[index].endswith(".n5"):
            return "/".join(parts[: index + 1]), "/".join(parts[index + 1 :])
    return url.rstrip("/"), ""


MAX_JSON_DEPTH = 100
"""How deeply a metadata document may nest objects and arrays (real ones nest fewer than 10
levels): deeper documents are refused as they are read, before any recursive code (the
parser, the schemas, the plan) would exhaust Python's stack on them."""


def read_json_object(store: Store, key: str) -> dict[str, Any] | None:
    """The JSON object stored at ``key``, or None when there is none; malformed JSON,
    anything but an object, or one nested deeper than :data:`MAX_JSON_DEPTH` is a
    MetadataError naming the file."""
    raw = store.read(key)
    if raw is None:
        return None
    too_deep = f"nested deeper than {MAX_JSON_DEPTH} levels of objects and arrays; refusing it"
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetadataError(store.display(key), None, f"malformed JSON: {exc}") from exc
    except RecursionError:
        raise MetadataError(store.display(key), None, too_deep) from None
    if not isinstance(value, dict):
        raise MetadataError(store.display(key), None, "expected a JSON object")
    if json_depth_exceeds(value, MAX_JSON_DEPTH):
        raise MetadataError(store.display(key), None, too_deep)
    return value


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """True when ``value`` (parsed JSON) nests objects and arrays more than ``limit`` deep
    (the document's own object is level 1). Iterative: any depth is measured safely."""
    if not isinstance(value, (dict, list)):
        return False
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def read_attributes(store: Store, path: str) -> dict[str, Any] | None:
    """The parsed ``attributes.json`` of ``path``, or None when there is none. Read
    strictly: NaN and Infinity are refused (they could not be kept exactly)."""
    key = join_key(path, ATTRIBUTES)
    value = read_json_object(store, key)
    if value is None:
        return None
    bad = non_finite_number(value)
    if bad is not None:
        field, number = bad
        raise MetadataError(
            store.display(key),
            field,
            f"{number} is not a JSON number (JSON has no NaN or Infinity); "
            "it cannot be kept exactly: write a number or null",
        )
    return value


def non_finite_number(value: Any, path: str = "") -> tuple[str, str] | None:
    """The JSON path and spelling of the first NaN or ±Infinity in ``value`` (which Python's
    json module accepts, but JSON does not), or None when there is none."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        for name, item in value.items():
            found = non_finite_number(item, f"{path}.{name}" if path else str(name))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = non_finite_number(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def level_shape(attrs: dict[str, Any], location: str) -> tuple[int, ...]:
    """The C-order (z, y, x) shape of an array from its F-order N5 ``dimensions``."""
    dims = attrs.get("dimensions")
    if not isinstance(dims, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims
    ):
        raise MetadataError(location, "dimensions", f"expected a list of sizes, got {dims!r}")
    return tuple(reversed(dims))


def discover(store: Store, inner: str = "") -> Discovery:
    """Walk the N5 tree under ``inner`` and collect multiscale images and orphan arrays."""
    images: list[SourceImage] = []
    orphans: list[str] = []
    listing: Listing | None = None
    if store.concurrency > 1:  # S3: the root's listing in the same round trip
        found, listing = _attributes_and_listing(store, inner)
        if isinstance(found, MetadataError):
            raise found
        root_attrs = found
    else:
        root_attrs = read_attributes(store, inner)
    if root_attrs is None and not store.exists_prefix(inner):
        raise StoreError(f"{store.display(inner)}: no such N5 group")
    if root_attrs is not None and is_array_attributes(root_attrs):
        raise MetadataError(
            store.display(join_key(inner, ATTRIBUTES)),
            None,
            "this is an array, not a group: give the multiscale group that holds it",
        )
    tree = read_tree(store, inner, listing)
    _walk(store, inner, root_attrs or {}, tree, images, orphans)
    return Discovery(tuple(images), tuple(orphans))


Children = list[tuple[str, "Attributes"]]
"""A group's sub-directories, sorted: (name, its attributes, None when it has none, or the
error reading them raised)."""


def read_tree(store: Store, inner: str, listing: Listing | None = None) -> dict[str, Children]:
    """Every group under ``inner`` (``inner`` included; ``listing``: its listing when already
    read) with its children, read one depth at a time. A child is listed in turn unless it is
    an array or a level directory.

    On a store that takes calls in parallel (S3), a child that is not named like a level
    (``s0``, ``s1``, …) is listed at the same time as its attributes are read, so each depth
    costs one round trip rather than two (a listing of what turns out to be an array is
    dropped); a listing's error is raised where the child would have been listed."""
    speculate = store.concurrency > 1
    tree: dict[str, Children] = {}
    frontier: dict[str, Listing | None] = {inner: listing}
    while frontier:
        unknown = [path for path, known in frontier.items() if known is None]
        listed = store.map(lambda path: _listing(store, path), unknown)
        frontier.update(zip(unknown, listed, strict=True))
        children = [(path, name) for path, known in frontier.items() for name in _names(known)]

        def read(child: tuple[str, str]) -> tuple[Attributes, Listing | None]:
            path = join_key(*child)
            if not speculate or LEVEL_NAME.match(child[1]):
                return _attributes_or_error(store, path), None
            return _attributes_and_listing(store, path)

        found = store.map(read, children)
        for path in frontier:
            tree[path] = []
        frontier = {}
        for (path, name), (attrs, known) in zip(children, found, strict=True):
            tree[path].append((name, attrs))
            is_array = isinstance(attrs, dict) and is_array_attributes(attrs)
            if not is_array and not (attrs is None and LEVEL_NAME.match(name)):
                frontier[join_key(path, name)] = known
    return tree


Attributes = dict[str, Any] | MetadataError | None
"""A group's or array's attributes, None when it has none, or the error reading them raised."""

Listing = list[str] | StoreError
"""A directory's sub-directory names, or the error listing it raised."""


def _listing(store: Store, path: str) -> Listing:
    """``path``'s sub-directory names, each a plain path segment (a name such as ``..``,
    which S3 allows, would lead the migration outside the source and DEST)."""
    try:
        names = store.list_dir(path)[0]
        where = f"{store.display(path)} (a name in its listing)"
        return [check_segment(name, where) for name in names]
    except StoreError as exc:
        return exc


def _names(listing: Listing | None) -> list[str]:
    if isinstance(listing, StoreError):
        raise listing
    return listing or []


def _attributes_and_listing(store: Store, path: str) -> tuple[Attributes, Listing]:
    """``path``'s attributes and its listing, asked for at once."""
    reads: list[Callable[[], Attributes | Listing]] = [
        lambda: _attributes_or_error(store, path),
        lambda: _listing(store, path),
    ]
    attributes, listing = store.map(lambda read: read(), reads)
    return cast(Attributes, attributes), cast(Listing, listing)


def _attributes_or_error(store: Store, path: str) -> dict[str, Any] | MetadataError | None:
    try:
        return read_attributes(store, path)
    except MetadataError as exc:
        return exc


def _walk(
    store: Store,
    path: str,
    attrs: dict[str, Any],
    tree: dict[str, Children],
    images: list[SourceImage],
    orphans: list[str],
) -> None:
    arrays: dict[str, dict[str, Any]] = {}
    groups: list[tuple[str, dict[str, Any]]] = []
    for name, child_attrs in tree[path]:
        child = join_key(path, name)
        if isinstance(child_attrs, MetadataError):
            raise child_attrs
        if child_attrs is not None and is_array_attributes(child_attrs):
            arrays[name] = child_attrs
        elif child_attrs is None and LEVEL_NAME.match(name):
            raise MetadataError(
                store.display(join_key(child, ATTRIBUTES)),
                None,
                "missing: a scale level directory needs array attributes",
            )
        elif LEVEL_NAME.match(name):  # attributes, but not an array's: name what is missing
            field = next(key for key in ARRAY_KEYS if key not in (child_attrs or {}))
            raise MetadataError(
                store.display(join_key(child, ATTRIBUTES)),
                field,
                f"required but missing: a scale level is an array, whose attributes give "
                f"{' and '.join(ARRAY_KEYS)}",
            )
        else:
            groups.append((name, child_attrs or {}))
    level_names = [name for name in arrays if LEVEL_NAME.match(name)]
    if level_names:
        levels = tuple(
            SourceLevel(
                name=name,
                attrs=arrays[name],
                location=store.display(join_key(path, name, ATTRIBUTES)),
                shape=level_shape(arrays[name], store.display(join_key(path, name, ATTRIBUTES))),
            )
            for name in sort_level_names(level_names)
        )
        images.append(
            SourceImage(
                path=path,
                group_attrs=attrs,
                group_location=store.display(join_key(path, ATTRIBUTES)),
                levels=levels,
            )
        )
    orphans.extend(join_key(path, name) for name in arrays if name not in level_names)
    for name, group_attrs in groups:
        _walk(store, join_key(path, name), group_attrs, tree, images, orphans)
