"""Status of a destination: per image and level, work units done of total."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from migrate.check.inventory import finished_images, started_images
from migrate.copy import resume
from migrate.errors import MigrationError
from migrate.storage import Store


@dataclass
class LevelStatus:
    name: str
    units_done: int
    units_total: int
    nbytes: int

    @property
    def bytes_done(self) -> int:
        return self.nbytes * self.units_done // max(self.units_total, 1)


@dataclass
class ImageStatus:
    dest_path: str
    complete: bool
    levels: list[LevelStatus]

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.dest_path,
            "complete": self.complete,
            "levels": [{**vars(level), "bytes_done": level.bytes_done} for level in self.levels],
        }


def status(dest: Store) -> list[ImageStatus]:
    """The state of every image cellmap-migrate has started or finished at DEST."""
    found = [
        ImageStatus(
            image.dest_path,
            True,
            [LevelStatus(level.name, 1, 1, level.nbytes) for level in image.levels],
        )
        for image in finished_images(dest)
    ]
    for started in started_images(dest):
        image = started.image
        levels = []
        for level in image.levels:
            done = resume.done_units(
                dest, started.fingerprint, image.dest_path, level.name, started.generation
            )
            levels.append(LevelStatus(level.name, len(done), level.unit_count, level.nbytes))
        found.append(ImageStatus(image.dest_path, False, levels))
    if not found:
        raise MigrationError(f"{dest.display()}: no cellmap-migrate output found")
    return sorted(found, key=lambda image: image.dest_path)


def render_status(images: list[ImageStatus]) -> str:
    lines = []
    for image in images:
        lines.append(f"{image.dest_path}: {'complete' if image.complete else 'INCOMPLETE'}")
        for level in image.levels:
            units = (
                "complete" if image.complete else f"{level.units_done}/{level.units_total} units"
            )
            size = f"{level.bytes_done / 1e6:.1f}/{level.nbytes / 1e6:.1f} MB"
            lines.append(f"  {level.name:>4}  {units}  {size}")
    return "\n".join(lines) + "\n"
