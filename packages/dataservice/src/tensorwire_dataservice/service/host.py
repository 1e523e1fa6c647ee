"""Which machine a process runs on, for ``target_workers="LOCAL"``.

A worker tells the dispatcher its host identity when it registers (in every heartbeat);
a reader that asked for local workers compares it with its own and reads only from the
workers whose identity is equal. An address says little about this: ``localhost``, a
container's name or a load balancer's address can each point anywhere, so the identity
comes from the machine itself:

- ``TENSORWIRE_DATA_HOST_ID`` when set (a deployment that wants to declare which
  processes count as one host, e.g. several containers of one pod, and tests);
- otherwise the host name and the machine id (``/etc/machine-id``, else
  ``/var/lib/dbus/machine-id``, else the kernel's boot id): two containers with the same
  host name on different machines still differ, and one machine's processes agree.

``WorkerConfig(host_id=...)`` overrides it for one worker.
"""

from __future__ import annotations

import functools
import logging
import os
import socket

__all__ = ["HOST_ID_ENV", "host_id"]

log = logging.getLogger(__name__)

#: Environment variable that sets this process's host identity (see the module docstring).
HOST_ID_ENV = "TENSORWIRE_DATA_HOST_ID"

_MACHINE_ID_FILES = (
    "/etc/machine-id",
    "/var/lib/dbus/machine-id",
    "/proc/sys/kernel/random/boot_id",
)


def host_id() -> str:
    """This process's host identity: ``TENSORWIRE_DATA_HOST_ID``, or host name and machine id.

    Returns:
      A non-empty string; equal for processes on one machine.

    Examples:
        >>> host_id()                                      # doctest: +SKIP
        'trainer-3/5c1d0b2f8e6a4f0e9d1e0c6b7a8f9e10'
    """
    configured = os.environ.get(HOST_ID_ENV, "").strip()
    if configured:
        return configured
    return _machine_identity()


@functools.cache
def _machine_identity() -> str:
    hostname = socket.gethostname() or "unknown-host"
    for path in _MACHINE_ID_FILES:
        try:
            with open(path, encoding="ascii") as f:
                machine = f.read().strip()
        except (OSError, UnicodeDecodeError):
            continue
        if machine:
            return f"{hostname}/{machine}"
    log.debug("no machine id in %s; the host name alone identifies this host", _MACHINE_ID_FILES)
    return hostname
