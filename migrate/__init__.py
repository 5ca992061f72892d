"""cellmap-migrate: migrate Cellmap/COSEM N5 datasets to OME-NGFF Zarr."""

__version__ = "0.1.0"
