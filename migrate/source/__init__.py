"""Reading the N5 side: what a source tree holds and what its metadata means.

``discover`` reads ``attributes.json`` files and listings into a ``SourceImage`` (``image``);
``parse`` reads strict JSON. One module per source convention says what it states about an
image, level by level, as a ``Statement`` (``statement``): ``cosem`` (COSEM ``multiscales`` /
``transform``), ``neuroglancer_n5`` (Neuroglancer-N5 ``axes/units/scales/pixelResolution``);
``reconcile`` compares the statements, chooses one (``--trust``) and makes the OME-NGFF axes
and per-level transforms (``map_image``; pure). ``axes`` and ``units`` are the named helpers
for axis order (F → C) and unit names.
Imports only :mod:`migrate.storage`, :mod:`migrate.errors` and ``schemas``.
"""
