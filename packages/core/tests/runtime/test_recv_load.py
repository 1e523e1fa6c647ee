"""Hundreds of ``Session.recv`` calls pending on one task: all are served once the tensors
are sent, and the task still answers other calls meanwhile.

With a fixed pool of N server threads the N+1st ``recv`` queued behind the N waiting ones,
and so did every other call to the task (the ``send`` that would free them included): a
deadlock without an error. Every wait here has a deadline, so that fails instead of hanging.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import tensorwire as tw

PENDING = 500
#: Bound on every wait; generous, for a loaded two-core machine. Waiting for the recv calls
#: fails only once none has made progress for this long (a slow machine progresses, a
#: deadlock does not).
DEADLINE = 60.0


def _wait_while_progressing(count, done) -> None:
    """Poll until ``done()``, or until ``count()`` has not changed for :data:`DEADLINE`."""
    last, since = count(), time.monotonic()
    while not done() and time.monotonic() - since < DEADLINE:
        time.sleep(0.01)
        if count() != last:
            last, since = count(), time.monotonic()


def _join_all(threads: list[threading.Thread], what: str) -> None:
    end = time.monotonic() + DEADLINE * 3
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    assert not [t for t in threads if t.is_alive()], what


def test_500_pending_recvs_on_one_task_all_complete(local_server, monkeypatch) -> None:
    rendezvous = local_server.state.rendezvous
    results: dict[int, object] = {}
    failures: list[BaseException] = []
    reached = [0]  # recv calls that reached the task
    count_lock = threading.Lock()
    task_recv = rendezvous.recv

    def counting_recv(key: str, timeout: float | None) -> object:
        with count_lock:
            reached[0] += 1
        return task_recv(key, timeout)

    monkeypatch.setattr(rendezvous, "recv", counting_recv)

    with tw.Session(local_server.target) as session:

        def receive(i: int) -> None:
            try:
                results[i] = session.recv(f"tensor-{i}", timeout=DEADLINE * 5)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                failures.append(exc)

        threads = [threading.Thread(target=receive, args=(i,), daemon=True) for i in range(PENDING)]
        for thread in threads:
            thread.start()
        _wait_while_progressing(lambda: reached[0], lambda: reached[0] == PENDING or failures)
        assert reached[0] == PENDING, (
            f"only {reached[0]} of {PENDING} recv calls reached the task, none more in "
            f"{DEADLINE:.0f}s: the others are queued behind the waiting ones"
        )
        assert not failures, failures[:3]

        # A status call is answered while every recv waits: a new session asks for it.
        with tw.Session(local_server.target) as other:
            assert other.cluster_spec.as_dict() == local_server.cluster_spec.as_dict()
            for i in range(PENDING):
                other.send(f"tensor-{i}", np.full(3, i))

        _join_all(threads, "recv calls still waiting")
    assert not failures, failures[:3]
    assert sorted(results) == list(range(PENDING))
    for i, value in results.items():
        np.testing.assert_array_equal(value, np.full(3, i))


def test_500_concurrent_sessions_against_one_task_all_complete(local_server) -> None:
    """500 sessions, each its own ``tw.Session`` in its own thread, at once: each runs a
    function on the task, then waits in a ``recv`` until the tensor it asked for is sent.
    Every one completes, and the task keeps answering a 501st session meanwhile."""
    started = threading.Barrier(PENDING + 1, timeout=DEADLINE * 5)
    waiting = [0]
    count_lock = threading.Lock()
    results: dict[int, tuple[object, object]] = {}
    failures: list[BaseException] = []

    def session_of(i: int) -> None:
        try:
            with tw.Session(local_server.target) as session:
                started.wait()  # all 500 sessions exist before any calls
                ran = session.run(np.add, np.full(2, i), 1, timeout=DEADLINE * 5)
                with count_lock:
                    waiting[0] += 1
                got = session.recv(f"for-session-{i}", timeout=DEADLINE * 5)
                results[i] = (ran, got)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)
            started.abort()  # the others stop waiting for this one at once

    threads = [threading.Thread(target=session_of, args=(i,), daemon=True) for i in range(PENDING)]
    for thread in threads:
        thread.start()
    try:
        started.wait()
    except threading.BrokenBarrierError:
        pass  # a session failed: reported below
    _wait_while_progressing(lambda: waiting[0], lambda: waiting[0] == PENDING or failures)
    assert not failures, failures[:3]
    assert waiting[0] == PENDING, f"only {waiting[0]} of {PENDING} sessions got their run"
    with tw.Session(local_server.target) as other:
        for i in range(PENDING):
            other.send(f"for-session-{i}", np.full(3, i))
    _join_all(threads, "sessions still waiting")
    assert not failures, failures[:3]
    assert sorted(results) == list(range(PENDING))
    for i, (ran, got) in results.items():
        np.testing.assert_array_equal(ran, np.full(2, i + 1))
        np.testing.assert_array_equal(got, np.full(3, i))
