"""TFRecord and text-line files: ``TFRecordWriter``, ``TFRecordDataset``, ``TextLineDataset``.

A TFRecord file is a sequence of records, each framed as::

    uint64  length                  (little-endian)
    uint32  masked_crc32c(length)   (of the 8 length bytes)
    byte    data[length]
    uint32  masked_crc32c(data)

where ``masked_crc32c(b) = ((c >> 15) | (c << 17)) + 0xa282ead8 (mod 2**32)`` and ``c`` is the
CRC-32C (Castagnoli) of ``b``. Files may be compressed whole with GZIP or ZLIB. A record
whose checksum does not match raises ``DataLossError``; so does a truncated record.

CRC-32C comes from ``google-crc32c`` (hardware-accelerated) when installed, otherwise from a
table-driven implementation here.

A reader given a static list of files is a splittable source (one split per file) and a
file-based source for FILE auto-sharding; given a dataset of file names it is a transform
that passes splits to that dataset (e.g. ``list_files``).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import struct
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

from tensorwire import errors

from .base import DatasetBase, IterationContext
from .checkpoint import NodeIterator, close_iterator, remaining, restore_iterator, save_iterator
from .dataset import Dataset
from .sharding import FileSplitProvider, SplitProvider
from .structure import STRING, TensorSpec

__all__ = [
    "crc32c",
    "masked_crc32c",
    "TFRecordOptions",
    "TFRecordWriter",
    "TFRecordDataset",
    "TextLineDataset",
    "read_tfrecords",
]

_MASK_DELTA = 0xA282EAD8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_READ_CHUNK = 1 << 20


def _make_table() -> list[int]:
    poly = 0x82F63B78  # CRC-32C, reflected
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE: list[int] | None = None


def _crc32c_py(data: bytes) -> int:
    global _TABLE
    if _TABLE is None:
        _TABLE = _make_table()
    table = _TABLE
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:
    import google_crc32c as _gcrc

    def crc32c(data: bytes) -> int:
        """CRC-32C (Castagnoli) of ``data``."""
        return int(_gcrc.value(bytes(data)))

    CRC32C_IMPLEMENTATION = f"google-crc32c ({_gcrc.implementation})"
except ImportError:  # pragma: no cover - exercised where google-crc32c is absent
    crc32c = _crc32c_py
    CRC32C_IMPLEMENTATION = "python"


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C of ``data``: the checksum stored in the record frames.

    ``((c >> 15) | (c << 17)) + 0xa282ead8`` modulo 2**32, where ``c`` is the CRC-32C
    (Castagnoli) of ``data``; ``CRC32C_IMPLEMENTATION`` says which implementation
    computes ``c``.

    Args:
      data: the bytes to checksum.

    Returns:
      The masked checksum, an unsigned 32-bit int.

    Examples:
        >>> hex(tw.data.masked_crc32c(b"hello"))
        '0x191c1fbb'
    """
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _compression(value: Any) -> str:
    if value is None:
        return ""
    value = getattr(value, "compression_type", value)
    if value is None:
        return ""
    text = os.fsdecode(value) if isinstance(value, bytes) else str(value)
    text = text.upper()
    if text not in ("", "GZIP", "ZLIB"):
        raise errors.InvalidArgumentError(
            f"Unsupported compression_type: {value!r}; use None, '', 'GZIP' or 'ZLIB'."
        )
    return text


class TFRecordOptions:
    """``tf.io.TFRecordOptions``: the compression of a TFRecord file.

    Args:
      compression_type: None or ``""`` (none), ``"GZIP"`` or ``"ZLIB"`` (any case).
      compression_level: the zlib level, 0 to 9; None or negative: 6.

    Raises:
      InvalidArgumentError: another compression type.

    Examples:
        >>> options = tw.data.TFRecordOptions("gzip")
        >>> with tw.data.TFRecordWriter("data.tfrecord.gz", options) as writer:
        ...     writer.write(b"compressed")
        >>> ds = tw.data.TFRecordDataset("data.tfrecord.gz", compression_type="GZIP")
        >>> list(ds.as_numpy_iterator())
        [b'compressed']
    """

    def __init__(self, compression_type: str | None = None, compression_level: int | None = None):
        self.compression_type = _compression(compression_type)
        self.compression_level = compression_level


class TFRecordWriter:
    """``tf.io.TFRecordWriter(path, options=None)``: writes records TensorFlow can read.

    The file is created (or truncated) at once. Use it as a context manager, or call
    ``close``: a GZIP or ZLIB file is complete only once closed.

    Args:
      path: the file to write.
      options: a ``TFRecordOptions``, or a compression type (``"GZIP"``,
        ``"ZLIB"``, ``""``); None for no compression.

    Raises:
      InvalidArgumentError: an unknown compression type.
      OSError: the file cannot be created.

    Examples:
        >>> with tw.data.TFRecordWriter("data.tfrecord") as writer:
        ...     for record in (b"first", b"second"):
        ...         writer.write(record)
        >>> list(tw.data.TFRecordDataset("data.tfrecord").as_numpy_iterator())
        [b'first', b'second']
    """

    def __init__(self, path: str | os.PathLike[str], options: Any = None) -> None:
        self._compression = _compression(options)
        level = getattr(options, "compression_level", None)
        level = 6 if level is None or level < 0 else int(level)
        self._raw: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._zlib = zlib.compressobj(level) if self._compression == "ZLIB" else None
        self._file: BinaryIO = (
            gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=level)  # type: ignore[assignment]
            if self._compression == "GZIP"
            else self._raw
        )
        self._closed = False

    def write(self, record: bytes) -> None:
        """Append one record.

        Args:
          record: the record's bytes (anything ``bytes()`` takes).

        Raises:
          FailedPreconditionError: the writer is closed.
        """
        if self._closed:
            raise errors.FailedPreconditionError("TFRecordWriter is closed")
        data = bytes(record)
        header = _U64.pack(len(data))
        frame = header + _U32.pack(masked_crc32c(header)) + data + _U32.pack(masked_crc32c(data))
        if self._zlib is not None:
            self._file.write(self._zlib.compress(frame))
        else:
            self._file.write(frame)

    def flush(self) -> None:
        """Push what was written so far to the file (a sync point in a ZLIB stream)."""
        if self._zlib is not None:
            self._file.write(self._zlib.flush(zlib.Z_SYNC_FLUSH))
        self._file.flush()

    def close(self) -> None:
        """Finish the file (the compressed stream's end) and close it; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._zlib is not None:
            self._file.write(self._zlib.flush())
        if self._file is not self._raw:
            self._file.close()
        self._raw.close()

    def __enter__(self) -> TFRecordWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _ZlibReader(io.RawIOBase):
    """A readable stream over a whole-file zlib stream."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._inflate = zlib.decompressobj()
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._pending:
            chunk = self._raw.read(_READ_CHUNK)
            if not chunk:
                self._pending = self._inflate.flush()
                if not self._pending:
                    return 0
                break
            try:
                self._pending = self._inflate.decompress(chunk)
            except zlib.error as exc:
                raise errors.DataLossError(f"Corrupted ZLIB stream: {exc}") from exc
        n = min(len(b), len(self._pending))
        b[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def _open(path: str, compression: str) -> BinaryIO:
    try:
        raw = open(path, "rb")  # noqa: SIM115 - returned to the caller, closed there
    except FileNotFoundError:
        raise errors.NotFoundError(f"{path}; No such file or directory") from None
    if compression == "GZIP":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if compression == "ZLIB":
        return io.BufferedReader(_ZlibReader(raw), _READ_CHUNK)
    return io.BufferedReader(raw, _READ_CHUNK) if not isinstance(raw, io.BufferedReader) else raw


def _read_exact(f: BinaryIO, n: int, path: str, offset: int) -> bytes:
    try:
        data = f.read(n)
    except (OSError, EOFError, zlib.error) as exc:
        raise errors.DataLossError(f"{path}: unreadable data at offset {offset}: {exc}") from exc
    if len(data) != n:
        raise errors.DataLossError(f"{path}: truncated record at {offset}")
    return data


def _seek(f: BinaryIO, offset: int, path: str) -> None:
    """Position ``f`` at ``offset`` of the (decompressed) stream."""
    if not offset:
        return
    if f.seekable():
        f.seek(offset)
        return
    left = offset  # a ZLIB stream: read up to the offset
    while left:
        chunk = f.read(min(left, _READ_CHUNK))
        if not chunk:
            raise errors.DataLossError(f"{path}: shorter than the checkpointed offset {offset}")
        left -= len(chunk)


def read_tfrecords(
    path: str, compression_type: Any = None, start: int = 0, where: list[int] | None = None
) -> Iterator[bytes]:
    """The records of one TFRecord file, checksums verified, from offset ``start`` (of the
    decompressed stream). ``where[0]``, if given, is the offset after the last record
    yielded (what a checkpoint saves)."""
    compression = _compression(compression_type)
    with _open(path, compression) as f:
        _seek(f, start, path)
        offset = start
        while True:
            try:
                header = f.read(12)
            except (OSError, EOFError, zlib.error) as exc:
                raise errors.DataLossError(
                    f"{path}: unreadable data at offset {offset}: {exc}"
                ) from exc
            if not header:
                return
            if len(header) != 12:
                raise errors.DataLossError(f"{path}: truncated record at {offset}")
            length_bytes = header[:8]
            if _U32.unpack_from(header, 8)[0] != masked_crc32c(length_bytes):
                raise errors.DataLossError(
                    f"{path}: corrupted record at {offset} (length checksum)"
                )
            (length,) = _U64.unpack(length_bytes)
            data = _read_exact(f, length, path, offset)
            (expected,) = _U32.unpack(_read_exact(f, 4, path, offset))
            if expected != masked_crc32c(data):
                raise errors.DataLossError(f"{path}: corrupted record at {offset} (data checksum)")
            offset += 16 + length
            if where is not None:
                where[0] = offset
            yield data


def read_lines(
    path: str, compression_type: Any = None, start: int = 0, where: list[int] | None = None
) -> Iterator[bytes]:
    """The lines of one text file without their line endings ("\\n" or "\\r\\n"), from
    offset ``start``; ``where`` as for ``read_tfrecords``."""
    compression = _compression(compression_type)
    with _open(path, compression) as f:
        _seek(f, start, path)
        offset = start
        for line in f:
            if where is not None:
                offset += len(line)
                where[0] = offset
            if line.endswith(b"\n"):
                line = line[:-1]
                if line.endswith(b"\r"):
                    line = line[:-1]
            yield line


def _file_list(filenames: Any) -> list[str]:
    if isinstance(filenames, (str, bytes, os.PathLike)):
        return [os.fsdecode(filenames)]
    try:
        files = [os.fsdecode(f) for f in filenames]
    except TypeError:
        raise TypeError(
            "`filenames` must be a string, a list of strings or a `tf.data.Dataset` of "
            f"strings, got {filenames!r}"
        ) from None
    return files


class _FileReaderDataset(Dataset):
    """A reader of ``filenames`` (a list, or a dataset of file names)."""

    def __init__(
        self,
        filenames: Any,
        compression_type: str | None = None,
        buffer_size: int | None = None,
        num_parallel_reads: int | None = None,
        name: str | None = None,
    ) -> None:
        self._compression = _compression(compression_type)
        if isinstance(filenames, DatasetBase):
            spec = filenames.element_spec
            if (
                not isinstance(spec, TensorSpec)
                or spec.dtype != STRING
                or spec.shape not in ((), None)
            ):
                raise TypeError(
                    f"`filenames` must be a `tf.data.Dataset` of scalar `tf.string` elements, "
                    f"got {spec}"
                )
            self._input_datasets = (filenames,)
            self._files: list[str] | None = None
        else:
            self._files = _file_list(filenames)
        self._parallel_reads = (
            None if num_parallel_reads is None else max(1, int(num_parallel_reads))
        )

    # static list: a splittable, file-based source; dataset of names: a pass-through transform
    @property
    def _is_split_source(self) -> bool:
        return self._files is not None

    @property
    def _passes_splits(self) -> bool:  # type: ignore[override]
        return self._files is None

    @property
    def _is_file_source(self) -> bool:
        return self._files is not None

    def _num_files(self) -> int:
        return len(self._files or ())

    def _shard_files(self, num_shards: int, index: int) -> _FileReaderDataset:
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.__dict__.pop("_element_spec_cache", None)
        clone._files = (self._files or [])[index::num_shards]
        return clone

    def _make_split_provider(self, split_size: int | None) -> SplitProvider:
        return FileSplitProvider(list(self._files or ()))

    def _read(self, path: str, start: int = 0, where: list[int] | None = None) -> Iterator[bytes]:
        raise NotImplementedError

    def _split_names(self, ctx: IterationContext) -> Iterator[str]:
        provider = ctx.split_provider_for(self)
        assert provider is not None
        while not ctx.closed.is_set():
            split = provider.get_next()
            if split is None:
                return
            if not isinstance(split, str):
                raise errors.InvalidArgumentError(
                    f"{self._op_name} expects file-name splits, got {split!r}"
                )
            yield split

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        if self._files is not None and ctx.split_provider_for(self) is not None:
            # Reading data-service splits: the service tracks positions, not this iterator.
            return self._records(self._split_names(ctx), _ReadPosition())
        return _ReaderIterator(self, ctx)

    def _records(self, names: Iterator[str], position: _ReadPosition) -> Iterator[Any]:
        """The records of the files ``names`` yields, ``num_parallel_reads`` files at a time
        with their records interleaved one by one (TensorFlow's order); ``position`` follows
        the open files and the round-robin place, so a checkpoint can resume there."""
        opened = position.open
        readers = [self._read(name, where[0], where) for name, where in opened]
        parallel = self._parallel_reads or 1
        i = position.round
        try:
            while True:
                if i == 0:
                    # A round starts: open files up to `parallel` (TensorFlow reads that many
                    # at once, one record from each in turn).
                    while len(readers) < parallel:
                        name = next(names, None)
                        if name is None:
                            break
                        where = [0]
                        opened.append([name, where])
                        readers.append(self._read(name, 0, where))
                if not readers:
                    return
                if i >= len(readers):
                    i = position.round = 0
                    continue
                try:
                    value = next(readers[i])
                except StopIteration:
                    del readers[i], opened[i]  # the round goes on with the next file
                    continue
                i += 1
                position.round = i
                yield value
        finally:
            for reader in readers:
                reader.close()  # type: ignore[attr-defined]

    def _compute_element_spec(self) -> Any:
        return TensorSpec((), STRING)


@dataclasses.dataclass
class _ReadPosition:
    """Where an interleaved read of files is: what a checkpoint of it saves."""

    #: ``[name, where]`` of each open file, in round-robin order; ``where[0]`` is its offset.
    open: list[list[Any]] = dataclasses.field(default_factory=list)
    #: The index in ``open`` of the file that gives the next record of the current round.
    round: int = 0


class _ReaderIterator(NodeIterator):
    """Saves the next file to open (an index in the list, or the file-name dataset's
    state), the open files with their offsets, and the round-robin position."""

    _dataset: _FileReaderDataset

    def __init__(self, dataset: _FileReaderDataset, ctx: IterationContext) -> None:
        super().__init__(dataset, ctx)
        self._input: Any = None
        if dataset._files is None:
            self._input = dataset._input_datasets[0]._iterator(ctx)
        self._next_file = 0
        self._files_left: Iterator[int] | None = None
        self._position = _ReadPosition()

    def _names(self) -> Iterator[str]:
        files = self._dataset._files
        if files is None:
            return map(os.fsdecode, self._input)
        left = self._files_left = iter(range(self._next_file, len(files)))
        return map(files.__getitem__, left)

    def _run(self) -> Iterator[Any]:
        return self._dataset._records(self._names(), self._position)

    def _save(self) -> dict[str, Any]:
        files = self._dataset._files
        next_file = self._next_file
        if files is not None and self._files_left is not None:
            next_file = len(files) - remaining(self._files_left)
        return {
            "next_file": next_file,
            "names": None
            if self._input is None
            else save_iterator(self._input, self._dataset._input_datasets[0]),
            "open": [[name, where[0]] for name, where in self._position.open],
            "round": self._position.round,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self._next_file = int(state["next_file"])
        if self._input is not None:
            close_iterator(self._input)
            self._input = restore_iterator(
                self._dataset._input_datasets[0], self._ctx, state["names"]
            )
        self._position = _ReadPosition(
            [[str(name), [int(offset)]] for name, offset in state["open"]], int(state["round"])
        )

    def _close_unstarted(self) -> None:
        if self._input is not None:
            close_iterator(self._input)


class TFRecordDataset(_FileReaderDataset):
    """The records of TFRecord files, as ``bytes`` (``tf.data.TFRecordDataset``).

    The files are read one after another, or ``num_parallel_reads`` at a time with their
    records interleaved one by one (on the consumer's thread). Every record's checksums
    are verified. Given a list of
    files it is a splittable source (one split per file) and a file-based source for FILE
    auto-sharding; given a dataset of file names (e.g. ``list_files``) it passes splits to
    that dataset.

    Args:
      filenames: a file name, a list of them, or a dataset of scalar strings.
      compression_type: None or ``""``, ``"GZIP"`` or ``"ZLIB"``.
      buffer_size: accepted for TensorFlow compatibility, unused.
      num_parallel_reads: files read at once (default one).
      name: accepted for TensorFlow compatibility, unused.

    Raises:
      TypeError: ``filenames`` is neither a file name, nor a list of them, nor a dataset
        of scalar strings.
      InvalidArgumentError: an unknown compression type.
      NotFoundError: while iterating, a file does not exist.
      DataLossError: while iterating, a record is truncated or its checksum is wrong.

    Examples:
        >>> for i in range(2):
        ...     with tw.data.TFRecordWriter(f"part-{i}.tfrecord") as writer:
        ...         writer.write(b"record %d" % i)
        >>> files = tw.data.Dataset.list_files("part-*.tfrecord", shuffle=False)
        >>> list(tw.data.TFRecordDataset(files).as_numpy_iterator())
        [b'record 0', b'record 1']
    """

    _op_name = "TFRecordDataset"

    def _read(self, path: str, start: int = 0, where: list[int] | None = None) -> Iterator[bytes]:
        return read_tfrecords(path, self._compression, start, where)


class TextLineDataset(_FileReaderDataset):
    """The lines of text files, as ``bytes`` without their line ends (``tf.data.TextLineDataset``).

    Reads, shards and splits like ``TFRecordDataset``.

    Args:
      filenames: a file name, a list of them, or a dataset of scalar strings.
      compression_type: None or ``""``, ``"GZIP"`` or ``"ZLIB"``.
      buffer_size: accepted for TensorFlow compatibility, unused.
      num_parallel_reads: files read at once (default one).
      name: accepted for TensorFlow compatibility, unused.

    Raises:
      TypeError: ``filenames`` is neither a file name, nor a list of them, nor a dataset
        of scalar strings.
      InvalidArgumentError: an unknown compression type.
      NotFoundError: while iterating, a file does not exist.

    Examples:
        >>> from pathlib import Path
        >>> _ = Path("lines.txt").write_text("first\\nsecond\\n")
        >>> list(tw.data.TextLineDataset("lines.txt").as_numpy_iterator())
        [b'first', b'second']
    """

    _op_name = "TextLineDataset"

    def _read(self, path: str, start: int = 0, where: list[int] | None = None) -> Iterator[bytes]:
        return read_lines(path, self._compression, start, where)
