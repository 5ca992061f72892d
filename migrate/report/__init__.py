"""The HTML report of a run (``convert --report DIR``, ``verify --report DIR``): one
self-contained ``index.html`` a person opens from disk to *see* the migration.

``model`` describes the images (from a plan or from DEST's metadata), ``planes`` cuts and
colours the preview planes (pure numpy), ``sample`` reads them (TensorStore), ``figures``
draws the pyramid and the throughput (matplotlib), ``timeline`` records unit completions
from the engine's progress calls, ``html`` assembles the page and ``write`` puts it in DIR.
Pillow and matplotlib are the ``report`` extra: :func:`require_extra` says so when missing.
"""

from migrate.report.extra import require_extra
from migrate.report.timeline import RecordingProgress

__all__ = ["RecordingProgress", "require_extra"]
