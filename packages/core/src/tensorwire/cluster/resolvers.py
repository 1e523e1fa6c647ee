"""Cluster resolvers: the cluster and this process's task from what a scheduler sets.

- ``resolve_tf_config()`` reads the ``TF_CONFIG`` environment variable that Kubernetes
  operators (Kubeflow's TFJob), Vertex AI / Cloud ML Engine and TensorFlow's own launchers
  set: ``{"cluster": {job: [addresses] or {index: address}}, "task": {"type": job,
  "index": i}, "rpc_layer": "grpc", "environment": "cloud"}``.
- ``resolve_slurm()`` builds the cluster from a SLURM job step's environment
  (``SLURM_PROCID``, the node list and tasks per node), assigning ranks to jobs.

Both return a ``ClusterResolution`` (``cluster_spec, job_name, task_index, rpc_layer``) that
unpacks straight into a server::

    spec, job, index, protocol = resolve_tf_config()
    server = tw.Server(spec, job_name=job, task_index=index, protocol=protocol)

``TFConfigClusterResolver`` and ``SlurmClusterResolver`` offer the same as objects with the
method names of TensorFlow's resolvers (``cluster_spec()``, ``task_type``, ``task_id``,
``rpc_layer``, ``master()``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from .cluster_spec import ClusterSpec

__all__ = [
    "TF_CONFIG_ENV",
    "ClusterResolution",
    "resolve_tf_config",
    "load_tf_config",
    "TFConfigClusterResolver",
    "resolve_slurm",
    "SlurmClusterResolver",
    "expand_hostlist",
    "expand_tasks_per_node",
    "format_master_url",
]

#: Name of the environment variable read by ``resolve_tf_config``.
TF_CONFIG_ENV = "TF_CONFIG"


class ClusterResolution(NamedTuple):
    """A resolved cluster and this process's place in it.

    Returned by ``resolve_tf_config``, ``resolve_slurm`` and the resolvers'
    ``resolve()``; a named tuple that unpacks into the arguments of ``tw.Server``.

    Attributes:
      cluster_spec: the cluster (empty when the source describes none).
      job_name: this process's job, or None when the source does not say.
      task_index: this process's index in ``job_name``, or None.
      rpc_layer: the protocol (``"grpc"`` ...), or None.

    Examples:
        >>> from tensorwire.cluster import ClusterResolution
        >>> spec, job, index, protocol = ClusterResolution(
        ...     tw.ClusterSpec({"worker": ["localhost:0"]}), "worker", 0, "grpc")
        >>> with tw.Server(spec, job_name=job, task_index=index, protocol=protocol) as server:
        ...     print(server.target.startswith("grpc://localhost:"))
        True
    """

    cluster_spec: ClusterSpec
    #: This process's job, or None when the source does not say.
    job_name: str | None
    #: This process's task index in ``job_name``, or None when the source does not say.
    task_index: int | None
    #: Protocol ("grpc", ...) the cluster uses, or None when the source does not say.
    rpc_layer: str | None


def format_master_url(address: str, rpc_layer: str | None = None) -> str:
    """``"grpc://host:port"`` when an rpc layer is given, else the address unchanged.

    Args:
      address: ``"host:port"``.
      rpc_layer: the protocol to prefix, or None / ``""`` for none.

    Returns:
      ``"<rpc_layer>://<address>"``, or ``address``.

    Examples:
        >>> from tensorwire.cluster.resolvers import format_master_url
        >>> format_master_url("w0:2222", "grpc"), format_master_url("w0:2222")
        ('grpc://w0:2222', 'w0:2222')
    """
    return f"{rpc_layer}://{address}" if rpc_layer else address


# --------------------------------------------------------------------------- TF_CONFIG


def load_tf_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Parse ``TF_CONFIG`` from ``environ`` (default ``os.environ``); ``{}`` when unset/empty.

    Args:
      environ: the environment to read; default ``os.environ``.

    Returns:
      The parsed JSON object, unvalidated (see ``resolve_tf_config`` for that).

    Raises:
      ValueError: if the value is not JSON or not a JSON object, naming the variable and
        where the JSON broke.

    Examples:
        >>> from tensorwire.cluster.resolvers import load_tf_config
        >>> load_tf_config({"TF_CONFIG": '{"task": {"type": "worker", "index": 0}}'})
        {'task': {'type': 'worker', 'index': 0}}
        >>> load_tf_config({})
        {}
    """
    environ = os.environ if environ is None else environ
    raw = environ.get(TF_CONFIG_ENV, "")
    if not raw.strip():
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{TF_CONFIG_ENV} is not valid JSON ({exc.msg} at line {exc.lineno} column "
            f"{exc.colno}): {_shorten(raw)}"
        ) from None
    if not isinstance(config, dict):
        raise ValueError(
            f"{TF_CONFIG_ENV} must be a JSON object, got {type(config).__name__}: {_shorten(raw)}"
        )
    return config


def resolve_tf_config(
    environ: Mapping[str, str] | None = None,
    *,
    task_type: str | None = None,
    task_id: int | None = None,
    rpc_layer: str | None = None,
) -> ClusterResolution:
    """The cluster, job, task and rpc layer described by ``TF_CONFIG``.

    ``task_type`` / ``task_id`` / ``rpc_layer`` override the values in the variable. Missing
    parts come back as an empty ClusterSpec / None, as TensorFlow's resolver does. A task
    that is not in the cluster is returned as it is (some launchers list an evaluator only
    in ``"task"``); ``tw.Server`` rejects it if it tries to serve.

    Args:
      environ: the environment to read; default ``os.environ``.
      task_type: the job to report instead of ``TF_CONFIG``'s ``task.type``.
      task_id: the index to report instead of ``TF_CONFIG``'s ``task.index``.
      rpc_layer: the protocol to report instead of ``TF_CONFIG``'s ``rpc_layer``.

    Returns:
      A ``ClusterResolution`` ``(cluster_spec, job_name, task_index, rpc_layer)``.

    Raises:
      ValueError: for malformed JSON, a ``cluster`` that is not a mapping of jobs, a ``task``
        that is not an object, or a non-integer task index.

    Examples:
        >>> import json
        >>> from tensorwire.cluster import resolve_tf_config
        >>> environ = {"TF_CONFIG": json.dumps({
        ...     "cluster": {"worker": ["w0:2222", "w1:2222"], "ps": ["p0:2222"]},
        ...     "task": {"type": "worker", "index": 1}, "rpc_layer": "grpc"})}
        >>> spec, job, index, protocol = resolve_tf_config(environ)
        >>> spec.as_dict()["worker"], job, index, protocol
        (['w0:2222', 'w1:2222'], 'worker', 1, 'grpc')
        >>> resolve_tf_config({})[1:]       # no TF_CONFIG: an empty cluster, no task
        (None, None, None)
    """
    config = load_tf_config(environ)
    cluster = config.get("cluster", {})
    if not isinstance(cluster, dict):
        raise ValueError(
            f"{TF_CONFIG_ENV} 'cluster' must map job names to lists of addresses, got {cluster!r}"
        )
    try:
        spec = ClusterSpec(cluster)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{TF_CONFIG_ENV} 'cluster' is invalid: {exc}") from None
    task = config.get("task", {})
    if not isinstance(task, dict):
        raise ValueError(f"{TF_CONFIG_ENV} 'task' must be an object, got {task!r}")
    job_name = str(task_type) if task_type is not None else _opt_str(task.get("type"))
    raw_index = task_id if task_id is not None else task.get("index")
    task_index: int | None = None
    if raw_index is not None:
        try:
            task_index = int(raw_index)
        except (TypeError, ValueError):
            raise ValueError(
                f"{TF_CONFIG_ENV} task index must be an integer, got {raw_index!r}"
            ) from None
    layer = rpc_layer if rpc_layer is not None else _opt_str(config.get("rpc_layer"))
    # A task outside the cluster is returned as is, like TensorFlow does: some launchers
    # list an evaluator only in "task". make_server_def / the Server reject it if it serves.
    return ClusterResolution(spec, job_name, task_index, layer)


class TFConfigClusterResolver:
    """TensorFlow's ``TFConfigClusterResolver``: the cluster from ``TF_CONFIG``, read anew on
    every call so a changed environment is seen.

    ``task_type``, ``task_id`` and ``rpc_layer`` are properties that read ``TF_CONFIG``
    (through ``resolve_tf_config``) unless overridden, here or by assigning to them;
    ``environment`` is ``TF_CONFIG``'s ``"environment"`` (or the override). Constructing the
    resolver reads nothing, so it never raises; the methods and properties raise
    ``ValueError`` for a malformed ``TF_CONFIG`` (see ``resolve_tf_config``).

    Args:
      task_type: overrides the task type (job name) in ``TF_CONFIG``.
      task_id: overrides the task index in ``TF_CONFIG``.
      rpc_layer: overrides the protocol (``"rpc_layer"``) in ``TF_CONFIG``.
      environment: overrides ``TF_CONFIG``'s ``"environment"`` (e.g. ``"cloud"``).
      environ: the environment to read instead of ``os.environ`` (for tests, launchers).

    Examples:
        >>> import json
        >>> from tensorwire.cluster import TFConfigClusterResolver
        >>> environ = {"TF_CONFIG": json.dumps({
        ...     "cluster": {"worker": ["w0:2222", "w1:2222"], "ps": ["p0:2222"]},
        ...     "task": {"type": "worker", "index": 1}, "rpc_layer": "grpc"})}
        >>> resolver = TFConfigClusterResolver(environ=environ)
        >>> resolver.task_type, resolver.task_id, resolver.rpc_layer
        ('worker', 1, 'grpc')
        >>> resolver.cluster_spec().num_tasks("worker")
        2
        >>> resolver.master(), resolver.master("ps", 0)
        ('grpc://w1:2222', 'grpc://p0:2222')

        In a task started by a launcher that sets ``TF_CONFIG``::

            resolver = TFConfigClusterResolver()
            server = tw.Server(resolver.cluster_spec(), job_name=resolver.task_type,
                               task_index=resolver.task_id, protocol=resolver.rpc_layer)
    """

    def __init__(
        self,
        task_type: str | None = None,
        task_id: int | None = None,
        rpc_layer: str | None = None,
        environment: str | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.task_type_override = task_type
        self.task_id_override = task_id
        self.rpc_layer_override = rpc_layer
        self._environment = environment
        self._environ = environ

    def resolve(self) -> ClusterResolution:
        """Everything at once: ``resolve_tf_config`` with this resolver's overrides.

        Raises:
          ValueError: ``TF_CONFIG`` is malformed.
        """
        return resolve_tf_config(
            self._environ,
            task_type=self.task_type_override,
            task_id=self.task_id_override,
            rpc_layer=self.rpc_layer_override,
        )

    def cluster_spec(self) -> ClusterSpec:
        """The cluster in ``TF_CONFIG`` (an empty ``ClusterSpec`` when it has none).

        Raises:
          ValueError: ``TF_CONFIG`` is malformed.
        """
        return self.resolve().cluster_spec

    @property
    def task_type(self) -> str | None:
        """This task's job: the override, else ``TF_CONFIG``'s ``task.type``, else None."""
        return self.resolve().job_name

    @task_type.setter
    def task_type(self, task_type: str | None) -> None:
        self.task_type_override = task_type

    @property
    def task_id(self) -> int | None:
        """This task's index: the override, else ``TF_CONFIG``'s ``task.index``, else None."""
        return self.resolve().task_index

    @task_id.setter
    def task_id(self, task_id: int | None) -> None:
        self.task_id_override = task_id

    @property
    def rpc_layer(self) -> str | None:
        """The protocol: the override, else ``TF_CONFIG``'s ``rpc_layer``, else None."""
        return self.resolve().rpc_layer

    @rpc_layer.setter
    def rpc_layer(self, rpc_layer: str | None) -> None:
        self.rpc_layer_override = rpc_layer

    @property
    def environment(self) -> str | None:
        """The override, else ``TF_CONFIG``'s ``"environment"`` (``"cloud"`` ...), else None."""
        if self._environment is not None:
            return self._environment
        return _opt_str(load_tf_config(self._environ).get("environment"))

    def master(
        self,
        task_type: str | None = None,
        task_id: int | None = None,
        rpc_layer: str | None = None,
    ) -> str:
        """Address of a task as ``"<rpc_layer>://host:port"``; ``"session_master"`` from
        TF_CONFIG when present; ``""`` for an empty or single-task cluster (as TensorFlow).

        Args:
          task_type: the job; default this task's.
          task_id: the index; default this task's.
          rpc_layer: the protocol prefix; default the resolver's (none when that is None).

        Raises:
          ValueError: no task was given and ``TF_CONFIG`` has no ``task`` section, the job
            or index is not in the cluster, or ``TF_CONFIG`` is malformed.

        Examples:
            >>> TFConfigClusterResolver(environ={}).master()
            ''
        """
        config = load_tf_config(self._environ)
        if config.get("session_master") is not None:
            return str(config["session_master"])
        resolved = self.resolve()
        spec = resolved.cluster_spec
        if not spec.jobs or (len(spec.jobs) == 1 and spec.num_tasks(spec.jobs[0]) == 1):
            return ""
        job = task_type if task_type is not None else resolved.job_name
        index = task_id if task_id is not None else resolved.task_index
        if job is None or index is None:
            raise ValueError(f"{TF_CONFIG_ENV} has no 'task' section; pass task_type and task_id")
        layer = rpc_layer if rpc_layer is not None else resolved.rpc_layer
        return format_master_url(str(spec.task_address(job, index)), layer)


# --------------------------------------------------------------------------- SLURM

_HOST_PART = re.compile(r"([^\[\],]*)\[([^\[\]]+)\]")


def expand_hostlist(hostlist: str) -> list[str]:
    """Expand a SLURM hostlist, keeping its order and duplicates.

    ``"n[1-2],m5,o[3-4,6]"`` -> ``['n1', 'n2', 'm5', 'o3', 'o4', 'o6']``; zero padding is
    kept (``"node[01-03]"`` -> ``node01 node02 node03``) and several bracket groups in one
    name expand left to right (``"r[1-2]n[1-2]"`` -> ``r1n1 r1n2 r2n1 r2n2``).

    Args:
      hostlist: a SLURM node list, as in ``SLURM_JOB_NODELIST``.

    Returns:
      The host names, in order.

    Raises:
      ValueError: naming the hostlist and the bad part (nested or unbalanced brackets, an
        empty name, a range that is not numeric or runs backwards).

    Examples:
        >>> from tensorwire.cluster import expand_hostlist
        >>> expand_hostlist("n[1-2],m5,o[3-4,6]")
        ['n1', 'n2', 'm5', 'o3', 'o4', 'o6']
        >>> expand_hostlist("node[01-03]")
        ['node01', 'node02', 'node03']
    """
    hosts: list[str] = []
    for name in _split_outside_brackets(hostlist):
        hosts.extend(_expand_name(name, hostlist))
    return hosts


def _split_outside_brackets(hostlist: str) -> list[str]:
    names, current, depth = [], "", 0
    for char in hostlist:
        if char == "[":
            depth += 1
            if depth > 1:
                raise ValueError(f"Invalid hostlist {hostlist!r}: nested '['")
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"Invalid hostlist {hostlist!r}: ']' without '['")
        elif char == "," and depth == 0:
            if not current:
                raise ValueError(f"Invalid hostlist {hostlist!r}: empty host name")
            names.append(current)
            current = ""
            continue
        current += char
    if depth:
        raise ValueError(f"Invalid hostlist {hostlist!r}: '[' without ']'")
    if current:
        names.append(current)
    elif names:
        raise ValueError(f"Invalid hostlist {hostlist!r}: empty host name")
    return names


def _expand_name(name: str, hostlist: str) -> list[str]:
    match = _HOST_PART.search(name)
    if match is None:
        return [name]
    prefix, ranges = match.group(1), match.group(2)
    rest = name[match.end() :]
    tails = _expand_name(rest, hostlist) if rest else [""]
    expanded: list[str] = []
    for number in _expand_ranges(ranges, hostlist):
        expanded.extend(prefix + number + tail for tail in tails)
    return expanded


def _expand_ranges(ranges: str, hostlist: str) -> list[str]:
    numbers: list[str] = []
    for part in ranges.split(","):
        low, sep, high = part.strip().partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise ValueError(f"Invalid hostlist {hostlist!r}: bad range {part!r}")
        high = high if sep else low
        if int(high) < int(low):
            raise ValueError(f"Invalid hostlist {hostlist!r}: range {part!r} runs backwards")
        width = len(low)  # SLURM keeps the zero padding of the lower bound
        numbers.extend(str(i).zfill(width) for i in range(int(low), int(high) + 1))
    return numbers


def expand_tasks_per_node(tasks_per_node: str) -> list[int]:
    """Expand SLURM's tasks-per-node notation: ``"3(x2),2,1"`` -> ``[3, 3, 2, 1]``.

    Args:
      tasks_per_node: a value like ``SLURM_TASKS_PER_NODE``'s.

    Returns:
      The number of tasks of each node, in node-list order.

    Raises:
      ValueError: naming the value and the bad part.

    Examples:
        >>> from tensorwire.cluster import expand_tasks_per_node
        >>> expand_tasks_per_node("3(x2),2,1")
        [3, 3, 2, 1]
    """
    counts: list[int] = []
    for part in tasks_per_node.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if match is None:
            raise ValueError(f"Invalid tasks-per-node list {tasks_per_node!r}: bad part {part!r}")
        counts.extend([int(match.group(1))] * int(match.group(2) or 1))
    return counts


def _slurm_var(environ: Mapping[str, str], *names: str) -> str:
    for name in names:
        value = environ.get(name)
        if value:
            return value
    raise RuntimeError(
        f"{' or '.join(names)} not found in environment. Not running inside a SLURM step?"
    )


def resolve_slurm(
    jobs: Mapping[str, int] | None = None,
    *,
    port_base: int = 8888,
    tasks_per_node: int | Mapping[str, int] | None = None,
    rpc_layer: str = "grpc",
    environ: Mapping[str, str] | None = None,
) -> ClusterResolution:
    """The cluster of the current SLURM job step and this process's task in it.

    SLURM ranks are laid out over the step's nodes in node-list order (SLURM's default block
    distribution): the first node's tasks get the lowest ranks. Each task listens on
    ``port_base + <its position on its node>``. Jobs take consecutive ranks in order of job
    name, as in TensorFlow: ``{"worker": 3, "ps": 1}`` makes rank 0 ps task 0 and ranks 1-3
    worker tasks 0-2. (Unlike TensorFlow, nodes are not re-sorted by name: SLURM numbers
    ranks in node-list order, and ``node9`` comes before ``node10`` there.)

    Environment read (``environ``, default ``os.environ``): ``SLURM_PROCID`` (rank);
    ``SLURM_STEP_NODELIST`` or ``SLURM_JOB_NODELIST`` / ``SLURM_NODELIST``;
    ``SLURM_STEP_TASKS_PER_NODE`` or ``SLURM_TASKS_PER_NODE`` (unless ``tasks_per_node`` is
    given); ``SLURM_STEP_NUM_TASKS`` or ``SLURM_NTASKS`` (only when ``jobs`` is None, which
    means one job ``worker`` with every task).

    Args:
      jobs: job name -> number of tasks; default one job ``worker`` with every task of the
        step. The counts must add up to the tasks of the step.
      port_base: the port of the first task on each node; the node's next tasks take the
        following ports.
      tasks_per_node: tasks on every node (an int), or host -> tasks (a mapping, which then
        replaces the node list too); default from the environment.
      rpc_layer: the protocol to report.
      environ: the environment to read; default ``os.environ``.

    Returns:
      A ``ClusterResolution`` ``(cluster_spec, job_name, task_index, rpc_layer)``.

    Raises:
      RuntimeError: a needed variable is missing, or the jobs ask for a different number of
        tasks than the step has (TensorFlow's messages).
      ValueError: malformed variables or arguments.

    Examples:
        >>> from tensorwire.cluster import resolve_slurm
        >>> environ = {"SLURM_PROCID": "2", "SLURM_STEP_NODELIST": "node[1-2]",
        ...            "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}
        >>> spec, job, index, protocol = resolve_slurm({"worker": 3, "ps": 1}, environ=environ)
        >>> spec.as_dict()
        {'ps': ['node1:8888'], 'worker': ['node1:8889', 'node2:8888', 'node2:8889']}
        >>> job, index, protocol
        ('worker', 1, 'grpc')
    """
    env = os.environ if environ is None else environ
    rank_text = _slurm_var(env, "SLURM_PROCID")
    try:
        rank = int(rank_text)
    except ValueError:
        raise ValueError(f"SLURM_PROCID must be an integer, got {rank_text!r}") from None

    if tasks_per_node is None or isinstance(tasks_per_node, int):
        hosts = expand_hostlist(
            _slurm_var(env, "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")
        )
        if tasks_per_node is None:
            counts = expand_tasks_per_node(
                _slurm_var(env, "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE")
            )
            if len(counts) != len(hosts):
                raise ValueError(
                    f"SLURM node list has {len(hosts)} nodes but tasks per node lists "
                    f"{len(counts)}: {hosts} vs {counts}"
                )
        else:
            counts = [tasks_per_node] * len(hosts)
        layout = list(zip(hosts, counts, strict=True))
    else:
        layout = list(tasks_per_node.items())
    if any(count < 0 for _, count in layout):
        raise ValueError(f"negative task count in {layout}")

    addresses = [
        f"{host}:{port_base + offset}" for host, count in layout for offset in range(count)
    ]
    if jobs is None:
        num_tasks = int(_slurm_var(env, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"))
        jobs = {"worker": num_tasks}
    requested = sum(jobs.values())
    if requested != len(addresses):
        raise RuntimeError(f"Requested {requested} tasks but only {len(addresses)} were assigned.")
    if not 0 <= rank < len(addresses):
        raise ValueError(f"SLURM_PROCID {rank} is outside the {len(addresses)} tasks of the step")

    cluster: dict[str, list[str]] = {}
    job_name: str | None = None
    task_index: int | None = None
    start = 0
    for name, count in sorted(jobs.items()):
        cluster[name] = addresses[start : start + count]
        if start <= rank < start + count:
            job_name, task_index = name, rank - start
        start += count
    return ClusterResolution(ClusterSpec(cluster), job_name, task_index, rpc_layer)


class SlurmClusterResolver:
    """TensorFlow-style object around ``resolve_slurm`` (same arguments), without TensorFlow's
    GPU assignment: set ``CUDA_VISIBLE_DEVICES`` yourself if you need it.

    Unlike ``TFConfigClusterResolver`` it resolves once, when constructed: the
    attributes ``task_type``, ``task_id`` and ``rpc_layer`` are plain values from then on.

    Args:
      jobs: job name -> number of tasks (see ``resolve_slurm``).
      port_base: the port of the first task on each node.
      tasks_per_node: tasks on every node, or host -> tasks; default from the environment.
      rpc_layer: the protocol of ``master`` and ``rpc_layer``.
      environ: the environment to read; default ``os.environ``.

    Raises:
      RuntimeError: not inside a SLURM step (a variable is missing), or the jobs ask for a
        different number of tasks than the step has.
      ValueError: malformed variables or arguments.

    Examples:
        >>> from tensorwire.cluster import SlurmClusterResolver
        >>> environ = {"SLURM_PROCID": "0", "SLURM_STEP_NODELIST": "node[1-2]",
        ...            "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}
        >>> resolver = SlurmClusterResolver({"worker": 3, "ps": 1}, environ=environ)
        >>> resolver.get_task_info(), resolver.master()
        (('ps', 0), 'grpc://node1:8888')
        >>> resolver.cluster_spec().num_tasks("worker")
        3
    """

    def __init__(
        self,
        jobs: Mapping[str, int] | None = None,
        port_base: int = 8888,
        tasks_per_node: int | Mapping[str, int] | None = None,
        rpc_layer: str = "grpc",
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._resolution = resolve_slurm(
            jobs,
            port_base=port_base,
            tasks_per_node=tasks_per_node,
            rpc_layer=rpc_layer,
            environ=environ,
        )
        self.task_type = self._resolution.job_name
        self.task_id = self._resolution.task_index
        self.rpc_layer = rpc_layer

    def resolve(self) -> ClusterResolution:
        """The ``ClusterResolution`` computed when the resolver was made."""
        return self._resolution

    def cluster_spec(self) -> ClusterSpec:
        """The cluster of the SLURM step."""
        return self._resolution.cluster_spec

    def get_task_info(self) -> tuple[str | None, int | None]:
        """``(task_type, task_id)`` of this process."""
        return self.task_type, self.task_id

    def master(
        self,
        task_type: str | None = None,
        task_id: int | None = None,
        rpc_layer: str | None = None,
    ) -> str:
        """Address of a task as ``"<rpc_layer>://host:port"``; default this process's task.

        Args:
          task_type: the job; default this task's.
          task_id: the index; default this task's.
          rpc_layer: the protocol prefix; default the resolver's.

        Returns:
          The address, or ``""`` when no task is known.

        Raises:
          ValueError: the job or index is not in the cluster.
        """
        job = task_type if task_type is not None else self.task_type
        index = task_id if task_id is not None else self.task_id
        if job is None or index is None:
            return ""
        address = str(self.cluster_spec().task_address(job, index))
        return format_master_url(address, rpc_layer or self.rpc_layer)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
