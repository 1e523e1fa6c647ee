"""The ``tensorwire.Status`` service: a server's status snapshot over the wire.

Every server kind serves it beside its own service, on the same listener, so the same
token and TLS rules guard it as every other call (the transport checks the token before
the handler runs; see ``tensorwire.transport.invoke``). One method:

- ``GetStatus``: an empty request -> the server's snapshot, ``as_dict()`` encoded with
  ``tensorwire.codec`` (see ``status``).

``fetch_status`` is the client side, used by ``tensorwire status``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import codec, errors
from ..transport import CallContext, Service, TransportOptions, get_transport
from .status import status_from_dict

__all__ = ["STATUS_SERVICE", "status_service", "fetch_status"]

STATUS_SERVICE = "tensorwire.Status"
_GET_STATUS = "GetStatus"


def status_service(snapshot: Callable[[], Any]) -> Service:
    """The ``tensorwire.Status`` service answering with ``snapshot().as_dict()``.

    Args:
      snapshot: returns the server's current status dataclass.

    Returns:
      A ``Service`` to serve beside the server's own.

    Examples:
        >>> from tensorwire.observe import status_service
        >>> status_service(lambda: None)
        Service('tensorwire.Status', methods=['GetStatus'])
    """
    service = Service(STATUS_SERVICE)

    def get_status(frames: list[memoryview], context: CallContext) -> Any:
        return codec.encode(snapshot().as_dict())

    service.add(_GET_STATUS, get_status)
    return service


def fetch_status(
    target: str, options: TransportOptions | None = None, timeout: float = 10.0
) -> Any:
    """The status snapshot of the server at ``target``.

    Args:
      target: ``"<protocol>://host:port"`` of a task server, dispatcher or worker.
      options: the token and TLS settings to call with (default: none; the CLI builds
        them from its flags and the ``TENSORWIRE_*`` variables).
      timeout: seconds to wait for the answer.

    Returns:
      A ``TaskServerStatus``, ``DispatcherStatus`` or
      ``WorkerStatus``.

    Raises:
      InvalidArgumentError: ``target`` is not ``protocol://host:port``.
      UnauthenticatedError, PermissionDeniedError: the server wants a token that was not
        sent, or a different one.
      UnavailableError, DeadlineExceededError: the server cannot be reached in time.
      UnimplementedError: the server serves no status (an older version).
      DataLossError: the answer is not a status snapshot.
    """
    from ..runtime.session import _parse_target

    protocol, address = _parse_target(target)
    options = options if options is not None else TransportOptions()
    with get_transport(protocol).connect(address, options) as channel:
        frames = channel.call(STATUS_SERVICE, _GET_STATUS, [], timeout=timeout)
    try:
        return status_from_dict(codec.decode(list(frames)))
    except (ValueError, TypeError) as exc:
        raise errors.DataLossError(f"{target} answered GetStatus with no status: {exc}") from None
