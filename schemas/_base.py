"""Base classes shared by every schema module."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    FiniteFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Strict,
)

# Numbers of source metadata, parsed strictly: a string ("5.24") or a boolean where the file
# must give a number is an error naming the field, never silently converted.
Number = Annotated[FiniteFloat, Strict()]
"""A finite JSON number (an integer is accepted as the same value)."""
PositiveNumber = Annotated[PositiveFloat, Strict(), AllowInfNan(False)]
"""A finite JSON number > 0."""


def _not_text(value: Any) -> Any:
    """Refuse a string or a boolean where the file must give an integer (pydantic would turn
    ``"2"`` and ``true`` into 2 and 1); an integral number such as ``2.0`` stays accepted."""
    if isinstance(value, str | bool):
        kind = "a string" if isinstance(value, str) else "a boolean"
        raise ValueError(f"expected an integer, not {kind}")
    return value


Integer = Annotated[int, BeforeValidator(_not_text)]
"""A JSON integer (or an integral number such as 2.0; not "2", not true)."""
PositiveInteger = Annotated[PositiveInt, BeforeValidator(_not_text)]
NonNegativeInteger = Annotated[NonNegativeInt, BeforeValidator(_not_text)]
Flag = Annotated[bool, Strict()]
"""A JSON true or false (not "true", not 1)."""


class SourceModel(BaseModel):
    """Metadata read from someone else's files: frozen, unknown keys kept verbatim."""

    model_config = ConfigDict(frozen=True, extra="allow", allow_inf_nan=False)

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON object this model was parsed from (keys that were absent stay absent)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class TargetModel(BaseModel):
    """Metadata we write: frozen, unknown keys rejected, JSON output stable."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, populate_by_name=True
    )

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON object to write (optional fields that are ``None`` are left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _check_relative_key(value: str) -> str:
    """Reject a path that is empty, absolute, or escapes its group."""
    if value == "" or value.startswith("/") or "\\" in value:
        raise ValueError(f"path {value!r} must be a non-empty relative path inside the group")
    parts = value.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"path {value!r} must not contain empty, '.' or '..' components")
    return value


RelativePath = Annotated[str, AfterValidator(_check_relative_key)]
"""A '/'-separated path that stays inside its group (no '..', not absolute)."""


def check_same_length(where: str, **lists: tuple[Any, ...] | None) -> None:
    """Raise ValueError naming every list whose length differs from the first one given."""
    present = {name: value for name, value in lists.items() if value is not None}
    lengths = {name: len(value) for name, value in present.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"{where}: lists must have the same length ({detail})")
