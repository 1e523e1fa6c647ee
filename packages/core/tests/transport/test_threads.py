"""DaemonThreadPool: a thread per waiting item up to its limit, refusal past it, idle
threads retired, and the inproc listener's limit built on it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from tensorwire import errors
from tensorwire.transport import Service, TransportOptions, get_transport
from tensorwire.transport.threads import DaemonThreadPool, join_threads

#: Bound on every wait; generous, for a loaded machine.
DEADLINE = 30.0


def _eventually(condition: Callable[[], bool]) -> bool:
    """Poll ``condition`` until it holds (True) or :data:`DEADLINE` passes (False)."""
    end = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def test_every_waiting_item_gets_a_thread(release: threading.Event) -> None:
    pool = DaemonThreadPool(1000, "test-pool")
    started = threading.Semaphore(0)

    def wait() -> str:
        started.release()
        release.wait(DEADLINE)
        return "done"

    futures = [pool.submit_now(wait) for _ in range(600)]
    assert all(started.acquire(timeout=DEADLINE) for _ in range(600))
    assert pool.threads == 600 and pool.busy == 600
    release.set()
    assert [f.result(timeout=DEADLINE) for f in futures] == ["done"] * 600
    assert _eventually(lambda: pool.busy == 0)
    pool.shutdown()


def test_idle_threads_are_reused_before_new_ones_start() -> None:
    pool = DaemonThreadPool(100, "test-pool")
    for _ in range(50):
        pool.submit_now(lambda: None).result(timeout=DEADLINE)
        # The thread is idle once it has counted itself so.
        assert _eventually(lambda: pool.busy == 0)
    assert pool.threads == 1
    pool.shutdown()


def test_past_the_limit_submit_now_refuses_with_the_reason(release: threading.Event) -> None:
    pool = DaemonThreadPool(3, "test-pool", limit_hint="Raise it with the option X.")
    futures = [pool.submit_now(release.wait, DEADLINE) for _ in range(3)]
    with pytest.raises(errors.ResourceExhaustedError) as info:
        pool.submit_now(lambda: None)
    message = str(info.value)
    assert "test-pool" in message and "all 3 threads are busy" in message
    assert message.endswith("Raise it with the option X.")
    release.set()
    assert all(f.result(timeout=DEADLINE) for f in futures)
    assert _eventually(lambda: pool.busy == 0)
    assert pool.submit_now(lambda: "again").result(timeout=DEADLINE) == "again"
    pool.shutdown()


def test_past_the_limit_submit_queues_until_a_thread_is_free(
    release: threading.Event,
) -> None:
    pool = DaemonThreadPool(2, "test-pool")
    blocked = [pool.submit(release.wait, DEADLINE) for _ in range(2)]
    queued = pool.submit(lambda: "ran")
    assert not queued.done()
    release.set()
    assert queued.result(timeout=DEADLINE) == "ran"
    assert all(f.result(timeout=DEADLINE) for f in blocked)
    assert pool.threads == 2
    pool.shutdown()


def test_idle_threads_retire(release: threading.Event) -> None:
    pool = DaemonThreadPool(100, "test-pool", idle_seconds=0.05)
    futures = [pool.submit_now(release.wait, DEADLINE) for _ in range(40)]
    assert pool.threads == 40
    release.set()
    assert all(f.result(timeout=DEADLINE) for f in futures)
    assert _eventually(lambda: pool.threads == 0), f"{pool.threads} threads left"
    # A retired pool starts threads again.
    assert pool.submit_now(lambda: 7).result(timeout=DEADLINE) == 7
    pool.shutdown()


def test_shutdown_cancels_queued_work_and_refuses_new(release: threading.Event) -> None:
    pool = DaemonThreadPool(1, "test-pool")
    started = threading.Event()

    def wait() -> bool:
        started.set()
        return release.wait(DEADLINE)

    running = pool.submit(wait)
    assert started.wait(DEADLINE)
    queued = pool.submit(lambda: None)
    pool.shutdown(cancel_futures=True)
    assert queued.cancelled()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: None)
    release.set()
    assert running.result(timeout=DEADLINE)


def test_join_after_shutdown_returns_once_every_thread_ended(
    release: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    pool = DaemonThreadPool(10, "join-test-pool")  # a name no other test's threads have
    running = threading.Semaphore(0)

    def wait() -> None:
        running.release()
        release.wait()

    for _ in range(3):
        pool.submit_now(wait)
    pool.submit_now(lambda: None).result(timeout=DEADLINE)  # a fourth thread, idle now
    for _ in range(3):
        assert running.acquire(timeout=DEADLINE)
    threads = [t for t in threading.enumerate() if t.name.startswith("join-test-pool-")]
    assert len(threads) == 4
    with pytest.raises(RuntimeError, match="before shutdown"):
        pool.join(1.0)
    pool.shutdown(wait=False)
    # Three items still wait: join gives up at its deadline and says who was left.
    assert pool.join(0.05) is False
    assert "still running after the stop deadline" in caplog.text
    release.set()
    assert pool.join(DEADLINE) is True
    assert [t.name for t in threads if t.is_alive()] == []


def test_bad_limits() -> None:
    with pytest.raises(ValueError, match="max_threads"):
        DaemonThreadPool(0, "test-pool")
    with pytest.raises(ValueError, match="idle_seconds"):
        DaemonThreadPool(1, "test-pool", idle_seconds=0)


# -- the inproc listener's limit ---------------------------------------------------------------


def _blocking_service(release: threading.Event, entered: threading.Semaphore) -> Service:
    service = Service("test.Block")

    @service.unary("Wait")
    def wait(frames, context):
        entered.release()
        release.wait(DEADLINE)
        return frames

    @service.stream("WaitStream")
    def wait_stream(frames, context):
        entered.release()
        release.wait(DEADLINE)
        yield frames

    return service


def test_inproc_refuses_calls_past_its_limit_with_the_reason(
    release: threading.Event,
) -> None:
    transport = get_transport("inproc")
    entered = threading.Semaphore(0)
    listener = transport.serve(
        "localhost:0",
        [_blocking_service(release, entered)],
        TransportOptions(extra={"inproc_max_workers": 3}),
    )
    listener.start()
    channel = transport.connect(listener.address, TransportOptions())
    try:
        waiting = [
            threading.Thread(
                target=channel.call,
                args=("test.Block", "Wait", [b"x"]),
                kwargs={"timeout": DEADLINE},
                daemon=True,
            )
            for _ in range(3)
        ]
        for thread in waiting:
            thread.start()
        assert all(entered.acquire(timeout=DEADLINE) for _ in range(3))
        with pytest.raises(errors.ResourceExhaustedError, match="inproc_max_workers") as info:
            channel.call("test.Block", "Wait", [b"y"], timeout=DEADLINE)
        assert "all 3 threads are busy" in str(info.value)
        with pytest.raises(errors.ResourceExhaustedError, match="inproc_max_workers"):
            channel.stream("test.Block", "WaitStream", [b"z"], timeout=DEADLINE)
        release.set()
        for thread in waiting:
            thread.join(DEADLINE)
        # Served again once the waiting calls are done.
        assert _eventually(lambda: listener._pool.busy == 0)
        assert [bytes(f) for f in channel.call("test.Block", "Wait", [b"ok"], timeout=5)] == [b"ok"]
    finally:
        release.set()
        channel.close()
        listener.stop(0)


def test_inproc_limit_must_be_a_positive_int() -> None:
    with pytest.raises(errors.InvalidArgumentError, match="inproc_max_workers"):
        get_transport("inproc").serve(
            "localhost:0", [], TransportOptions(extra={"inproc_max_workers": 0})
        )


def test_join_waits_for_a_thread_listed_but_not_started_yet() -> None:
    # Pools list a thread just before they start it: a join may come in between.
    ran = threading.Event()
    thread = threading.Thread(target=ran.set, daemon=True)
    threading.Timer(0.2, thread.start).start()
    assert join_threads([thread], time.monotonic() + DEADLINE, "test") == []
    assert ran.is_set()
