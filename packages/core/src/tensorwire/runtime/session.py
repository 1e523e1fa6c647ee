"""``tw.Session``: a client of a whole cluster, reached through one of its servers.

The session asks the server it connects to for the cluster, then talks to every task
directly over the server's protocol. Work is placed with ``device=`` or ``with
tw.device(...)``; names are TensorFlow device names (``/job:ps/task:0``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

from .. import errors, frameworks
from ..cluster import ClusterSpec, DeviceSpec
from ..transport import Channel, get_transport
from ..transport.base import RESPONSE_BYTES_METADATA_KEY
from . import messages
from .functions import spec_of
from .options import connect_timeout, operation_timeout, transport_options
from .worker_service import SERVICE_NAME, VARIABLE_REF_KEY

__all__ = ["Session", "Variable", "device", "DeviceAttributes", "VARIABLE_REF_KEY"]

# Seconds to wait for the first answer from the server a session connects to, when the
# config sets no operation timeout: a dead address must fail, not hang.
_CONNECT_TIMEOUT = 30.0
#: Device strings whose placement a session remembers (the cluster never changes under it).
_MAX_CACHED_PLACEMENTS = 1024
#: Responses expected to be at least this large are announced to the transport.
_ANNOUNCE_RESPONSE_BYTES = 64 * 1024

_device_stack = threading.local()


@contextlib.contextmanager
def device(name: str | DeviceSpec | None) -> Iterator[None]:
    """Place the work of sessions in this block on ``name`` (``"/job:ps/task:0"``).

    Nested blocks merge like TensorFlow's: ``with device("/job:ps"): with
    device("/task:1")`` means ``/job:ps/task:1``. ``device(None)`` clears the placement.
    An explicit ``device=`` argument of a session method wins over the block.

    Args:
      name: a device name or ``DeviceSpec``, or None.

    Raises:
      ValueError: ``name`` is not a valid device name.

    Examples:
        >>> with tw.device("/job:ps/task:0"):                     # doctest: +SKIP
        ...     w = sess.variable("w", np.zeros(3))               # created on the ps
    """
    stack: list[DeviceSpec | None] = _device_stack.__dict__.setdefault("stack", [])
    if name is None:
        spec = None
    else:
        spec = name if isinstance(name, DeviceSpec) else DeviceSpec.from_string(name)
        outer = stack[-1] if stack else None
        if outer is not None:
            spec = outer.make_merged_spec(spec)
    stack.append(spec)
    try:
        yield
    finally:
        stack.pop()


def _default_device() -> DeviceSpec | None:
    stack = getattr(_device_stack, "stack", None)
    return stack[-1] if stack else None


class DeviceAttributes(NamedTuple):
    """One entry of ``Session.list_devices``: a task's CPU device.

    Examples:
        >>> [d.name for d in sess.list_devices()]                 # doctest: +SKIP
        ['/job:ps/replica:0/task:0/device:CPU:0', '/job:worker/replica:0/task:0/device:CPU:0']
    """

    name: str
    device_type: str
    memory_limit_bytes: int


def _parse_target(target: str) -> tuple[str, str]:
    if not isinstance(target, str):
        raise TypeError(f"target must be a string like 'grpc://localhost:2222', got {target!r}")
    protocol, sep, address = target.partition("://")
    if not sep or not protocol or not address:
        raise errors.InvalidArgumentError(
            f"target {target!r} is not of the form '<protocol>://<host>:<port>'"
        )
    return protocol, address


class Session:
    """A connection to a cluster through the server at ``target``.

    Connecting asks that server for the cluster; every task of it is then reachable
    (``device=...``). A context manager; ``close()`` releases the channels.

    Args:
      target: ``"<protocol>://<host>:<port>"``, e.g. ``server.target``.
      config: a ``ConfigProto``: ``operation_timeout_in_ms`` bounds every call that gives no
        ``timeout`` of its own; ``tensorwire.cluster_token`` / ``tensorwire.tls`` are the
        credentials the calls carry (default: ``TENSORWIRE_CLUSTER_TOKEN``,
        ``TENSORWIRE_TLS_*``).

    Raises:
      TypeError: ``target`` is not a string.
      InvalidArgumentError: ``target`` is not of the form ``protocol://host:port``.
      NotFoundError: no transport is installed for the protocol (the message says which
        distribution provides it).
      UnavailableError: the server did not answer.
      UnauthenticatedError: the server requires a token and none was sent
        (``PermissionDeniedError`` for a wrong one).

    Examples:
        >>> workers, ps = tw.test.create_local_cluster(num_workers=1, num_ps=1)
        >>> with tw.Session(workers[0].target) as sess:
        ...     v = sess.variable("v", np.zeros(2), device="/job:ps/task:0")
        ...     _ = v.assign_add(np.ones(2))
        ...     print(sess.run(np.sum, v.read(), device="/job:worker/task:0"))
        2.0
    """

    def __init__(self, target: str, config: Any = None) -> None:
        self._protocol, self._address = _parse_target(target)
        self._target = target
        self._config = config
        self._timeout = operation_timeout(config)
        self._options = transport_options(config)
        self._transport = get_transport(self._protocol)
        self._channels: dict[str, Channel] = {}
        #: ``(job, task) -> (channel, task name)``: every call looks its task up here.
        self._routes: dict[tuple[str, int], tuple[Channel, str]] = {}
        self._channels_lock = threading.Lock()
        self._closed = False
        status = self._call_address(
            self._address,
            "GetStatus",
            {},
            connect_timeout(config, _CONNECT_TIMEOUT),
            where=target,
        )
        self._cluster_spec = ClusterSpec(status["cluster"])
        self._job = str(status["job"])
        self._task = int(status["task"])
        self._placements: dict[str | None, tuple[str, int]] = {}

    # -- basics ----------------------------------------------------------------------------
    @property
    def target(self) -> str:
        return self._target

    @property
    def cluster_spec(self) -> ClusterSpec:
        """The cluster of the server this session connected to."""
        return self._cluster_spec

    @property
    def sess_str(self) -> str:
        return self._target

    def list_devices(self) -> list[DeviceAttributes]:
        """Every task's CPU device, as ``/job:x/replica:0/task:i/device:CPU:0``."""
        return [
            DeviceAttributes(f"/job:{job}/replica:0/task:{index}/device:CPU:0", "CPU", 0)
            for job in self._cluster_spec.jobs
            for index in self._cluster_spec.task_indices(job)
        ]

    def close(self) -> None:
        """Close every channel. Idempotent; a closed session refuses further calls."""
        with self._channels_lock:
            self._closed = True
            channels, self._channels = list(self._channels.values()), {}
            self._routes = {}
        for channel in channels:
            channel.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<tw.Session {self._target} jobs={self._cluster_spec.jobs}>"

    # -- placement -------------------------------------------------------------------------
    def _resolve(self, dev: str | DeviceSpec | None) -> tuple[str, int]:
        """``(job, task)`` of a device, validated against the cluster."""
        if (dev is None or isinstance(dev, str)) and _default_device() is None:
            # The same few device strings come with every call: parse and check each once.
            found = self._placements.get(dev)
            if found is None:
                found = self._resolve_spec(dev)
                if len(self._placements) < _MAX_CACHED_PLACEMENTS:
                    self._placements[dev] = found
            return found
        return self._resolve_spec(dev)

    def _resolve_spec(self, dev: str | DeviceSpec | None) -> tuple[str, int]:
        spec = dev if isinstance(dev, DeviceSpec) or dev is None else DeviceSpec.from_string(dev)
        outer = _default_device()
        if outer is not None:
            spec = outer if spec is None else outer.make_merged_spec(spec)
        job = spec.job if spec is not None and spec.job else self._job
        if spec is not None and spec.task is not None:
            task = int(spec.task)
        elif spec is not None and spec.job and spec.job != self._job:
            task = 0
        else:
            task = self._task
        if job not in self._cluster_spec.jobs:
            raise errors.InvalidArgumentError(
                f"device {_name(job, task)}: job {job!r} is not in the cluster (jobs: "
                f"{', '.join(self._cluster_spec.jobs)})"
            )
        if task not in self._cluster_spec.task_indices(job):
            raise errors.InvalidArgumentError(
                f"device {_name(job, task)}: job {job!r} has no task {task} (tasks: "
                f"{self._cluster_spec.task_indices(job)})"
            )
        return job, task

    def _task_address(self, job: str, task: int) -> str:
        address = self._cluster_spec.task_address(job, task)
        # A ClusterSpec accepts bytes addresses, as TensorFlow's does.
        return address.decode() if isinstance(address, bytes) else address

    def _route(self, job: str, task: int) -> tuple[Channel, str]:
        """The channel to a task and the task's name (for errors), found once per task."""
        route = self._routes.get((job, task))
        if route is None or self._closed:
            route = (self._channel(self._task_address(job, task)), _name(job, task))
            self._routes[job, task] = route
        return route

    def _channel(self, address: str) -> Channel:
        with self._channels_lock:
            if self._closed:
                raise errors.CancelledError("the session is closed")
            channel = self._channels.get(address)
            if channel is None:
                channel = self._channels[address] = self._transport.connect(address, self._options)
            return channel

    def _deadline(self, timeout: float | None) -> float | None:
        return self._timeout if timeout is None else timeout

    def _call(
        self,
        job: str,
        task: int,
        method: str,
        request: Any,
        timeout: float | None,
        response_bytes: int = 0,
    ) -> Any:
        channel, where = self._route(job, task)
        return self._call_channel(
            channel, method, request, self._deadline(timeout), where, response_bytes
        )

    def _call_address(
        self, address: str, method: str, request: Any, timeout: float | None, where: str
    ) -> Any:
        return self._call_channel(self._channel(address), method, request, timeout, where)

    def _call_channel(
        self,
        channel: Channel,
        method: str,
        request: Any,
        timeout: float | None,
        where: str,
        response_bytes: int = 0,
    ) -> Any:
        # A response we know will be large (a variable's value) is announced, so that the
        # transport can give it its large-message path from the start.
        metadata = None
        if response_bytes >= _ANNOUNCE_RESPONSE_BYTES:
            metadata = {RESPONSE_BYTES_METADATA_KEY: str(response_bytes)}
        try:
            reply = channel.call(
                SERVICE_NAME, method, messages.pack(request), timeout=timeout, metadata=metadata
            )
            return messages.unpack(reply)
        except errors.OpError as exc:
            if exc.task is None:
                exc.task = where
            raise

    # -- variables -------------------------------------------------------------------------
    def variable(
        self,
        name: str,
        initial_value: Any = None,
        device: str | DeviceSpec | None = None,
    ) -> Variable:
        """The variable ``name`` on ``device``, created from ``initial_value`` if absent.

        Many workers calling this with the same name share one variable (get-or-create).

        Args:
          name: the variable's name on its task.
          initial_value: an array (or anything ``np.asarray`` takes) used if the variable
            does not exist yet; ignored if it does.
          device: the task, e.g. ``"/job:ps/task:0"``; default the ``tw.device`` block, else
            the task this session connected to.

        Raises:
          ValueError: an empty name.
          NotFoundError: no ``initial_value`` and no such variable.
          InvalidArgumentError: ``device`` names no task of the cluster.

        Examples:
            >>> w = sess.variable("w", np.zeros(10), device="/job:ps/task:0")  # doctest: +SKIP
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"variable name must be a non-empty string, got {name!r}")
        job, task = self._resolve(device)
        request: dict[str, Any] = {"name": name}
        if initial_value is not None:
            request["initial_value"] = _tensor_or_array(initial_value)
        reply = self._call(job, task, "VarGetOrCreate", request, None)
        return Variable(self, name, job, task, tuple(reply["shape"]), _reply_dtype(reply))

    # -- functions -------------------------------------------------------------------------
    def _run_request(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "fn": spec_of(fn),
            "args": tuple(map(_ref_or_value, args)),
            "kwargs": {k: _ref_or_value(v) for k, v in kwargs.items()},
        }

    def run(
        self,
        fn: Callable[..., Any],
        *args: Any,
        device: str | DeviceSpec | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` on ``device`` and return its result.

        Arguments and results travel through the tensor codec (arrays without copies).
        A ``Variable`` argument arrives as the variable's current value. ``fn`` goes by
        reference when the task can import it, by value (cloudpickle) otherwise.

        Args:
          fn: the function; inside it, ``tw.current_task()`` describes the task.
          *args: its positional arguments.
          device: the task to run on (default as for ``variable``).
          timeout: seconds; default the config's ``operation_timeout_in_ms``.
          **kwargs: its keyword arguments.

        Raises:
          UnknownError: ``fn`` raised; the message has its type, message and traceback.
          PermissionDeniedError: the server runs registered functions only and ``fn`` is
            not registered (see ``tw.register_function``).
          DeadlineExceededError: ``timeout`` passed.
          InvalidArgumentError: ``device`` names no task of the cluster.

        Examples:
            >>> x = np.ones(3)
            >>> sess.run(np.dot, x, x, device="/job:worker/task:1")  # doctest: +SKIP
            3.0
        """
        job, task = self._resolve(device)
        return self._call(job, task, "Run", self._run_request(fn, args, kwargs), timeout)

    def run_async(
        self,
        fn: Callable[..., Any],
        *args: Any,
        device: str | DeviceSpec | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> concurrent.futures.Future[Any]:
        """Like ``run``, returning a ``concurrent.futures.Future`` of the result.

        The errors ``run`` raises are set on the future instead.

        Examples:
            >>> futures = [sess.run_async(step, device=f"/job:worker/task:{i}")
            ...            for i in range(2)]                                  # doctest: +SKIP
            >>> results = [f.result(timeout=60) for f in futures]              # doctest: +SKIP
        """
        channel, where = self._route(*self._resolve(device))
        frames = messages.pack(self._run_request(fn, args, kwargs))
        inner = channel.call_async(SERVICE_NAME, "Run", frames, timeout=self._deadline(timeout))
        outer: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def finish(done: concurrent.futures.Future[Any]) -> None:
            try:
                outer.set_result(messages.unpack(done.result()))
            except errors.OpError as exc:
                if exc.task is None:
                    exc.task = where
                outer.set_exception(exc)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                outer.set_exception(exc)

        inner.add_done_callback(finish)
        return outer

    # -- rendezvous ------------------------------------------------------------------------
    def send(self, key: str, value: Any, device: str | DeviceSpec | None = None) -> None:
        """Deliver ``value`` under ``key`` to the task ``device``; a ``recv`` there gets it.

        Values sent under one key are received in order, each once.

        Raises:
          InvalidArgumentError: ``device`` names no task of the cluster.

        Examples:
            >>> sess.send("grads", np.ones(3), device="/job:ps/task:0")          # doctest: +SKIP
            >>> sess.recv("grads", device="/job:ps/task:0")                       # doctest: +SKIP
            array([1., 1., 1.])
        """
        job, task = self._resolve(device)
        self._call(job, task, "Send", {"key": key, "value": value}, None)

    def recv(
        self, key: str, device: str | DeviceSpec | None = None, timeout: float | None = None
    ) -> Any:
        """The next value sent under ``key`` to ``device``, waiting up to ``timeout``.

        Raises:
          DeadlineExceededError: nothing arrived within ``timeout`` seconds.
          InvalidArgumentError: ``device`` names no task of the cluster.

        Examples:
            >>> value = sess.recv("grads", device="/job:ps/task:0", timeout=10)   # doctest: +SKIP
        """
        job, task = self._resolve(device)
        return self._call(job, task, "Recv", {"key": key}, timeout)


class Variable:
    """A variable living on one task; every method is one call to that task.

    Made by ``Session.variable`` (not constructed directly). The value lives on the
    task in ``device``; every session of the cluster that asks for the same name on that
    task gets the same variable. Updates are atomic on the task (concurrent
    ``assign_add`` calls from many workers all count) and keep the variable's shape and
    dtype. Passed as an argument to ``Session.run``, a variable arrives in the function
    as its current value, read on the task that runs it.

    Every method that calls the task can raise what the call can: ``UnavailableError``
    (the task is down), ``DeadlineExceededError`` (the session's
    ``operation_timeout_in_ms``, or ``timeout``, passed), ``CancelledError`` (the session
    is closed).

    Examples:
        >>> workers, ps = tw.test.create_local_cluster(num_workers=1, num_ps=1)
        >>> with tw.Session(workers[0].target) as sess:
        ...     v = sess.variable("w", np.zeros(3), device="/job:ps/task:0")
        ...     _ = v.assign([1.0, 2.0, 3.0])
        ...     print(v.assign_add(np.ones(3), read_value=True))
        ...     print(v.scatter_add([0, 0], [10.0, 5.0], read_value=True))
        ...     print(v.shape, v.dtype, v.device)
        [2. 3. 4.]
        [17.  3.  4.]
        (3,) float64 /job:ps/replica:0/task:0/device:CPU:0
    """

    def __init__(
        self,
        session: Session,
        name: str,
        job: str,
        task: int,
        shape: tuple[int, ...],
        dtype: np.dtype[Any],
    ) -> None:
        self._session = session
        self._name = name
        self._job = job
        self._task = task
        self._shape = shape
        self._dtype = dtype

    @property
    def name(self) -> str:
        """The variable's name on its task."""
        return self._name

    @property
    def device(self) -> str:
        """The task holding it, as ``/job:ps/replica:0/task:0/device:CPU:0``."""
        return f"/job:{self._job}/replica:0/task:{self._task}/device:CPU:0"

    @property
    def shape(self) -> tuple[int, ...]:
        """Its shape, fixed when it was created."""
        return self._shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """Its NumPy dtype, fixed when it was created."""
        return self._dtype

    def read(self, timeout: float | None = None) -> Any:
        """The current value (a consistent snapshot).

        Args:
          timeout: seconds; default the session's ``operation_timeout_in_ms``.

        Returns:
          A NumPy array of the variable's shape and dtype, or a ``torch.Tensor`` /
          ``jax.Array`` for a variable created from one; owned by the caller (later
          updates do not change it).

        Raises:
          DeadlineExceededError: ``timeout`` passed.
          UnavailableError: the task holding the variable cannot be reached.

        Examples:
            >>> v.read()                                   # doctest: +SKIP
            array([2., 3., 4.])
        """
        return self._session._call(
            self._job,
            self._task,
            "VarRead",
            {"name": self._name},
            timeout,
            response_bytes=self._dtype.itemsize * math.prod(self._shape),
        )

    def read_value(self) -> Any:
        """TensorFlow's name for ``read`` (no timeout argument)."""
        return self.read()

    def numpy(self) -> np.ndarray:
        """The current value as a NumPy array (as ``tf.Variable.numpy()``), whatever
        framework the variable came from."""
        value: np.ndarray = frameworks.to_numpy(self.read())
        return value

    def _update(self, op: str, value: Any, read_value: bool, indices: Any = None) -> Any:
        request: dict[str, Any] = {
            "name": self._name,
            "op": op,
            "value": _tensor_or_array(value),
            "read_value": bool(read_value),
        }
        if indices is not None:
            request["indices"] = _tensor_or_array(indices)
        result = self._session._call(
            self._job,
            self._task,
            "VarUpdate",
            request,
            None,
            response_bytes=self._dtype.itemsize * math.prod(self._shape) if read_value else 0,
        )
        return result if read_value else self

    def assign(self, value: Any, read_value: bool = False) -> Any:
        """Set the value (same shape; dtype cast only within its kind).

        Args:
          value: an array (or anything ``np.asarray`` takes) of the variable's shape; its
            dtype is cast to the variable's when that stays within a kind (float64 into
            float32 yes, a string or complex into float no).
          read_value: return the new value instead of the variable.

        Returns:
          The variable, or the new value when ``read_value=True``.

        Raises:
          InvalidArgumentError: ``value`` has another shape, a dtype that cannot be cast
            within its kind, or is not array-like.

        Examples:
            >>> v.assign(np.arange(3.0), read_value=True)          # doctest: +SKIP
            array([0., 1., 2.])
        """
        return self._update("assign", value, read_value)

    def assign_add(self, delta: Any, read_value: bool = False) -> Any:
        """Add ``delta`` atomically on the task holding the variable.

        Args:
          delta: an array of the variable's shape (no broadcasting), cast as for
            ``assign``.
          read_value: return the new value instead of the variable.

        Returns:
          The variable, or the new value when ``read_value=True``.

        Raises:
          InvalidArgumentError: ``delta`` has another shape or a dtype of another kind.

        Examples:
            >>> v.assign_add(np.ones(3), read_value=True)          # doctest: +SKIP
            array([1., 2., 3.])
        """
        return self._update("assign_add", delta, read_value)

    def assign_sub(self, delta: Any, read_value: bool = False) -> Any:
        """Subtract ``delta`` atomically on the task holding the variable.

        Args:
          delta: an array of the variable's shape (no broadcasting), cast as for
            ``assign``.
          read_value: return the new value instead of the variable.

        Returns:
          The variable, or the new value when ``read_value=True``.

        Raises:
          InvalidArgumentError: ``delta`` has another shape or a dtype of another kind.

        Examples:
            >>> _ = v.assign_sub(0.1 * grads)                       # doctest: +SKIP
        """
        return self._update("assign_sub", delta, read_value)

    def scatter_add(self, indices: Any, updates: Any, read_value: bool = False) -> Any:
        """``var[indices[i]] += updates[i]`` for every i, atomically; repeated indices add up.

        Args:
          indices: integer indices into the variable's first dimension.
          updates: an array of shape ``indices.shape + variable.shape[1:]``.
          read_value: return the new value instead of the variable.

        Returns:
          The variable, or the new value when ``read_value=True``.

        Raises:
          InvalidArgumentError: the variable is a scalar, ``indices`` are not integers or
            out of range, or ``updates`` has the wrong shape.

        Examples:
            >>> emb = sess.variable("emb", np.zeros((4, 2)))             # doctest: +SKIP
            >>> emb.scatter_add([1, 1], np.ones((2, 2)), read_value=True)  # doctest: +SKIP
            array([[0., 0.],
                   [2., 2.],
                   [0., 0.],
                   [0., 0.]])
            array([2., 2.])
        """
        return self._update("scatter_add", updates, read_value, indices=indices)

    def __repr__(self) -> str:
        return (
            f"<tw.Variable {self._name!r} shape={self._shape} dtype={self._dtype.name} "
            f"device={self.device}>"
        )


def _tensor_or_array(value: Any) -> Any:
    """``value`` as a variable takes it: torch/JAX tensors as they are (the codec carries them
    and a variable created from one reads back as one), anything else as a NumPy array."""
    if frameworks.is_tensor(value):
        return value
    return np.asarray(value)


def _reply_dtype(reply: dict[str, Any]) -> np.dtype[Any]:
    dtype = np.dtype(reply["dtype"])
    if dtype.type is np.void:  # bfloat16/float8 spell themselves "<V2"/"|V1": use the name
        named = frameworks.ml_dtype(reply.get("dtype_name", ""))
        if named is not None:
            return named
    return dtype


def _ref_or_value(value: Any) -> Any:
    if isinstance(value, Variable):
        return {VARIABLE_REF_KEY: [value.device, value.name]}
    return value


def _name(job: str, task: int) -> str:
    return f"/job:{job}/task:{task}"
