"""``create_local_cluster`` and ``create_local_server``, as in ``tf.test``, without the race.

TensorFlow picks free ports with portpicker and then binds them, so another process can
take a port in between. Here every server binds (without starting) first; a port lost in
that window is picked again, and only when every task is bound does each server learn the
final cluster and start.
"""

from __future__ import annotations

import logging
from typing import Any

import tensorwire as tw
from tensorwire import errors

__all__ = ["create_local_cluster", "create_local_server"]

log = logging.getLogger(__name__)

_BIND_ATTEMPTS = 20


def _pick_port() -> int:
    import portpicker  # ImportError when missing, as in TensorFlow

    return int(portpicker.pick_unused_port())


def create_local_cluster(
    num_workers: int,
    num_ps: int,
    protocol: str = "grpc",
    worker_config: Any = None,
    ps_config: Any = None,
) -> tuple[list[tw.Server], list[tw.Server]]:
    """Start ``num_workers`` workers and ``num_ps`` parameter servers on loopback.

    Returns ``(workers, ps_servers)``; both jobs are always in the cluster (an empty job
    when its count is 0), like ``tf.test.create_local_cluster``. Raises ``ImportError`` if
    portpicker is missing. Stop the servers with ``stop()`` (or use them as context
    managers); they are stopped at interpreter exit anyway.

    Args:
      num_workers: tasks in job ``worker``.
      num_ps: tasks in job ``ps``.
      protocol: the transport, ``"grpc"`` by default (``"inproc"`` for one process).
      worker_config: a ``ConfigProto`` for the workers.
      ps_config: a ``ConfigProto`` for the parameter servers.

    Raises:
      ImportError: portpicker is not installed.
      NotFoundError: no transport is installed for ``protocol``.

    Examples:
        >>> workers, ps = tw.test.create_local_cluster(num_workers=2, num_ps=1)
        >>> print(len(workers), len(ps), workers[0].target.startswith("grpc://"))
        2 1 True
        >>> for server in workers + ps:
        ...     server.stop()
    """
    import portpicker  # noqa: F401 - fail early, before any server exists

    if num_workers < 0 or num_ps < 0:
        raise ValueError(f"num_workers and num_ps must be >= 0, got {num_workers}, {num_ps}")
    ports = {
        "worker": [_pick_port() for _ in range(num_workers)],
        "ps": [_pick_port() for _ in range(num_ps)],
    }
    configs = {"worker": worker_config, "ps": ps_config}
    servers: dict[str, list[tw.Server]] = {"worker": [], "ps": []}
    try:
        for job in ("worker", "ps"):
            for index in range(len(ports[job])):
                servers[job].append(_bind(job, index, ports, protocol, configs[job]))
        cluster = _cluster(ports)
        for job in ("worker", "ps"):
            for server in servers[job]:
                server._set_cluster(cluster)
                server.start()
    except BaseException:
        for server in servers["worker"] + servers["ps"]:
            server.stop(grace=0)
        raise
    return servers["worker"], servers["ps"]


def _cluster(ports: dict[str, list[int]]) -> dict[str, list[str]]:
    return {job: [f"localhost:{p}" for p in job_ports] for job, job_ports in ports.items()}


def _bind(
    job: str, index: int, ports: dict[str, list[int]], protocol: str, config: Any
) -> tw.Server:
    for _ in range(_BIND_ATTEMPTS):
        try:
            return tw.Server(
                _cluster(ports),
                job_name=job,
                task_index=index,
                protocol=protocol,
                config=config,
                start=False,
            )
        except (errors.UnavailableError, errors.AlreadyExistsError) as exc:
            # The port was taken after it was picked: pick another one.
            log.info(
                "port %d for /job:%s/task:%d was taken (%s); picking another",
                ports[job][index],
                job,
                index,
                exc,
            )
            ports[job][index] = _pick_port()
    raise errors.UnavailableError(
        f"could not bind a port for /job:{job}/task:{index} in {_BIND_ATTEMPTS} attempts"
    )


def create_local_server(
    config: Any = None, start: bool = True, protocol: str = "grpc"
) -> tw.Server:
    """A single-task server on a free loopback port, as ``Server.create_local_server``."""
    return tw.Server({"localhost": ["localhost:0"]}, protocol=protocol, config=config, start=start)
