"""What is written: the plan and the documents it renders.

``plan`` (pure) turns a discovery into a :class:`schemas.plan.Plan` (target metadata, work
units, fingerprint), ``precomputed`` plans precomputed volumes and whole dataset folders;
``codecs`` chooses output codecs and says how each level can be copied;
``layout`` renders every metadata document byte for byte; ``diff`` compares them with DEST
for the dry run. Imports :mod:`migrate.source` and below, never the copy or check rooms.
"""
