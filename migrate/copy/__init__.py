"""Moving chunks: the engine that runs a plan's work units and records each one done.

``options`` and ``events`` are what the engine is told and what it tells; ``engine`` runs
units in a thread pool (``distributed`` on a Dask cluster) and writes metadata last;
``copiers`` picks how a unit is copied: ``transplant`` (block payloads moved or re-encoded
one at a time) or ``tsio`` (TensorStore); ``precomputed`` says where a precomputed volume is
read and signs its units from its chunk (shard) files; ``memory`` caps malloc arenas. DEST's
state (records, marks, the lease) is read and written through :mod:`migrate.dest`. Imports
:mod:`migrate.dest` and below.
"""
