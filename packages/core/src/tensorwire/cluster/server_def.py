"""Normalising the arguments of ``Server(...)`` into a ``ServerDef``, as TensorFlow does.

``make_server_def`` is ``tf.distribute.Server``'s ``_make_server_def``: the same inference of
``job_name`` / ``task_index``, the same defaults, overrides and error messages.
``validate_server_def`` then checks that a ServerDef names a task of its own cluster and says
where the server should listen, raising what TensorFlow's server raises at creation.
"""

from __future__ import annotations

from typing import Any

from .. import errors
from ..protos import ConfigProto, ServerDef, convert
from ..transport.kit.address import split_host_port
from .cluster_spec import ClusterSpec

__all__ = ["make_server_def", "validate_server_def", "DEFAULT_PROTOCOL"]

#: Protocol of a server built from a cluster (not a ServerDef) when none is given.
DEFAULT_PROTOCOL = "grpc"


def make_server_def(
    server_or_cluster_def: Any,
    job_name: str | None = None,
    task_index: int | None = None,
    protocol: str | None = None,
    config: Any = None,
) -> ServerDef:
    """Create the ``ServerDef`` of a server.

    Args:
      server_or_cluster_def: a ``ServerDef`` (kept field for field), or a ``ClusterDef``, a
        ``ClusterSpec`` or a dict that ``ClusterSpec`` accepts. TensorFlow's own proto
        objects are accepted too.
      job_name: the server's job; overrides the ServerDef's. From a cluster it may be left
        out when the cluster has exactly one job.
      task_index: the server's task in its job; overrides the ServerDef's. From a cluster it
        may be left out when the job has exactly one task (whatever its index).
      protocol: overrides the ServerDef's; from a cluster it defaults to ``"grpc"``.
      config: a ``ConfigProto`` merged (``MergeFrom``) into ``default_session_config``.

    Raises:
      TypeError: if ``server_or_cluster_def`` cannot be read as a ServerDef or cluster.
      ValueError: if ``job_name`` or ``task_index`` is needed and cannot be inferred, or
        ``job_name`` is not a job of the cluster.
    """
    if _has_full_name(server_or_cluster_def, ServerDef):
        server_def = ServerDef()
        server_def.MergeFrom(convert(server_or_cluster_def, ServerDef))
        if job_name is not None:
            server_def.job_name = job_name
        if task_index is not None:
            server_def.task_index = task_index
        if protocol is not None:
            server_def.protocol = protocol
    else:
        try:
            cluster_spec = ClusterSpec(server_or_cluster_def)
        except TypeError:
            raise TypeError(
                "Could not convert `server_or_cluster_def` to a `tf.train.ServerDef` or "
                "`tf.train.ClusterSpec`."
            ) from None
        if job_name is None:
            if len(cluster_spec.jobs) != 1:
                raise ValueError("Must specify an explicit `job_name`.")
            job_name = cluster_spec.jobs[0]
        if task_index is None:
            indices = cluster_spec.task_indices(job_name)
            if len(indices) != 1:
                raise ValueError("Must specify an explicit `task_index`.")
            task_index = indices[0]
        server_def = ServerDef(
            cluster=cluster_spec.as_cluster_def(),
            job_name=job_name,
            task_index=task_index,
            protocol=DEFAULT_PROTOCOL if protocol is None else protocol,
        )
    if config is not None:
        server_def.default_session_config.MergeFrom(convert(config, ConfigProto))
    return server_def


def validate_server_def(server_def: ServerDef) -> tuple[str, int]:
    """Check that ``server_def`` describes a task of its cluster; return ``(host, port)``
    the server should listen on.

    The port is ``server_def.port`` when set, else the port of the task's address (``0``
    means "any free port"). The host is the host of the task's address.

    Raises:
      tensorwire.errors.InvalidArgumentError: if the protocol is empty, the job or task is
        not in the cluster, or the task's address has no valid port (unless
        ``server_def.port`` supplies it).
    """
    server_def = convert(server_def, ServerDef)
    if not server_def.protocol:
        raise errors.InvalidArgumentError('ServerDef.protocol must be set, e.g. "grpc"')
    job = next((j for j in server_def.cluster.job if j.name == server_def.job_name), None)
    if job is None:
        raise errors.InvalidArgumentError(f'Job "{server_def.job_name}" was not defined in cluster')
    address = job.tasks.get(server_def.task_index)
    if address is None:
        raise errors.InvalidArgumentError(
            f'Task {server_def.task_index} was not defined in job "{server_def.job_name}"'
        )
    host, port_text = split_host_port(address)
    if server_def.port:
        if not 0 < server_def.port <= 65535:
            raise errors.InvalidArgumentError(f"ServerDef.port {server_def.port} is out of range")
        return host, server_def.port
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise errors.InvalidArgumentError(
            f'Could not parse port for local server from "{address}".'
        )
    return host, port


def _has_full_name(value: Any, message_type: Any) -> bool:
    descriptor = getattr(value, "DESCRIPTOR", None)
    return getattr(descriptor, "full_name", None) == message_type.DESCRIPTOR.full_name
