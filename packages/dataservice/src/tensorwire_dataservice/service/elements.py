"""Element messages between a worker and its clients: batching, packing, compression.

A message carries the elements a worker had ready (several per message, so small elements
are not one RPC each). When every element is a NumPy value of one dtype and shape and small,
they are stacked into one array and the client iterates its rows, which saves a header per
element.

Compression follows the dataset's registered ``compression``:

- ``"AUTO"``: zstandard over the encoded message, used only when it pays: a message that
  does not shrink by at least 20% switches compression off for the next few messages of that
  task, so incompressible data (random floats, JPEG bytes) costs one probe now and then, not
  a compression per element.
- ``"SNAPPY"``: every element message is snappy-compressed (raw snappy, via cramjam), as
  TensorFlow's ``COMPRESSION_SNAPPY`` forces.
- ``None``: never.

A compressed message is ``{"zstd": bytes}`` or ``{"snappy": bytes}`` holding the encoded
uncompressed message; the end-of-sequence message is never compressed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import cramjam
import numpy as np
import zstandard
from tensorwire import codec, errors

from .protocol import COMPRESSION_AUTO, COMPRESSION_NONE, COMPRESSION_SNAPPY, as_bytes

__all__ = [
    "encode_elements",
    "decode_elements",
    "decode_chunk",
    "eos_message",
    "Compressor",
    "element_nbytes",
]

_PACK_MAX_ITEM_BYTES = 4096
_COMPRESS_MIN_BYTES = 1024
_SKIP_AFTER_INCOMPRESSIBLE = 32
_PROBE_BYTES = 64 << 10
_MAX_RATIO = 0.8

_local = threading.local()


def _zc() -> zstandard.ZstdCompressor:
    c = getattr(_local, "c", None)
    if c is None:
        c = _local.c = zstandard.ZstdCompressor(level=1)
    return c


def _zd() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


def element_nbytes(value: Any) -> int:
    """Rough size of an element, used to size messages and buffers."""
    if isinstance(value, (np.ndarray, np.generic)):
        return int(value.nbytes)
    if isinstance(value, (bytes, bytearray, str)):
        return len(value)
    if isinstance(value, dict):
        return sum(element_nbytes(v) for v in value.values()) + 8
    if isinstance(value, (tuple, list)):
        return sum(element_nbytes(v) for v in value) + 8
    return 8


def _packable(elements: list[Any]) -> bool:
    first = elements[0]
    if not isinstance(first, (np.ndarray, np.generic)) or first.dtype.hasobject:
        return False
    if first.nbytes > _PACK_MAX_ITEM_BYTES:
        return False
    dtype, shape, kind = first.dtype, first.shape, type(first)
    for e in elements:
        if type(e) is not kind or e.dtype != dtype or e.shape != shape:
            return False
    return True


class Compressor:
    """Per-task compression of element messages, for one ``compression`` mode.

    ``"SNAPPY"`` compresses every message. ``"AUTO"`` compresses a message only when a
    64 KiB probe of its largest buffer shrinks by at least 20%: random floats (about 10%
    with zstd) and already-compressed bytes are sent as they are, without paying for a full
    compression; after a failed probe the next few messages are not even probed. ``None``
    (or ``""``, how a registration without compression is stored) never compresses.
    """

    def __init__(self, mode: str | None) -> None:
        if mode == "":
            mode = COMPRESSION_NONE
        if mode not in (COMPRESSION_AUTO, COMPRESSION_NONE, COMPRESSION_SNAPPY):
            raise errors.InvalidArgumentError(f"unknown element compression {mode!r}")
        self.mode = mode
        self._skip = 0

    def maybe_compress(self, payload: dict[str, Any], frames: list[Any]) -> dict[str, Any] | None:
        """The compressed message replacing ``frames`` (the encoded ``payload``), or None."""
        if self.mode == COMPRESSION_SNAPPY:
            return {"snappy": bytes(cramjam.snappy.compress_raw(codec.dumps(payload)))}
        if self.mode != COMPRESSION_AUTO:
            return None
        if self._skip:
            self._skip -= 1
            return None
        views = [memoryview(f).cast("B") for f in frames]
        total = sum(len(v) for v in views)
        if total < _COMPRESS_MIN_BYTES:
            return None
        largest = max(views, key=len)
        probe = largest[:_PROBE_BYTES]
        if len(probe) >= _COMPRESS_MIN_BYTES and len(_zc().compress(probe)) > _MAX_RATIO * len(
            probe
        ):
            self._skip = _SKIP_AFTER_INCOMPRESSIBLE
            return None
        raw = codec.dumps(payload)
        packed = _zc().compress(raw)
        if len(packed) > _MAX_RATIO * len(raw):
            self._skip = _SKIP_AFTER_INCOMPRESSIBLE
            return None
        return {"zstd": packed}


def encode_elements(
    elements: list[Any], compressor: Compressor | None = None, first: int | None = None
) -> list[Any]:
    """One message of ``elements``; ``first``: the index of the first in its task's output
    (exact distributed_epoch jobs), the others following it."""
    if len(elements) > 1 and _packable(elements):
        head = elements[0]
        if isinstance(head, np.generic):
            packed = np.array(elements, dtype=head.dtype)
        else:
            packed = np.stack(elements)
        payload: dict[str, Any] = {"packed": packed}
    else:
        payload = {"elements": elements}
    if first is not None:
        payload["first"] = first
    frames = codec.encode(payload)
    if compressor is not None:
        compressed = compressor.maybe_compress(payload, frames)
        if compressed is not None:
            return codec.encode(compressed)
    return frames


def eos_message() -> list[Any]:
    return codec.encode({"eos": True})


def decode_elements(frames: Iterable[Any]) -> tuple[list[Any], bool]:
    """``(elements, end_of_sequence)`` from one message."""
    elements, eos, _ = decode_chunk(frames)
    return elements, eos


def decode_chunk(frames: Iterable[Any]) -> tuple[list[Any], bool, int | None]:
    """``(elements, end_of_sequence, index of the first element or None)``."""
    message = codec.decode(list(frames))
    if "zstd" in message:
        message = codec.loads(_zd().decompress(as_bytes(message["zstd"])))
    elif "snappy" in message:
        message = codec.loads(cramjam.snappy.decompress_raw(as_bytes(message["snappy"])))
    if message.get("eos"):
        return [], True, None
    first = message.get("first")
    first = None if first is None else int(first)
    packed = message.get("packed")
    if packed is not None:
        return list(packed), False, first  # rows: NumPy scalars, or views into one buffer
    return list(message["elements"]), False, first
