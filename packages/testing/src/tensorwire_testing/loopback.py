"""What the loopback interface of the machine running the tests offers."""

from __future__ import annotations

import socket

__all__ = ["has_ipv6_loopback"]


def has_ipv6_loopback() -> bool:
    """Whether ``::1`` can be bound here (containers may run with IPv6 switched off).

    Returns:
      True when a socket binds ``[::1]:0``.

    Examples:
        >>> import pytest
        >>> from tensorwire_testing.loopback import has_ipv6_loopback
        >>> needs_ipv6 = pytest.mark.skipif(
        ...     not has_ipv6_loopback(), reason="no IPv6 loopback on this host"
        ... )
    """
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False
