"""What a reader's heartbeat reply says about its job, built once per change.

Every reader (iterator) asks the dispatcher twice a second which tasks serve its job. Building
and encoding that list costs a few microseconds per task, so with the list in every reply a
dispatcher served readers × workers of their job: about 120 readers of a 1,000-worker job.
The list changes rarely (a worker joins or is lost, a task ends or is replayed), so it is
built once per change of the dispatcher's state and sent only to readers that have not seen
it: a reader names the view it holds, and a reply to a reader that holds the current one
carries only what is cheap and may change without a journaled record (the coordinated-read
block round) plus what is addressed to that reader.

A view is named ``"<token>:<version>"``: the token is random per dispatcher process, so a
name held from before a dispatcher restart never matches a view of the restarted one.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from .state import DispatcherState, Job

__all__ = ["ReaderViews"]


@dataclass
class _JobView:
    name: str
    body: dict[str, Any]
    #: Tasks waiting for their readers' reports of what they received: (task id, readers).
    awaiting: list[tuple[int, frozenset[int]]]


class ReaderViews:
    """The per-job views readers get, rebuilt lazily after ``changed()``.

    The dispatcher calls ``changed()`` under its lock whenever something a view shows may
    have changed: a journaled state change (except handing splits to a live task, the one
    frequent change that shows in no view) and a worker's host.
    """

    def __init__(self) -> None:
        self._token = secrets.token_hex(4)
        self._version = 0
        self._views: dict[int, _JobView] = {}

    def changed(self) -> None:
        self._version += 1
        self._views.clear()

    def reply(
        self,
        state: DispatcherState,
        worker_hosts: dict[str, str],
        job: Job,
        client_id: int,
        held: str | None = None,
    ) -> dict[str, Any]:
        """The reply for reader ``client_id`` holding view ``held`` (None: none yet).

        Always: ``view`` (the current view's name), ``exact``, ``job_finished``,
        ``num_workers`` and ``report`` (ids of the lost tasks whose received elements this
        reader has to report). Only when ``held`` is not the current view: ``tasks`` and
        ``worker_hosts``.
        """
        view = self._views.get(job.job_id)
        if view is None:
            view = self._views[job.job_id] = self._build(state, worker_hosts, job)
        reply: dict[str, Any] = {
            "view": view.name,
            "exact": view.body["exact"],
            "job_finished": view.body["job_finished"],
            "num_workers": view.body["num_workers"],
            "report": [task_id for task_id, readers in view.awaiting if client_id in readers],
        }
        if held != view.name:
            reply["tasks"] = view.body["tasks"]
            reply["worker_hosts"] = view.body["worker_hosts"]
        return reply

    def _build(self, state: DispatcherState, worker_hosts: dict[str, str], job: Job) -> _JobView:
        live = state.live_tasks(job)
        orphans = state.orphans(job)
        # A lost task waiting for a worker is listed without an address.
        tasks = [
            {
                "task_id": t.task_id,
                "worker_address": t.worker_address,
                "generation": t.generation,
                "starting_round": t.starting_round,
                "worker_host": worker_hosts.get(t.worker_address, ""),
            }
            for t in live
        ]
        tasks.extend(
            {"task_id": t.task_id, "worker_address": "", "generation": t.generation}
            for t in orphans
        )
        body = {
            "tasks": tasks,
            "exact": job.exact,
            "job_finished": state.job_finished(job),
            "num_workers": len(state.workers),
            # Every worker's host (target_workers="LOCAL" names them when none is local).
            "worker_hosts": {a: worker_hosts.get(a, "") for a in sorted(state.workers)},
        }
        awaiting = [(t.task_id, frozenset(t.awaiting)) for t in (*live, *orphans) if t.awaiting]
        return _JobView(f"{self._token}:{self._version}", body, awaiting)
