"""The report's optional dependencies (Pillow, matplotlib): checked before any work starts."""

from __future__ import annotations

import importlib

from migrate.errors import MigrationError

EXTRA_MESSAGE = "--report needs the report extra: pip install 'cellmap-migrate[report]'"


def require_extra() -> None:
    """Raise one clear MigrationError when Pillow or matplotlib cannot be imported."""
    for module in ("PIL.Image", "matplotlib"):
        try:
            importlib.import_module(module)
        except ImportError:
            raise MigrationError(EXTRA_MESSAGE) from None
