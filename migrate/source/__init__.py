"""Reading the sources: what a source tree holds and what its metadata means.

``discover`` reads ``attributes.json`` files and listings into a ``SourceImage`` (``image``);
``parse`` reads strict JSON; ``dataset`` tells an N5 SRC, a dataset folder and a precomputed
volume apart. One module per source convention says what it states about an image, level by
level, as a ``Statement`` (``statement``): ``cosem`` (COSEM ``multiscales`` / ``transform``),
``neuroglancer_n5`` (Neuroglancer-N5 ``axes/units/scales/pixelResolution``), ``precomputed``
(a Neuroglancer precomputed volume's ``info``);
``reconcile`` compares the statements, chooses one (``--trust``) and makes the OME-NGFF axes
and per-level transforms (``map_image``; pure). ``axes`` and ``units`` are the named helpers
for axis order (F → C) and unit names.
Imports only :mod:`migrate.storage`, :mod:`migrate.errors` and ``schemas``.
"""
