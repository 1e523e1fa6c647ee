"""The snapshot format: what ``Dataset.save`` and ``distributed_save`` write, ``load`` reads.

A snapshot is a directory::

    snapshot.metadata    JSON: format version, compression, the element spec as plain data
    chunks/chunk-<n>     a TFRecord file (``tfrecord.py`` framing, whole-file GZIP/ZLIB or
                         none), one record per element: the element's ``tensorwire.codec``
                         bytes
    chunks/.tmp-<n>-...  a chunk being written: renamed to ``chunk-<n>`` once complete and
                         synced, never read
    ERROR                why the save failed, if it did (then there is no DONE)
    DONE                 JSON ``{"num_chunks": N, "num_elements": E or null}``; written last
                         (also by rename), so a snapshot without it is unfinished

``load`` reads chunks in their number order, so a snapshot keeps the order of what was
saved when chunk numbers follow it: ``Dataset.save`` without ``shard_func`` writes one chunk
per ``ELEMENTS_PER_CHUNK`` elements in order; ``distributed_save`` writes chunk ``n`` from
the ``n``-th split of the source (see ``service/snapshot_manager.py``). Writing a chunk that
exists already (a split written again after a crash) replaces it with the same elements:
renames are atomic, so a reader sees one whole copy or the other.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from tensorwire import codec, errors

from .base import UNKNOWN
from .sharding import FileSplitProvider, SplitProvider
from .structure import STRING, TensorSpec, flatten, from_codec, pack_sequence_as, to_codec
from .tfrecord import TFRecordOptions, TFRecordWriter, _FileReaderDataset, read_tfrecords

__all__ = [
    "ELEMENTS_PER_CHUNK",
    "FORMAT_VERSION",
    "SnapshotDataset",
    "chunk_numbers",
    "is_finished",
    "read_metadata",
    "resolve_compression",
    "spec_from_plain",
    "spec_to_plain",
    "write_chunk",
    "write_done",
    "write_metadata",
]

FORMAT_VERSION = 1
METADATA_FILE = "snapshot.metadata"
DONE_FILE = "DONE"
ERROR_FILE = "ERROR"
CHUNKS_DIR = "chunks"
_CHUNK_PREFIX = "chunk-"
#: Elements per chunk of a local ``Dataset.save`` without ``shard_func``: chunks are the
#: splits a load through the service hands out, so a few thousand keeps them spreadable.
ELEMENTS_PER_CHUNK = 4096
#: zlib level of "AUTO": the cheapest stdlib compression (see ``resolve_compression``).
_AUTO_LEVEL = 1


# -- compression ----------------------------------------------------------------------------
def resolve_compression(compression: Any) -> tuple[str, int | None]:
    """The compression a snapshot is written with: ``(type, zlib level or None)``.

    "AUTO" picks ZLIB at level 1. TensorFlow's AUTO picks Snappy, a fast codec; the
    standard library has none, and zlib's fastest level is the closest to it: elements are
    mostly raw tensor bytes, where a higher level costs much CPU for little gain.

    Raises:
      InvalidArgumentError: not None, "", "AUTO", "GZIP" or "ZLIB" (any case).
    """
    if compression is None:
        return "", None
    if not isinstance(compression, str):
        raise errors.InvalidArgumentError(
            f"compression must be a string or None, got {type(compression).__name__} "
            f"{compression!r}; use 'AUTO', 'GZIP', 'ZLIB', '' or None"
        )
    text = compression.upper()
    if text == "AUTO":
        return "ZLIB", _AUTO_LEVEL
    if text in ("", "GZIP", "ZLIB"):
        return text, None
    raise errors.InvalidArgumentError(
        f"Unsupported snapshot compression {compression!r}; use 'AUTO', 'GZIP', 'ZLIB', '' or None"
    )


# -- the element spec as plain data ---------------------------------------------------------
def spec_to_plain(spec: Any) -> Any:
    """``spec`` (TensorSpecs in tuples, lists, dicts and named tuples) as JSON-able data.

    Raises:
      UnimplementedError: a leaf that is not a ``TensorSpec`` (e.g. a nested dataset).
    """
    if isinstance(spec, TensorSpec):
        dtype = "string" if spec.dtype == STRING else spec.dtype.str
        shape = None if spec.shape is None else list(spec.shape)
        return {"tensor": {"shape": shape, "dtype": dtype, "name": spec.name}}
    if isinstance(spec, tuple) and hasattr(spec, "_fields"):
        return {
            "namedtuple": type(spec).__name__,
            "fields": list(spec._fields),
            "items": [spec_to_plain(v) for v in spec],
        }
    if isinstance(spec, (tuple, list)):
        return {type(spec).__name__: [spec_to_plain(v) for v in spec]}
    if isinstance(spec, dict):
        if not all(isinstance(k, str) for k in spec):
            raise errors.UnimplementedError(
                f"a snapshot stores dict elements with string keys only, got keys {list(spec)}"
            )
        return {"dict": [[k, spec_to_plain(v)] for k, v in spec.items()]}
    raise errors.UnimplementedError(
        f"a snapshot cannot store elements with a component of spec {spec!r}: only tensors "
        "in tuples, lists, dicts and named tuples"
    )


def spec_from_plain(plain: Any) -> Any:
    """Undo ``spec_to_plain`` (a named tuple comes back as a named tuple of the same name
    and fields, not the original class: no code is loaded from a snapshot)."""
    import collections

    if not isinstance(plain, dict) or not plain:
        raise errors.DataLossError(f"snapshot metadata: malformed element spec {plain!r}")
    if "tensor" in plain:
        t = plain["tensor"]
        dtype = STRING if t["dtype"] == "string" else np.dtype(t["dtype"])
        return TensorSpec(t["shape"], dtype, t.get("name"))
    if "namedtuple" in plain:
        cls = collections.namedtuple(plain["namedtuple"], plain["fields"])  # type: ignore[misc]
        return cls(*(spec_from_plain(v) for v in plain["items"]))
    if "tuple" in plain:
        return tuple(spec_from_plain(v) for v in plain["tuple"])
    if "list" in plain:
        return [spec_from_plain(v) for v in plain["list"]]
    if "dict" in plain:
        return {k: spec_from_plain(v) for k, v in plain["dict"]}
    raise errors.DataLossError(f"snapshot metadata: malformed element spec {plain!r}")


# -- files ----------------------------------------------------------------------------------
def _write_atomically(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{secrets.token_hex(4)}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _sync_dir(os.path.dirname(path))


def _sync_dir(directory: str) -> None:
    # A rename is durable once its directory is synced (not possible on every platform).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def metadata_bytes(element_spec: Any, compression: str, level: int | None = None) -> bytes:
    """The content of ``snapshot.metadata`` for a snapshot of ``element_spec``."""
    return json.dumps(
        {
            "version": FORMAT_VERSION,
            "compression": compression,
            "compression_level": level,
            "element_spec": spec_to_plain(element_spec),
        },
        sort_keys=True,
    ).encode()


def check_metadata(data: bytes) -> None:
    """Raise ``InvalidArgumentError`` unless ``data`` is metadata this version writes."""
    try:
        meta = json.loads(data)
        spec_from_plain(meta["element_spec"])
        resolve_compression(meta["compression"])
    except Exception as exc:  # noqa: BLE001 - whatever is wrong, it is the sender's
        raise errors.InvalidArgumentError(f"malformed snapshot metadata: {exc}") from None
    if meta.get("version") != FORMAT_VERSION:
        raise errors.InvalidArgumentError(
            f"snapshot metadata of version {meta.get('version')!r}; this dispatcher writes "
            f"version {FORMAT_VERSION}"
        )


def write_metadata(path: str, data: bytes) -> None:
    """Create the snapshot directory ``path`` (and its chunk folder) with its metadata."""
    os.makedirs(os.path.join(path, CHUNKS_DIR), exist_ok=True)
    _write_atomically(os.path.join(path, METADATA_FILE), data)


def is_unstarted(path: str, metadata: bytes) -> bool:
    """Whether ``path`` holds only ``metadata`` and no chunk: a save that was being started
    with that metadata when its dispatcher died (it is started again, not refused)."""
    try:
        if not set(os.listdir(path)) <= {METADATA_FILE, CHUNKS_DIR}:
            return False
        if os.listdir(os.path.join(path, CHUNKS_DIR)):
            return False
        with open(os.path.join(path, METADATA_FILE), "rb") as f:
            return f.read() == metadata
    except OSError:
        return False


def read_metadata(path: str) -> dict[str, Any]:
    """The metadata of the snapshot at ``path``, its element spec rebuilt.

    Raises:
      NotFoundError: no snapshot at ``path``.
      DataLossError: the metadata cannot be read.
    """
    file = os.path.join(path, METADATA_FILE)
    try:
        with open(file, "rb") as f:
            meta = json.loads(f.read())
    except FileNotFoundError:
        raise errors.NotFoundError(
            f"no snapshot at {path}: {METADATA_FILE} does not exist"
        ) from None
    except (OSError, ValueError) as exc:
        raise errors.DataLossError(f"{file} cannot be read: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("version") != FORMAT_VERSION:
        raise errors.DataLossError(
            f"{file}: not a snapshot of format version {FORMAT_VERSION}: {meta!r}"
        )
    meta["element_spec"] = spec_from_plain(meta.get("element_spec"))
    return meta


def chunk_path(path: str, number: int) -> str:
    return os.path.join(path, CHUNKS_DIR, f"{_CHUNK_PREFIX}{number:010d}")


def chunk_numbers(path: str) -> set[int]:
    """The numbers of the chunks committed (renamed into place) in the snapshot ``path``."""
    try:
        names = os.listdir(os.path.join(path, CHUNKS_DIR))
    except FileNotFoundError:
        return set()
    return {
        int(name[len(_CHUNK_PREFIX) :])
        for name in names
        if name.startswith(_CHUNK_PREFIX) and name[len(_CHUNK_PREFIX) :].isdigit()
    }


def encode_element(element: Any) -> bytes:
    return bytes(codec.dumps(to_codec(element)))


def decode_element(record: bytes, spec: Any) -> Any:
    # The codec may give lists for tuples: the stored spec says what the structure was.
    return pack_sequence_as(spec, flatten(from_codec(codec.loads(record))))


class ChunkWriter:
    """Writes one chunk of the snapshot ``path``: to a temporary file first, put in place
    (synced, renamed) by ``commit``; a crash leaves no chunk or a whole one, and writing
    the same chunk again replaces it atomically."""

    def __init__(self, path: str, compression: str, level: int | None = None) -> None:
        self._path = path
        self._tmp = os.path.join(path, CHUNKS_DIR, f".tmp-{secrets.token_hex(8)}")
        self._writer = TFRecordWriter(self._tmp, TFRecordOptions(compression, level))
        self.count = 0

    def write(self, element: Any) -> None:
        self._writer.write(encode_element(element))
        self.count += 1

    def commit(self, number: int) -> int:
        """Put the chunk in place as number ``number``; returns its element count."""
        self._writer.close()
        with open(self._tmp, "rb+") as f:
            os.fsync(f.fileno())
        final = chunk_path(self._path, number)
        os.replace(self._tmp, final)
        _sync_dir(os.path.dirname(final))
        return self.count

    def abort(self) -> None:
        self._writer.close()
        try:
            os.unlink(self._tmp)
        except OSError:
            pass


def write_chunk(
    path: str, number: int, elements: Iterable[Any], compression: str, level: int | None = None
) -> int:
    """Write ``elements`` as chunk ``number`` of the snapshot ``path`` (``ChunkWriter``);
    returns their count."""
    writer = ChunkWriter(path, compression, level)
    try:
        for element in elements:
            writer.write(element)
        return writer.commit(number)
    except BaseException:
        writer.abort()
        raise


def remove_partial_chunks(path: str) -> None:
    """Remove the temporary files of chunks whose writers died (best effort)."""
    directory = os.path.join(path, CHUNKS_DIR)
    for name in os.listdir(directory):
        if name.startswith(".tmp-"):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def write_done(path: str, num_chunks: int, num_elements: int | None) -> None:
    """Mark the snapshot ``path`` finished (the last file written)."""
    data = json.dumps({"num_chunks": num_chunks, "num_elements": num_elements}).encode()
    _write_atomically(os.path.join(path, DONE_FILE), data)


def write_error(path: str, message: str) -> None:
    """Mark the snapshot ``path`` failed, with the reason (``load`` quotes it)."""
    _write_atomically(os.path.join(path, ERROR_FILE), message.encode())


def is_finished(path: str) -> bool:
    return os.path.exists(os.path.join(path, DONE_FILE))


def read_done(path: str) -> dict[str, Any]:
    file = os.path.join(path, DONE_FILE)
    try:
        with open(file, "rb") as f:
            done = json.loads(f.read())
    except (OSError, ValueError) as exc:
        raise errors.DataLossError(f"{file} cannot be read: {exc}") from exc
    if not isinstance(done, dict) or not isinstance(done.get("num_chunks"), int):
        raise errors.DataLossError(f"{file}: malformed: {done!r}")
    return done


def finished_chunks(path: str) -> tuple[list[str], int | None]:
    """The chunk files of the finished snapshot ``path`` in order, and its element count.

    Raises:
      FailedPreconditionError: the snapshot is not finished.
      DataLossError: a chunk the DONE file counts is missing.
    """
    error = os.path.join(path, ERROR_FILE)
    if os.path.exists(error):
        with open(error, "rb") as f:
            reason = f.read().decode(errors="replace")
        raise errors.FailedPreconditionError(f"the snapshot at {path} failed: {reason}")
    if not is_finished(path):
        raise errors.FailedPreconditionError(
            f"the snapshot at {path} is not finished (no {DONE_FILE} file): its "
            "distributed_save is still running, or was interrupted and its dispatcher has "
            "not resumed it"
        )
    done = read_done(path)
    numbers = sorted(chunk_numbers(path))
    expected = list(range(done["num_chunks"]))
    if numbers != expected:
        missing = sorted(set(expected) - set(numbers))
        raise errors.DataLossError(
            f"the snapshot at {path} should have {len(expected)} chunks, but chunks "
            f"{missing[:10]} are missing"
        )
    count = done.get("num_elements")
    return [chunk_path(path, n) for n in numbers], (int(count) if isinstance(count, int) else None)


# -- reading --------------------------------------------------------------------------------
class SnapshotDataset(_FileReaderDataset):
    """The elements of a finished snapshot (what ``Dataset.load`` returns).

    A file-based, splittable source like ``TFRecordDataset`` (one split per chunk, so a
    load through the service shares chunks among workers), checkpointable the same way.
    """

    _op_name = "LoadDataset"

    def __init__(self, path: str, files: list[str], meta: dict[str, Any], count: int | None):
        super().__init__(files, meta.get("compression") or None)
        self._path = path
        self._spec = meta["element_spec"]
        self._count = count

    def _make_split_provider(self, split_size: int | None) -> SplitProvider:
        return FileSplitProvider(list(self._files or ()))

    def _read(self, path: str, start: int = 0, where: list[int] | None = None) -> Iterator[Any]:
        spec = self._spec
        for record in read_tfrecords(path, self._compression, start, where):
            yield decode_element(record, spec)

    def _compute_element_spec(self) -> Any:
        return self._spec

    def _cardinality(self) -> int:
        return UNKNOWN if self._count is None else self._count


# -- Dataset.save / Dataset.load ------------------------------------------------------------
def _check_new_path(path: Any, what: str) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise errors.InvalidArgumentError(
            f"{what}: `path` must be a string or os.PathLike, got {type(path).__name__}"
        )
    text = os.fsdecode(path)
    if not text:
        raise errors.InvalidArgumentError(f"{what}: `path` is empty")
    if os.path.exists(text) and (not os.path.isdir(text) or os.listdir(text)):
        reason = "a finished snapshot" if is_finished(text) else "files"
        raise errors.AlreadyExistsError(
            f"{what}: {text} already holds {reason}; save to a new or empty directory"
        )
    return text


def save(dataset: Any, path: Any, compression: Any = None, shard_func: Any = None) -> None:
    """``Dataset.save`` (see there): write ``dataset`` as a finished snapshot at ``path``."""
    comp, level = resolve_compression(compression)
    meta = metadata_bytes(dataset.element_spec, comp, level)  # refuses an unsupported spec first
    if shard_func is not None and not callable(shard_func):
        raise errors.InvalidArgumentError(
            f"`shard_func` must be callable or None, got {shard_func!r}"
        )
    path = _check_new_path(path, "Dataset.save")
    write_metadata(path, meta)
    writers: dict[int, ChunkWriter] = {}
    total = 0
    try:
        if shard_func is None:
            number = 0
            writer: ChunkWriter | None = None
            for element in dataset:
                if writer is None:
                    writer = ChunkWriter(path, comp, level)
                writer.write(element)
                total += 1
                if writer.count == ELEMENTS_PER_CHUNK:
                    writer.commit(number)
                    number += 1
                    writer = None
            if writer is not None:
                writer.commit(number)
                number += 1
            num_chunks = number
        else:
            for element in dataset:
                shard = _shard_index(shard_func(element))
                if shard not in writers:
                    writers[shard] = ChunkWriter(path, comp, level)
                writers[shard].write(element)
                total += 1
            # Chunks are numbered by shard index order: load reads shard after shard.
            num_chunks = len(writers)
            for number, shard in enumerate(sorted(writers)):
                writers.pop(shard).commit(number)
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    write_done(path, num_chunks, total)


def _shard_index(value: Any) -> int:
    array = np.asarray(value)
    if array.shape != () or array.dtype.kind not in "iu":
        raise errors.InvalidArgumentError(
            f"`shard_func` must return a scalar integer, got {value!r}"
        )
    index = int(array)
    if index < 0:
        raise errors.InvalidArgumentError(f"`shard_func` returned a negative index {index}")
    return index


def load(path: Any, element_spec: Any = None, compression: Any = None, wait: bool = False) -> Any:
    """``Dataset.load`` (see there): a ``SnapshotDataset`` over the snapshot at ``path``."""
    if wait:
        raise errors.UnimplementedError(
            "Dataset.load(wait=True) is not supported: load reads finished snapshots only; "
            "wait for distributed_save's snapshot to have its DONE file (the dispatcher's "
            "status lists the snapshots in progress)"
        )
    if not isinstance(path, (str, os.PathLike)):
        raise errors.InvalidArgumentError(
            f"Dataset.load: `path` must be a string or os.PathLike, got {type(path).__name__}"
        )
    path = os.fsdecode(path)
    meta = read_metadata(path)
    if compression is not None:
        given, _ = resolve_compression(compression)
        if given != (meta.get("compression") or ""):
            raise errors.InvalidArgumentError(
                f"Dataset.load: compression {compression!r} does not match the snapshot's "
                f"{meta.get('compression') or None!r}; pass None to use the stored one"
            )
    if element_spec is not None:
        from ..service.specs import specs_compatible  # the one home of spec comparison

        if not specs_compatible(element_spec, meta["element_spec"]):
            raise errors.InvalidArgumentError(
                f"Dataset.load: element_spec {element_spec!r} does not match the snapshot's "
                f"{meta['element_spec']!r}; pass None to use the stored one"
            )
        meta["element_spec"] = element_spec
    files, count = finished_chunks(path)
    return SnapshotDataset(path, files, meta, count)
