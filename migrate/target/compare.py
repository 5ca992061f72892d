"""Field-by-field comparison of a metadata document at DEST with what the plan renders. Pure.

Documents are compared as parsed JSON values: key order and whitespace do not matter, a
number equals the same number written as an integer or a float, and ``true`` is not ``1``.
"""

from __future__ import annotations

import json
from typing import Any


def show(value: Any, limit: int = 80) -> str:
    """A value as compact JSON, cut to about ``limit`` characters."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _same_scalar(actual: Any, expected: Any) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is type(expected) and actual == expected
    numbers = (int, float)
    if isinstance(actual, numbers) and isinstance(expected, numbers):
        return actual == expected
    return type(actual) is type(expected) and bool(actual == expected)


def _field(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def differences(actual: Any, expected: Any, path: str = "") -> list[str]:
    """Every place where ``actual`` (read from DEST) differs from ``expected`` (the plan),
    as ``<field> is <actual>, the plan says <expected>`` (fields named like
    ``multiscales[0].datasets[1].coordinateTransformations[0].scale[0]``)."""
    where = path or "the document"
    if isinstance(expected, dict) and isinstance(actual, dict):
        found: list[str] = []
        for key in expected:
            name = _field(path, str(key))
            if key not in actual:
                found.append(f"{name} is missing, the plan says {show(expected[key])}")
            else:
                found.extend(differences(actual[key], expected[key], name))
        for key in actual:
            if key not in expected:
                found.append(
                    f"{_field(path, str(key))} is {show(actual[key])}, the plan has no such field"
                )
        return found
    if isinstance(expected, list) and isinstance(actual, list):
        found = []
        for index, (a, e) in enumerate(zip(actual, expected, strict=False)):
            found.extend(differences(a, e, f"{path}[{index}]"))
        for index in range(len(actual), len(expected)):
            found.append(f"{path}[{index}] is missing, the plan says {show(expected[index])}")
        for index in range(len(expected), len(actual)):
            found.append(f"{path}[{index}] is {show(actual[index])}, the plan has no such item")
        return found
    if isinstance(expected, dict | list) or isinstance(actual, dict | list):
        return [f"{where} is {show(actual)}, the plan says {show(expected)}"]
    if _same_scalar(actual, expected):
        return []
    return [f"{where} is {show(actual)}, the plan says {show(expected)}"]
