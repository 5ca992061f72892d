"""How the copy engine runs: the options every copier and executor reads.

They sit below the engine and the copiers so that both can import them (no import circle).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineOptions:
    workers: int = 2
    overwrite: bool = False
    transplant: bool = True
    decode_check: bool = True
