"""After the fact: what DEST holds and whether it is right.

``inventory`` reads the state of every image at DEST; ``status`` reports it; ``validate``
checks the OME metadata with ome-zarr-models and our own rules; ``verify`` compares DEST
with SRC. DEST's records and marks are read through :mod:`migrate.dest`. Imports
:mod:`migrate.copy` (TensorStore readers) and below.
"""
