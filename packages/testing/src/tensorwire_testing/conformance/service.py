"""The service every conformance check talks to, and deterministic test payloads.

Handlers that block wait on ``ConformanceState.release`` with a bound, so a test's
teardown frees every server thread at once and nothing outlives the test for long.
"""

from __future__ import annotations

import functools
import hashlib
import json
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from tensorwire import errors
from tensorwire.transport import CallContext, Service

__all__ = ["SERVICE", "ConformanceState", "make_service", "payload", "digest", "sizes_of"]

SERVICE = "tensorwire.conformance.Test"
#: The longest any handler of this service blocks, but those of the load checks.
MAX_BLOCK_SECONDS = 30.0
#: The longest a ``Wait`` / ``WaitStream`` handler waits to be released: hundreds of them
#: may take a while to start on a loaded machine, and the test releases them anyway.
MAX_WAIT_SECONDS = 120.0

_BLOCK = np.random.default_rng(20260101).integers(0, 256, 65_537, dtype=np.uint8)


def payload(size: int, seed: int = 0) -> np.ndarray:
    """``size`` deterministic, non-repeating-at-chunk-boundaries bytes as a uint8 array."""
    if size == 0:
        return np.empty(0, dtype=np.uint8)
    block = np.roll(_BLOCK, seed)
    return np.resize(block, size)


def digest(frames: Sequence[Any]) -> bytes:
    h = hashlib.sha256()
    for frame in frames:
        view = memoryview(frame)
        h.update(struct.pack("<Q", view.nbytes))
        h.update(view.cast("B"))
    return h.digest()


def sizes_of(frames: Sequence[Any]) -> list[int]:
    return [memoryview(f).nbytes for f in frames]


class ConformanceState:
    """What the handlers of one test's service share with the test."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.stream_closed = threading.Event()
        self.received_types: list[type] = []
        #: Handlers of ``Wait`` / ``WaitStream`` waiting for ``release`` now.
        self.waiting = 0
        self.waiting_changed = threading.Condition()

    def wait_for_waiting(self, count: int, stall_timeout: float) -> int:
        """Block until ``count`` handlers wait for ``release`` at once, or until no further
        handler has started waiting for ``stall_timeout`` seconds (a slow machine makes
        progress, a deadlock does not); returns how many wait then."""
        with self.waiting_changed:
            while self.waiting < count:
                if not self.waiting_changed.wait_for(
                    functools.partial(self._more_waiting_than, self.waiting), stall_timeout
                ):
                    break
            return self.waiting

    def _more_waiting_than(self, before: int) -> bool:
        return self.waiting > before

    def wait_for_release(self) -> bool:
        """What a ``Wait`` handler does: counted in ``waiting`` until ``release`` is set
        (True) or ``MAX_WAIT_SECONDS`` pass (False)."""
        with self.waiting_changed:
            self.waiting += 1
            self.waiting_changed.notify_all()
        try:
            return self.release.wait(MAX_WAIT_SECONDS)
        finally:
            with self.waiting_changed:
                self.waiting -= 1
                self.waiting_changed.notify_all()


def _int(frame: memoryview) -> int:
    return int(bytes(frame).decode())


def make_service(state: ConformanceState) -> Service:
    svc = Service(SERVICE)

    @svc.unary("Echo")
    def echo(frames: list[memoryview], context: CallContext) -> list[memoryview]:
        state.received_types.extend(type(f) for f in frames)
        return frames

    @svc.unary("Digest")
    def digest_(frames: list[memoryview], context: CallContext) -> list[bytes]:
        """Sizes and a hash of the request, so large requests need not come back."""
        return [json.dumps(sizes_of(frames)).encode(), digest(frames)]

    @svc.unary("Make")
    def make(frames: list[memoryview], context: CallContext) -> list[np.ndarray]:
        """Frames of the sizes asked for (JSON list in frame 0), from ``payload``."""
        sizes = json.loads(bytes(frames[0]))
        return [payload(size, seed=i) for i, size in enumerate(sizes)]

    @svc.unary("Context")
    def context_(frames: list[memoryview], context: CallContext) -> list[bytes]:
        info = {
            "peer": context.peer,
            "peer_type": type(context.peer).__name__,
            "metadata": {k: v for k, v in context.metadata.items() if isinstance(v, str)},
            "time_remaining": context.time_remaining(),
        }
        return [json.dumps(info).encode()]

    @svc.unary("Raise")
    def raise_(frames: list[memoryview], context: CallContext) -> list[bytes]:
        """Raise the ``tensorwire.errors`` class named in frame 0 with frame 1 as message."""
        cls = getattr(errors, bytes(frames[0]).decode())
        raise cls(bytes(frames[1]).decode("utf-8"))

    @svc.unary("Crash")
    def crash(frames: list[memoryview], context: CallContext) -> list[bytes]:
        raise ValueError("crashed on purpose")

    @svc.unary("BadReturn")
    def bad_return(frames: list[memoryview], context: CallContext) -> Any:
        return None  # not a list of frames: a handler bug the caller must see as an error

    @svc.unary("Sleep")
    def sleep(frames: list[memoryview], context: CallContext) -> list[bytes]:
        """Block up to frame 0 seconds, or until the test releases it."""
        state.started.set()
        seconds = min(float(bytes(frames[0]).decode()), MAX_BLOCK_SECONDS)
        released = state.release.wait(seconds)
        return [b"released" if released else b"slept"]

    @svc.unary("Wait")
    def wait(frames: list[memoryview], context: CallContext) -> list[memoryview]:
        """Wait until the test releases it (see ``ConformanceState.wait_for_release``),
        then echo the request."""
        state.wait_for_release()
        return frames

    @svc.stream("Count")
    def count(frames: list[memoryview], context: CallContext) -> Iterator[list[object]]:
        """Frame 0 messages ``[index, *the other request frames]``."""
        for i in range(_int(frames[0])):
            yield [str(i).encode(), *frames[1:]]

    @svc.stream("MakeStream")
    def make_stream(frames: list[memoryview], context: CallContext) -> Iterator[list[object]]:
        """One message per JSON list of sizes in frame 0."""
        for i, sizes in enumerate(json.loads(bytes(frames[0]))):
            yield [payload(size, seed=i + j) for j, size in enumerate(sizes)]

    @svc.stream("DigestStream")
    def digest_stream(frames: list[memoryview], context: CallContext) -> Iterator[list[bytes]]:
        yield [json.dumps(sizes_of(frames)).encode(), digest(frames)]

    @svc.stream("Endless")
    def endless(frames: list[memoryview], context: CallContext) -> Iterator[list[bytes]]:
        """Yield until the caller goes away (bounded in count and time); record the end."""
        deadline = time.monotonic() + MAX_BLOCK_SECONDS
        try:
            for i in range(1_000_000):
                if time.monotonic() > deadline or state.release.is_set():
                    return
                yield [str(i).encode()]
        finally:
            state.stream_closed.set()

    @svc.stream("FailAfter")
    def fail_after(frames: list[memoryview], context: CallContext) -> Iterator[list[bytes]]:
        """Frame 0 messages, then raise class frame 1 with message frame 2."""
        for i in range(_int(frames[0])):
            yield [str(i).encode()]
        cls = getattr(errors, bytes(frames[1]).decode())
        raise cls(bytes(frames[2]).decode("utf-8"))

    @svc.stream("WaitStream")
    def wait_stream(frames: list[memoryview], context: CallContext) -> Iterator[list[object]]:
        """The request at once, then, once the test releases it, ``[b"end", *request]``."""
        yield list(frames)
        state.wait_for_release()
        yield [b"end", *frames]

    @svc.stream("SlowStream")
    def slow_stream(frames: list[memoryview], context: CallContext) -> Iterator[list[bytes]]:
        """A message every frame 0 seconds (until released), at most 100."""
        interval = float(bytes(frames[0]).decode())
        for i in range(100):
            if state.release.wait(interval):
                return
            yield [str(i).encode()]

    return svc
