"""Parse raw attributes with a schema model; report failures as :class:`MetadataError`.

A pydantic ``ValidationError`` names the failing item by a ``loc`` tuple that may contain
union tags (``("compression", "gzip", "level")``). :func:`parse_attrs` turns it into the JSON
path of the item in the file (``compression.level``), so the user can find it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import pydantic
from pydantic_core import ErrorDetails

from migrate.errors import MetadataError

M = TypeVar("M", bound=pydantic.BaseModel)

_MAX_VALUE_CHARS = 120


def parse_attrs(model: type[M], data: Mapping[str, Any], location: str) -> M:
    """Validate ``data`` (a parsed ``attributes.json``) as ``model``.

    ``location`` is the display path of the file, used in the error. On failure raises
    :class:`MetadataError` whose ``field`` is the JSON path of the first offending item
    (e.g. ``multiscales[0].datasets[2].transform.order``) and whose message carries the
    offending value; further errors are counted in the message.
    """
    try:
        return model.model_validate(dict(data))
    except pydantic.ValidationError as exc:
        errors = _root_causes(exc.errors(include_url=False))
        first = errors[0]
        message = describe_error(first)
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem(s) in this file)"
        raise MetadataError(location, json_path(first["loc"], data), message) from exc


def _root_causes(errors: list[ErrorDetails]) -> list[ErrorDetails]:
    """Drop pydantic's follow-on errors.

    When an item of a ``min_length`` tuple fails, pydantic also reports the enclosing tuple
    as "too short after validation"; such an error, on a path that encloses another error's
    path, says nothing new.
    """
    locs = [tuple(error["loc"]) for error in errors]
    kept = [
        error
        for error, loc in zip(errors, locs, strict=True)
        if error["type"] != "too_short"
        or not any(len(other) > len(loc) and other[: len(loc)] == loc for other in locs)
    ]
    return kept or errors


def json_path(loc: Sequence[int | str], data: Any) -> str | None:
    """The JSON path (``a.b[2].c``) of a pydantic error ``loc`` within the parsed ``data``.

    Walks ``data`` along ``loc``; a string step that is not a key of the current object and
    is not the last step is a pydantic union tag, not part of the file, and is dropped.
    Returns None for an empty path (the whole document).
    """
    path = ""
    current: Any = data
    for position, step in enumerate(loc):
        last = position == len(loc) - 1
        if isinstance(step, int) and isinstance(current, Sequence) and not isinstance(current, str):
            path += f"[{step}]"
            current = current[step] if -len(current) <= step < len(current) else None
        elif isinstance(current, Mapping) and str(step) in current:
            path += f".{step}" if path else str(step)
            current = current[str(step)]
        elif last or not isinstance(current, Mapping):
            path += f".{step}" if path else str(step)
            current = None
        # else: a union tag (e.g. the discriminator value "gzip"), not a key in the file
    return path or None


def describe_error(error: ErrorDetails) -> str:
    """One pydantic error as a sentence that includes the offending value."""
    if error["type"] == "missing":
        return "required but missing"
    if error["type"] == "value_error" and "error" in error.get("ctx", {}):
        text = str(error["ctx"]["error"])
    else:
        text = error["msg"]
    return f"{text} (got {_short_repr(error['input'])})"


def _short_repr(value: Any) -> str:
    text = repr(value)
    if len(text) > _MAX_VALUE_CHARS:
        text = text[: _MAX_VALUE_CHARS - 3] + "..."
    return text
