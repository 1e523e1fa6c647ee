"""tw.Session against real local clusters: variables, run, placement, send/recv, errors."""

from __future__ import annotations

import collections
import threading
import time

import numpy as np
import pytest
import tensorwire as tw


def test_design_seed_example_runs_as_written(local_cluster_factory):
    workers, ps = local_cluster_factory(num_workers=2, num_ps=2)
    with tw.Session(workers[0].target) as sess:
        w = sess.variable("w", np.zeros(10, np.float32), device="/job:ps/task:0")
        w.assign_add(np.ones(10, np.float32))
        y = sess.run(np.dot, w.read(), np.arange(10, dtype=np.float32), device="/job:worker/task:1")
    assert y == pytest.approx(45.0)


def test_session_learns_the_cluster(cluster, session):
    workers, ps = cluster
    assert session.cluster_spec.jobs == ["ps", "worker"]
    assert session.cluster_spec.num_tasks("worker") == 2
    assert session.cluster_spec.task_address("ps", 0) == f"localhost:{ps[0].port}"
    names = [d.name for d in session.list_devices()]
    assert names == [
        "/job:ps/replica:0/task:0/device:CPU:0",
        "/job:worker/replica:0/task:0/device:CPU:0",
        "/job:worker/replica:0/task:1/device:CPU:0",
    ]


def test_variables_are_get_or_create_and_shared(cluster):
    workers, _ = cluster
    with tw.Session(workers[0].target) as a, tw.Session(workers[1].target) as b:
        va = a.variable("shared", np.arange(4.0), device="/job:ps/task:0")
        vb = b.variable("shared", np.arange(4.0), device="/job:ps/task:0")
        va.assign_add(np.ones(4))
        np.testing.assert_array_equal(vb.read(), np.arange(4.0) + 1)
        vc = b.variable("shared", device="/job:ps/task:0")  # no initial value: must exist
        assert (vc.shape, vc.dtype) == ((4,), np.dtype(np.float64))
        assert vc.device == "/job:ps/replica:0/task:0/device:CPU:0"


def test_missing_variable_without_initial_value_is_not_found(session):
    with pytest.raises(tw.errors.NotFoundError, match="'nope'") as info:
        session.variable("nope", device="/job:ps/task:0")
    assert info.value.task == "/job:ps/task:0"


def test_existing_variable_with_other_shape_is_invalid(session):
    session.variable("v", np.zeros(3), device="/job:ps/task:0")
    with pytest.raises(tw.errors.InvalidArgumentError, match=r"shape \(3,\)"):
        session.variable("v", np.zeros(4), device="/job:ps/task:0")


def test_assign_ops(session):
    v = session.variable("v", np.zeros(3, np.float32), device="/job:ps/task:0")
    assert v.assign(np.array([1, 2, 3], np.float32)) is v
    np.testing.assert_array_equal(v.assign_add(np.ones(3, np.float32), read_value=True), [2, 3, 4])
    new = v.assign_sub(np.full(3, 2, np.float32), read_value=True)
    np.testing.assert_array_equal(new, [0, 1, 2])
    assert v.read().dtype == np.float32


def test_assign_checks_shape_and_dtype(session):
    v = session.variable("v", np.zeros(3, np.float32), device="/job:ps/task:0")
    with pytest.raises(tw.errors.InvalidArgumentError, match=r"shape \(2,\).*shape \(3,\)"):
        v.assign(np.zeros(2, np.float32))
    with pytest.raises(tw.errors.InvalidArgumentError, match="dtype complex128"):
        v.assign_add(np.zeros(3, np.complex128))
    np.testing.assert_array_equal(v.read(), np.zeros(3))  # nothing applied


def test_scatter_add_adds_repeated_indices(session):
    v = session.variable("emb", np.zeros((4, 2)), device="/job:ps/task:0")
    v.scatter_add([0, 2, 0], np.ones((3, 2)))
    np.testing.assert_array_equal(v.read(), [[2, 2], [0, 0], [1, 1], [0, 0]])
    with pytest.raises(tw.errors.InvalidArgumentError, match="index 9 is out of range"):
        v.scatter_add([9], np.ones((1, 2)))
    with pytest.raises(tw.errors.InvalidArgumentError, match="updates have shape"):
        v.scatter_add([1], np.ones((1, 3)))


def test_concurrent_assign_add_loses_no_update(cluster):
    workers, _ = cluster
    with tw.Session(workers[0].target) as sess:
        v = sess.variable("counter", np.zeros((), np.int64), device="/job:ps/task:0")

        def bump():
            for _ in range(25):
                v.assign_add(np.ones((), np.int64))

        threads = [threading.Thread(target=bump) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert int(v.read()) == 100


def test_run_by_reference_by_value_and_kwargs(session):
    assert session.run(np.add, 2, 3, device="/job:worker/task:1") == 5
    offset = 10
    assert session.run(lambda x, k=0: x + k + offset, 1, k=2, device="/job:ps/task:0") == 13


def test_run_passes_variables_as_their_value(session):
    w = session.variable("w", np.arange(3.0), device="/job:ps/task:0")
    assert session.run(np.sum, w, device="/job:worker/task:1") == 3.0
    assert session.run(np.sum, w, device="/job:ps/task:0") == 3.0


def test_run_returns_nested_structures(session):
    Point = collections.namedtuple("Point", "x y")
    out = session.run(lambda: {"a": [np.ones(2), (1, "s")], "p": None})
    np.testing.assert_array_equal(out["a"][0], np.ones(2))
    assert out["a"][1] == (1, "s") and out["p"] is None
    del Point


def test_remote_exception_comes_back_with_task(session):
    def fails():
        raise ValueError("bad value here")

    with pytest.raises(tw.errors.UnknownError, match="ValueError: bad value here") as info:
        session.run(fails, device="/job:worker/task:1")
    assert info.value.task == "/job:worker/task:1"


def test_remote_op_error_keeps_its_class(session):
    def out_of_range():
        raise tw.errors.OutOfRangeError("end of sequence")

    with pytest.raises(tw.errors.OutOfRangeError, match="end of sequence"):
        session.run(out_of_range)


_both_running = threading.Barrier(2)


def _meet_the_other_call() -> int:
    # Passes only while the other call runs at the same time (the tasks are in this
    # process); run one after the other, the first waits out the barrier's deadline.
    return _both_running.wait(timeout=60)


def test_run_async_runs_in_parallel(session):
    _both_running.reset()
    futures = [
        session.run_async(_meet_the_other_call, device=f"/job:worker/task:{i}") for i in range(2)
    ]
    assert sorted(f.result(timeout=90) for f in futures) == [0, 1]


def test_run_async_delivers_errors(session):
    future = session.run_async(int, "not a number")
    with pytest.raises(tw.errors.UnknownError, match="invalid literal"):
        future.result(timeout=10)


def test_device_context_manager_places_work(session):
    def where():
        t = tw.current_task()
        return t.job, t.task_index

    assert session.run(where) == ("worker", 0)  # the connected task by default
    with tw.device("/job:worker/task:1"):
        assert session.run(where) == ("worker", 1)
        with tw.device("/job:ps/task:0"):
            assert session.run(where) == ("ps", 0)
        with tw.device("/job:ps"):  # merged as TensorFlow does: /job:ps/task:1
            with pytest.raises(tw.errors.InvalidArgumentError, match="/job:ps/task:1"):
                session.run(where)
        assert session.run(where, device="/job:ps/task:0") == ("ps", 0)
    with tw.device("/job:ps"):
        with tw.device("/task:0"):
            assert session.run(where) == ("ps", 0)


def test_placement_on_unknown_job_or_task_is_invalid(session):
    with pytest.raises(tw.errors.InvalidArgumentError, match="job 'chief' is not in the cluster"):
        session.run(abs, 1, device="/job:chief/task:0")
    with pytest.raises(tw.errors.InvalidArgumentError, match="has no task 5"):
        session.run(abs, 1, device="/job:worker/task:5")


def test_current_task_inside_and_outside(session):
    def info():
        t = tw.current_task()
        return t.device, t.cluster_spec.num_tasks("worker")

    expected = ("/job:ps/replica:0/task:0/device:CPU:0", 2)
    assert session.run(info, device="/job:ps/task:0") == expected
    with pytest.raises(tw.errors.FailedPreconditionError):
        tw.current_task()


def test_function_on_a_task_reaches_the_cluster(session):
    session.variable("x", np.full(2, 5.0), device="/job:ps/task:0")

    def read_from_ps():
        return tw.current_task().session.variable("x", device="/job:ps/task:0").read() * 2

    np.testing.assert_array_equal(session.run(read_from_ps, device="/job:worker/task:1"), [10, 10])


def test_send_and_recv_between_tasks(session):
    def producer():
        tw.current_task().session.send("grad", np.arange(3), device="/job:ps/task:0")

    def consumer():
        return tw.current_task().session.recv("grad", device="/job:ps/task:0", timeout=10)

    later = session.run_async(consumer, device="/job:worker/task:1")
    session.run(producer, device="/job:worker/task:0")
    np.testing.assert_array_equal(later.result(timeout=20), [0, 1, 2])


def test_send_recv_is_fifo_per_key(session):
    for i in range(3):
        session.send("k", i, device="/job:ps/task:0")
    assert [session.recv("k", device="/job:ps/task:0", timeout=5) for _ in range(3)] == [0, 1, 2]


def test_recv_times_out(session):
    start = time.monotonic()
    with pytest.raises(tw.errors.DeadlineExceededError):
        session.recv("never", device="/job:ps/task:0", timeout=0.3)
    assert time.monotonic() - start < 5


def test_operation_timeout_from_config(cluster):
    workers, _ = cluster
    config = tw.ConfigProto()
    config.operation_timeout_in_ms = 300
    with tw.Session(workers[0].target, config=config) as sess:
        start = time.monotonic()
        with pytest.raises(tw.errors.DeadlineExceededError):
            sess.run(time.sleep, 3)
        # (Raising at all shows the deadline held: the call itself would succeed.)
        assert time.monotonic() - start < 10
        assert sess.run(abs, -1, timeout=10) == 1  # per-call timeout overrides


def test_task_down_is_unavailable_within_deadline(cluster, session):
    workers, ps = cluster
    session.variable("v", np.zeros(2), device="/job:ps/task:0")
    ps[0].stop(grace=0)
    start = time.monotonic()
    with pytest.raises(tw.errors.UnavailableError) as info:
        session.variable("v", device="/job:ps/task:0").read(timeout=5)
    assert time.monotonic() - start < 6
    assert info.value.task == "/job:ps/task:0"


def test_closed_session_refuses_calls(cluster):
    workers, _ = cluster
    sess = tw.Session(workers[0].target)
    sess.close()
    with pytest.raises(tw.errors.CancelledError):
        sess.run(abs, 1)


def test_bad_target_is_invalid_argument():
    with pytest.raises(tw.errors.InvalidArgumentError, match="<protocol>://"):
        tw.Session("localhost:1234")


def test_large_tensor_round_trip(session):
    big = np.arange(30 * 2**20, dtype=np.float32)  # 120 MB
    v = session.variable("big", big, device="/job:ps/task:0")
    back = v.read(timeout=120)
    assert back.shape == big.shape and back[-1] == big[-1]
    np.testing.assert_array_equal(back[::1_000_003], big[::1_000_003])


def test_values_kept_by_a_task_never_alias_later_messages(session):
    # Variables keep the received arrays without copying; the transport must not reuse
    # (or the caller change) that memory afterwards. 8 MiB takes the chunked path.
    first = np.full(2 * 2**20, 1.0, np.float32)
    second = np.full(2 * 2**20, 2.0, np.float32)
    a = session.variable("a", np.zeros_like(first), device="/job:ps/task:0")
    b = session.variable("b", np.zeros_like(first), device="/job:ps/task:0")
    a.assign(first)
    first[:] = 9.0  # the caller changes its own array afterwards
    b.assign(second)
    session.send("k", second, device="/job:ps/task:0")
    assert a.read()[[0, -1]].tolist() == [1.0, 1.0]
    assert b.read()[[0, -1]].tolist() == [2.0, 2.0]
