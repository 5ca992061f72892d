"""The field-by-field comparison ``verify`` uses; it lives in ``migrate.target.compare``, where
the copy engine (which explains a refused DEST with it) can import it too."""

from __future__ import annotations

from migrate.target.compare import differences, show

__all__ = ["differences", "show"]
