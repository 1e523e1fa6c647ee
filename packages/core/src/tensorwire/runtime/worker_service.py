"""The service every task hosts: variables, function execution, a rendezvous, status.

Methods (service ``tensorwire.WorkerService``), each taking and returning one value packed
by ``tensorwire.runtime.messages``:

- ``GetStatus``: ``{}`` -> job, task, cluster (``ClusterSpec.as_dict()``), protocol, version.
- ``VarGetOrCreate``: ``{name, initial_value?}`` -> ``{shape, dtype, created}``.
- ``VarRead``: ``{name}`` -> the value.
- ``VarUpdate``: ``{name, op, value, indices?, read_value}`` -> the new value or None.
- ``Run``: ``{fn, args, kwargs}`` -> the function's result.
- ``Send`` / ``Recv``: ``{key, value}`` / ``{key}`` -> the value, waiting until it is sent.

Variables are copy-on-write: an update builds a new array and swaps it in under the
variable's lock, so a read hands out the current array without copying and without ever
seeing a half-applied update.

Variables and the rendezvous hold torch/JAX tensors as NumPy arrays with their framework
recorded (requests are decoded with ``relay=True``): a variable created from a torch tensor
reads back as one, and a tensor sent under a key is received as what was sent, without the
task importing the framework. Only ``Run`` hands functions the framework's own tensors.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import errors, frameworks
from .._version import __version__
from ..transport import CallContext, Service
from . import messages
from .functions import FunctionTable
from .task import running_on

# Shared with the session, which sends Variables passed to run() as references.
VARIABLE_REF_KEY = "__tensorwire_variable__"

if TYPE_CHECKING:
    from .server import Server

SERVICE_NAME = "tensorwire.WorkerService"

__all__ = ["SERVICE_NAME", "WorkerState", "make_worker_service"]


@dataclasses.dataclass
class _Variable:
    value: np.ndarray
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    #: The framework (frameworks.TORCH, JAX) the variable was created from, 0 for NumPy, and
    #: that framework's dtype name: reads give that framework's tensors back.
    framework: int = 0
    dtype_name: str = ""

    def wire_value(self, value: np.ndarray | None = None) -> Any:
        """``value`` (default: the current one) as it is sent: in the variable's framework."""
        value = self.value if value is None else value
        if self.framework:
            return frameworks.FrameworkArray(self.framework, self.dtype_name, value)
        return value


def _as_array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, frameworks.FrameworkArray):
        return value.array  # a torch/JAX tensor, received as NumPy
    try:
        array = np.asarray(value)
    except Exception as exc:  # noqa: BLE001
        raise errors.InvalidArgumentError(f"{what} is not array-like: {exc}") from None
    if array.dtype == object:
        raise errors.InvalidArgumentError(
            f"{what} must be a numeric or string array, not objects of {type(value).__name__}"
        )
    return array


def _describe(array: np.ndarray) -> str:
    return f"shape {tuple(array.shape)} and dtype {array.dtype.name}"


def _conform(var_name: str, current: np.ndarray, value: Any, op: str) -> np.ndarray:
    """``value`` as an array of the variable's shape and dtype, or an error saying why not."""
    array = _as_array(value, f"the value for {op} of variable {var_name!r}")
    if array.shape != current.shape:
        raise errors.InvalidArgumentError(
            f"{op} of variable {var_name!r}: value has shape {tuple(array.shape)}, the variable "
            f"has shape {tuple(current.shape)}"
        )
    if array.dtype != current.dtype:
        if not np.can_cast(array.dtype, current.dtype, casting="same_kind"):
            raise errors.InvalidArgumentError(
                f"{op} of variable {var_name!r}: value has dtype {array.dtype.name}, the "
                f"variable has dtype {current.dtype.name}"
            )
        array = array.astype(current.dtype)
    return array


class _Rendezvous:
    """Tensors sent to this task by key; ``recv`` waits for the key's next value.

    Waiters wait on a condition of their key (all sharing one lock), so a ``send`` wakes
    only the ``recv`` calls of its key, not every one pending on the task.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, collections.deque[Any]] = {}
        # key -> (condition, number of recv calls waiting on it)
        self._waiters: dict[str, tuple[threading.Condition, int]] = {}
        self._closed = False

    def send(self, key: str, value: Any) -> None:
        with self._lock:
            self._items.setdefault(key, collections.deque()).append(value)
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters[0].notify_all()

    def recv(self, key: str, timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            value = self._take(key)
            if value is not _NOTHING:
                return value
            cond, count = self._waiters.get(key) or (threading.Condition(self._lock), 0)
            self._waiters[key] = (cond, count + 1)
            try:
                while True:
                    if self._closed:
                        raise errors.CancelledError(f"recv of {key!r}: the task is shutting down")
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise errors.DeadlineExceededError(
                            f"recv of {key!r}: nothing was sent within {timeout:.3g}s"
                        )
                    # Wake up periodically to notice shutdown even without a deadline.
                    cond.wait(1.0 if remaining is None else min(remaining, 1.0))
                    value = self._take(key)
                    if value is not _NOTHING:
                        return value
            finally:
                cond, count = self._waiters[key]
                if count == 1:
                    del self._waiters[key]
                else:
                    self._waiters[key] = (cond, count - 1)

    def _take(self, key: str) -> Any:
        """The key's next value, or ``_NOTHING``. Caller holds the lock."""
        queue = self._items.get(key)
        if not queue:
            return _NOTHING
        value = queue.popleft()
        if not queue:
            del self._items[key]
        return value

    def pending(self) -> int:
        """Tensors sent and not received yet, over all keys."""
        with self._lock:
            return sum(len(queue) for queue in self._items.values())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for cond, _ in self._waiters.values():
                cond.notify_all()


_NOTHING = object()


class WorkerState:
    """What one task holds: its variables, rendezvous and function policy."""

    def __init__(self, server: Server, allow_code_from_wire: bool) -> None:
        self._server = server
        self.functions = FunctionTable(allow_code_from_wire)
        self.variables: dict[str, _Variable] = {}
        self._variables_lock = threading.Lock()
        self.rendezvous = _Rendezvous()

    @property
    def allow_pickle(self) -> bool:
        return self.functions.allow_code_from_wire

    def get_variable(self, name: str) -> _Variable:
        var = self.variables.get(name)
        if var is None:
            raise errors.NotFoundError(
                f"Variable {name!r} does not exist on {self._server.task_name}; create it "
                "with session.variable(name, initial_value)"
            )
        return var

    # -- handlers ----------------------------------------------------------------------
    def status(self, request: Any, context: CallContext) -> Any:
        return {
            "job": self._server.server_def.job_name,
            "task": int(self._server.server_def.task_index),
            "cluster": self._server.cluster_spec.as_dict(),
            "protocol": self._server.server_def.protocol,
            "version": __version__,
            "pid": os.getpid(),
        }

    def var_get_or_create(self, request: dict[str, Any], context: CallContext) -> Any:
        name = _name(request)
        initial = request.get("initial_value")
        with self._variables_lock:
            var = self.variables.get(name)
            created = var is None
            if created:
                if initial is None:
                    raise errors.NotFoundError(
                        f"Variable {name!r} does not exist on {self._server.task_name} and no "
                        "initial_value was given to create it"
                    )
                value = _as_array(initial, f"initial_value of {name!r}")  # owned: no copy
                var = self.variables[name] = _Variable(value)
                if isinstance(initial, frameworks.FrameworkArray):
                    var.framework = initial.framework
                    var.dtype_name = initial.dtype_name
        assert var is not None  # found, or created above
        if not created and initial is not None:
            wanted = _as_array(initial, f"initial_value of {name!r}")
            if wanted.shape != var.value.shape or wanted.dtype != var.value.dtype:
                raise errors.InvalidArgumentError(
                    f"Variable {name!r} already exists on {self._server.task_name} with "
                    f"{_describe(var.value)}; the initial_value given has {_describe(wanted)}"
                )
        return {
            "shape": list(var.value.shape),
            "dtype": var.value.dtype.str,
            # The name tells ml_dtypes types (bfloat16: str "<V2") from raw bytes.
            "dtype_name": var.value.dtype.name,
            "created": created,
        }

    def var_read(self, request: dict[str, Any], context: CallContext) -> Any:
        return self.get_variable(_name(request)).wire_value()

    def var_update(self, request: dict[str, Any], context: CallContext) -> Any:
        name = _name(request)
        op = request.get("op")
        var = self.get_variable(name)
        with var.lock:
            current = var.value
            if op == "assign":
                # The decoded value is a view of a receive buffer this call owns alone, and
                # variables are never written in place, so it can be kept without a copy.
                new = _conform(name, current, request.get("value"), op)
            elif op == "assign_add":
                new = current + _conform(name, current, request.get("value"), op)
            elif op == "assign_sub":
                new = current - _conform(name, current, request.get("value"), op)
            elif op == "scatter_add":
                new = _scatter_add(name, current, request.get("indices"), request.get("value"))
            else:
                raise errors.InvalidArgumentError(f"unknown variable update {op!r}")
            var.value = new.astype(current.dtype, copy=False)
            return var.wire_value() if request.get("read_value") else None

    def run(self, request: dict[str, Any], context: CallContext) -> Any:
        fn = self.functions.resolve(request.get("fn"))
        args = request.get("args") or ()
        kwargs = request.get("kwargs") or {}
        if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
            raise errors.InvalidArgumentError("Run: args must be a sequence and kwargs a dict")
        with running_on(self._server.task_info):
            args = [self._resolve_reference(a) for a in args]
            kwargs = {k: self._resolve_reference(v) for k, v in kwargs.items()}
            try:
                return fn(*args, **kwargs)
            except errors.OpError:
                raise
            except Exception as exc:  # noqa: BLE001 - the user's error, reported to the caller
                name = getattr(fn, "__qualname__", repr(fn))
                tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
                raise errors.UnknownError(
                    f"{name} raised {type(exc).__name__}: {exc}\nRemote traceback (last "
                    f"frames):\n{tb}"
                ) from None

    def _resolve_reference(self, value: Any) -> Any:
        """A Variable passed to ``run`` arrives as a reference: its current value."""
        if not (isinstance(value, dict) and len(value) == 1 and VARIABLE_REF_KEY in value):
            return value
        device, name = value[VARIABLE_REF_KEY]
        info = self._server.task_info
        if device == info.device:
            var = self.get_variable(name)
            if var.framework:  # created from a torch/JAX tensor: the function gets one
                return frameworks.restore(var.framework, var.dtype_name, var.value)
            return var.value
        return info.session.variable(name, device=device).read()

    def send(self, request: dict[str, Any], context: CallContext) -> Any:
        key = request.get("key")
        if not isinstance(key, str) or not key:
            raise errors.InvalidArgumentError(f"send: key must be a non-empty string, got {key!r}")
        self.rendezvous.send(key, request.get("value"))
        return None

    def recv(self, request: dict[str, Any], context: CallContext) -> Any:
        key = request.get("key")
        if not isinstance(key, str) or not key:
            raise errors.InvalidArgumentError(f"recv: key must be a non-empty string, got {key!r}")
        return self.rendezvous.recv(key, context.time_remaining())


def _name(request: Any) -> str:
    if not isinstance(request, dict):
        raise errors.InvalidArgumentError(f"request must be a dict, got {type(request).__name__}")
    name = request.get("name")
    if not isinstance(name, str) or not name:
        raise errors.InvalidArgumentError(f"variable name must be a non-empty string: {name!r}")
    return name


def _scatter_add(name: str, current: np.ndarray, indices: Any, updates: Any) -> np.ndarray:
    if current.ndim == 0:
        raise errors.InvalidArgumentError(f"scatter_add on scalar variable {name!r}")
    idx = _as_array(indices, f"indices for scatter_add of {name!r}")
    if idx.dtype.kind not in "iu":
        raise errors.InvalidArgumentError(
            f"scatter_add of {name!r}: indices must be integers, got dtype {idx.dtype.name}"
        )
    if idx.size and (idx.min() < 0 or idx.max() >= current.shape[0]):
        bad = idx[(idx < 0) | (idx >= current.shape[0])].flat[0]
        raise errors.InvalidArgumentError(
            f"scatter_add of {name!r}: index {int(bad)} is out of range [0, {current.shape[0]})"
        )
    upd = _as_array(updates, f"updates for scatter_add of {name!r}")
    expected = tuple(idx.shape) + tuple(current.shape[1:])
    if upd.shape != expected:
        raise errors.InvalidArgumentError(
            f"scatter_add of {name!r}: updates have shape {tuple(upd.shape)}, expected "
            f"{expected} (indices shape + variable shape[1:])"
        )
    new = current.copy()
    np.add.at(new, idx, upd.astype(current.dtype, copy=False))
    return new


def make_worker_service(state: WorkerState) -> Service:
    service = Service(SERVICE_NAME)

    def unary(name: str, handler: Callable[[Any, CallContext], Any], relay: bool = True) -> None:
        # relay: tensors stay FrameworkArray (NumPy inside) for handlers that store or forward
        # them; only Run, which calls user code, gets the frameworks' own tensors.
        def method(frames: list[memoryview], context: CallContext) -> list[Any]:
            # allow_pickle is read at call time: the server's config may change it.
            request = messages.unpack(frames, allow_pickle=state.allow_pickle, relay=relay)
            return messages.pack(handler(request, context))

        service.add(name, method)

    unary("GetStatus", state.status)
    unary("VarGetOrCreate", state.var_get_or_create)
    unary("VarRead", state.var_read)
    unary("VarUpdate", state.var_update)
    unary("Run", state.run, relay=False)
    unary("Send", state.send)
    unary("Recv", state.recv)
    return service
