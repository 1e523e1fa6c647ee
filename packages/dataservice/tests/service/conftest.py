"""Fixtures for the data-service tests.

``protocol`` is the transport every server in a test uses: the pytest plugin's choice
(``--tensorwire-protocol``), i.e. grpc when it is installed, else inproc. Tests that need
separate processes skip on inproc, which cannot cross them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import tensorwire as tw
from tensorwire.transport import default_registry


@pytest.fixture
def protocol(tensorwire_protocol: str) -> str:
    return tensorwire_protocol


@pytest.fixture
def service_factory(protocol: str) -> Iterator[Callable[..., Any]]:
    """``factory(num_workers=1, **dispatcher_fields)`` -> (dispatcher, [workers])."""
    made: list[Any] = []

    def factory(
        num_workers: int = 1, worker_config: dict[str, Any] | None = None, **fields: Any
    ) -> tuple[Any, list[Any]]:
        fields.setdefault("protocol", protocol)
        dispatcher = tw.data.service.DispatchServer(tw.data.service.DispatcherConfig(**fields))
        made.append(dispatcher)
        workers = [add_worker(dispatcher, **(worker_config or {})) for _ in range(num_workers)]
        return dispatcher, workers

    def add_worker(dispatcher: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("protocol", dispatcher.target.split("://")[0])
        worker = tw.data.service.WorkerServer(
            tw.data.service.WorkerConfig(dispatcher_address=dispatcher._address, **kwargs)
        )
        made.append(worker)
        return worker

    factory.add_worker = add_worker
    yield factory
    for server in reversed(made):
        server.stop()


@pytest.fixture
def cross_process_protocol(protocol: str) -> str:
    if protocol == "inproc" or protocol not in default_registry.protocols():
        pytest.skip(
            "needs a network transport (grpc) to reach servers in other processes; "
            "runs wherever tensorwire-grpc is installed"
        )
    return protocol
