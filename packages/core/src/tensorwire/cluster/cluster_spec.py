"""``ClusterSpec``: a cluster as named jobs of tasks, with ``tf.train.ClusterSpec``'s behaviour.

A job is dense (a list of addresses, task ``i`` at position ``i``) or sparse (a dict of task
index -> address, so a task needs to know only the tasks it talks to). The spec converts to and
from a ``ClusterDef`` protocol buffer, which is what travels inside a ``ServerDef``.

Behaviour, messages and quirks follow TensorFlow's ``server_lib.ClusterSpec`` so code written
for it runs unchanged. Deliberate differences, each an error or crash in TensorFlow:
``job_tasks`` of a job with no tasks returns ``[]``; negative or out-of-int32 task indices
are refused with a ValueError naming the job; ``as_cluster_def`` returns a copy, so mutating
it cannot desynchronise the spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Union

from ..protos import ClusterDef, convert

__all__ = ["ClusterSpec", "ClusterSpecLike"]

_INT32_MAX = 2**31 - 1

Address = str | bytes
#: What ``ClusterSpec(...)`` accepts (and what ``make_server_def`` accepts besides a ServerDef).
ClusterSpecLike = Union["ClusterSpec", ClusterDef, Mapping[Any, Any]]  # noqa: UP007 (forward ref)


class ClusterSpec:
    """Represents a cluster as a set of "tasks", organised into "jobs".

    >>> cluster = ClusterSpec({"worker": ["w0:2222", "w1:2222"], "ps": {0: "ps0:2222"}})
    >>> cluster.task_address("worker", 1)
    'w1:2222'

    Args:
      cluster: a dict mapping job names to a list of addresses (dense job) or to a dict of
        task index -> address (sparse job; keys go through ``int()``), or a ``ClusterDef``
        (tensorwire's or TensorFlow's), or another ``ClusterSpec`` (also TensorFlow's).

    Raises:
      TypeError: if ``cluster`` is none of those, a job's tasks are neither a list nor a
        dict, or a job name or address is not a string.
    """

    # Like TensorFlow's, a ClusterSpec compares by value and is therefore unhashable.
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, cluster: ClusterSpecLike) -> None:
        self._cluster_spec: dict[Any, dict[int, Address]]
        if isinstance(cluster, Mapping):
            self._cluster_spec = {}
            for job_name, tasks in cluster.items():
                if isinstance(tasks, (list, tuple)):
                    job_tasks = dict(enumerate(tasks))
                elif isinstance(tasks, Mapping):
                    job_tasks = {int(i): task for i, task in tasks.items()}
                else:
                    raise TypeError(
                        f"The tasks for job {job_name!r} must be a list or a dictionary from "
                        "integers to strings."
                    )
                self._cluster_spec[job_name] = job_tasks
            self._cluster_def = _make_cluster_def(self._cluster_spec)
        elif isinstance(cluster, ClusterSpec):
            self._cluster_def = cluster.as_cluster_def()
            self._cluster_spec = _spec_from_cluster_def(self._cluster_def)
        elif _is_cluster_def(cluster):
            self._cluster_def = ClusterDef()
            self._cluster_def.CopyFrom(convert(cluster, ClusterDef))
            self._cluster_spec = _spec_from_cluster_def(self._cluster_def)
        elif _is_cluster_def(getattr(cluster, "as_cluster_def", lambda: None)()):
            # Another implementation's ClusterSpec, e.g. TensorFlow's tf.train.ClusterSpec.
            self._cluster_def = convert(
                cluster.as_cluster_def(),  # type: ignore[attr-defined]
                ClusterDef,
            )
            self._cluster_spec = _spec_from_cluster_def(self._cluster_def)
        else:
            raise TypeError(
                "`cluster` must be a dictionary mapping one or more job names to lists of "
                "network addresses, or a `ClusterDef` protocol buffer"
            )

    def __bool__(self) -> bool:
        return bool(self._cluster_spec)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ClusterSpec):
            return self._cluster_spec == other._cluster_spec
        # TensorFlow compares its internal {job: {index: address}} dict with `other`.
        return bool(self._cluster_spec == other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __repr__(self) -> str:
        as_dict = self.as_dict()
        items = ", ".join(f"{k!r}: {as_dict[k]!r}" for k in sorted(as_dict))
        return "ClusterSpec({" + items + "})"

    def as_dict(self) -> dict[Any, list[Address | None] | dict[int, Address]]:
        """Job name -> list of addresses when the job's indices are dense (0..n-1), else
        -> dict of task index -> address; a job without tasks maps to ``{}``."""
        result: dict[Any, list[Address | None] | dict[int, Address]] = {}
        for job in self.jobs:
            indices = self.task_indices(job)
            if not indices:
                result[job] = {}
            elif max(indices) + 1 == len(indices):
                result[job] = self.job_tasks(job)
            else:
                result[job] = {i: self.task_address(job, i) for i in indices}
        return result

    def as_cluster_def(self) -> ClusterDef:
        """A ``ClusterDef`` of this cluster (a new copy on every call). Built from a dict,
        jobs are sorted by name and tasks by index; built from a ``ClusterDef``, its order
        is kept."""
        cluster_def = ClusterDef()
        cluster_def.CopyFrom(self._cluster_def)
        return cluster_def

    @property
    def jobs(self) -> list[Any]:
        """The job names, in the order they were given."""
        return list(self._cluster_spec.keys())

    def num_tasks(self, job_name: Any) -> int:
        """Number of tasks of ``job_name``. Raises ValueError for an unknown job."""
        return len(self._job(job_name))

    def task_indices(self, job_name: Any) -> list[int]:
        """Sorted task indices of ``job_name``. Raises ValueError for an unknown job."""
        return sorted(self._job(job_name))

    def task_address(self, job_name: Any, task_index: int) -> Address:
        """Address of task ``task_index`` of ``job_name``.

        Raises:
          ValueError: if the job or the task does not exist.
        """
        job = self._job(job_name)
        try:
            return job[task_index]
        except (KeyError, TypeError):
            raise ValueError(f"No task with index {task_index!r} in job {job_name!r}") from None

    def job_tasks(self, job_name: Any) -> list[Address | None]:
        """Addresses of ``job_name`` as a list indexed by task; sparse jobs have ``None``
        holes, so the length is not the number of tasks (use ``num_tasks``).

        Raises ValueError for an unknown job.
        """
        job = self._job(job_name)
        if not job:
            return []
        tasks: list[Address | None] = [None] * (max(job) + 1)
        for index, address in job.items():
            tasks[index] = address
        return tasks

    def _job(self, job_name: Any) -> dict[int, Address]:
        try:
            return self._cluster_spec[job_name]
        except (KeyError, TypeError):
            raise ValueError(f"No such job in cluster: {job_name!r}") from None


def _is_cluster_def(value: Any) -> bool:
    descriptor = getattr(value, "DESCRIPTOR", None)
    return getattr(descriptor, "full_name", None) == ClusterDef.DESCRIPTOR.full_name


def _spec_from_cluster_def(cluster_def: ClusterDef) -> dict[Any, dict[int, Address]]:
    return {job.name: dict(job.tasks.items()) for job in cluster_def.job}


def _as_text(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8")
    raise TypeError(f"{what} {value!r} must be bytes or unicode")


def _make_cluster_def(spec: dict[Any, dict[int, Address]]) -> ClusterDef:
    # Check names first so a bad name gets TensorFlow's message, not a sort() TypeError.
    names = {job_name: _as_text(job_name, "Job name") for job_name in spec}
    cluster_def = ClusterDef()
    # Sorted by name and index so equal clusters give equal (deterministic) bytes.
    for job_name in sorted(spec, key=lambda name: names[name]):
        job_def = cluster_def.job.add()
        job_def.name = names[job_name]
        for index, address in sorted(spec[job_name].items()):
            if not 0 <= index <= _INT32_MAX:
                raise ValueError(
                    f"Task index {index!r} of job {job_name!r} must be between 0 and {_INT32_MAX}"
                )
            job_def.tasks[index] = _as_text(address, "Task address")
    return cluster_def
