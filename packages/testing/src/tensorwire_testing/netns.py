"""Test hosts on one machine: Linux network namespaces joined by a bridge.

Each ``VirtualHost`` is a network namespace with its own address on a private /24 and
its own ``/etc/hosts``, so a process started in it (``VirtualHost.wrap``) sees a host of
its own: what it binds, whom it reaches and which names resolve are those of a separate
machine. ``ip netns exec`` bind-mounts ``/etc/netns/<namespace>/hosts`` over ``/etc/hosts``
for the command it runs (iproute2's convention for network-namespace-unaware programs);
``VirtualNetwork.set_hosts`` writes those files, which is how tests give service names
(Kubernetes DNS names, SLURM node names) to the addresses of the namespaces.

Needs root and iproute2 (``unavailable_reason`` says why not, for a skip). Every name
(namespaces, links, the bridge, the subnet) is unique to one ``VirtualNetwork``, and
``VirtualNetwork.close`` removes everything it made, so concurrent runs do not collide and
nothing outlives a test. Traffic stays between the namespaces: the bridge has no address
on the host and nothing routes beyond it.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tensorwire import errors

__all__ = ["VirtualHost", "VirtualNetwork", "unavailable_reason"]

#: Where ``ip netns exec`` looks for the per-namespace files it mounts over ``/etc``.
NETNS_ETC = Path("/etc/netns")
#: Seconds an ``ip`` command may take (they take milliseconds).
_IP_TIMEOUT = 30.0


def unavailable_reason() -> str | None:
    """Why test hosts cannot be made here (not root, no ``ip``), or None when they can.

    Returns:
      A sentence for ``pytest.skip``, or None.

    Examples:
        >>> reason = unavailable_reason()
        >>> reason is None or "root" in reason or "iproute2" in reason
        True
    """
    if shutil.which("ip") is None:
        return "network namespaces need iproute2's ip command (apt-get install iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    return None


def _ip(*args: str) -> None:
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=_IP_TIMEOUT, check=False
    )
    if result.returncode != 0:
        raise errors.InternalError(
            f"ip {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
        )


@dataclass(frozen=True)
class VirtualHost:
    """One network namespace of a ``VirtualNetwork``.

    Attributes:
      name: the name the test gave it (``"dispatcher-0"``).
      namespace: the network namespace's name (unique to the run).
      address: its IPv4 address on the network.
    """

    name: str
    namespace: str
    address: str

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as a command that runs inside this host.

        Args:
          argv: the command line.

        Returns:
          ``["ip", "netns", "exec", <namespace>, *argv]``.
        """
        return ["ip", "netns", "exec", self.namespace, *argv]


@dataclass
class VirtualNetwork:
    """A bridge and the namespaces attached to it; a context manager that removes them.

    Args:
      prefix: up to 4 characters that start every name it makes (for finding leftovers).

    Raises:
      FailedPreconditionError: network namespaces cannot be made here (see
        ``unavailable_reason``).

    Examples:
        >>> with VirtualNetwork() as network:                        # doctest: +SKIP
        ...     a, b = network.add_host("a"), network.add_host("b")
        ...     network.set_hosts({"b.example": b.address})
        ...     subprocess.run(a.wrap(["getent", "hosts", "b.example"]))
    """

    prefix: str = "tw"
    hosts: dict[str, VirtualHost] = field(default_factory=dict)

    def __post_init__(self) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise errors.FailedPreconditionError(reason)
        if not 1 <= len(self.prefix) <= 4 or not self.prefix.isalnum():
            raise ValueError(f"prefix must be 1-4 letters or digits, got {self.prefix!r}")
        self._token = secrets.token_hex(3)
        # A /24 in 10.x chosen at random per run: two runs at once do not share addresses.
        octets = secrets.randbelow(256), secrets.randbelow(256)
        self.subnet = ipaddress.ip_network(f"10.{octets[0]}.{octets[1]}.0/24")
        self._free = iter(self.subnet.hosts())
        self.bridge = f"{self.prefix}b{self._token}"
        self._links: list[str] = []
        self._closed = False
        _ip("link", "add", self.bridge, "type", "bridge")
        self._links.append(self.bridge)
        _ip("link", "set", self.bridge, "up")

    def add_host(self, name: str) -> VirtualHost:
        """A new namespace on the bridge, with the next free address and loopback up.

        Args:
          name: the host's name in this network (unique).

        Returns:
          The ``VirtualHost``.

        Raises:
          ValueError: ``name`` is taken, or the /24 has no address left.
          InternalError: an ``ip`` command failed (its message is quoted).
        """
        if name in self.hosts:
            raise ValueError(f"a host named {name!r} exists already")
        index = len(self.hosts)
        address = str(next(self._free, ""))
        if not address:
            raise ValueError(f"no address left in {self.subnet}")
        host = VirtualHost(name, f"{self.prefix}-{self._token}-{index}", address)
        outside, inside = (
            f"{self.prefix}{self._token}h{index}",
            f"{self.prefix}{self._token}n{index}",
        )
        _ip("netns", "add", host.namespace)
        self.hosts[name] = host
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        self._links.append(outside)  # deleting one end of a veth pair deletes both
        _ip("link", "set", outside, "master", self.bridge, "up")
        _ip("link", "set", inside, "netns", host.namespace)
        _ip(
            "-n", host.namespace, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", inside
        )
        _ip("-n", host.namespace, "link", "set", inside, "up")
        _ip("-n", host.namespace, "link", "set", "lo", "up")
        return host

    def set_hosts(
        self, names: Mapping[str, str], hosts: Iterable[VirtualHost] | None = None
    ) -> None:
        """Write the ``/etc/hosts`` that processes in ``hosts`` (default: every host) see:
        ``localhost`` and ``names`` (name -> address).

        Args:
          names: host name -> address, e.g. service DNS names to namespace addresses.
          hosts: the hosts whose file to write; default all of them.
        """
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
        lines += [f"{address} {name}" for name, address in sorted(names.items())]
        for host in self.hosts.values() if hosts is None else hosts:
            directory = NETNS_ETC / host.namespace
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "hosts").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def close(self) -> None:
        """Remove the namespaces, links, bridge and hosts files this network made.

        Processes still running inside a namespace keep it alive until they exit: stop
        them first. Never raises; what could not be removed is left (and named by ``ip``).
        """
        if self._closed:
            return
        self._closed = True
        for host in self.hosts.values():
            shutil.rmtree(NETNS_ETC / host.namespace, ignore_errors=True)
            subprocess.run(
                ["ip", "netns", "del", host.namespace],
                capture_output=True,
                timeout=_IP_TIMEOUT,
                check=False,
            )
        for link in reversed(self._links):
            subprocess.run(
                ["ip", "link", "del", link], capture_output=True, timeout=_IP_TIMEOUT, check=False
            )

    def __enter__(self) -> VirtualNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
