"""DEST's state: what cellmap-migrate keeps and finds at a destination, in one room.

``state`` reads DEST once per run into a :class:`~migrate.dest.state.DestState` value (the
root, the metadata documents of the plan's groups and images, start records, the lease as
read) that the rest of the run passes along, and :class:`~migrate.dest.state.DestWriter`
writes the run's documents through it; ``marks`` reads completion marks and group
attributes; ``records`` keeps the start and unit records under ``.cellmap-migrate/``;
``lease`` is the one-writer lease; ``ours`` says exactly which names cellmap-migrate
writes (everything else is never deleted). ``copy`` writes through this room, ``check``
reads through it. Imports :mod:`migrate.target` and below.
"""
