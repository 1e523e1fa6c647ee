"""Turn the Python values a call carries into transport frames and back.

Values go through the tensor codec (``tensorwire.codec``): arrays (and torch/JAX tensors)
travel as their own frames and come back as zero-copy views, tensors as their own type.
Values the codec cannot express (a user's class, say) fall back to pickle protocol 5 with
out-of-band buffers, so arrays inside them still avoid copies; a server that refuses code from
the wire refuses those, since unpickling runs code. The first frame is one byte saying which
of the two follows.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

from .. import codec, errors

__all__ = ["pack", "unpack"]

_CODEC = b"c"
_PICKLE = b"p"


def pack(value: Any) -> list[Any]:
    """Frames for ``value``."""
    try:
        return [_CODEC, *codec.encode(value)]
    except TypeError:
        buffers: list[pickle.PickleBuffer] = []
        try:
            header = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        except Exception as exc:  # noqa: BLE001 - report what could not be sent
            raise TypeError(
                f"cannot send a value of type {type(value).__name__}: the tensor codec does "
                f"not support it and pickling failed ({exc})"
            ) from exc
        return [_PICKLE, header, *(b.raw() for b in buffers)]


def unpack(frames: Sequence[Any], *, allow_pickle: bool = True, relay: bool = False) -> Any:
    """The value ``frames`` carry. ``allow_pickle=False`` refuses the pickle form.

    ``relay=True``: torch/JAX tensors come back as ``frameworks.FrameworkArray`` (NumPy inside),
    for a handler that stores or forwards them and must not need the framework itself.
    """
    if not frames:
        raise errors.DataLossError("empty message: no frames")
    kind = frames[0]
    if kind == _CODEC:  # bytes and memoryviews compare by content
        return codec.decode(list(frames[1:]), relay=relay)
    if kind == _PICKLE:
        if not allow_pickle:
            raise errors.PermissionDeniedError(
                "this server refuses pickled values (code from the wire is disabled); send "
                "only arrays, scalars, strings and dict/list/tuple of them"
            )
        if len(frames) < 2:
            raise errors.DataLossError("pickled message without its header frame")
        try:
            return pickle.loads(frames[1], buffers=list(frames[2:]))
        except Exception as exc:  # noqa: BLE001
            raise errors.DataLossError(f"could not unpickle the message: {exc}") from None
    raise errors.DataLossError(f"unknown message kind byte {bytes(kind)!r}")
