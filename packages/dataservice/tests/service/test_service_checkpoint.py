"""Checkpoints of iterators reading from the tf.data service (``service/checkpoint.py``).

A restored iterator yields exactly the elements the original had not yielded at the
checkpoint: those it consumed after the checkpoint, and those buffered or in flight then,
are delivered again; nothing consumed before it is. Checked in both processing modes, for
shared jobs, in a new process, across a dispatcher kill -9, and the refusals (each with
its reason): non-deterministic pipelines, coordinated reads, a collected job.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import time
from collections import Counter
from typing import Any

import cloudpickle
import pytest
import tensorwire as tw
from tensorwire import errors
from tensorwire_dataservice.service import client
from tensorwire_testing.data_service import data_service_processes
from tensorwire_testing.waiting import scaled

from .helpers import distribute

# The pipelines below run in worker processes that cannot import this test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

Dataset = tw.data.Dataset
service = tw.data.service

N = 120


def _slow(x: Any) -> Any:
    time.sleep(0.0005)  # keeps elements in flight while the test checkpoints
    return x


def _ints(iterator: Any) -> list[int]:
    return [int(x) for x in iterator]


def _take(iterator: Any, count: int) -> list[int]:
    return [int(next(iterator)) for _ in range(count)]


def _restored(dataset: Any, state: Any) -> Any:
    iterator = iter(dataset)
    iterator.load_state_dict(pickle.loads(pickle.dumps(state)))
    return iterator


def _expected(mode: str, workers: int) -> Counter[int]:
    """distributed_epoch: every element once; parallel_epochs: once per worker."""
    return Counter({x: 1 if mode == "distributed_epoch" else workers for x in range(N)})


def _assert_counts(got: list[int], expected: Counter[int], dispatcher: Any = None) -> None:
    counts = Counter(got)
    repeated = sorted(x for x in counts if counts[x] > expected[x])
    missing = sorted(x for x in expected if counts[x] < expected[x])
    assert not repeated and not missing, (
        f"repeated {repeated[:20]}, missing {missing[:20]}; in the order read: {got}"
        + ("" if dispatcher is None else f"\n{_tasks_of(dispatcher)}")
    )


def _tasks_of(dispatcher: Any) -> str:
    """The dispatcher's record of every task (generations, splits, what readers received):
    what a failure seen once in CI needs to be understood."""
    core = dispatcher._core
    with core.lock:
        return "\n".join(
            f"task {t.task_id} of job {t.job_id} at {t.worker_address}: generation "
            f"{t.generation}, finished {t.finished}, removed {t.removed}, splits {t.splits}, "
            f"delivered {t.delivered}, departed {t.departed}, awaiting {sorted(t.awaiting)}"
            for t in core.state.tasks.values()
        )


# -- in one process ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["distributed_epoch", "parallel_epochs"])
def test_restored_iterator_yields_what_the_original_had_not(service_factory, mode):
    dispatcher, _ = service_factory(num_workers=2)
    dataset = distribute(Dataset.range(N).map(_slow), dispatcher, mode)
    it = iter(dataset)
    head = _take(it, 17)
    state = it.state_dict()
    _take(it, 25)  # consumed after the checkpoint: the restore rolls them back
    it.close()  # the reader leaves; its job is kept for the restore
    rest = _ints(_restored(dataset, state))
    _assert_counts(head + rest, _expected(mode, 2))


@pytest.mark.parametrize("job_name", [None, "first"])
def test_a_checkpoint_taken_before_the_first_element_restores_a_full_epoch(
    service_factory, job_name
):
    dispatcher, _ = service_factory(num_workers=1)
    dataset = distribute(Dataset.range(N), dispatcher, "distributed_epoch", job_name=job_name)
    it = iter(dataset)
    state = it.state_dict()
    _take(it, 30)  # read from the job the checkpoint names: rolled back
    it.close()
    fresh = distribute(Dataset.range(N), dispatcher, "distributed_epoch", job_name=job_name)
    _assert_counts(_ints(_restored(fresh, state)), _expected("distributed_epoch", 1))


@pytest.mark.parametrize("mode", ["distributed_epoch", "parallel_epochs"])
def test_a_job_read_to_its_end_after_the_checkpoint_runs_again(service_factory, mode):
    """Every task finished (and its worker dropped it) before the restore: the rewind runs
    them again, from the checkpoint's positions."""
    dispatcher, workers = service_factory(
        num_workers=2, worker_config={"heartbeat_interval_ms": 50}
    )
    dataset = distribute(Dataset.range(N), dispatcher, mode)
    it = iter(dataset)
    head = _take(it, 11)
    state = it.state_dict()
    _ints(it)  # to the end: the job finishes
    deadline = time.monotonic() + scaled(15)
    while any(w._num_tasks() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.02)  # until the workers dropped the finished tasks
    assert not any(w._num_tasks() for w in workers), "the workers kept the finished tasks"
    _assert_counts(head + _ints(_restored(dataset, state)), _expected(mode, 2))


def test_a_checkpoint_of_a_restored_iterator_restores_again(service_factory):
    dispatcher, _ = service_factory(num_workers=2)
    dataset = distribute(Dataset.range(N).map(_slow), dispatcher, "distributed_epoch")
    it = iter(dataset)
    first = _take(it, 10)
    state = it.state_dict()
    it.close()
    again = _restored(dataset, state)
    second = _take(again, 30)
    state = again.state_dict()
    _take(again, 5)
    again.close()
    rest = _ints(_restored(dataset, state))
    _assert_counts(first + second + rest, _expected("distributed_epoch", 2))


def test_local_transforms_after_the_service_are_checkpointed_with_it(service_factory):
    dispatcher, _ = service_factory(num_workers=2)
    dataset = (
        distribute(Dataset.range(N), dispatcher, "distributed_epoch")
        .map(lambda x: x * 10)
        .batch(4)
        .prefetch(2)
    )
    it = iter(dataset)
    head = [int(v) for _ in range(5) for v in next(it)]
    state = it.state_dict()
    next(it)
    it.close()
    rest = [int(v) for batch in _restored(dataset, state) for v in batch]
    assert sorted(head + rest) == [x * 10 for x in range(N)]


def test_a_shared_job_restores_one_reader_while_another_reads_on(service_factory):
    dispatcher, _ = service_factory(num_workers=2)

    def reader() -> Any:
        return distribute(
            Dataset.range(N).map(_slow), dispatcher, "distributed_epoch", job_name="shared"
        )

    a, b = iter(reader()), iter(reader())
    got_b = _take(b, 5)
    got_a = _take(a, 15)
    state = a.state_dict()
    _take(a, 10)  # rolled back by the restore
    a.close()
    got_b += _take(b, 5)
    restored = _restored(reader(), state)
    got_a += _ints(restored)
    got_b += _ints(b)
    _assert_counts(got_a + got_b, _expected("distributed_epoch", 1))


def test_a_shared_job_restore_leaves_out_what_a_departed_reader_consumed(service_factory):
    dispatcher, _ = service_factory(num_workers=2)

    def reader() -> Any:
        return distribute(
            Dataset.range(N).map(_slow), dispatcher, "distributed_epoch", job_name="departed"
        )

    a, b = iter(reader()), iter(reader())
    got_b = _take(b, 20)
    b.close()  # leaves the job, saying what it consumed (its buffered elements are not)
    got_a = _take(a, 15)
    state = a.state_dict()
    _take(a, 10)  # rolled back
    a.close()
    got_a += _ints(_restored(reader(), state))
    _assert_counts(got_a + got_b, _expected("distributed_epoch", 1))


def test_a_restored_named_job_lets_the_next_epoch_start_a_new_job(service_factory):
    dispatcher, _ = service_factory(num_workers=1)
    dataset = distribute(Dataset.range(N), dispatcher, "distributed_epoch", job_name="epochs")
    it = iter(dataset)
    head = _take(it, 7)
    state = it.state_dict()
    it.close()
    fresh = distribute(Dataset.range(N), dispatcher, "distributed_epoch", job_name="epochs")
    _assert_counts(head + _ints(_restored(fresh, state)), _expected("distributed_epoch", 1))
    # The restored reader was iteration 0 of ``fresh``: the next is a new epoch, not the
    # finished job again.
    _assert_counts(_ints(fresh), _expected("distributed_epoch", 1))


# -- refusals ------------------------------------------------------------------------------------


def test_a_non_deterministic_pipeline_refuses_to_checkpoint_and_says_why(service_factory):
    dispatcher, _ = service_factory(num_workers=1)
    dataset = distribute(Dataset.range(N).shuffle(10), dispatcher, "distributed_epoch")
    it = iter(dataset)
    next(it)
    with pytest.raises(errors.FailedPreconditionError, match="not deterministic.*seed"):
        it.state_dict()
    it.close()


def test_coordinated_reads_refuse_to_checkpoint(service_factory):
    dispatcher, _ = service_factory(num_workers=1)
    dataset = distribute(
        Dataset.range(N).repeat(),
        dispatcher,
        "parallel_epochs",
        job_name="rounds",
        consumer_index=0,
        num_consumers=1,
    )
    it = iter(dataset)
    next(it)
    with pytest.raises(errors.FailedPreconditionError, match="coordinated reads"):
        it.state_dict()
    it.close()


def test_restoring_a_collected_job_fails_at_once_saying_so(service_factory):
    dispatcher, _ = service_factory(
        num_workers=1, job_gc_timeout_ms=100, job_gc_check_interval_ms=20
    )
    dataset = distribute(Dataset.range(N), dispatcher, "distributed_epoch")
    it = iter(dataset)
    _take(it, 3)
    state = it.state_dict()
    it.close()
    deadline = time.monotonic() + scaled(15)
    while dispatcher._num_jobs() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert dispatcher._num_jobs() == 0, "the job was never collected"
    restored = _restored(dataset, state)
    started = time.monotonic()
    with pytest.raises(errors.NotFoundError, match="garbage collected"):
        next(restored)
    assert time.monotonic() - started < scaled(10)


def test_a_state_of_another_dataset_is_refused(service_factory):
    dispatcher, _ = service_factory(num_workers=1)
    first = distribute(Dataset.range(N), dispatcher, "distributed_epoch")
    other = distribute(Dataset.range(N + 1), dispatcher, "distributed_epoch")
    it = iter(first)
    next(it)
    state = it.state_dict()
    it.close()
    with pytest.raises(errors.InvalidArgumentError, match="dataset"):
        iter(other).load_state_dict(state)


# -- across processes and a dispatcher kill -9 ---------------------------------------------------

_RESTORE_SCRIPT = textwrap.dedent(
    """
    import pickle, sys
    import tensorwire as tw

    mode, target, dataset_id, job_name, state_path, out_path = sys.argv[1:]
    dataset = tw.data.service.from_dataset_id(
        mode, target, dataset_id, job_name=job_name or None
    )
    it = iter(dataset)
    with open(state_path, "rb") as f:
        it.load_state_dict(pickle.load(f))
    with open(out_path, "wb") as f:
        pickle.dump([int(x) for x in it], f)
    """
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tensorwire_protocol):
    """A fault-tolerant dispatcher process and two worker processes, for the module."""
    if tensorwire_protocol != "grpc":
        # The processes speak grpc whatever the leg: running them once is enough.
        pytest.skip("kills real processes over grpc; runs with --tensorwire-protocol=grpc")
    work_dir = str(tmp_path_factory.mktemp("journal"))
    with data_service_processes(
        2, dispatcher_args=["--work_dir", work_dir, "--fault_tolerant"]
    ) as (dispatcher, _):
        yield dispatcher


@pytest.mark.parametrize(
    ("mode", "job_name"), [("distributed_epoch", ""), ("parallel_epochs", "named")]
)
def test_restore_in_a_new_process_after_a_dispatcher_kill(
    cluster, tmp_path, monkeypatch, mode, job_name
):
    monkeypatch.setattr(client, "CLIENT_TIMEOUT", scaled(30.0))
    dispatcher = cluster
    target = f"grpc://{dispatcher.address}"
    dataset_id = service.register_dataset(
        target, Dataset.range(N).map(_slow), dataset_id=f"restore-{mode}"
    )
    dataset = service.from_dataset_id(mode, target, dataset_id, job_name=job_name or None)
    it = iter(dataset)
    head = _take(it, 21)
    state_path = tmp_path / "state.pickle"
    state_path.write_bytes(pickle.dumps(it.state_dict()))
    _take(it, 9)  # rolled back
    it.close()
    dispatcher.restart(timeout=30)  # kill -9, then serve the same port from the journal
    out_path = tmp_path / "rest.pickle"
    env = {**os.environ, "TENSORWIRE_DATA_CLIENT_TIMEOUT": str(scaled(30.0))}
    subprocess.run(
        [sys.executable, "-c", _RESTORE_SCRIPT, mode, target, dataset_id, job_name]
        + [str(state_path), str(out_path)],
        check=True,
        timeout=scaled(60),
        env=env,
    )
    rest = pickle.loads(out_path.read_bytes())
    _assert_counts(head + rest, _expected(mode, 2))


# -- torchdata's StatefulDataLoader ------------------------------------------------------------


@pytest.mark.parametrize("num_workers", [0, 2])
def test_stateful_dataloader_resumes_a_service_dataset_exactly_once(
    service_factory, num_workers, request
):
    if num_workers:  # DataLoader worker processes reach the service over the network
        request.getfixturevalue("cross_process_protocol")
    pytest.importorskip("torch", reason="needs torch")
    stateful = pytest.importorskip(
        "torchdata.stateful_dataloader", reason="needs torchdata (pip install torchdata)"
    )
    dispatcher, _ = service_factory(num_workers=2)
    dataset = distribute(Dataset.range(N).map(_slow), dispatcher, "distributed_epoch")

    def loader() -> Any:
        kwargs: dict[str, Any] = {"batch_size": None, "num_workers": num_workers}
        if num_workers:
            # Not fork: this process serves gRPC (the dispatcher and workers above).
            kwargs.update(multiprocessing_context="spawn", timeout=60)
        return stateful.StatefulDataLoader(service.to_torch(dataset), **kwargs)

    first = loader()
    it = iter(first)
    head = [int(next(it)) for _ in range(13)]
    state = pickle.loads(pickle.dumps(first.state_dict()))
    for _ in range(5):  # consumed after the checkpoint: rolled back
        next(it)
    del it
    resumed = loader()
    resumed.load_state_dict(state)
    _assert_counts(head + [int(x) for x in resumed], _expected("distributed_epoch", 1), dispatcher)


# -- the dispatcher's records --------------------------------------------------------------------


def test_rewind_records_survive_a_journal_snapshot():
    """keep_job, a departure with its account and rewind_job: applied, then compacted into
    a snapshot and read back, as a restarted dispatcher does."""
    from tensorwire_dataservice.service.state import DispatcherState

    state = DispatcherState()
    for record in [
        {"op": "create_job", "job_id": 1, "job_name": "j", "iteration": 0, "dataset_id": "7"}
        | {"policy": 1, "num_consumers": -1, "target_workers": "AUTO", "exact": True},
        {"op": "create_task", "task_id": 5, "job_id": 1, "worker_address": "w:1"},
        {"op": "give_splits", "job_id": 1, "task_id": 5, "position": 0, "count": 3}
        | {"worker": "a"},
        {"op": "acquire_client", "client_id": 10, "job_id": 1},
        {"op": "acquire_client", "client_id": 11, "job_id": 1},
        {"op": "acquire_client", "client_id": 12, "job_id": 1},
        {"op": "keep_job", "job_id": 1},
        {"op": "release_client", "client_id": 11, "consumed": [[5, [[20, 30]]]]},
        {"op": "release_client", "client_id": 10, "consumed": [[5, [[0, 9]]]]},
        {"op": "acquire_client", "client_id": 13, "job_id": 1},
        {"op": "rewind_job", "job_id": 1, "client_id": 13, "replaces": 10}
        | {"consumed": [[5, [[0, 4]]]]},
    ]:
        state.apply(record)
    for restored in (state, DispatcherState.from_snapshot(state.snapshot())):
        task, job = restored.tasks[5], restored.jobs[1]
        assert job.restorable
        assert task.generation == 1
        # The checkpoint's account replaces client 10's; client 11's departure stays.
        assert task.delivered == [[0, 4], [20, 30]]
        assert task.departed == [[11, [[20, 30]]]]
        assert task.awaiting == {12}  # the other live reader reports


def _exact_job_given_splits_on_task_5(tasks: int) -> list[dict[str, Any]]:
    """Journal records: exact job 1 with tasks 5, 6, ... (``tasks`` of them), task 5 given
    3 splits and the others none."""
    return [
        {"op": "create_job", "job_id": 1, "job_name": "", "iteration": 0, "dataset_id": "7"}
        | {"policy": 1, "num_consumers": -1, "target_workers": "AUTO", "exact": True},
        *(
            {"op": "create_task", "task_id": 5 + i, "job_id": 1, "worker_address": f"w:{i + 1}"}
            for i in range(tasks)
        ),
        {"op": "give_splits", "job_id": 1, "task_id": 5, "position": 0, "count": 3}
        | {"worker": "a"},
    ]


def test_a_rewind_moves_a_task_without_splits_on_a_generation_too():
    """A task given no splits by the time of a restore (its worker had not asked yet)
    starts a new generation as well, with nothing to leave out and nobody to wait for.
    Kept at its old generation, it got its first splits after the restore and handed them
    to the checkpointed reader's last request, still in flight: the restored reader never
    saw them (seen in CI, 3% of runs beside a busy process). A finished one stays as it is.
    """
    from tensorwire_dataservice.service.state import DispatcherState

    state = DispatcherState()
    for record in [
        *_exact_job_given_splits_on_task_5(tasks=3),
        {"op": "finish_task", "task_id": 7},
        {"op": "acquire_client", "client_id": 10, "job_id": 1},
        {"op": "acquire_client", "client_id": 11, "job_id": 1},
        {"op": "keep_job", "job_id": 1},
        {"op": "acquire_client", "client_id": 12, "job_id": 1},
        {"op": "release_client", "client_id": 10},  # the checkpointed reader
        {"op": "rewind_job", "job_id": 1, "client_id": 12, "replaces": 10}
        | {"consumed": [[5, [[0, 2]]]], "unsplit_tasks_too": True},
    ]:
        state.apply(record)
    for restored in (state, DispatcherState.from_snapshot(state.snapshot())):
        with_splits, without, finished = (restored.tasks[t] for t in (5, 6, 7))
        assert (with_splits.generation, with_splits.awaiting) == (1, {11})  # 11 reports
        assert (without.generation, without.delivered, without.awaiting) == (1, [], set())
        assert not without.finished
        assert (finished.generation, finished.finished) == (0, True)


def test_a_rewind_journaled_before_that_rule_replays_as_it_was_applied():
    """A journal written by an older dispatcher: its rewind left tasks without splits at
    their generation, and the tasks went on from there (splits, elements delivered), so
    replaying it must leave them there too."""
    from tensorwire_dataservice.service.state import DispatcherState

    state = DispatcherState()
    for record in [
        *_exact_job_given_splits_on_task_5(tasks=2),
        {"op": "acquire_client", "client_id": 12, "job_id": 1},
        {"op": "rewind_job", "job_id": 1, "client_id": 12, "replaces": 10, "consumed": []},
    ]:
        state.apply(record)
    assert (state.tasks[5].generation, state.tasks[6].generation) == (1, 0)
