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
"""

from __future__ import annotations

import collections
from typing import Any

__all__ = ["SentLog", "WINDOW_BYTES", "WINDOW_MESSAGES"]

#: Bytes and messages a stream sends before it ends for the reader to confirm them (with
#: its next request). A stream opens in a round trip, which the elements the reader holds
#: ahead cover; a window of many messages keeps that round trip rare (below 2% of a stream
#: of 4 MiB messages at 10 GB/s), and bounds what a worker keeps per reader.
WINDOW_BYTES = 64 << 20
WINDOW_MESSAGES = 256


class SentLog:
    """The messages sent to one reader of one task, oldest first, as (position of the
    first element, elements, bytes). Not thread safe: the task's lock guards it."""

    __slots__ = ("_chunks", "nbytes", "lease")

    def __init__(self) -> None:
        self._chunks: collections.deque[tuple[int, list[Any], int]] = collections.deque()
        self.nbytes = 0
        self.lease = 0

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
