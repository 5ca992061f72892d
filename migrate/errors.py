"""The error hierarchy. Every message names the offending value and where it was found."""

from __future__ import annotations


class MigrationError(Exception):
    """Base class of every error cellmap-migrate reports to the user as one line."""


class MetadataError(MigrationError):
    """Source metadata that is missing, malformed, or cannot be mapped to OME-NGFF.

    ``location`` is the file (e.g. ``jrc_hela-2.n5/em/fibsem-uint16/attributes.json``),
    ``field`` the JSON path inside it (e.g. ``multiscales[0].datasets[2].transform.units``).
    """

    def __init__(self, location: str, field: str | None, message: str) -> None:
        self.location = location
        self.field = field
        self.message = message
        where = f"{location}: {field}" if field else location
        super().__init__(f"{where}: {message}")


class OptionError(MigrationError):
    """A command-line option whose value cannot be used (with the other options, or with the
    images it applies to): a usage error. The message starts with the option."""


class ConflictError(MigrationError):
    """The source's metadata conventions disagree and the user has not said which to trust."""


class SourceDataError(MigrationError):
    """A source block that cannot be decoded (corrupt stream, header disagrees with array)."""


class StoreError(MigrationError):
    """Storage that cannot be reached or used (missing path, S3 failure, permissions)."""


class PlanMismatchError(MigrationError):
    """DEST holds a partial or finished migration made with different settings."""


class VerificationError(MigrationError):
    """The destination differs from the source or its metadata is not valid OME-NGFF."""


class ClusterError(MigrationError):
    """A Dask cluster that cannot be started or reached, or was lost during a run."""
