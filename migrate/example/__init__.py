"""The built-in example: a Java-style N5 writer for realistic Cellmap-shaped datasets
(``fixture``), and a TensorStore writer of Neuroglancer precomputed volumes (``precomputed``).

Not part of the migration: the demo, the tests and the benchmarks use it to make sources.
It imports nothing from the product's rooms; only the CLI's ``demo`` imports it.
"""
