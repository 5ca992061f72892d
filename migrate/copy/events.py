"""What the copy engine reports as it goes, and to whom: the :class:`Progress` protocol.

The engine only ever calls these four methods; the CLI (:mod:`migrate.cli.progress`) draws
them as bars or lines, and :class:`NullProgress` drops them (library use, tests).
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(
        self, name: str, total_units: int, total_bytes: int, done_units: int, done_bytes: int
    ) -> None: ...
    def advance(self, name: str, units: int, nbytes: int) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class NullProgress:
    def start(
        self, name: str, total_units: int, total_bytes: int, done_units: int, done_bytes: int
    ) -> None:
        pass

    def advance(self, name: str, units: int, nbytes: int) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass
