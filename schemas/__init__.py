"""Pure pydantic models of the metadata cellmap-migrate reads and writes.

No module in this package touches storage. Source conventions (N5, COSEM, Neuroglancer-N5)
accept and keep unknown keys; the OME-NGFF models we emit forbid them.
"""
