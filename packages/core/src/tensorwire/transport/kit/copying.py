"""Large copies shared between the calling thread and the process's copy helpers.

A mover that copies a payload into memory its peer reads (the shared-memory medium's
segments) is bound by that copy: one thread copies about 10 GB/s here, while two copy
about twice that, since a single core does not saturate the memory bus. So a copy of at
least ``PARALLEL_BYTES`` is cut into ``CHUNK_BYTES`` chunks that the caller and the
process's helper threads claim one at a time (NumPy releases the GIL while it copies).

The caller always copies too and never waits for a helper to *start*: a helper that is
busy, or starved of CPU by another process, simply claims fewer chunks, and the caller
does the rest. So a copy never takes much longer than the caller alone would take; it
only waits, at the end, for the chunks a helper is copying at that moment.

Helpers are daemon threads named ``tensorwire-copy``, started with the first large copy,
``min(MAX_HELPERS, cpu_count - 1)`` of them (none on one core; ``TENSORWIRE_COPY_HELPERS``
sets the maximum) and kept, like gRPC's own threads; a forked child starts its own.

Copies of at least ``STREAM_BYTES`` use the compiled kernel ``_copy_c.stream_copy``
(non-temporal stores: the destination is written to memory without being read into the
cache first; its docstring has the measurements); smaller ones, and every copy where the
kernel is not built or cannot stream, NumPy's. ``KERNEL`` says which serves large copies.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence

import numpy as np

from ... import errors
from ..._compiled import why_missing

__all__ = [
    "CHUNK_BYTES",
    "KERNEL",
    "KERNEL_REASON",
    "MAX_HELPERS",
    "PARALLEL_BYTES",
    "STREAM_BYTES",
    "copy_pairs",
]

log = logging.getLogger(__name__)

Pair = tuple[np.ndarray, np.ndarray]
Copy = Callable[[np.ndarray, np.ndarray], object]

_stream_copy: Copy | None = None
#: Why NumPy copies of ``STREAM_BYTES`` or more and not the compiled kernel; None when the
#: kernel does (``tensorwire info`` prints it).
KERNEL_REASON: str | None = None
try:
    from . import _copy_c
except ImportError as exc:  # not built (pure build, no compiler): NumPy copies
    log.debug("compiled copy kernel unavailable, NumPy copies: %s", exc)
    KERNEL_REASON = why_missing(__package__ or "", "_copy_c", "copy kernel", exc)
else:
    if _copy_c.STREAMING:
        _stream_copy = _copy_c.stream_copy
    else:
        KERNEL_REASON = "the copy kernel streams only with SSE2 (x86); this build has none"
#: What copies of ``STREAM_BYTES`` or more: "streaming" (the compiled kernel) or "numpy".
KERNEL = "streaming" if _stream_copy is not None else "numpy"

#: Copies of at least this many bytes (all pairs together) are shared with the helpers;
#: below, waking a helper costs more than it saves.
PARALLEL_BYTES = 4 << 20
#: What one claim copies: large enough that claiming costs nothing next to it, small
#: enough that the last chunks do not leave one thread copying alone for long.
CHUNK_BYTES = 1 << 20
#: Helper threads at most (memory bandwidth, not cores, bounds a copy beyond a few).
#: Environment: TENSORWIRE_COPY_HELPERS (0: every copy on its caller's thread, for a
#: process pinned to one core or sharing its cores with work that matters more).
MAX_HELPERS = 3
HELPERS_ENV = "TENSORWIRE_COPY_HELPERS"
#: How long a caller waits for the chunks a helper copies at the end (a chunk is a memcpy
#: of ``CHUNK_BYTES``: only a frozen process takes this long).
_FINISH_SECONDS = 60.0
#: Copies of at least this many bytes (all pairs together) stream past the cache: at this
#: size a run of them (a data-service stream's 4 MiB messages) no longer stays in it, and
#: below it the data is still in the cache when its reader, on this host, reads it.
STREAM_BYTES = 4 << 20


class _Job:
    """One shared copy: the chunks, which to claim next, and those being copied."""

    __slots__ = ("chunks", "copy", "_claims", "_lock", "_finished", "_copying", "error")

    def __init__(self, chunks: list[Pair], copy: Copy) -> None:
        self.chunks = chunks
        self.copy = copy
        self._claims = itertools.count()
        self._lock = threading.Lock()
        self._finished = threading.Condition(self._lock)
        self._copying = 0
        self.error: BaseException | None = None

    def work(self) -> None:
        """Claim and copy chunks until none is left."""
        chunks = self.chunks
        n = len(chunks)
        while True:
            with self._lock:
                i = next(self._claims)
                if i >= n:
                    return
                self._copying += 1
            try:
                target, source = chunks[i]
                self.copy(target, source)
            except BaseException as exc:  # noqa: BLE001 - the caller raises it
                self.error = exc
            finally:
                with self._lock:
                    self._copying -= 1
                    if not self._copying:
                        self._finished.notify_all()

    def wait(self) -> None:
        """(The caller, its own claims done.) Wait for the chunks helpers still copy."""
        with self._lock:
            if not self._finished.wait_for(lambda: not self._copying, _FINISH_SECONDS):
                raise errors.InternalError(
                    f"a copy helper did not finish a {CHUNK_BYTES}-byte chunk within "
                    f"{_FINISH_SECONDS:.0f} s"
                )
        if self.error is not None:
            raise self.error


class _Helpers:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._count = 0
        #: The process whose helpers run (0: none yet).
        self._pid = 0
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        # The parent's helpers do not exist here, and a parent thread may have held the lock.
        self._lock = threading.Lock()
        self._jobs = queue.SimpleQueue()
        self._count = 0
        self._pid = 0

    def available(self) -> int:
        """Helpers running in this process, starting them on first use."""
        if self._pid == os.getpid():
            return self._count
        with self._lock:
            if self._pid != os.getpid():
                wanted = min(_max_helpers(), (os.cpu_count() or 1) - 1)
                started = 0
                for _ in range(wanted):
                    thread = threading.Thread(target=self._run, name="tensorwire-copy", daemon=True)
                    try:
                        thread.start()
                    except RuntimeError as exc:  # no thread to be had: copy alone
                        log.debug("no copy helper thread: %s", exc)
                        break
                    started += 1
                self._count = started
                self._pid = os.getpid()
        return self._count

    def offer(self, job: _Job, helpers: int) -> None:
        for _ in range(helpers):
            self._jobs.put(job)

    def _run(self) -> None:
        jobs = self._jobs
        while True:
            job = jobs.get()
            job.work()
            del job


def _max_helpers() -> int:
    text = os.environ.get(HELPERS_ENV)
    if text is None:
        return MAX_HELPERS
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise errors.InvalidArgumentError(
            f"{HELPERS_ENV} must be a whole number of threads (0 or more), got {text!r}"
        )
    return value


_helpers = _Helpers()


def _kernel(total: int) -> Copy:
    """The copy for a copy of ``total`` bytes (see ``STREAM_BYTES``)."""
    if _stream_copy is not None and total >= STREAM_BYTES:
        return _stream_copy
    return np.copyto


def copy_pairs(pairs: Sequence[Pair], *, share: bool = True) -> None:
    """Copy each ``(target, source)`` pair (equal-sized C-contiguous ``uint8`` arrays), with
    the process's copy helpers when they add up to ``PARALLEL_BYTES`` or more.

    ``share=False`` copies on the calling thread alone: for a sender whose receiver is busy
    at the same time (a stream's messages sent back to back while the other side consumes
    them), where a helper would only take CPU from the receiver (a data-service stream of
    1 MiB elements ran 5-10% slower with one on two cores)."""
    total = sum(target.nbytes for target, _ in pairs)
    copy = _kernel(total)
    helpers = _helpers.available() if share and total >= PARALLEL_BYTES else 0
    if not helpers:
        for target, source in pairs:
            copy(target, source)
        return
    chunks: list[Pair] = []
    for target, source in pairs:
        for start in range(0, target.nbytes, CHUNK_BYTES):
            end = start + CHUNK_BYTES
            chunks.append((target[start:end], source[start:end]))
    job = _Job(chunks, copy)
    _helpers.offer(job, min(helpers, len(chunks) - 1))
    job.work()
    job.wait()
