"""Targets and addresses: the one place that reads ``host:port`` and writes it back.

Every transport, mover and log line names a peer the same way: ``split_address`` reads a
target (IPv6 hosts in brackets), ``join_host_port`` writes one, ``socket_peer_name`` names a
connected socket's peer as gRPC names peers (``ipv4:host:port``), so ``CallContext.peer``
reads alike whichever path a call took. ``split_host_port`` is the lexical split beneath
``split_address``, for callers whose port may be absent or a placeholder (a ``ServerDef``
with its own port, the data service's ``%port%`` patterns); ``bare_host`` takes the brackets
off a host given alone.
"""

from __future__ import annotations

from ... import errors

__all__ = ["bare_host", "join_host_port", "socket_peer_name", "split_address", "split_host_port"]


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``; IPv6 as ``"[::1]:port"``.

    Args:
      address: ``"host:port"``, the host in brackets when it is an IPv6 address.

    Returns:
      ``(host, port)``, the host without brackets.

    Raises:
      InvalidArgumentError: naming the address, when it has no port, or the port is not a
        number or not in 0-65535.

    Examples:
        >>> from tensorwire.transport import split_address
        >>> split_address("localhost:2222")
        ('localhost', 2222)
        >>> split_address("[::1]:0")
        ('::1', 0)
        >>> split_address("localhost")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tensorwire.errors.InvalidArgumentError: Could not interpret 'localhost' as host:port: ...
    """
    host, port_text = split_host_port(address)
    if not port_text:
        raise errors.InvalidArgumentError(
            f"Could not interpret {address!r} as host:port: it has no port"
        )
    try:
        port = int(port_text)
    except ValueError:
        raise errors.InvalidArgumentError(
            f"Could not parse port for address {address!r}: {port_text!r} is not a number"
        ) from None
    if not 0 <= port <= 65535:
        raise errors.InvalidArgumentError(f"port {port} of address {address!r} is out of range")
    return host, port


def split_host_port(address: str) -> tuple[str, str]:
    """``"host:port"`` -> ``(host, port_text)`` without reading the port: the lexical split.

    For callers whose port may be missing or a placeholder (``"worker:%port%"``); anything
    that needs a port number calls ``split_address``, which checks it.

    Args:
      address: ``"host:port"``, ``"[ipv6]:port"``, or a host alone (``"localhost"``,
        ``"[::1]"``). An IPv6 host without brackets is ambiguous: its last group reads as
        the port, as in ``split_address``.

    Returns:
      ``(host, port_text)``: the host without brackets, the port as written (``""`` when
      the address has none).

    Examples:
        >>> from tensorwire.transport.kit.address import split_host_port
        >>> split_host_port("worker-7:%port%")
        ('worker-7', '%port%')
        >>> split_host_port("[::1]")
        ('::1', '')
        >>> split_host_port("localhost")
        ('localhost', '')
    """
    if address.startswith("[") and address.endswith("]"):
        return address[1:-1], ""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        return address, ""
    return bare_host(host), port_text


def bare_host(host: str) -> str:
    """A host without the brackets an IPv6 address may be written in (``"[::1]"`` -> ``"::1"``).

    Args:
      host: a name or an IP address, with or without brackets (no port).

    Returns:
      The host as ``socket`` and ``join_host_port`` take it.

    Examples:
        >>> from tensorwire.transport.kit.address import bare_host
        >>> bare_host("[::1]"), bare_host("::1"), bare_host("localhost")
        ('::1', '::1', 'localhost')
    """
    return host.strip("[]")


def join_host_port(host: str, port: int) -> str:
    """``(host, port)`` -> ``"host:port"``, an IPv6 host in brackets (``split_address``'s
    inverse).

    Args:
      host: a name or an IP address, without brackets.
      port: the port.

    Returns:
      The target string.

    Examples:
        >>> from tensorwire.transport.kit.address import join_host_port
        >>> join_host_port("::1", 80)
        '[::1]:80'
        >>> join_host_port("localhost", 2222)
        'localhost:2222'
    """
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def socket_peer_name(peer: object) -> str:
    """A socket address as gRPC names peers (``ipv4:host:port``), for ``CallContext.peer``.

    Args:
      peer: what ``socket.accept`` returned as the address.

    Returns:
      ``"ipv4:host:port"`` or ``"ipv6:[host]:port"``; ``str(peer)`` for anything else.

    Examples:
        >>> from tensorwire.transport.kit.address import socket_peer_name
        >>> socket_peer_name(("127.0.0.1", 5000))
        'ipv4:127.0.0.1:5000'
    """
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = str(peer[0]), peer[1]
        return f"ipv6:{join_host_port(host, port)}" if ":" in host else f"ipv4:{host}:{port}"
    return str(peer)
