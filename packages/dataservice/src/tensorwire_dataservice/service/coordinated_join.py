"""Workers joining a running coordinated-read job (``num_consumers`` / ``consumer_index``).

The consumers of a coordinated job read in lockstep: global round ``r`` is served by one
task, chosen the same way by every consumer from the tasks they know and the round each
task joined at (``Task.starting_round``); so a task can join only at a round that no
consumer has passed, and every consumer must know of it before reaching that round.
As in TensorFlow, the dispatcher makes such a task *pending*:

1. It picks a target round ahead of every consumer (the furthest round reported, plus
   what the fastest consumer reads in a few heartbeat intervals, doubled for each
   earlier failure).
2. Each client heartbeat reply carries ``block_round``: the consumer does not read that
   round until its task list holds a task starting there. A consumer that was still
   before the target confirms it (``blocked_round`` in its next heartbeat).
3. Once every consumer of the job confirmed, the task is created (journaled) with
   ``starting_round`` = target, and the consumers read on with it in the rotation.
4. A consumer that reports a round past the target (it read on before it heard of the
   block) makes the attempt fail: a new target further ahead, the confirmations cleared.

Pending tasks live in memory: after a dispatcher restart the GC tick finds the workers
without a task of the job again and starts over. The schedule itself (which task serves
round ``r``) is ``task_for_round``, shared with the readers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

__all__ = ["PendingTask", "PendingJoins", "task_for_round"]

#: Rounds ahead of the furthest consumer a join aims at, at least.
MIN_LOOKAHEAD_ROUNDS = 16
#: Seconds of reading (at the fastest consumer's rate) a join aims ahead: a few client
#: heartbeat intervals, so that every consumer hears of it before it gets there.
LOOKAHEAD_SECONDS = 2.0
_MAX_FAILURE_DOUBLINGS = 16


def task_for_round(tasks: Sequence[Any], round_index: int) -> Any | None:
    """The task that serves global round ``round_index``, or None when no task does yet.

    ``tasks`` carry ``task_id`` and ``starting_round``. Round ``r`` rotates over the tasks
    that started at or before it, from the latest starting round on: with every task
    starting at 0 this is ``tasks[r % len(tasks)]``.
    """
    active = sorted(
        (t for t in tasks if t.starting_round <= round_index),
        key=lambda t: (t.starting_round, t.task_id),
    )
    if not active:
        return None
    since = max(t.starting_round for t in active)
    return active[(round_index - since) % len(active)]


@dataclasses.dataclass
class PendingTask:
    """A worker's task waiting to join a coordinated job at ``target_round``."""

    job_id: int
    worker_address: str
    target_round: int
    ready: set[int] = dataclasses.field(default_factory=set)
    failures: int = 0


@dataclasses.dataclass
class _ClientRounds:
    round: int
    at: float
    rate: float = 0.0  # rounds per second, between its last two reports


class PendingJoins:
    """The pending tasks of coordinated jobs and their consumers' rounds (see module doc).

    Not thread-safe: the dispatcher calls it under its lock.
    """

    def __init__(self) -> None:
        self._pending: dict[int, list[PendingTask]] = {}
        self._rounds: dict[int, _ClientRounds] = {}

    def is_pending(self, job_id: int, address: str) -> bool:
        return any(p.worker_address == address for p in self._pending.get(job_id, ()))

    def front(self, job_id: int) -> PendingTask | None:
        queue = self._pending.get(job_id)
        return queue[0] if queue else None

    def add(
        self, job_id: int, address: str, clients: set[int], lookahead: bool = True
    ) -> PendingTask:
        """Queue ``address``'s task for ``job_id``; without ``lookahead`` (the job has no
        task, so no consumer moves) it aims at the furthest round a consumer reached."""
        target = self._target(clients, 0) if lookahead else self._furthest(clients)
        task = PendingTask(job_id, address, target)
        self._pending.setdefault(job_id, []).append(task)
        return task

    def drop_worker(self, address: str) -> None:
        """Forget the pending tasks of a worker that is gone."""
        for job_id, queue in list(self._pending.items()):
            queue[:] = [p for p in queue if p.worker_address != address]
            if not queue:
                del self._pending[job_id]

    def drop_job(self, job_id: int) -> None:
        self._pending.pop(job_id, None)

    def forget_client(self, client_id: int) -> None:
        self._rounds.pop(client_id, None)

    def report(
        self,
        job_id: int,
        clients: set[int],
        client_id: int,
        current_round: int,
        blocked_round: int,
        now: float,
    ) -> None:
        """A consumer's heartbeat: the round it reads next and the block it honours
        (``clients``: the job's consumers now)."""
        previous = self._rounds.get(client_id)
        rounds = _ClientRounds(current_round, now)
        if previous is not None and now > previous.at:
            rounds.rate = max(0.0, (current_round - previous.round) / (now - previous.at))
        self._rounds[client_id] = rounds
        pending = self.front(job_id)
        if pending is None:
            return
        if current_round > pending.target_round:
            # It read past the target before it heard of it: aim further ahead.
            pending.failures += 1
            pending.ready.clear()
            pending.target_round = self._target(clients, pending.failures)
        elif blocked_round == pending.target_round:
            pending.ready.add(client_id)

    def ready_to_join(self, job_id: int, clients: set[int]) -> PendingTask | None:
        """The front pending task, removed, when every consumer in ``clients`` confirmed."""
        pending = self.front(job_id)
        if pending is None or not clients <= pending.ready:
            return None
        self._pending[job_id].pop(0)
        if not self._pending[job_id]:
            del self._pending[job_id]
        return pending

    def _furthest(self, clients: set[int]) -> int:
        return max((self._rounds[c].round for c in clients if c in self._rounds), default=0)

    def _target(self, clients: set[int], failures: int) -> int:
        known = [self._rounds[c] for c in clients if c in self._rounds]
        furthest = self._furthest(clients)
        rate = max((r.rate for r in known), default=0.0)
        ahead = max(MIN_LOOKAHEAD_ROUNDS, int(rate * LOOKAHEAD_SECONDS))
        return furthest + ahead * (1 << min(failures, _MAX_FAILURE_DOUBLINGS))
