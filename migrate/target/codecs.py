"""Choosing the output codec of an array, and rendering it as Zarr v2 / v3 metadata.

Pure functions: from the N5 ``compression`` and the user's ``--codec`` to a
:class:`~schemas.plan.CodecPlan`, from that to the JSON Zarr expects, and which copy path a
planned level can take (:func:`copy_path`).
"""

from __future__ import annotations

from typing import Any, Literal

from migrate.errors import MetadataError, OptionError
from schemas.n5 import (
    BloscCompression,
    Bzip2Compression,
    GzipCompression,
    Lz4Compression,
    N5Compression,
    RawCompression,
    XzCompression,
    ZstdCompression,
)
from schemas.plan import BLOSC_SHUFFLE_NAMES, CodecPlan, LevelPlan, NgffVersion

CodecChoice = Literal["keep", "gzip", "zstd", "blosc"]

ZLIB_DEFAULT_LEVEL = 6
"""What zlib's level -1 (N5's default) means; Zarr needs an explicit level 0–9."""

READ_BY_EVERY_READER: dict[NgffVersion, frozenset[str]] = {
    "0.4": frozenset({"raw", "gzip", "zlib", "blosc", "zstd"}),
    "0.5": frozenset({"raw", "gzip", "blosc", "zstd"}),
}
"""The output codecs (Zarr v2 compressors for 0.4, v3 bytes-to-bytes codecs for 0.5) that
Neuroglancer, zarr-python, TensorStore and ome-zarr-py all read: ``--codec keep`` keeps a
source codec only when it is listed here, so every output opens in each of them. Zarr v2
``bz2`` is read by the Python readers and TensorStore but not by Neuroglancer ("Unsupported
compressor"); v3 has no zlib or bz2 codec at all. tests/test_view.py checks this table
against each reader."""


def _fallback(version: NgffVersion, why: str) -> CodecPlan:
    return CodecPlan(
        name="zstd",
        level=3,
        endian="little",
        transplant=False,
        reason=f"{why}; re-encoded as zstd level 3",
    )


def _kept(
    name: Literal["raw", "gzip", "zlib", "bz2", "blosc", "zstd"], reason: str, **config: Any
) -> CodecPlan:
    return CodecPlan(name=name, endian="big", transplant=True, reason=reason, **config)


def keep_codec(compression: N5Compression, version: NgffVersion, location: str) -> CodecPlan:
    """The Zarr codec that carries the source compression unchanged, or the fallback."""
    zarr = f"Zarr v{2 if version == '0.4' else 3}"
    if isinstance(compression, RawCompression):
        return _kept("raw", "kept from source (uncompressed)")
    if isinstance(compression, GzipCompression):
        level = compression.level if 0 <= compression.level <= 9 else ZLIB_DEFAULT_LEVEL
        note = "" if level == compression.level else f" (level {compression.level} → {level})"
        if not compression.useZlib:
            return _kept("gzip", f"kept from source{note}", level=level)
        if version == "0.4":
            return _kept("zlib", f"kept from source (zlib stream){note}", level=level)
        return CodecPlan(
            name="gzip",
            level=level,
            endian="little",
            transplant=False,
            reason=f"source gzip with useZlib has no {zarr} codec; re-encoded as gzip{note}",
        )
    if isinstance(compression, Bzip2Compression):
        if version == "0.4":  # Zarr v2 has bz2, but Neuroglancer does not read it
            return _fallback(version, "source bzip2 (Zarr v2 bz2) is not read by Neuroglancer")
        return _fallback(version, f"source bzip2 has no {zarr} codec")
    if isinstance(compression, XzCompression):
        return _fallback(version, f"source xz has no {zarr} codec")
    if isinstance(compression, BloscCompression):
        return _kept(
            "blosc",
            "kept from source",
            cname=compression.cname,
            level=compression.clevel,
            shuffle=compression.shuffle,
            blocksize=compression.blocksize,
        )
    if isinstance(compression, ZstdCompression):
        return _kept("zstd", "kept from source", level=compression.level)
    if isinstance(compression, Lz4Compression):
        raise MetadataError(
            location,
            "compression.type",
            "'lz4' (lz4-java block streams) cannot be read by TensorStore; "
            "re-compress the source with gzip, zstd or blosc first",
        )
    raise AssertionError(f"unhandled compression {compression!r}")  # pragma: no cover


CODEC_LEVELS: dict[str, tuple[int, int]] = {"gzip": (0, 9), "zstd": (1, 22), "blosc": (0, 9)}
"""The ``--codec-level`` values each output codec takes (zlib's, zstd's, blosc's clevel)."""
DEFAULT_LEVELS: dict[str, int] = {"gzip": ZLIB_DEFAULT_LEVEL, "zstd": 3, "blosc": 5}
"""The level of a codec re-encoded without ``--codec-level``."""
BLOSC_CNAMES = ("blosclz", "lz4", "lz4hc", "zlib", "zstd")
"""The blosc compressors every reader of the output decodes (``--blosc-cname``)."""
BLOSC_DEFAULT_CNAME = "zstd"
BLOSC_SHUFFLE_CODES = {name: code for code, name in BLOSC_SHUFFLE_NAMES.items()}
BLOSC_DEFAULT_SHUFFLE = "shuffle"


def check_codec_options(
    choice: CodecChoice, level: int | None, cname: str | None, shuffle: str | None
) -> None:
    """Refuse codec options that do not apply to ``--codec choice`` (a usage error naming
    the option): a level outside the codec's range, blosc options without blosc, any of them
    with ``keep`` (which keeps every source's own settings)."""
    given = [
        (name, value)
        for name, value in (
            ("--codec-level", level), ("--blosc-cname", cname), ("--blosc-shuffle", shuffle)
        )
        if value is not None
    ]  # fmt: skip
    if not given:
        return
    if choice == "keep":
        name, value = given[0]
        raise OptionError(
            f"{name} {value}: name the codec it is for, e.g. --codec "
            f"{'blosc' if name.startswith('--blosc') else 'zstd'} {name} {value} "
            "(--codec keep keeps each source's own settings)"
        )
    if choice != "blosc":
        for name, value in given:
            if name.startswith("--blosc"):
                raise OptionError(f"{name} {value}: only for --codec blosc, not --codec {choice}")
    if cname is not None and cname not in BLOSC_CNAMES:
        raise OptionError(f"--blosc-cname {cname}: not one of {', '.join(BLOSC_CNAMES)}")
    if shuffle is not None and shuffle not in BLOSC_SHUFFLE_CODES:
        raise OptionError(f"--blosc-shuffle {shuffle}: not one of {', '.join(BLOSC_SHUFFLE_CODES)}")
    if level is not None:
        low, high = CODEC_LEVELS[choice]
        if not low <= level <= high:
            raise OptionError(f"--codec-level {level}: {choice} levels are {low}–{high}")


def requested_codec(
    choice: CodecChoice, level: int | None, cname: str | None, shuffle: str | None
) -> CodecPlan:
    """The codec ``--codec choice`` (not keep) writes when it re-encodes: the options given,
    the defaults for the others (gzip 6, zstd 3, blosc zstd 5 with byte shuffle)."""
    assert choice != "keep"
    flags = [f"--codec {choice}"]
    flags += [f"--codec-level {level}"] if level is not None else []
    flags += [f"--blosc-cname {cname}"] if cname is not None else []
    flags += [f"--blosc-shuffle {shuffle}"] if shuffle is not None else []
    reason = f"re-encoded as requested ({' '.join(flags)})"
    chosen = level if level is not None else DEFAULT_LEVELS[choice]
    if choice == "blosc":
        return CodecPlan(
            name="blosc",
            cname=cname or BLOSC_DEFAULT_CNAME,
            level=chosen,
            shuffle=BLOSC_SHUFFLE_CODES[shuffle or BLOSC_DEFAULT_SHUFFLE],
            blocksize=0,
            endian="little",
            transplant=False,
            reason=reason,
        )
    return CodecPlan(name=choice, level=chosen, endian="little", transplant=False, reason=reason)


def choose_codec(
    compression: N5Compression,
    choice: CodecChoice,
    version: NgffVersion,
    location: str,
    *,
    level: int | None = None,
    cname: str | None = None,
    shuffle: str | None = None,
) -> CodecPlan:
    """The output codec for ``--codec choice`` and its options (``--codec-level``,
    ``--blosc-cname``, ``--blosc-shuffle``; checked by :func:`check_codec_options`).

    A source already in the chosen codec keeps its blocks (moved as bytes): without options,
    with its own settings; with options, only when its settings are those (each one given
    and, for those not given, the defaults): so with options every level is written alike."""
    kept = keep_codec(compression, version, location)
    if choice == "keep":
        return kept
    wanted = requested_codec(choice, level, cname, shuffle)
    if kept.transplant and kept.name == choice:
        explicit = level is not None or cname is not None or shuffle is not None
        same = (kept.level, kept.cname, kept.shuffle) == (
            wanted.level,
            wanted.cname,
            wanted.shuffle,
        )
        if not explicit or same:
            return kept
    return wanted


def zarr_v2_compressor(codec: CodecPlan) -> dict[str, Any] | None:
    """The ``compressor`` entry of a Zarr v2 ``.zarray``."""
    if codec.name == "raw":
        return None
    if codec.name == "blosc":
        return {
            "id": "blosc",
            "cname": codec.cname,
            "clevel": codec.level,
            "shuffle": codec.shuffle,
            "blocksize": codec.blocksize,
        }
    return {"id": codec.name, "level": codec.level}


def zarr_v3_codecs(codec: CodecPlan, itemsize: int) -> list[dict[str, Any]]:
    """The array-to-bytes and bytes-to-bytes codecs of a Zarr v3 array (or inner chunk)."""
    codecs: list[dict[str, Any]] = [{"name": "bytes", "configuration": {"endian": codec.endian}}]
    if codec.name in ("gzip", "zstd"):
        config: dict[str, Any] = {"level": codec.level}
        if codec.name == "zstd":
            config["checksum"] = False
        codecs.append({"name": codec.name, "configuration": config})
    elif codec.name == "blosc":
        codecs.append(
            {
                "name": "blosc",
                "configuration": {
                    "cname": codec.cname,
                    "clevel": codec.level,
                    "shuffle": BLOSC_SHUFFLE_NAMES[codec.shuffle or 0],
                    "typesize": itemsize,
                    "blocksize": codec.blocksize,
                },
            }
        )
    elif codec.name != "raw":
        raise AssertionError(f"{codec.name} has no Zarr v3 codec")  # pragma: no cover
    return codecs


def transplantable(level: LevelPlan) -> bool:
    """Can this level's full-size source blocks be moved as bytes? (Not when it is
    mirrored: a block's values are then written in the other order.)"""
    return (
        level.codec.transplant
        and tuple(level.chunks) == tuple(level.source_blocks)
        and level.mirror is None
    )


def source_codec(compression: dict[str, Any]) -> str | None:
    """The name under which :func:`migrate.copy.transplant.decode` reads payloads of this N5
    ``compression``, or None when it cannot (lz4-java streams)."""
    name = compression.get("type")
    if name == "gzip":
        return "zlib" if compression.get("useZlib") else "gzip"
    return {"raw": "raw", "bzip2": "bz2", "xz": "xz", "blosc": "blosc", "zstd": "zstd"}.get(
        str(name)
    )


def recodable(level: LevelPlan) -> bool:
    """Can this level be re-encoded block by block (its chunks are the source blocks and the
    source codec is one :func:`migrate.copy.transplant.decode` reads)? Then every block is
    decoded, converted to the output byte order and encoded with the output codec, without
    TensorStore: libdeflate decodes gzip about twice as fast as zlib, and a block needs no
    transposition (its values are already in the chunk's memory order)."""
    return (
        tuple(level.chunks) == tuple(level.source_blocks)
        and source_codec(level.source_compression) is not None
        and level.mirror is None
    )


def mirrored_axes(level: LevelPlan, names: list[str] | None = None) -> str:
    """The axes a level is mirrored along, by name (C order), e.g. ``y``."""
    flips = level.mirror or ()
    return ", ".join(
        names[k] if names is not None else f"axis {k}" for k, flip in enumerate(flips) if flip
    )


def copy_path(level: LevelPlan, *, fast: bool = True, names: list[str] | None = None) -> str:
    """How a level's chunks are made (``fast`` False: ``--no-transplant``)."""
    if level.mirror is not None:
        return (
            f"through TensorStore, mirrored along {mirrored_axes(level, names)} (a flipped "
            "view of the source: mirrored blocks cannot be moved or re-encoded one by one)"
        )
    if fast and transplantable(level):
        return "blocks moved as bytes"
    if fast and recodable(level):
        return "block by block"
    return "through TensorStore"
