"""Targets and addresses: the one place that reads ``host:port`` and writes it back.

Every transport, mover and log line names a peer the same way: ``split_address`` reads a
target (IPv6 hosts in brackets), ``join_host_port`` writes one, ``socket_peer_name`` names a
connected socket's peer as gRPC names peers (``ipv4:host:port``), so ``CallContext.peer``
reads alike whichever path a call took.
"""

from __future__ import annotations

from ... import errors

__all__ = ["join_host_port", "socket_peer_name", "split_address"]


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
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
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
    return host.strip("[]"), port


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
