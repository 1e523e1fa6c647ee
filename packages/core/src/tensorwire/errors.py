"""The error classes of tensorwire, TensorFlow's ``OpError`` family.

Each class carries one canonical status code (the gRPC/absl numbering, which TensorFlow
uses too), so an error raised on a remote task crosses any transport as ``(code, message)``
and comes out on the caller as the same class, with the remote job and task attached.

| class | code | typical cause |
| --- | --- | --- |
| ``CancelledError`` | 1 | a call was cancelled (its server stopped mid-call) |
| ``UnknownError`` | 2 | a function run on a task raised an exception of its own |
| ``InvalidArgumentError`` | 3 | a bad argument: a device not in the cluster, a malformed target |
| ``DeadlineExceededError`` | 4 | a timeout passed (``run(timeout=...)``, ``recv``) |
| ``NotFoundError`` | 5 | no such variable, dataset or job; no transport for a protocol |
| ``AlreadyExistsError`` | 6 | a different function is already registered under that name |
| ``PermissionDeniedError`` | 7 | a wrong token; code refused by a registered-only server |
| ``ResourceExhaustedError`` | 8 | a message over a size limit; no handler thread left |
| ``FailedPreconditionError`` | 9 | the operation does not fit the state (a stopped server) |
| ``AbortedError`` | 10 | a stale RDMA connection (``grpc+verbs`` retries the call itself) |
| ``OutOfRangeError`` | 11 | ``get_next()`` past the end of a ``tw.data`` iterator |
| ``UnimplementedError`` | 12 | a method not served here; a TensorFlow feature not implemented |
| ``InternalError`` | 13 | a broken invariant (a bug) |
| ``UnavailableError`` | 14 | a peer cannot be reached; retrying may help |
| ``DataLossError`` | 15 | malformed or corrupted bytes (codec, journal, wire) |
| ``UnauthenticatedError`` | 16 | a call without the token a server requires |

Examples:
    >>> import tensorwire as tw
    >>> err = tw.errors.from_code(5, "variable 'w' does not exist", task="/job:ps/task:0")
    >>> type(err).__name__, int(err.code), isinstance(err, tw.errors.OpError)
    ('NotFoundError', 5, True)
"""

from __future__ import annotations

import enum
from typing import Any

__all__ = [
    "Code",
    "OpError",
    "CancelledError",
    "UnknownError",
    "InvalidArgumentError",
    "DeadlineExceededError",
    "NotFoundError",
    "AlreadyExistsError",
    "PermissionDeniedError",
    "UnauthenticatedError",
    "ResourceExhaustedError",
    "FailedPreconditionError",
    "AbortedError",
    "OutOfRangeError",
    "UnimplementedError",
    "InternalError",
    "UnavailableError",
    "DataLossError",
    "exception_type_from_error_code",
    "error_code_from_exception_type",
    "from_code",
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
]


class Code(enum.IntEnum):
    """Canonical status codes, numbered as gRPC and TensorFlow number them."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# TensorFlow exposes the codes as module constants (tf.errors.NOT_FOUND, ...).
OK = Code.OK
CANCELLED = Code.CANCELLED
UNKNOWN = Code.UNKNOWN
INVALID_ARGUMENT = Code.INVALID_ARGUMENT
DEADLINE_EXCEEDED = Code.DEADLINE_EXCEEDED
NOT_FOUND = Code.NOT_FOUND
ALREADY_EXISTS = Code.ALREADY_EXISTS
PERMISSION_DENIED = Code.PERMISSION_DENIED
RESOURCE_EXHAUSTED = Code.RESOURCE_EXHAUSTED
FAILED_PRECONDITION = Code.FAILED_PRECONDITION
ABORTED = Code.ABORTED
OUT_OF_RANGE = Code.OUT_OF_RANGE
UNIMPLEMENTED = Code.UNIMPLEMENTED
INTERNAL = Code.INTERNAL
UNAVAILABLE = Code.UNAVAILABLE
DATA_LOSS = Code.DATA_LOSS
UNAUTHENTICATED = Code.UNAUTHENTICATED


class OpError(Exception):
    """An operation failed; base of every tensorwire runtime error.

    Constructed as ``OpError(node_def, op, message, error_code)`` like TensorFlow's class, or
    more conveniently as ``SubClass(message)``. ``task`` names the task that raised it
    (``/job:ps/task:0``) when the error came over the wire. Catch ``OpError`` for any of
    them, or a subclass for one status; ``code`` is the status code, ``message`` the text.

    Args:
      node_def: TensorFlow's ``node_def`` (kept, unused), or the message when it is the
        only argument.
      op: TensorFlow's ``op`` (kept, unused).
      message: what went wrong.
      error_code: the status code; default the class's own.
      task: the task the error came from.

    Raises:
      ValueError: ``error_code`` is not a status code.

    Examples:
        >>> try:
        ...     raise tw.errors.NotFoundError("no variable 'w'")
        ... except tw.errors.OpError as exc:
        ...     print(int(exc.code), exc.message)
        5 no variable 'w'
    """

    code_value: Code = Code.UNKNOWN

    def __init__(
        self,
        node_def: Any = None,
        op: Any = None,
        message: str | None = None,
        error_code: int | None = None,
        *,
        task: str | None = None,
    ) -> None:
        # Convenience: a lone string argument is the message.
        if message is None and isinstance(node_def, str) and op is None:
            message, node_def = node_def, None
        self._node_def = node_def
        self._op = op
        self._message = "" if message is None else str(message)
        self._code = Code(error_code) if error_code is not None else type(self).code_value
        self.task = task
        super().__init__(self._message)

    @property
    def message(self) -> str:
        return self._message

    @property
    def code(self) -> Code:
        return self._code

    @property
    def error_code(self) -> Code:
        return self._code

    @property
    def node_def(self) -> Any:
        return self._node_def

    @property
    def op(self) -> Any:
        return self._op

    def __str__(self) -> str:
        if self.task:
            return f"{self._message} [on {self.task}]"
        return self._message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self._message, int(self._code), self.task))


def _rebuild(cls: type[OpError], message: str, code: int, task: str | None) -> OpError:
    err = cls.__new__(cls)
    OpError.__init__(err, None, None, message, code, task=task)
    return err


class _CodedError(OpError):
    """The base of the error classes with a fixed code: TensorFlow's subclasses take
    ``(node_def, op, message, *args)`` and no error code."""

    def __init__(
        self,
        node_def: Any = None,
        op: Any = None,
        message: str | None = None,
        *args: Any,
        task: str | None = None,
    ) -> None:
        OpError.__init__(self, node_def, op, message, type(self).code_value, task=task)


class CancelledError(_CodedError):
    """gRPC ``CANCELLED`` (1): the call was cancelled: its channel or session was closed, or the
    server stopped with the call in flight."""

    code_value = Code.CANCELLED


class UnknownError(_CodedError):
    """gRPC ``UNKNOWN`` (2): a function run on a task (or any handler) raised an exception that
    is not an ``OpError``; the message has its type, text and remote traceback."""

    code_value = Code.UNKNOWN


class InvalidArgumentError(_CodedError):
    """gRPC ``INVALID_ARGUMENT`` (3): a bad argument: a device or task not in the cluster, an
    address without a valid port, a variable update of another shape or dtype kind."""

    code_value = Code.INVALID_ARGUMENT


class DeadlineExceededError(_CodedError):
    """gRPC ``DEADLINE_EXCEEDED`` (4): a timeout passed before the call completed
    (``run(timeout=...)``, ``recv``, ``operation_timeout_in_ms``)."""

    code_value = Code.DEADLINE_EXCEEDED


class NotFoundError(_CodedError):
    """gRPC ``NOT_FOUND`` (5): no such variable, dataset, job or task, or no transport installed
    for a protocol (the message names the distribution to install)."""

    code_value = Code.NOT_FOUND


class AlreadyExistsError(_CodedError):
    """gRPC ``ALREADY_EXISTS`` (6): ``tw.register_function`` was given a name under which a
    different function is already registered."""

    code_value = Code.ALREADY_EXISTS


class PermissionDeniedError(_CodedError):
    """gRPC ``PERMISSION_DENIED`` (7): the call carries a wrong cluster token, or sends code to a
    server that runs registered functions (or pipelines) only."""

    code_value = Code.PERMISSION_DENIED


class UnauthenticatedError(_CodedError):
    """gRPC ``UNAUTHENTICATED`` (16): the call carries no cluster token and the server requires
    one."""

    code_value = Code.UNAUTHENTICATED


class ResourceExhaustedError(_CodedError):
    """gRPC ``RESOURCE_EXHAUSTED`` (8): a message is over ``max_message_bytes``, or no handler or
    background thread is left for a call (refused at once, never queued)."""

    code_value = Code.RESOURCE_EXHAUSTED


class FailedPreconditionError(_CodedError):
    """gRPC ``FAILED_PRECONDITION`` (9): the operation does not fit the state: a stopped server
    started again, ``tw.current_task()`` outside a task, a server that would listen beyond
    loopback without authentication."""

    code_value = Code.FAILED_PRECONDITION


class AbortedError(_CodedError):
    """gRPC ``ABORTED`` (10): an operation was aborted; the ``grpc+verbs`` transport raises it
    for a stale RDMA connection (the peer restarted) and retries the call itself."""

    code_value = Code.ABORTED


class OutOfRangeError(_CodedError):
    """gRPC ``OUT_OF_RANGE`` (11): iteration went past the end: ``get_next()`` of an exhausted
    ``tw.data`` iterator."""

    code_value = Code.OUT_OF_RANGE


class UnimplementedError(_CodedError):
    """gRPC ``UNIMPLEMENTED`` (12): not implemented: a service or method the server does not
    serve, a TensorFlow feature tensorwire lacks, RDMA on a server without it."""

    code_value = Code.UNIMPLEMENTED


class InternalError(_CodedError):
    """gRPC ``INTERNAL`` (13): a broken invariant, a bug: say, a handler that returned something
    other than a list of frames."""

    code_value = Code.INTERNAL


class UnavailableError(_CodedError):
    """gRPC ``UNAVAILABLE`` (14): a peer cannot be reached or stopped serving, or a port cannot
    be bound; retrying may help."""

    code_value = Code.UNAVAILABLE


class DataLossError(_CodedError):
    """gRPC ``DATA_LOSS`` (15): malformed or corrupted bytes: codec input, the dispatcher's
    journal, a message on the wire."""

    code_value = Code.DATA_LOSS


_CLASS_BY_CODE: dict[Code, type[OpError]] = {
    cls.code_value: cls
    for cls in (
        CancelledError,
        UnknownError,
        InvalidArgumentError,
        DeadlineExceededError,
        NotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        UnauthenticatedError,
        ResourceExhaustedError,
        FailedPreconditionError,
        AbortedError,
        OutOfRangeError,
        UnimplementedError,
        InternalError,
        UnavailableError,
        DataLossError,
    )
}


def exception_type_from_error_code(error_code: int) -> type[OpError]:
    """The class for a status code (TensorFlow's function of the same name).

    Args:
      error_code: a status code, 1 to 16.

    Raises:
      KeyError: no class has that code (0, ``OK``, included).

    Examples:
        >>> tw.errors.exception_type_from_error_code(14).__name__
        'UnavailableError'
    """
    try:
        return _CLASS_BY_CODE[Code(error_code)]
    except (ValueError, KeyError):
        raise KeyError(f"no error class for status code {error_code!r}") from None


def error_code_from_exception_type(cls: type[OpError]) -> Code:
    """The status code of an ``OpError`` subclass.

    Args:
      cls: the class.

    Raises:
      TypeError: ``cls`` is not an ``OpError`` subclass.

    Examples:
        >>> int(tw.errors.error_code_from_exception_type(tw.errors.DataLossError))
        15
    """
    if not (isinstance(cls, type) and issubclass(cls, OpError)):
        raise TypeError(f"expected an OpError subclass, got {cls!r}")
    return cls.code_value


def from_code(code: int, message: str, task: str | None = None) -> OpError:
    """Build the error of ``code`` with ``message``; unknown codes give ``UnknownError``.

    What a transport calls with the ``(code, message)`` it received. Never raises.

    Args:
      code: the status code.
      message: the error's text.
      task: the task it came from.

    Examples:
        >>> raise tw.errors.from_code(4, "Run timed out")       # doctest: +SKIP
        Traceback (most recent call last):
        tensorwire.errors.DeadlineExceededError: Run timed out
    """
    try:
        cls = exception_type_from_error_code(code)
    except KeyError:
        cls = UnknownError
        message = f"[status code {code}] {message}"
    return cls(None, None, message, task=task)
