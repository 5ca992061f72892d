"""After the fact: what DEST holds and whether it is right.

``inventory`` reads the state of every image at DEST; ``status`` reports it; ``validate``
checks the OME metadata with ome-zarr-models and our own rules; ``verify`` compares DEST
with SRC. Imports :mod:`migrate.copy` (records, TensorStore readers) and below.
"""
