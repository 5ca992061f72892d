"""Plain path segments: the one check every name and key passes before it is used.

A name that comes from a source (a listing entry, a metadata path, a dataset name), an option
that becomes a path (``--prefix``) and every key a store is asked for are made of *plain
segments*: a segment is not empty, not ``.`` or ``..``, and holds no ``/``, no backslash
(a separator on Windows and to some HTTP clients) and no control character (U+0000–U+001F,
U+007F–U+009F: NUL ends a C string, a newline or an escape sequence would forge a line of
output). S3 allows every one of these in a key; a key like ``a/../../b`` taken as it comes
would leave its root on a disk, or in an HTTP client that normalizes the URL path.

Names are shown with :func:`repr`, so a message naming a bad one stays one printable line.
"""

from __future__ import annotations

import re

from migrate.errors import StoreError

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

RULE = "a plain name: not empty, '.' or '..', without '/', '\\' or control characters"
"""What a plain segment is, in the words of the messages."""


class UnsafeKeyError(StoreError):
    """A name or key that is not made of plain segments (it could leave its root)."""


def segment_problem(name: str) -> str | None:
    """Why ``name`` is not a plain path segment, or None when it is one."""
    if name == "":
        return "an empty name"
    if name in (".", ".."):
        return f"{name!r} (a relative path step)"
    if "/" in name:
        return f"{name!r} holds a '/'"
    if "\\" in name:
        return f"{name!r} holds a backslash"
    if _CONTROL.search(name):
        return f"{name!r} holds a control character"
    return None


def check_segment(name: str, where: str) -> str:
    """``name`` when it is a plain segment; else an :class:`UnsafeKeyError` naming it and
    ``where`` it was found (e.g. the listing of a source directory)."""
    problem = segment_problem(name)
    if problem is not None:
        raise UnsafeKeyError(f"{where}: {problem} is not {RULE}; refusing to use it")
    return name


def path_problem(path: str) -> str | None:
    """Why the relative ``path`` (segments joined by '/'; '' is the root, a trailing '/' is
    allowed) is not made of plain segments, or None when it is."""
    if path == "":
        return None
    if path.startswith("/"):
        return f"{path!r} is absolute"
    for segment in path.removesuffix("/").split("/"):
        problem = segment_problem(segment)
        if problem is not None:
            return f"{path!r} holds {problem}"
    return None


def check_key(key: str, where: str) -> str:
    """``key`` when every segment of it is plain (see :func:`path_problem`); else an
    :class:`UnsafeKeyError`: no store reads, writes, lists or deletes outside its root."""
    problem = path_problem(key)
    if problem is not None:
        raise UnsafeKeyError(
            f"{where}: the key {problem}; refusing a key that could leave the root"
        )
    return key
