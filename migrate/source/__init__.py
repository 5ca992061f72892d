"""Reading the N5 side: what a source tree holds and what its metadata means.

``discover`` reads ``attributes.json`` files and listings; ``parse`` reads strict JSON;
``mapping`` turns COSEM / Neuroglancer-N5 attributes into per-level OME transforms (pure);
``axes`` and ``units`` are the named helpers for axis order (F → C) and unit names.
Imports only :mod:`migrate.storage`, :mod:`migrate.errors` and ``schemas``.
"""
