"""``python -m migrate`` runs the cellmap-migrate command line."""

from migrate.cli import main

main()
