"""gRPC's C-core log lines are off unless the user asks for them.

gRPC's C core writes its own lines straight to stderr, outside Python's ``logging``
(``I0000 00:00:... chttp2_transport.cc:1403] ipv4:127.0.0.1:...: Got goaway ...`` whenever a
peer shuts down, the absl line "All log messages before absl::InitializeLog() ...", fork
notes). A tensorwire user cannot act on them: every failure that matters already reaches the
caller as an error carrying gRPC's status and details, and our own events go through
``logging``. So tensorwire turns them off by default: ``GRPC_VERBOSITY=NONE``.

The C core reads ``GRPC_VERBOSITY`` and ``GRPC_TRACE`` once, while ``grpc`` is first
imported; setting them later has no effect. Every import of ``grpc`` in tensorwire is inside
this package, whose ``__init__`` calls ``apply_default`` before any of its modules
loads, so this is the one place the default is set.

What the user chose wins: with ``GRPC_VERBOSITY`` set (``debug``, ``info``, ``error``) gRPC
behaves exactly as without tensorwire, and with ``GRPC_TRACE`` set the verbosity is left to
gRPC too (trace lines are written at gRPC's info level, which ``NONE`` would hide). The
default is set in ``os.environ``, so processes started from this one (task servers, data
service processes) inherit it. A program that imported ``grpc`` before tensorwire keeps
gRPC's own default: the core has read its settings already.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

__all__ = ["DEFAULT_VERBOSITY", "TRACE_ENV", "VERBOSITY_ENV", "apply_default"]

VERBOSITY_ENV = "GRPC_VERBOSITY"
TRACE_ENV = "GRPC_TRACE"
#: gRPC's level that writes nothing (the others: DEBUG, INFO, ERROR).
DEFAULT_VERBOSITY = "NONE"


def apply_default(environ: MutableMapping[str, str] | None = None) -> bool:
    """Set ``GRPC_VERBOSITY=NONE`` in ``environ`` (default ``os.environ``) unless the user
    set ``GRPC_VERBOSITY`` or ``GRPC_TRACE``; returns whether it set it.

    An empty value counts as unset, as it does for gRPC.
    """
    env = os.environ if environ is None else environ
    if env.get(VERBOSITY_ENV) or env.get(TRACE_ENV):
        return False
    env[VERBOSITY_ENV] = DEFAULT_VERBOSITY
    return True
