"""Status of a destination: per image and level, work units done of total."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from migrate.check.inventory import completion_mark, finished_images, started_images
from migrate.dest import certificate, records
from migrate.dest.certificate import Proof
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
    note: str = ""
    """Why an image whose units are all copied is still not complete."""
    proof: Proof | None = None
    """The certificate's proof of this image (the last ``verify`` that proved it), if any."""

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.dest_path,
            "complete": self.complete,
            "note": self.note,
            "levels": [{**vars(level), "bytes_done": level.bytes_done} for level in self.levels],
            "proven": self.proof.to_json() if self.proof is not None else None,
        }


def status(dest: Store) -> list[ImageStatus]:
    """The state of every image cellmap-migrate has started or finished at DEST.

    An image is complete only when the DEST completion mark, written after every other
    document of the run, lists it with its fingerprint; an image the mark lists but DEST
    does not hold is reported missing."""
    found = [
        ImageStatus(
            image.dest_path,
            image.confirmed,
            [LevelStatus(level.name, 1, 1, level.nbytes) for level in image.levels],
            ""
            if image.confirmed
            else "its run stopped before writing the DEST completion mark (the root group's "
            "cellmap-migrate attribute); run the same convert again to finish",
        )
        for image in finished_images(dest)
    ]
    for started in started_images(dest):
        image = started.image
        levels = []
        for level in image.levels:
            done = records.done_units(
                dest, started.fingerprint, image.dest_path, level.name, started.generation
            )
            levels.append(LevelStatus(level.name, len(done), level.unit_count, level.nbytes))
        found.append(ImageStatus(image.dest_path, False, levels))
    present = {image.dest_path for image in found}
    for path in sorted(set(completion_mark(dest)) - present):
        note = "listed as complete by the DEST completion mark, but not found at DEST"
        found.append(ImageStatus(path, False, [], note))
    if not found:
        raise MigrationError(f"{dest.display()}: no cellmap-migrate output found")
    held = certificate.read(dest)
    for entry in found:
        entry.proof = next(
            (p for p in (held.proofs if held else []) if entry.dest_path in p.images), None
        )
    return sorted(found, key=lambda image: image.dest_path)


def render_status(images: list[ImageStatus]) -> str:
    lines = []
    for image in images:
        state = "complete" if image.complete else "INCOMPLETE"
        lines.append(f"{image.dest_path}: {state}" + (f" ({image.note})" if image.note else ""))
        for level in image.levels:
            finished = image.complete or level.units_done == level.units_total
            units = "complete" if finished else f"{level.units_done}/{level.units_total} units"
            size = f"{level.bytes_done / 1e6:.1f}/{level.nbytes / 1e6:.1f} MB"
            lines.append(f"  {level.name:>4}  {units}  {size}")
    proofs = list({id(i.proof): i.proof for i in images if i.proof is not None}.values())
    for proof in proofs:
        lines.append(f"proven: {proof.describe()}")
    if not proofs and any(image.complete for image in images):
        lines.append("not proven yet: no certificate (cellmap-migrate verify SRC DEST writes one)")
    return "\n".join(lines) + "\n"
