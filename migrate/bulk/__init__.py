"""Bulk: many ``<dataset>/<dataset>.n5`` datasets under one root, migrated in one resumable run.

The room above :mod:`migrate.api`: ``select`` finds and selects the datasets of a root,
``survey`` is the dry run of each, ``run`` drives convert, status and verify over the
selection (every dataset through the single-dataset library functions, so each keeps every
single-dataset guarantee), and ``summary`` keeps the bulk summary file current.
"""
