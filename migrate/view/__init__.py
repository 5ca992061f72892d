"""Seeing an output in Neuroglancer: the viewer state of an output (``state``), the link that
carries it (``link``), the small HTTP server that shows a local output (``serve``), what an
output holds for the viewer (``scan``) and old N5 links re-pointed at the Zarr
(``from_state``). Above ``check``, below ``api`` and the CLI.
"""
