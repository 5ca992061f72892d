"""Axis order and axis kinds.

N5 attributes and the Neuroglancer-N5 convention list every per-axis value in **F order**
(fastest axis first: x, y, z). OME-NGFF, COSEM transforms (unless ``order == "F"``) and
NumPy/TensorStore shapes of the migrated arrays use **C order** (slowest axis first: z, y, x).
:func:`f_to_c` is the one place where F order becomes C order; :func:`c_to_f` is the same
operation, named for the other direction so call sites read correctly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeVar

T = TypeVar("T")

AxisKind = Literal["space", "time", "channel"]

_AXIS_TYPES: dict[str, AxisKind] = {
    "x": "space",
    "y": "space",
    "z": "space",
    "t": "time",
    "c": "channel",
}


def f_to_c(values: Sequence[T]) -> tuple[T, ...]:
    """Per-axis values in F order (x, y, z) → the same values in C order (z, y, x)."""
    return tuple(reversed(values))


def c_to_f(values: Sequence[T]) -> tuple[T, ...]:
    """Per-axis values in C order (z, y, x) → the same values in F order (x, y, z)."""
    return tuple(reversed(values))


def axis_type(name: str) -> AxisKind | None:
    """The OME-NGFF axis ``type`` implied by an axis name, or None when it implies none.

    ``x``, ``y``, ``z`` are space, ``t`` is time, ``c`` is channel; the match ignores case
    (``"Z"`` is space too). Any other name (``"d0"``, ``"angle"``) has no known type. Takes a
    single name, so axis order does not matter here.
    """
    return _AXIS_TYPES.get(name.lower())
