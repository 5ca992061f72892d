"""The command line (the top room): ``cellmap-migrate`` and its subcommands.

``commands`` parses options, builds stores, calls one library function (:mod:`migrate.api`,
:mod:`migrate.check`, :mod:`migrate.copy`) and prints; ``progress`` draws what the engine
reports; ``report`` words a run's result; ``view`` opens an output in Neuroglancer. It may
import every room below it; nothing imports it.
"""

from migrate.cli import bulk as bulk  # registers the ``bulk`` group on the group
from migrate.cli import view as view  # registers `view` on the group
from migrate.cli.commands import cli, main
from migrate.cli.info import info_command

cli.add_command(info_command)  # here, not in commands: info uses the decorators of commands

__all__ = ["cli", "main"]
