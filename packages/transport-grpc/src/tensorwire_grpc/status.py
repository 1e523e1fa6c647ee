"""gRPC status codes <-> ``tensorwire.errors`` classes.

Both number their codes the same way (the canonical absl/gRPC codes), so the mapping is by
number. An error raised by a handler crosses as ``(code, message)`` plus a trailing-metadata
marker; the caller rebuilds the same class with the handler's exact message. Statuses that
gRPC itself produced (a deadline, a peer that cannot be reached, an unknown method) get a
message naming the call and the address instead of gRPC's terse one.
"""

from __future__ import annotations

import grpc
from tensorwire import errors

#: Trailing-metadata key set when the status comes from a tensorwire handler.
ORIGIN_KEY = "tensorwire-origin"
_ORIGIN = ((ORIGIN_KEY, "handler"),)
#: gRPC sends details in trailers, which have a size limit; longer messages are cut.
MAX_DETAILS_CHARS = 4096

_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}
#: What gRPC's server says when ``maximum_concurrent_rpcs`` refuses a call.
GRPC_LIMIT_DETAILS = "Concurrent RPC limit exceeded!"
#: What gRPC says when a message exceeds ``grpc.max_receive_message_length``.
GRPC_SIZE_DETAILS = "Received message larger than max"


def abort(context: grpc.ServicerContext, exc: errors.OpError) -> None:
    """End the call with ``exc`` 's code and message. Raises (``ServicerContext.abort``)."""
    message = exc.message
    if len(message) > MAX_DETAILS_CHARS:
        message = message[:MAX_DETAILS_CHARS] + f"... [{len(message)} characters, cut]"
    context.set_trailing_metadata(_ORIGIN)
    context.abort(_BY_NUMBER.get(int(exc.code), grpc.StatusCode.UNKNOWN), message)


def _from_handler(error: grpc.Call) -> bool:
    try:
        trailers = error.trailing_metadata() or ()
    except Exception:  # noqa: BLE001 - a status without trailers is simply not ours
        return False
    return any(key == ORIGIN_KEY for key, _ in trailers)


def to_op_error(
    error: grpc.RpcError, call: str, address: str, timeout: float | None
) -> errors.OpError:
    """The ``tensorwire.errors`` exception for a failed gRPC call."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (error.details() if isinstance(error, grpc.Call) else str(error)) or ""
    number = code.value[0] if code is not None else errors.Code.UNKNOWN
    if isinstance(error, grpc.Call) and _from_handler(error):
        return errors.from_code(number, details)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"{call} to {address} exceeded its {timeout}s deadline"
    elif code == grpc.StatusCode.UNAVAILABLE:
        message = f"{call}: the server at {address} is unavailable: {details}"
    elif code == grpc.StatusCode.UNIMPLEMENTED:
        message = f"method {call} is not served at {address} ({details})"
    elif code == grpc.StatusCode.RESOURCE_EXHAUSTED and details == GRPC_LIMIT_DETAILS:
        # The listener's backstop (see ``server``): the server's limit, reached in a flood.
        message = (
            f"{call} refused: the server at {address} is serving as many calls and streams "
            f"as it allows at once ({details}). Raise its limit with "
            "TransportOptions.extra['grpc_max_workers'] or the environment variable "
            "TENSORWIRE_GRPC_MAX_WORKERS on the server, or make fewer calls wait at once."
        )
    elif code == grpc.StatusCode.RESOURCE_EXHAUSTED and GRPC_SIZE_DETAILS in details:
        # gRPC's receive limit (see ``options.server_receive_bytes``), hit before any handler.
        message = (
            f"{call} to {address} refused: a gRPC message was larger than the receiving "
            f"side accepts in one ({details}). A server accepts one gRPC message up to its "
            "largest inline message or chunk (TransportOptions.extra['grpc_inline_bytes'] / "
            "['grpc_chunk_bytes'], never below their defaults) plus room for a manifest, or "
            "max_message_bytes when that is smaller; send with sizes no larger than the "
            "server's."
        )
    elif code == grpc.StatusCode.CANCELLED:
        message = f"{call} to {address} was cancelled: {details}"
    else:
        message = f"{call} to {address} failed: {details}"
    return errors.from_code(number, message)
