"""pytest plugin of tensorwire-testing (entry point ``pytest11``), loaded automatically.

Option ``--tensorwire-protocol=NAME`` (or env ``TENSORWIRE_TEST_PROTOCOL``) chooses the
transport the fixtures use, so one test suite runs on every installed transport
(``tox -e py311-grpc`` / ``py311-inproc``). ``--tensorwire-transport-tests`` keeps only the
tests whose outcome depends on that choice (those using the ``tensorwire_protocol`` fixture,
directly or through another fixture, and ``rdma``-marked tests) and deselects the rest; the
RDMA harness uses it to run the suite on ``grpc+verbs`` in its slow guest without re-running
codec and pipeline tests that never touch a transport. Fixtures:

- ``tensorwire_protocol``: the chosen protocol name (override it in a conftest to pin one).
- ``tensorwire_config``: the ``ConfigProto`` given to servers (None; override for TLS/token).
- ``local_cluster_factory``: ``factory(num_workers, num_ps)`` -> ``(workers, ps)``; every
  cluster it made is stopped when the test ends.
- ``local_cluster``: a 2-worker, 1-ps cluster, stopped after the test.
- ``local_server``: one server (``create_local_server``), stopped after the test.
- ``process_cluster_factory``: like ``local_cluster_factory`` but every task is a real
  process (``tensorwire_testing.TaskProcess``), killed after the test.
- ``local_data_service_factory`` / ``local_data_service``: a tf.data service (dispatcher
  and workers) in this process on the chosen protocol, stopped after the test.
- ``data_service_process_factory``: ``factory("dispatcher" | "worker", args, port)`` -> a
  dispatcher or worker process that can be killed with SIGKILL and restarted
  (``ready=False``: launched without waiting for it to serve).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# Assertion rewriting for the shared conformance checks, so their failures explain
# themselves; must happen before the module is first imported.
pytest.register_assert_rewrite("tensorwire_testing.conformance")

PROTOCOL_ENV = "TENSORWIRE_TEST_PROTOCOL"


def _default_protocol() -> str:
    from tensorwire.transport import default_registry

    if os.environ.get(PROTOCOL_ENV):
        return os.environ[PROTOCOL_ENV]
    return "grpc" if "grpc" in default_registry.protocols() else "inproc"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tensorwire")
    group.addoption(
        "--tensorwire-protocol",
        action="store",
        default=None,
        help=f"transport for tensorwire fixtures (default: ${PROTOCOL_ENV}, else grpc if "
        "installed, else inproc)",
    )
    group.addoption(
        "--tensorwire-transport-tests",
        action="store_true",
        default=False,
        help="run only the tests that use the chosen protocol (and rdma-marked tests)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--tensorwire-transport-tests"):
        return
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        uses_protocol = "tensorwire_protocol" in getattr(item, "fixturenames", ())
        (kept if uses_protocol or item.get_closest_marker("rdma") else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_report_header(config: pytest.Config) -> str:
    chosen = config.getoption("--tensorwire-protocol") or _default_protocol()
    return f"tensorwire protocol: {chosen}"


@pytest.fixture(scope="session")
def tensorwire_protocol(request: pytest.FixtureRequest) -> str:
    return request.config.getoption("--tensorwire-protocol") or _default_protocol()


@pytest.fixture
def tensorwire_config() -> Any:
    return None


@pytest.fixture
def local_cluster_factory(
    tensorwire_protocol: str, tensorwire_config: Any
) -> Iterator[Callable[..., Any]]:
    from .local_cluster import create_local_cluster

    made: list[Any] = []

    def factory(num_workers: int = 2, num_ps: int = 1, **kwargs: Any) -> Any:
        kwargs.setdefault("protocol", tensorwire_protocol)
        kwargs.setdefault("worker_config", tensorwire_config)
        kwargs.setdefault("ps_config", tensorwire_config)
        workers, ps = create_local_cluster(num_workers, num_ps, **kwargs)
        made.extend(workers + ps)
        return workers, ps

    yield factory
    for server in made:
        server.stop(grace=0)


@pytest.fixture
def local_cluster(local_cluster_factory: Callable[..., Any]) -> Any:
    return local_cluster_factory(2, 1)


@pytest.fixture
def local_server(tensorwire_protocol: str, tensorwire_config: Any) -> Iterator[Any]:
    from .local_cluster import create_local_server

    server = create_local_server(config=tensorwire_config, protocol=tensorwire_protocol)
    yield server
    server.stop(grace=0)


@pytest.fixture
def process_cluster_factory(tensorwire_protocol: str) -> Iterator[Callable[..., Any]]:
    from .processes import start_process_cluster, stop_all

    made: list[Any] = []

    def factory(num_workers: int = 2, num_ps: int = 1, **kwargs: Any) -> Any:
        protocol = kwargs.pop("protocol", tensorwire_protocol)
        if protocol == "inproc":
            pytest.skip(
                "inproc cannot cross processes; this test runs with --tensorwire-protocol=grpc"
            )
        tasks = start_process_cluster(num_workers, num_ps, protocol=protocol, **kwargs)
        made.append(tasks)
        return tasks

    yield factory
    for tasks in made:
        stop_all(tasks)


# The data-service fixtures are plain functions in tensorwire_testing.data_service; a
# missing tensorwire-dataservice only fails the tests that use them.
from . import data_service as _data_service  # noqa: E402

local_data_service_factory = pytest.fixture(_data_service.local_data_service_factory)
local_data_service = pytest.fixture(_data_service.local_data_service)
data_service_process_factory = pytest.fixture(_data_service.data_service_process_factory)
