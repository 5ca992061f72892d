"""Block-by-block copies without TensorStore: move N5 block payloads into Zarr chunks as
bytes (the zero-decode fast path), or re-encode them one block at a time.

A level qualifies when its chunks are the source blocks. N5 stores a block's values
big-endian in F order over the N5 dims, which is C order over the reversed (Zarr) dims: a
block's decoded bytes are already the chunk's values in memory order. When the output codec
can carry the source bytes (same compressor, big-endian ``bytes``;
:attr:`~schemas.plan.CodecPlan.transplant`), a full-size block's payload *is* a valid output
chunk. A work unit is copied by

1. reading its blocks' raw bytes (N5 key ``x/y/z``): through TensorStore's kvstore layer
   for any store (S3: every read of a unit in flight at once), with plain system calls for
   a local directory (a fraction of the CPU per small object);
2. per block, after parsing the N5 header:

   * transplantable level, full-size block: the payload is kept as it is (by default after
     proving that it decodes to exactly ``prod(block) × itemsize`` bytes with libdeflate /
     the codec's decoder, several times cheaper than re-encoding; ``--skip-decode-check``
     moves it unread, local to local inside the kernel with ``copy_file_range``, so it
     cannot tell all-zero blocks apart);
   * anything else (a truncated Java edge block, or any block of a level whose codec
     changes): decoded, zero-padded to the whole chunk, converted to the output byte order
     and encoded with the output codec (gzip and zlib with ISA-L: the same stream format,
     far faster than zlib);

   blocks that decode to all zeros are dropped, as TensorStore drops chunks equal to the
   fill value;
3. writing each payload at the Zarr key ``z/y/x`` (0.4) or ``c/z/y/x`` (0.5), or, for sharded
   0.5 output, one object per shard: the inner-chunk payloads in C order followed by the
   shard index (``offset, nbytes`` as little-endian uint64 per inner chunk, C order, 2^64 − 1
   for absent chunks) and its crc32c, as the layout's ``sharding_indexed`` codec declares.
   Objects are written whole under a temporary name and renamed (local) or in one request
   (kvstore), so a killed run leaves no partial chunk; local files are not fsynced one by
   one (like ``cp``).

Every shape, block and position here is in **C order** (z, y, x) unless it is an N5 key or
header, which are F order. A block that cannot be decoded (or whose header does not fit the
array) raises :class:`~migrate.errors.SourceDataError` naming every bad block's N5 key.
"""

from __future__ import annotations

import bz2
import errno
import itertools
import math
import mmap
import os
import stat
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import deflate
import google_crc32c
import numpy as np
import numpy.typing as npt
from isal import isal_zlib

from migrate.dest.ledger import crc_hex
from migrate.dest.records import BlockEntry, ChunkEntry, UnitEntries
from migrate.errors import MigrationError, SourceDataError, StoreError
from migrate.storage import LocalStore, Store, iocounts, join_key, temporary_name
from migrate.storage.local import dangling_link
from migrate.storage.reread import read_until_stable
from migrate.target.codecs import source_codec, transplantable
from schemas.plan import CodecPlan, LevelPlan, NgffVersion

if TYPE_CHECKING:  # imported where used: local copies never need TensorStore
    import tensorstore as ts

EMPTY = 2**64 - 1
"""Shard index entry (offset and nbytes) of an inner chunk that is not stored."""


def decode(name: str, payload: bytes | memoryview, nbytes: int) -> bytes | bytearray:
    """A block payload compressed with ``name`` (see :func:`source_codec`) decoded; raises
    ``ValueError`` naming what is wrong, including a size other than ``nbytes``."""
    data: bytes | bytearray
    try:
        if name == "raw":
            data = bytes(payload)
        elif name == "gzip":
            data = deflate.gzip_decompress(payload, nbytes)
        elif name == "zlib":
            data = deflate.zlib_decompress(payload, nbytes)
        elif name == "bz2":
            data = bz2.decompress(payload)
        elif name == "xz":
            import lzma

            data = lzma.decompress(payload, format=lzma.FORMAT_XZ)
        elif name == "blosc":
            from numcodecs import blosc

            data = bytes(blosc.decompress(payload))
        elif name == "zstd":
            from numcodecs import zstd

            data = bytes(zstd.decompress(payload))
        else:  # pragma: no cover - source_codec names only the codecs above
            raise AssertionError(f"{name} cannot be decoded here")
    except AssertionError:
        raise
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        raise ValueError(f"cannot decode the {name} payload: {reason}") from None
    if len(data) != nbytes:
        raise ValueError(
            f"the {name} payload decodes to {len(data)} bytes, the header implies {nbytes}"
        )
    return data


def encode(codec: CodecPlan, values: npt.NDArray[Any]) -> bytes | memoryview:
    """One whole chunk's ``values`` (C order, already in the output byte order) compressed
    with the output ``codec``."""
    name = codec.name
    data = np.ascontiguousarray(values).data.cast("B")
    if name == "raw":
        return data
    if name in ("gzip", "zlib"):
        level = _level(codec, 6)
        if level > ISAL_TOP_LEVEL:  # ISA-L's level 3 writes different bytes per CPU
            compress = deflate.gzip_compress if name == "gzip" else deflate.zlib_compress
            return memoryview(compress(data, level))
        return isal_zlib.compress(data, isal_level(level), 31 if name == "gzip" else 15)
    if name == "bz2":
        return bz2.compress(data, _level(codec, 9) or 9)
    if name == "blosc":
        from numcodecs import Blosc

        blosc = Blosc(
            cname=codec.cname or "blosclz",
            clevel=_level(codec, 5),
            shuffle=codec.shuffle if codec.shuffle is not None else 1,
            blocksize=codec.blocksize or 0,
        )
        return bytes(blosc.encode(values))  # typesize = the values' itemsize
    if name == "zstd":
        from numcodecs import Zstd

        return bytes(Zstd(level=_level(codec, 3)).encode(data))
    raise AssertionError(f"{name} has no encoder")  # pragma: no cover


@dataclass(frozen=True)
class BlockCodec:
    """How one level's blocks become chunks: the source codec's name (:func:`source_codec`),
    the dtype the source stores (big-endian) and the output codec and dtype (its byte order).
    """

    source: str
    source_dtype: np.dtype[Any]
    output: CodecPlan
    output_dtype: np.dtype[Any]

    @classmethod
    def of(cls, level: LevelPlan) -> BlockCodec:
        name = source_codec(level.source_compression)
        assert name is not None, "only recodable levels have a BlockCodec"
        dtype = np.dtype(level.dtype)
        output = dtype.newbyteorder(">" if level.codec.endian == "big" else "<")
        return cls(name, dtype.newbyteorder(">"), level.codec, output)

    @property
    def itemsize(self) -> int:
        return self.source_dtype.itemsize

    def decode(self, payload: bytes | memoryview, nbytes: int) -> bytes | bytearray:
        return decode(self.source, payload, nbytes)

    def recode(
        self, payload: bytes | memoryview, dims: tuple[int, ...], blocks: tuple[int, ...]
    ) -> bytes | memoryview | None:
        """The output chunk (shape ``blocks``) of a source payload holding a block of shape
        ``dims`` (C order; smaller than ``blocks`` at a truncated edge): decoded, zero-padded,
        converted to the output byte order and encoded; None when every value is zero."""
        data = self.decode(payload, math.prod(dims) * self.itemsize)
        if not _any(data):
            return None
        values = np.frombuffer(data, dtype=self.source_dtype).reshape(dims)
        if dims != blocks:
            chunk = np.zeros(blocks, dtype=self.output_dtype)
            chunk[tuple(slice(0, d) for d in dims)] = values
        elif self.output_dtype != self.source_dtype:
            chunk = values.astype(self.output_dtype)
        else:
            chunk = values
        return encode(self.output, chunk)


def _level(codec: CodecPlan, default: int) -> int:
    return codec.level if codec.level is not None else default


ISAL_TOP_LEVEL = 6
"""The highest zlib level (0–9) re-encoded with ISA-L; above it, libdeflate at that level.

The output must be the same bytes on every machine (a resumed run on another host, Dask
workers on mixed nodes, two migrations compared by checksum). ISA-L picks its deflate code
by the CPU's instruction set at run time: its levels 0–2 wrote the same bytes on the SSE,
AVX, AVX2 and AVX-512 paths for every chunk we tried, but its level 3 writes different
bytes (and lengths) on each. libdeflate's output depends only on the input and the level
(about half ISA-L 3's speed on edge chunks, a few percent smaller).
``tests/test_encoder_determinism.py`` runs the encoder on emulated CPUs to hold this."""


def isal_level(level: int) -> int:
    """ISA-L's deflate level (0–2) for a zlib level up to :data:`ISAL_TOP_LEVEL`:
    0 → 0, 1–3 → 1, 4–6 → 2.

    Edge chunks are re-encoded with ISA-L rather than zlib: the same gzip / zlib stream
    format (every reader decodes it; the level is an encoder setting, not part of the
    format), 5–15× faster; on the benchmark's EM-like data at the same ratio as zlib level 6
    (smoother data may compress a few percent less)."""
    assert level <= ISAL_TOP_LEVEL, "levels above ISAL_TOP_LEVEL go to libdeflate"
    return 0 if level <= 0 else (level + 2) // 3


def _context(workers: int) -> ts.Context:
    """Bounded kvstore I/O; like ``cp``, files are not fsynced one by one."""
    import tensorstore as ts

    return ts.Context(
        {"file_io_concurrency": {"limit": max(8, 4 * workers)}, "file_io_sync": False}
    )


def unit_blocks(level: LevelPlan, unit: int) -> Iterator[tuple[int, ...]]:
    """Grid positions (C order) of the source blocks work unit ``unit`` reads, C order
    (for a mirrored level, those of the mirrored box)."""
    box = level.source_box(level.unit_box(unit))
    return itertools.product(
        *(
            range(start // b, math.ceil(stop / b))
            for (start, stop), b in zip(box, level.source_blocks, strict=True)
        )
    )


def n5_key(position: Sequence[int]) -> str:
    """The N5 key (F order, ``x/y/z``) of the block at C-order grid ``position``."""
    return "/".join(str(i) for i in reversed(position))


def chunk_key(version: NgffVersion, position: Sequence[int]) -> str:
    """The Zarr key of the chunk (or shard) at C-order grid ``position``."""
    key = "/".join(str(i) for i in position)
    return key if version == "0.4" else f"c/{key}"


Parts = Sequence[bytes | memoryview]
"""An object's bytes as the concatenation of some buffers (written without joining them
where the backend allows)."""

Written = tuple[int, str, str]
"""What storing an object left: (size in bytes, stamp, digest), as the ledger records it
(:data:`migrate.dest.records.ChunkEntry` without the key)."""
Wait = Callable[[], Written]
"""Waits for a write still in flight; returns what it left."""
Read = tuple[bytes, str]
"""A source block read: its bytes and its stamp (as a listing of SRC shows it)."""


def crc_of(parts: Parts, value: int = 0) -> int:
    """The CRC-32 (zlib's) of the concatenated ``parts``, continuing from ``value``."""
    for part in parts:
        value = deflate.crc32(part, value)
    return value


def etag_of(generation: bytes) -> str:
    """The ETag (with its quotes, as S3 lists it) in a TensorStore S3 storage generation
    (a tag byte, then the ETag); "" when there is none."""
    start, end = generation.find(b'"'), generation.rfind(b'"')
    return generation[start : end + 1].decode("latin-1") if 0 <= start < end else ""


class Objects(Protocol):
    """Raw object I/O under one prefix of a store (keys relative to it)."""

    def reads(self, keys: Sequence[str]) -> Iterator[Read | None]:
        """Each key's bytes and stamp (None: absent), in order."""

    def put(self, key: str, parts: Parts) -> Wait:
        """Store an object (atomically); returns a function that waits for the write (it may
        still be in flight) and returns what it left."""


class KvObjects:
    """Any store, through TensorStore's kvstore layer: every read of a unit in flight at
    once, writes asynchronous (S3, and any other kvstore driver). Stamps are the storage
    generations TensorStore reports: on S3 the ETag of the object read, and the ETag the PUT
    returned (one request: no listing or HEAD needed for the ledger)."""

    def __init__(self, kvstore: Any, store: Store, path: str) -> None:
        self.kvstore = kvstore
        self.store = store
        self.path = path

    def reads(self, keys: Sequence[str]) -> Iterator[Read | None]:
        futures = [self.kvstore.read(key) for key in keys]
        for key, future in zip(keys, futures, strict=True):
            result = future.result()
            if result.state != "value":
                yield None
                continue
            stamp = etag_of(result.stamp.generation)
            if not stamp:  # a server that sends no ETag: ask for it
                found = self.store.stat(join_key(self.path, key))
                stamp = found[1] if found is not None else ""
            yield result.value, stamp

    def put(self, key: str, parts: Parts) -> Wait:
        data = parts[0] if len(parts) == 1 and isinstance(parts[0], bytes) else b"".join(parts)
        future = self.kvstore.write(key, data)

        def wait() -> Written:
            stamp = etag_of(future.result().generation)
            if not stamp:
                found = self.store.stat(join_key(self.path, key))
                stamp = found[1] if found is not None else ""
            return len(data), stamp, ""

        return wait


class LocalObjects:
    """A local directory, with plain system calls: for many small objects this costs a
    fraction of the CPU of TensorStore's file kvstore (no lock files, no copies into
    TensorStore buffers, payloads written straight from the block bytes). Writes go to a
    temporary name, then are renamed, so a killed run never leaves a partial chunk."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def reads(self, keys: Sequence[str]) -> Iterator[Read | None]:
        for key in keys:
            opened = open_block_stat(self.root / key)
            if opened is None:
                yield None
                continue
            fd, stamp = opened
            try:
                with open(fd, "rb") as f:
                    data = f.read()
            except OSError as exc:
                raise block_error(self.root / key, exc) from exc
            iocounts.count_read(len(data))
            yield data, stamp

    def put(self, key: str, parts: Parts) -> Wait:
        def fill(fd: int) -> int:
            _write_all(fd, parts)
            return crc_of(parts)

        written = self.create(key, fill)
        assert written is not None  # fill keeps what it writes
        return lambda: written

    def copy_in(self, key: str, source_fd: int, offset: int, count: int) -> Written:
        """Store ``count`` bytes of the open file ``source_fd`` from ``offset`` as ``key``,
        copied inside the kernel (their CRC-32 read through a memory map of the source file,
        without copying them into this process)."""

        def fill(fd: int) -> int:
            _copy_all(source_fd, fd, offset, count)
            return crc_of_range(source_fd, offset, count)

        written = self.create(key, fill)
        assert written is not None
        return written

    def create(self, key: str, fill: Callable[[int], int | None]) -> Written | None:
        """Create ``key`` whole: ``fill`` a temporary file, then rename it; returns what was
        stored (size and modification time from a ``stat`` of the renamed file, the CRC-32
        ``fill`` returns for the bytes it wrote). When ``fill`` returns None or raises, the
        temporary file is removed and nothing is stored (None). A full disk or a missing
        permission raises StoreError (the run stops: every unit would fail)."""
        path = self.root / key
        tmp = path.with_name(temporary_name(path.name))
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            except FileNotFoundError:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                crc = fill(fd)
            except BaseException:
                os.close(fd)
                os.unlink(tmp)
                raise
            os.close(fd)
            if crc is None:
                os.unlink(tmp)
                return None
            os.replace(tmp, path)
            stored = os.stat(path)
            iocounts.count_written(stored.st_size)
            return stored.st_size, str(stored.st_mtime_ns), crc_hex(crc)
        except OSError as exc:
            raise StoreError(f"{path}: cannot write: {exc.strerror}") from exc


BLOCK_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EISDIR, errno.ELOOP, errno.EIO, errno.ENXIO}
)
"""Why one block file (not the storage) cannot be read: the block's unit fails, the others
go on. Any other failure (too many open files, a file system gone) stops the run."""


def open_block(path: Path) -> int | None:
    """A descriptor of the N5 block file ``path``, open for reading, or None when there is
    no block (all zero). Opened without blocking (a FIFO would wait for a writer forever)
    and checked once open: a directory, FIFO, device or socket in place of a block, or a file
    that cannot be read (permissions, an I/O error), is a SourceDataError naming it."""
    opened = open_block_stat(path)
    return opened[0] if opened is not None else None


def open_block_stat(path: Path) -> tuple[int, str] | None:
    """:func:`open_block`, with the block's stamp as a listing shows it (its modification
    time in ns, from the ``fstat`` of the open file: the file that is read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except (FileNotFoundError, NotADirectoryError):
        _not_dangling(path)
        return None
    except OSError as exc:
        raise block_error(path, exc) from exc
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode):
        os.close(fd)
        raise SourceDataError(f"{path}: {file_kind(found.st_mode)} in place of a block file")
    return fd, str(found.st_mtime_ns)


def crc_of_range(fd: int, offset: int, count: int, value: int = 0) -> int:
    """The CRC-32 of ``count`` bytes of the open file ``fd`` from ``offset``, continuing
    from ``value``: read through a memory map (the page cache's pages, not a copy)."""
    if count <= 0:
        return value
    with mmap.mmap(fd, offset + count, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        try:
            return int(deflate.crc32(view[offset : offset + count], value))
        finally:
            view.release()


def file_kind(mode: int) -> str:
    """What a file that is not a regular file is, in a few words."""
    for test, words in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return words
    return "not a regular file"


def block_error(path: Path, exc: OSError) -> MigrationError:
    """The error for a block file that could not be opened or read: the block's own
    (SourceDataError: its unit fails) or the storage's (StoreError: the run stops)."""
    if exc.errno in BLOCK_ERRNOS:
        return SourceDataError(f"{path}: cannot read this block: {exc.strerror}")
    return StoreError(f"{path}: cannot read: {exc.strerror}")


def _not_dangling(path: Path) -> None:
    """Raise SourceDataError when the block file ``path`` that could not be opened is a
    symbolic link to nothing (an absent block is all zero; a dangling link is a lost one)."""
    dangling = dangling_link(path)
    if dangling is not None:
        raise SourceDataError(f"{dangling} (a lost block, not an absent one)")


def _copy_all(source_fd: int, fd: int, offset: int, count: int) -> None:
    """Append ``count`` bytes of ``source_fd`` from ``offset`` to ``fd``."""
    start, left = offset, count
    while left > 0:
        copied = _copy_range(source_fd, fd, left, start)
        if copied == 0:
            raise ValueError(f"the file ended {left} bytes early")
        start += copied
        left -= copied


def _copy_range(source_fd: int, fd: int, count: int, offset: int) -> int:
    """Copy up to ``count`` bytes at ``offset`` of ``source_fd`` to ``fd``'s position; in the
    kernel where the system can (Linux ``copy_file_range``), else through a buffer."""
    if hasattr(os, "copy_file_range"):
        try:
            return os.copy_file_range(source_fd, fd, count, offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
    data = os.pread(source_fd, min(count, 16 * 2**20), offset)
    _write_all(fd, [data])
    return len(data)


def _write_all(fd: int, parts: Parts) -> None:
    """Write every part (one ``writev`` where the system has it), resuming after short
    writes."""
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    while views:
        written = os.writev(fd, views[:1024]) if hasattr(os, "writev") else os.write(fd, views[0])
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


class ObjectStores:
    """The :class:`Objects` of each (``which``, path) a process copies from or to, opened on
    first use and shared by its threads: a local directory as :class:`LocalObjects`, any
    other store as :class:`KvObjects` (one TensorStore context for all of them)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._objects: dict[tuple[str, str], Objects] = {}
        self._context: ts.Context | None = None
        self._lock = threading.Lock()

    def open(self, store: Store, path: str, which: str) -> Objects:
        """The objects under ``path`` of ``store`` (``which``: "source" or "dest")."""
        with self._lock:
            if (which, path) not in self._objects:
                objects: Objects
                if isinstance(store, LocalStore):
                    objects = LocalObjects(store.path(path))
                else:
                    if self._context is None:
                        self._context = _context(self.workers)
                    import tensorstore as ts

                    kvstore = ts.KvStore.open(
                        store.kvstore_spec(path), context=self._context
                    ).result()
                    objects = KvObjects(kvstore, store, path)
                self._objects[(which, path)] = objects
            return self._objects[(which, path)]


Waits = list[tuple[str, Wait]]
"""The writes of a unit (key, wait function), some perhaps still in flight."""
Blocks = list[BlockEntry]
"""The source blocks a unit read, for the ledger."""


class Transplanter:
    """Copies work units of transplantable levels as bytes; one per process, shared by the
    worker threads (object stores are opened once per level)."""

    def __init__(
        self,
        source: Store,
        dest: Store,
        version: NgffVersion,
        *,
        workers: int,
        decode_check: bool,
    ) -> None:
        self.source = source
        self.dest = dest
        self.version = version
        self.decode_check = decode_check
        self.workers = workers
        self._stores = ObjectStores(workers)

    def copy_unit(self, level: LevelPlan, unit: int) -> tuple[int, UnitEntries]:
        """Copy work unit ``unit`` of ``level``; returns the voxel bytes it covers and what
        it wrote and read, for the ledger (the unit is chunk-aligned: every block it reads
        lies in it)."""
        source = self._stores.open(self.source, level.source_path, "source")
        dest = self._stores.open(self.dest, level.dest_path, "dest")
        codec = BlockCodec.of(level)
        blocks: Blocks = []
        if (
            self._moves_unread(level)
            and isinstance(source, LocalObjects)
            and isinstance(dest, LocalObjects)
        ):
            problems, written = self._kernel_copy(level, codec, source, dest, unit, blocks)
        else:
            problems, waits = self._block_copy(level, codec, source, dest, unit, blocks)
            written = [(key, *wait()) for key, wait in waits]
        if problems:
            raise SourceDataError("; ".join(problems))
        entries = UnitEntries(tuple(sorted(written)), tuple(sorted(blocks)))
        return _unit_nbytes(level, unit, codec), entries

    def _moves_unread(self, level: LevelPlan) -> bool:
        """Payloads go unread (local to local: copied inside the kernel) when the decode
        check is off and the level's codec carries the source bytes."""
        return not self.decode_check and transplantable(level)

    def _kernel_copy(
        self,
        level: LevelPlan,
        codec: BlockCodec,
        source: LocalObjects,
        dest: LocalObjects,
        unit: int,
        blocks: Blocks,
    ) -> tuple[list[str], list[ChunkEntry]]:
        """Local to local without the decode check, file to file (sharded: shard by shard);
        returns the problems found and the chunks written."""
        if level.shard is None:
            positions = list(unit_blocks(level, unit))
            return self._move_files(level, codec, source, dest, positions, blocks)
        return self._move_shards(level, codec, source, dest, unit, blocks)

    def _block_copy(
        self,
        level: LevelPlan,
        codec: BlockCodec,
        source: Objects,
        dest: Objects,
        unit: int,
        blocks: Blocks,
    ) -> tuple[list[str], Waits]:
        """Read the unit's blocks, check or re-encode each, and put the chunks (sharded: the
        unit's shards, none when a block is bad); returns the problems found and the writes,
        some perhaps still in flight."""
        problems: list[str] = []
        positions = list(unit_blocks(level, unit))
        chunks = self._chunks(level, codec, source, positions, problems, blocks)
        if level.shard is None:
            return problems, self._put_chunks(dest, chunks)
        return problems, self._put_shards(level, dest, unit, chunks, problems)

    def _chunks(
        self,
        level: LevelPlan,
        codec: BlockCodec,
        source: Objects,
        positions: Sequence[tuple[int, ...]],
        problems: list[str],
        blocks: Blocks,
    ) -> Iterator[tuple[tuple[int, ...], bytes | memoryview]]:
        """(grid position, output chunk payload) of each block at ``positions`` (C order)
        that holds data, read from ``source``; absent and all-zero blocks are skipped, a bad
        block is appended to ``problems``; every block read is appended to ``blocks``."""
        found = source.reads([n5_key(p) for p in positions])
        for position, read in zip(positions, found, strict=True):
            if read is None:
                continue  # absent block: all zero, nothing to write
            raw, stamp = read
            blocks.append((n5_key(position), len(raw), stamp))
            key = join_key(level.source_path, n5_key(position))
            try:
                try:
                    payload = self._chunk(level, codec, raw)
                except ValueError as exc:
                    payload = self._chunk_read_again(level, codec, key, raw, exc)
            except ValueError as exc:
                problems.append(f"{self.source.display(key)}: {exc}")
                continue
            if payload is None:
                continue
            yield position, payload

    def _put_chunks(
        self, dest: Objects, chunks: Iterator[tuple[tuple[int, ...], bytes | memoryview]]
    ) -> Waits:
        """Put each chunk at its Zarr key as soon as it is ready (unsharded output)."""
        waits: Waits = []
        for position, payload in chunks:
            key = chunk_key(self.version, position)
            waits.append((key, dest.put(key, [payload])))
        return waits

    def _put_shards(
        self,
        level: LevelPlan,
        dest: Objects,
        unit: int,
        chunks: Iterator[tuple[tuple[int, ...], bytes | memoryview]],
        problems: list[str],
    ) -> Waits:
        """Collect every chunk of the unit, then put each shard that holds data; nothing
        when a block of the unit is bad."""
        payloads: dict[tuple[int, ...], Parts] = {
            position: [payload] for position, payload in chunks
        }
        waits: Waits = []
        if problems:
            return waits
        for shard_position, parts in self._shards(level, unit, payloads):
            key = chunk_key(self.version, shard_position)
            waits.append((key, dest.put(key, parts)))
        return waits

    def _move_files(
        self,
        level: LevelPlan,
        codec: BlockCodec,
        source: LocalObjects,
        dest: LocalObjects,
        positions: Sequence[tuple[int, ...]],
        blocks: Blocks,
    ) -> tuple[list[str], list[ChunkEntry]]:
        """Local to local without the decode check, unsharded: full-size payloads are copied
        file to file inside the kernel (``copy_file_range``, as ``cp`` does); returns the
        problems found and the chunks written."""
        problems: list[str] = []
        written: list[ChunkEntry] = []
        for position in positions:
            key = n5_key(position)
            opened = open_block_stat(source.root / key)
            if opened is None:
                continue  # absent block: all zero, nothing to write
            fd, stamp = opened
            try:
                part = self._local_block(level, codec, fd, blocks, key, stamp)
                target = chunk_key(self.version, position)
                if isinstance(part, FileRange):
                    written.append((target, *dest.copy_in(target, fd, part.offset, part.count)))
                elif part is not None:
                    written.append((target, *dest.put(target, [part])()))
            except ValueError as exc:
                problems.append(f"{self.source.display(join_key(level.source_path, key))}: {exc}")
            finally:
                os.close(fd)
        return problems, written

    def _move_shards(
        self,
        level: LevelPlan,
        codec: BlockCodec,
        source: LocalObjects,
        dest: LocalObjects,
        unit: int,
        blocks: Blocks,
    ) -> tuple[list[str], list[ChunkEntry]]:
        """Local to local without the decode check, sharded: each shard file is written in
        one pass, full-size payloads copied into it inside the kernel, edge blocks re-encoded,
        then the index; returns the problems found (no shard of the unit is stored after the
        first) and the shards written."""
        problems: list[str] = []
        written: list[ChunkEntry] = []
        for shard_position, members in shard_members(level, unit):

            def fill(fd: int, members: list[tuple[int, ...]] = members) -> int | None:
                return self._fill_shard(level, codec, source, members, fd, problems, blocks)

            target = chunk_key(self.version, shard_position)
            stored = dest.create(target, fill)
            if stored is not None:
                written.append((target, *stored))
        return problems, written

    def _fill_shard(
        self,
        level: LevelPlan,
        codec: BlockCodec,
        source: LocalObjects,
        members: list[tuple[int, ...]],
        fd: int,
        problems: list[str],
        blocks: Blocks,
    ) -> int | None:
        """Write one shard to the open file ``fd``: the payloads of its inner chunks at grid
        ``members`` (C order), then the index; returns the CRC-32 of what it wrote. None
        (store nothing) when the unit has a bad block (appended to ``problems``) or the
        shard holds no data."""
        entries: list[tuple[int, int] | None] = []
        offset = 0
        crc = 0
        for position in members:
            entries.append(None)
            key = n5_key(position)
            opened = open_block_stat(source.root / key)
            if opened is None:
                continue  # absent block (or outside the array): not stored
            block, stamp = opened
            try:
                part = self._local_block(level, codec, block, blocks, key, stamp)
                if isinstance(part, FileRange):
                    _copy_all(block, fd, part.offset, part.count)
                    crc = crc_of_range(block, part.offset, part.count, crc)
                    size = part.count
                elif part is not None:
                    _write_all(fd, [part])
                    crc = crc_of([part], crc)
                    size = len(part)
                else:
                    continue
            except ValueError as exc:
                where = self.source.display(join_key(level.source_path, key))
                problems.append(f"{where}: {exc}")
                continue
            finally:
                os.close(block)
            entries[-1] = (offset, size)
            offset += size
        if problems or all(entry is None for entry in entries):
            return None
        index = shard_index(entries)
        _write_all(fd, [index])
        return crc_of([index], crc)

    def _local_block(
        self, level: LevelPlan, codec: BlockCodec, fd: int, blocks: Blocks, key: str, stamp: str
    ) -> FileRange | bytes | memoryview | None:
        """What an open N5 block file becomes without the decode check: the byte range of
        its payload when it is full size (moved as it is), else its re-encoded edge chunk
        (None: all zero). The block is appended to ``blocks``."""
        full = tuple(level.source_blocks)
        size = os.fstat(fd).st_size
        iocounts.count_read(size)
        blocks.append((key, size, stamp))
        dims, offset = parse_header(os.pread(fd, 4 + 4 * len(full), 0), level)
        if dims == full:
            return FileRange(offset, size - offset)
        return codec.recode(os.pread(fd, size - offset, offset), dims, full)

    def _chunk(self, level: LevelPlan, codec: BlockCodec, raw: bytes) -> bytes | memoryview | None:
        """The output chunk payload of one N5 block file, or None when it is all zero: the
        payload itself for a full-size block of a transplantable level, else re-encoded."""
        dims, offset = parse_header(raw, level)
        full = tuple(level.source_blocks)
        payload = memoryview(raw)[offset:]
        if dims != full or not transplantable(level):
            return codec.recode(payload, dims, full)
        if self.decode_check and not _any(codec.decode(payload, math.prod(full) * codec.itemsize)):
            return None
        return payload

    def _chunk_read_again(
        self, level: LevelPlan, codec: BlockCodec, key: str, raw: bytes, failure: ValueError
    ) -> bytes | memoryview | None:
        """:meth:`_chunk` of block ``key`` whose bytes ``raw`` did not decode (``failure``),
        read again until two reads agree: TensorStore's S3 reads check no checksum, so a
        body cut short on the way (and a Content-Length to match) reaches us whole-looking;
        only bytes that two reads agree on are the source's fault (ValueError)."""
        why = f"TensorStore's read does not decode ({failure})"
        again = read_until_stable(self.source, key, raw, why)
        if again == raw:
            raise failure
        if again is None:
            raise ValueError("the block was deleted while it was copied") from failure
        return self._chunk(level, codec, again)

    def _shards(
        self, level: LevelPlan, unit: int, payloads: dict[tuple[int, ...], Parts]
    ) -> Iterator[tuple[tuple[int, ...], Parts]]:
        """(shard grid position, shard object parts) of every shard of the unit that holds
        data."""
        for shard_position, members in shard_members(level, unit):
            inner = [payloads.get(position) for position in members]
            if all(chunk is None for chunk in inner):
                continue
            yield shard_position, assemble_shard(inner)


def _unit_nbytes(level: LevelPlan, unit: int, codec: BlockCodec) -> int:
    """The voxel bytes work unit ``unit`` of ``level`` covers."""
    box = level.unit_box(unit)
    return math.prod(stop - start for start, stop in box) * codec.itemsize


@dataclass(frozen=True)
class FileRange:
    """``count`` bytes from ``offset`` of an open file."""

    offset: int
    count: int


def shard_members(
    level: LevelPlan, unit: int
) -> Iterator[tuple[tuple[int, ...], list[tuple[int, ...]]]]:
    """(shard grid position, the chunk grid positions of its inner chunks in C order) of
    every shard of work unit ``unit``; positions past the array's edge included."""
    assert level.shard is not None
    per_shard = tuple(s // c for s, c in zip(level.shard, level.chunks, strict=True))
    box = level.unit_box(unit)
    shard_ranges = [
        range(start // s, math.ceil(stop / s))
        for (start, stop), s in zip(box, level.shard, strict=True)
    ]
    for shard_position in itertools.product(*shard_ranges):
        origin = [p * n for p, n in zip(shard_position, per_shard, strict=True)]
        yield (
            shard_position,
            [
                tuple(o + i for o, i in zip(origin, offset, strict=True))
                for offset in itertools.product(*(range(n) for n in per_shard))
            ],
        )


def parse_header(raw: bytes, level: LevelPlan) -> tuple[tuple[int, ...], int]:
    """(block dims in C order, payload offset) of an N5 block file starting with ``raw``;
    ``ValueError`` when the header does not fit the level."""
    ndim = len(level.shape)
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise ValueError(f"{len(raw)} bytes, too short for an N5 block header")
    mode, header_ndim = struct.unpack_from(">HH", raw, 0)
    if mode != 0:
        raise ValueError(f"N5 block mode {mode} is not supported (only 0, default)")
    if header_ndim != ndim:
        raise ValueError(f"the block header has {header_ndim} dimensions, the array {ndim}")
    dims = tuple(reversed(struct.unpack_from(f">{ndim}I", raw, 4)))
    if any(d < 1 or d > b for d, b in zip(dims, level.source_blocks, strict=True)):
        raise ValueError(
            f"block header dims {list(reversed(dims))} (x, y, z order) do not fit the "
            f"block size {list(reversed(level.source_blocks))}"
        )
    return dims, offset


def assemble_shard(inner: Sequence[Parts | None]) -> Parts:
    """A ``sharding_indexed`` shard (index at the end) from its inner-chunk payloads in C
    order (None: absent), as a list of parts."""
    parts: list[bytes | memoryview] = []
    entries: list[tuple[int, int] | None] = []
    offset = 0
    for chunk in inner:
        if chunk is None:
            entries.append(None)
            continue
        size = sum(len(part) for part in chunk)
        entries.append((offset, size))
        offset += size
        parts.extend(chunk)
    parts.append(shard_index(entries))
    return parts


def shard_index(entries: Sequence[tuple[int, int] | None]) -> bytes:
    """The shard index of inner chunks stored at (offset, nbytes), C order (None: absent):
    little-endian uint64 pairs, 2^64 − 1 for absent chunks, then their crc32c."""
    index = np.full((len(entries), 2), EMPTY, dtype="<u8")
    for i, entry in enumerate(entries):
        if entry is not None:
            index[i] = entry
    index_bytes = index.tobytes()
    return index_bytes + struct.pack("<I", google_crc32c.value(index_bytes))


def _any(data: bytes | bytearray) -> bool:
    """True when any byte is non-zero (the first 4 KiB are looked at first: image data
    rarely starts with that many zeros, so most blocks are not scanned whole)."""
    view = np.frombuffer(data, dtype=np.uint8)
    if view[:4096].any():
        return True
    if len(view) % 8 == 0:
        view = view.view(np.uint64)
    return bool(view.any())
