"""``DeviceSpec``: TensorFlow device names such as ``/job:ps/replica:0/task:1/device:CPU:0``.

Every component is optional: ``/job:ps/task:0`` names a task, ``/device:CPU:0`` a device of
whatever task is current. The legacy short device forms ``/cpu:0`` and ``/GPU:1`` are read
too, and printed in the long form. Behaviour follows TensorFlow 2's immutable
``tf.DeviceSpec``: ``from_string``, ``to_string``, ``make_merged_spec`` (also available as
``merge``), ``replace``, value equality and hashing.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DeviceSpec"]

# Device types recognised in the short "/cpu:0" form (TensorFlow's built-in set).
_SHORT_FORM_DEVICE_TYPES = frozenset({"CPU", "GPU", "TPU", "CUSTOM", "EPU"})
_COMPONENTS = ("job", "replica", "task", "device_type", "device_index")


class DeviceSpec:
    """A (possibly partial) device name: job, replica, task, device type and index.

    >>> DeviceSpec.from_string("/job:ps/task:0/cpu:0").to_string()
    '/job:ps/task:0/device:CPU:0'
    >>> DeviceSpec(job="worker", task=1).make_merged_spec(DeviceSpec(device_type="gpu"))
    <DeviceSpec(job=worker, replica=None, task=1, device_type=GPU, device_index=None)>

    A device type without an index means "any index" and prints as ``/device:GPU:*``.

    Args:
      job: the job name, e.g. ``"ps"``.
      replica: the replica index.
      task: the task index.
      device_type: ``"CPU"``, ``"GPU"`` (lower case accepted) or another type.
      device_index: the device's index.

    Raises:
      ValueError: an index that is not an integer; from ``from_string``, a name that is
        not a device name (TensorFlow's messages).
    """

    __slots__ = ("_job", "_replica", "_task", "_device_type", "_device_index", "_string")

    def __init__(
        self,
        job: str | None = None,
        replica: int | None = None,
        task: int | None = None,
        device_type: str | None = None,
        device_index: int | None = None,
    ) -> None:
        self._job = None if job is None else str(job)
        self._replica = _as_index(replica, "replica")
        self._task = _as_index(task, "task")
        if device_type in ("cpu", "gpu"):
            device_type = device_type.upper()
        self._device_type = None if device_type is None else str(device_type)
        self._device_index = _as_index(device_index, "device_index")
        self._string = _to_string(
            self._job, self._replica, self._task, self._device_type, self._device_index
        )

    @classmethod
    def from_string(cls, spec: str | None) -> DeviceSpec:
        """Parse a device name; ``""`` and ``None`` give the empty spec.

        Raises:
          ValueError: for an unknown component, two device types, or a non-integer index.
        """
        return cls(*_parse(spec))

    def parse_from_string(self, spec: str | None) -> DeviceSpec:
        """TensorFlow 2 name for ``from_string``: returns a new spec, ``self`` is unchanged."""
        return self.from_string(spec)

    def to_string(self) -> str:
        """``/job:<name>/replica:<r>/task:<t>/device:<type>:<index>``, unset parts left out."""
        return self._string

    def make_merged_spec(self, dev: DeviceSpec) -> DeviceSpec:
        """A new spec with ``dev``'s set components taking precedence over this one's."""
        mine, theirs = self._components(), dev._components()
        return type(self)(*(t if t is not None else m for m, t in zip(mine, theirs, strict=True)))

    #: Shorter name for ``make_merged_spec``.
    merge = make_merged_spec

    def replace(self, **kwargs: Any) -> DeviceSpec:
        """A new spec with the given components (constructor keywords) replaced; pass
        ``None`` to clear one.

        Raises TypeError for a keyword that is not a component.
        """
        unknown = set(kwargs) - set(_COMPONENTS)
        if unknown:
            raise TypeError(
                f"replace() got unexpected keyword argument(s) {sorted(unknown)}; "
                f"expected some of {list(_COMPONENTS)}"
            )
        values = dict(zip(_COMPONENTS, self._components(), strict=True))
        values.update(kwargs)
        return type(self)(**values)

    @property
    def job(self) -> str | None:
        return self._job

    @property
    def replica(self) -> int | None:
        return self._replica

    @property
    def task(self) -> int | None:
        return self._task

    @property
    def device_type(self) -> str | None:
        return self._device_type

    @property
    def device_index(self) -> int | None:
        return self._device_index

    def _components(self) -> tuple[Any, ...]:
        return (self._job, self._replica, self._task, self._device_type, self._device_index)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DeviceSpec) and self._string == other._string

    def __hash__(self) -> int:
        return hash(self._string)

    def __repr__(self) -> str:
        return (
            f"<DeviceSpec(job={self._job}, replica={self._replica}, task={self._task}, "
            f"device_type={self._device_type}, device_index={self._device_index})>"
        )

    def __str__(self) -> str:
        return self._string


def _as_index(value: Any, name: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"DeviceSpec {name} must be an integer, got {value!r}") from None


def _parse_index(text: str, name: str, spec: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"Invalid {name} {text!r} while parsing the device spec: '{spec}'."
        ) from None


def _parse(spec: str | None) -> tuple[Any, ...]:
    if spec is not None and not isinstance(spec, str):
        raise TypeError(f"a device spec must be a string, got {type(spec).__name__}")
    spec = spec or ""
    job: str | None = None
    replica = task = device_index = None
    device_type: str | None = None
    for part in spec.split("/"):
        fields = part.split(":")
        key = fields[0]
        if len(fields) == 2 and key == "job":
            job = fields[1]
        elif len(fields) == 2 and key == "replica":
            replica = _parse_index(fields[1], "replica", spec)
        elif len(fields) == 2 and key == "task":
            task = _parse_index(fields[1], "task", spec)
        elif len(fields) in (1, 2) and key.upper() in _SHORT_FORM_DEVICE_TYPES:
            if device_type is not None:
                raise ValueError(
                    f"Multiple device types are not allowed while parsing the device spec: {spec}."
                )
            device_type = key.upper()
            if len(fields) == 2 and fields[1] != "*":
                device_index = _parse_index(fields[1], "device index", spec)
        elif len(fields) == 3 and key == "device":
            if device_type is not None:
                raise ValueError(
                    f"Multiple device types are not allowed while parsing the device spec: {spec}."
                )
            device_type = fields[1]
            if fields[2] != "*":
                device_index = _parse_index(fields[2], "device index", spec)
        elif key != "":
            raise ValueError(
                f"Unknown attribute '{key}' is encountered while parsing the device spec: '{spec}'."
            )
    return job, replica, task, device_type, device_index


def _to_string(
    job: str | None,
    replica: int | None,
    task: int | None,
    device_type: str | None,
    device_index: int | None,
) -> str:
    parts = []
    if job is not None:
        parts.append(f"/job:{job}")
    if replica is not None:
        parts.append(f"/replica:{replica}")
    if task is not None:
        parts.append(f"/task:{task}")
    if device_type is not None:
        parts.append(f"/device:{device_type}:{'*' if device_index is None else device_index}")
    return "".join(parts)
