"""What a worker sent one reader of a task with numbered elements and the reader has not
confirmed yet: how a broken element stream loses nothing.

A worker takes elements out of its task's buffer when it puts them into a message. If the
connection breaks before the message arrives (a reset, a proxy that drops the stream, a
handler still sending into a stream its reader has given up on), those elements are gone
from the buffer and never reach a reader; an exactly-once job would end short, silently.

Elements of such tasks carry positions (``positions.py``), so a reader can say where it is.
Every request it makes (opening a stream, taking elements) names ``resume_from``: one past
the last position it received of the task's current generation. The worker keeps what it
sent that reader in a ``SentLog`` until a request names a position past it; what is still
in the log when a request arrives was not received and is sent again first. A stream ends
(without end of sequence) once a window of messages is unconfirmed, and the reader's next
request confirms it, so a worker holds at most about one window per reader.

Only one request of a reader takes elements into its log at a time: opening a log hands
out a lease, and the older request's next take is refused. Otherwise a handler still
serving a broken stream could take elements after the new request resent the log, and
they would be confirmed later without having been sent to anyone.

A reader that goes away for good (its trainer ended or died) makes no more requests, and
nothing else would confirm its log. So a task's ``SentLogs`` forgets a log that no request
uses and none opened for ``IDLE_SECONDS`` (the dispatcher's default client timeout: by
then the dispatcher has dropped that reader too), keeping only where it ended. The worker
looks at its heartbeat, not at every request: a take stays as cheap as it was. A reader
that comes back after that and had received all of it goes on; one that had not gets a
``DataLossError`` naming what was lost, never a silent gap.
"""

from __future__ import annotations

import collections
import time
from typing import Any

from tensorwire import errors

from .config import DEFAULT_CLIENT_TIMEOUT_MS

__all__ = [
    "IDLE_SECONDS",
    "MAX_FORGOTTEN",
    "SentLog",
    "SentLogs",
    "WINDOW_BYTES",
    "WINDOW_MESSAGES",
]

#: Bytes and messages a stream sends before it ends for the reader to confirm them (with
#: its next request). A stream opens in a round trip, which the elements the reader holds
#: ahead cover; a window of many messages keeps that round trip rare (below 2% of a stream
#: of 4 MiB messages at 10 GB/s), and bounds what a worker keeps per reader.
WINDOW_BYTES = 64 << 20
WINDOW_MESSAGES = 256
#: A log no request uses and none opened for this long is forgotten (module docstring).
IDLE_SECONDS = DEFAULT_CLIENT_TIMEOUT_MS / 1000
#: Where forgotten logs ended, kept per task for this many readers at most (the oldest go
#: first): a few bytes each, to tell a returning reader what it lost.
MAX_FORGOTTEN = 4096


class SentLog:
    """The messages sent to one reader of one task, oldest first, as (position of the
    first element, elements, bytes). Not thread safe: the task's lock guards it."""

    __slots__ = ("_chunks", "nbytes", "lease", "requests", "opened_at")

    def __init__(self) -> None:
        self._chunks: collections.deque[tuple[int, list[Any], int]] = collections.deque()
        self.nbytes = 0
        self.lease = 0
        #: Requests of the reader that use this log now (``SentLogs.open`` / ``done``).
        self.requests = 0
        #: When a request last opened it (``time.monotonic``).
        self.opened_at = 0.0

    def open(self, resume_from: int) -> tuple[int, list[tuple[int, list[Any]]]]:
        """A request of the reader arrived, which received every position before
        ``resume_from``: forget those, take the lease (an older request of this reader
        takes no more), and return it with what was sent and not received, to send again."""
        self._confirm(resume_from)
        self.lease += 1
        return self.lease, [(first, elements) for first, elements, _ in self._chunks]

    def add(self, first: int, elements: list[Any], nbytes: int) -> None:
        """Elements taken for the reader: ``first`` is the first one's position, the others
        follow it."""
        self._chunks.append((first, elements, nbytes))
        self.nbytes += nbytes

    def full(self) -> bool:
        """Whether a window is unconfirmed: the stream ends for the reader to confirm it."""
        return self.nbytes >= WINDOW_BYTES or len(self._chunks) >= WINDOW_MESSAGES

    def __len__(self) -> int:
        return len(self._chunks)

    @property
    def end(self) -> int | None:
        """One past the last position sent and not confirmed; None when all is confirmed."""
        if not self._chunks:
            return None
        first, elements, _ = self._chunks[-1]
        return first + len(elements)

    def _confirm(self, resume_from: int) -> None:
        chunks = self._chunks
        while chunks:
            first, elements, nbytes = chunks[0]
            end = first + len(elements)
            if end <= resume_from:
                chunks.popleft()
                self.nbytes -= nbytes
                continue
            if first < resume_from:
                # Received in part (a take sent only part of a message again): keep the rest.
                kept = elements[resume_from - first :]
                kept_bytes = nbytes * len(kept) // len(elements)
                chunks[0] = (resume_from, kept, kept_bytes)
                self.nbytes -= nbytes - kept_bytes
            return


class SentLogs:
    """The logs of one task's readers, by reader key. Not thread safe: the task's lock
    guards it.

    Args:
      what: the task, for error messages (``"task 3 on worker host:port"``).
    """

    def __init__(self, what: str) -> None:
        self._what = what
        self._logs: dict[str, SentLog] = {}
        #: Reader key -> where its forgotten log ended (it had unconfirmed elements).
        self._forgotten: collections.OrderedDict[str, int] = collections.OrderedDict()

    def open(
        self, reader: str, resume_from: int, now: float | None = None
    ) -> tuple[SentLog, int, list[tuple[int, list[Any]]]]:
        """A request of ``reader`` arrived (``SentLog.open``): its log, now used by one more
        request (call ``done`` when the request ends), the lease and what to send again.

        Raises:
          DataLossError: this reader's log was forgotten while it held elements the reader
            had not received (it was silent longer than ``IDLE_SECONDS``).
        """
        log = self._logs.get(reader)
        if log is None:
            ended = self._forgotten.pop(reader, None)
            if ended is not None and resume_from < ended:
                self._forgotten[reader] = ended  # the same answer if it asks again
                raise errors.DataLossError(
                    f"{self._what} forgot the elements at positions {resume_from} to "
                    f"{ended - 1} that it sent reader {reader!r}, which did not confirm them: "
                    f"the reader made no request for more than {IDLE_SECONDS:g} s"
                )
            log = self._logs[reader] = SentLog()
        log.requests += 1
        log.opened_at = time.monotonic() if now is None else now
        lease, unreceived = log.open(resume_from)
        return log, lease, unreceived

    def done(self, log: SentLog) -> None:
        """A request that ``open`` gave ``log`` ended."""
        log.requests -= 1

    def forget_idle(self, now: float | None = None) -> None:
        """Drop the logs no request uses and none opened for ``IDLE_SECONDS``, keeping where
        those with unconfirmed elements ended."""
        now = time.monotonic() if now is None else now
        idle = [
            reader
            for reader, log in self._logs.items()
            if not log.requests and now - log.opened_at >= IDLE_SECONDS
        ]
        for reader in idle:
            end = self._logs.pop(reader).end
            if end is not None:
                self._forgotten[reader] = end
                self._forgotten.move_to_end(reader)
        while len(self._forgotten) > MAX_FORGOTTEN:
            self._forgotten.popitem(last=False)

    def __len__(self) -> int:
        """Readers with a log now."""
        return len(self._logs)

    @property
    def nbytes(self) -> int:
        """Bytes of elements sent and not confirmed, over every reader."""
        return sum(log.nbytes for log in self._logs.values())
