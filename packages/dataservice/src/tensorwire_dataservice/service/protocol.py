"""The wire between client, dispatcher and worker: names, message helpers, retries.

Every request and reply is a dict encoded with ``tensorwire.codec``; element messages
additionally carry the elements (nested NumPy structures), optionally compressed (zstd for
``"AUTO"``, snappy for ``"SNAPPY"``; see ``elements``). The dispatcher and the workers
are two plain ``tensorwire.transport.Service`` tables, so the data service runs over any
installed protocol (``grpc`` by default, ``inproc`` in-process).
"""

from __future__ import annotations

import enum
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from tensorwire import codec, errors
from tensorwire.transport import get_transport
from tensorwire.transport.base import Channel, TransportOptions

from .config import DEFAULT_PROTOCOL, client_transport_options

__all__ = [
    "DISPATCHER_SERVICE",
    "WORKER_SERVICE",
    "ShardingPolicy",
    "PARALLEL_EPOCHS",
    "DISTRIBUTED_EPOCH",
    "COMPRESSION_AUTO",
    "COMPRESSION_NONE",
    "COMPRESSION_SNAPPY",
    "parse_service",
    "sharding_policy_from",
    "pack",
    "unpack",
    "refusing_malformed",
    "channel_to",
    "call",
    "call_with_retries",
    "RETRYABLE",
]

log = logging.getLogger(__name__)

DISPATCHER_SERVICE = "tensorwire.data.Dispatcher"
WORKER_SERVICE = "tensorwire.data.Worker"

PARALLEL_EPOCHS = "parallel_epochs"
DISTRIBUTED_EPOCH = "distributed_epoch"
COMPRESSION_AUTO = "AUTO"
COMPRESSION_NONE = None
COMPRESSION_SNAPPY = "SNAPPY"

#: Failures that mean "the peer is (temporarily) not there": worth retrying.
RETRYABLE: tuple[type[errors.OpError], ...] = (
    errors.UnavailableError,
    errors.DeadlineExceededError,
    errors.AbortedError,
)


class ShardingPolicy(enum.IntEnum):
    """How the data service shards a dataset among its workers (TensorFlow's values).

    OFF: every worker produces the whole dataset ("parallel_epochs").
    DYNAMIC: the dispatcher hands out splits of the source at run time
      ("distributed_epoch"); exactly once through dispatcher restarts, and through lost
      workers for deterministic pipelines (at most once for the others).
    FILE, DATA, FILE_OR_DATA, HINT: static sharding over the fixed ``worker_addresses`` of
      the dispatcher, as ``AutoShardPolicy``; a restarted worker redoes its shard.
    """

    OFF = 0
    DYNAMIC = 1
    FILE = 2
    DATA = 3
    FILE_OR_DATA = 4
    HINT = 5


STATIC_POLICIES = frozenset(
    {ShardingPolicy.FILE, ShardingPolicy.DATA, ShardingPolicy.FILE_OR_DATA, ShardingPolicy.HINT}
)


def sharding_policy_from(processing_mode: Any) -> ShardingPolicy:
    """Validate ``processing_mode`` as TensorFlow does and turn it into a ShardingPolicy."""
    if isinstance(processing_mode, ShardingPolicy):
        return processing_mode
    if isinstance(processing_mode, str):
        if processing_mode == PARALLEL_EPOCHS:
            return ShardingPolicy.OFF
        if processing_mode == DISTRIBUTED_EPOCH:
            return ShardingPolicy.DYNAMIC
    raise ValueError(
        "tf.data service processing mode should be a "
        "`tf.data.experimental.service.ShardingPolicy`, "
        '`"parallel_epochs"`, or `"distributed_epoch"`. Got '
        f"{processing_mode!r}."
    )


def parse_service(service: Any) -> tuple[str, str]:
    """``"[protocol://]host:port"`` or ``(protocol, address)`` -> ``(protocol, address)``."""
    if isinstance(service, tuple):
        if len(service) != 2 or not all(isinstance(s, str) for s in service):
            raise ValueError(
                f"`service` given as a tuple must be (protocol, address), got {service!r}"
            )
        return service
    if not isinstance(service, str):
        raise ValueError(
            "`service` must be a string, but `service` was of type "
            f"{type(service)}. service={service}"
        )
    if not service:
        raise ValueError("`service` must not be empty")
    parts = service.split("://")
    if len(parts) == 2:
        protocol, address = parts
    elif len(parts) == 1:
        protocol, address = DEFAULT_PROTOCOL, parts[0]
    else:
        raise ValueError(f"Malformed `service` string has multiple '://': {service}.")
    return protocol, address


# -- messages ------------------------------------------------------------------------------


def pack(message: dict[str, Any]) -> list[Any]:
    return codec.encode(message)


def unpack(frames: list[Any]) -> dict[str, Any]:
    message = codec.decode(frames)
    if not isinstance(message, dict):
        raise errors.InvalidArgumentError(
            f"data service message must be a dict, got {type(message).__name__}"
        )
    return message


#: What a handler raises when a request lacks a field or has one of the wrong type.
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def _malformed(method: str, exc: BaseException) -> errors.OpError:
    what = f"missing field {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
    return errors.InvalidArgumentError(f"{method}: malformed request ({what})")


def refusing_malformed(
    method: str, handler: Callable[..., Any], *, streaming: bool = False
) -> Callable[..., Any]:
    """``handler`` with a request that lacks a field, or has one of the wrong type, refused
    as InvalidArgumentError naming the method and the field (not UNKNOWN: the caller's
    mistake, said where it is known). Requests come from the network; handlers index them
    directly, so this is where their shape is checked."""
    if streaming:

        def stream(frames: Any, context: Any) -> Any:
            try:
                yield from handler(frames, context)
            except _MALFORMED as exc:
                raise _malformed(method, exc) from exc

        return stream

    def unary(frames: Any, context: Any) -> Any:
        try:
            return handler(frames, context)
        except _MALFORMED as exc:
            raise _malformed(method, exc) from exc

    return unary


def as_bytes(value: Any) -> bytes:
    """bytes from whatever buffer the codec hands back for a bytes field."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, np.ndarray):
        return value.tobytes()
    return bytes(value)


# -- channels ------------------------------------------------------------------------------
#
# Channels are cached per process. A process forked from this one (a PyTorch DataLoader
# worker under the default "fork" start method) must never use its parent's channels:
# after a fork the cache starts empty and the child connects anew. The parent's channels
# are kept referenced in the child and never closed there (see tensorwire_grpc.forking
# for what gRPC allows after fork). A fork also waits, at most FORK_WAIT_SECONDS, for the
# calls made through ``call`` to finish and holds new ones back meanwhile: gRPC can
# only be used in a child forked while no thread of the parent was inside it.

#: Longest a fork() waits for this process's data-service calls in flight.
FORK_WAIT_SECONDS = 2.0

_channels: dict[tuple[Any, ...], Channel] = {}
_channels_lock = threading.Lock()
_inherited_channels: list[dict[tuple[Any, ...], Channel]] = []


class _ForkGate:
    """Counts calls in flight; holds new ones back while this process forks."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._forking = False

    def enter(self) -> None:
        with self._cond:
            while self._forking:
                self._cond.wait()
            self._active += 1

    def exit(self) -> None:
        with self._cond:
            self._active -= 1
            if self._active == 0:
                self._cond.notify_all()

    def before_fork(self) -> None:
        with self._cond:
            self._forking = True
            if not self._cond.wait_for(lambda: self._active == 0, FORK_WAIT_SECONDS):
                log.info("forking with %d data service call(s) in flight", self._active)

    def after_fork_in_parent(self) -> None:
        with self._cond:
            self._forking = False
            self._cond.notify_all()

    def after_fork_in_child(self) -> None:
        # The calls in flight belong to threads that do not exist here.
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._forking = False


_gate = _ForkGate()


def _after_fork_in_child() -> None:
    global _channels, _channels_lock
    _gate.after_fork_in_child()
    _inherited_channels.append(_channels)
    _channels, _channels_lock = {}, threading.Lock()


os.register_at_fork(
    before=_gate.before_fork,
    after_in_parent=_gate.after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


def _credentials(options: TransportOptions) -> tuple[Any, ...]:
    return (
        options.token,
        options.tls_cert,
        options.tls_key,
        options.tls_root_ca,
        options.tls_client_ca,
        options.tls_server_name,
        options.insecure,
    )


def channel_to(protocol: str, address: str, options: TransportOptions | None = None) -> Channel:
    """A shared channel per (protocol, address, credentials): channels are thread safe and
    reusable. ``options`` None means this process's client settings
    (``configure_client``, else the environment)."""
    if options is None:
        options = client_transport_options()
    key = (protocol, address, _credentials(options))
    with _channels_lock:
        ch = _channels.get(key)
        if ch is None:
            ch = get_transport(protocol).connect(address, options)
            _channels[key] = ch
        return ch


def call(
    protocol: str,
    address: str,
    service: str,
    method: str,
    request: dict[str, Any],
    timeout: float | None = 10.0,
    options: TransportOptions | None = None,
) -> dict[str, Any]:
    _gate.enter()
    try:
        reply = channel_to(protocol, address, options).call(
            service, method, pack(request), timeout=timeout
        )
    except errors.CancelledError as exc:
        # Nothing here cancels its own calls: a cancelled call is a server that stopped
        # while answering it (a dispatcher restart), which is worth retrying.
        raise errors.UnavailableError(f"{exc} (the server stopped during the call)") from exc
    finally:
        _gate.exit()
    return unpack(reply)


T = TypeVar("T")

#: Seconds between two "still waiting" warnings of one ``call_with_retries`` (the first
#: failure is reported at once).
RETRY_WARNING_INTERVAL = 5.0
_BACKOFF_FIRST = 0.02
_BACKOFF_MAX = 1.0
# Without a stop Event, a should_stop predicate is polled this often while backing off.
_POLL_INTERVAL = 0.1


def call_with_retries(
    fn: Callable[[], T],
    *,
    deadline: float,
    what: str,
    waiting_for: str | None = None,
    stop: threading.Event | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> T:
    """Run ``fn`` until it succeeds, raises a non-retryable error, or ``deadline`` (monotonic).

    Between attempts it backs off exponentially with jitter from 20 ms to 1 s. A retryable
    failure is logged as a warning once, at the first failure, and then every
    ``RETRY_WARNING_INTERVAL`` seconds, naming ``waiting_for`` (whom the caller waits
    for, e.g. "the dispatcher at localhost:5050") or else ``what``, and how long it will keep
    trying. Setting ``stop`` ends the wait at once, sleeps included; ``should_stop`` (a
    predicate, for callers without an Event) is checked at least every 0.1 s. After the
    deadline it raises ``UnavailableError``; once stopped, ``CancelledError``.
    """
    delay = _BACKOFF_FIRST
    started = time.monotonic()
    next_warning = started

    def stopped() -> bool:
        return (stop is not None and stop.is_set()) or (should_stop is not None and should_stop())

    while True:
        try:
            return fn()
        except RETRYABLE as exc:
            now = time.monotonic()
            if stopped():
                raise errors.CancelledError(
                    f"{what}: stopped while retrying (last error: {exc})"
                ) from exc
            if now >= deadline:
                raise errors.UnavailableError(
                    f"{what} failed after retrying for {now - started:.1f}s: {exc}"
                ) from exc
            if now >= next_warning:
                next_warning = now + RETRY_WARNING_INTERVAL
                subject = f"waiting for {waiting_for}: {what}" if waiting_for else what
                log.warning(
                    "%s failed (%s); retrying for up to %.0fs more", subject, exc, deadline - now
                )
            else:
                log.debug("%s failed (%s); retrying", what, exc)
            pause = min(delay * (0.5 + random.random()), max(0.0, deadline - now))
            if _sleep(pause, stop, should_stop):
                raise errors.CancelledError(
                    f"{what}: stopped while retrying (last error: {exc})"
                ) from exc
            delay = min(delay * 2, _BACKOFF_MAX)


def _sleep(
    seconds: float, stop: threading.Event | None, should_stop: Callable[[], bool] | None
) -> bool:
    """Sleep ``seconds`` unless stopped first; True when stopped."""
    end = time.monotonic() + seconds
    while True:
        if should_stop is not None and should_stop():
            return True
        remaining = end - time.monotonic()
        if remaining <= 0:
            return stop is not None and stop.is_set()
        step = remaining if should_stop is None else min(remaining, _POLL_INTERVAL)
        if stop is not None:
            if stop.wait(step):
                return True
        else:
            time.sleep(step)
