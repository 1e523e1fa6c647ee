"""Test utilities for tensorwire (``tw.test``): local clusters and data services, a pytest
plugin, fault injection (task processes you can kill -9 and restart, a loopback proxy),
and the transport conformance suite (``tensorwire_testing.conformance``)."""

from __future__ import annotations

from typing import Any

from tensorwire._version import distribution_version

from .local_cluster import create_local_cluster, create_local_server
from .processes import TaskProcess, start_process_cluster, stop_all
from .proxy import LoopbackProxy
from .waiting import eventually

__version__ = distribution_version("tensorwire-testing")

__all__ = [
    "__version__",
    "create_local_cluster",
    "create_local_server",
    "create_local_data_service",
    "DataServiceProcess",
    "LocalDataService",
    "TaskProcess",
    "start_process_cluster",
    "stop_all",
    "LoopbackProxy",
    "eventually",
]


def __getattr__(name: str) -> Any:
    # The data-service helpers need tensorwire-dataservice; import them only when asked.
    if name in ("create_local_data_service", "DataServiceProcess", "LocalDataService"):
        from . import data_service

        return getattr(data_service, name)
    raise AttributeError(f"module 'tensorwire_testing' has no attribute {name!r}")
