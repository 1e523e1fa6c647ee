"""distributed_save and Dataset.load through the service: in-process servers on loopback,
and real dispatcher and worker processes killed -9 in the middle of a save.

A "gate" (a file the test creates) holds the writing of the later splits, so a kill lands
while the save is unfinished without depending on timing.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from collections import Counter

import cloudpickle
import numpy as np
import pytest
import tensorwire as tw
from tensorwire import errors
from tensorwire_dataservice.dataset import snapshot_format as fmt
from tensorwire_testing.data_service import data_service_processes
from tensorwire_testing.waiting import scaled

from .helpers import distribute, values

cloudpickle.register_pickle_by_value(sys.modules[__name__])

Dataset = tw.data.Dataset
distributed_save = tw.data.experimental.distributed_save


def wait_until(condition, what: str, timeout: float = 30.0) -> None:
    """Poll ``condition`` until true; fail naming ``what`` after ``timeout`` (scaled)."""
    deadline = time.monotonic() + scaled(timeout)
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def wait_done(path: str, timeout: float = 30.0) -> None:
    wait_until(lambda: fmt.is_finished(path), f"the snapshot at {path} to be finished", timeout)


def gated(x, gate: str, from_value: int):
    """``x``, once the file ``gate`` exists for elements from ``from_value`` on: keeps a
    save unfinished until the test opens the gate (deadline: the test's). Only in a
    worker's snapshot writer: the client calls it too, to infer the element spec."""
    writing = threading.current_thread().name.startswith("tw-data-snapshot")
    if writing and int(x) >= from_value:
        deadline = time.monotonic() + scaled(60)
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
    return x


def test_save_then_load_locally_and_through_the_service(service_factory, tmp_path):
    dispatcher, _ = service_factory(2)
    path = str(tmp_path / "snap")
    ds = Dataset.range(300).map(lambda x: (x, np.full(3, x, np.float32)))
    distributed_save(ds, path, dispatcher.target)
    wait_done(path)
    loaded = Dataset.load(path)
    assert loaded.element_spec == ds.element_spec
    # Chunks are the source's splits in order, and map keeps each split together.
    assert [int(x) for x, _ in loaded] == list(range(300))
    assert all(np.array_equal(v, np.full(3, x, np.float32)) for x, v in loaded)
    # Each chunk is a split of the load: every element once over the two workers.
    got = values(
        distribute(Dataset.load(path).map(lambda x, v: x), dispatcher, "distributed_epoch")
    )
    assert Counter(got) == Counter(range(300))


def test_every_compression(service_factory, tmp_path):
    dispatcher, _ = service_factory(1)
    for compression in ("AUTO", "GZIP", "ZLIB", None):
        path = str(tmp_path / str(compression))
        distributed_save(Dataset.range(40), path, dispatcher.target, compression=compression)
        wait_done(path)
        expected = fmt.resolve_compression(compression)[0]
        assert fmt.read_metadata(path)["compression"] == expected
        assert [int(x) for x in Dataset.load(path)] == list(range(40))


def test_load_through_two_workers_reads_each_chunk_once(service_factory, tmp_path):
    path = str(tmp_path / "local")
    # shard_func: 20 chunks, the splits a load through the service hands out.
    Dataset.range(1000).save(path, shard_func=lambda x: x % 20)
    dispatcher, _ = service_factory(2)
    ds = distribute(Dataset.load(path), dispatcher, "distributed_epoch")
    assert Counter(values(ds)) == Counter(range(1000))


def test_refusals(service_factory, tmp_path):
    dispatcher, _ = service_factory(1)
    gate = str(tmp_path / "gate")
    running = str(tmp_path / "running")
    ds = Dataset.range(20).map(functools.partial(gated, gate=gate, from_value=0))
    distributed_save(ds, running, dispatcher.target)
    for spelling in (running, running + "/", running + "/../running"):
        with pytest.raises(errors.AlreadyExistsError, match="in progress"):
            distributed_save(Dataset.range(3), spelling, dispatcher.target)
    open(gate, "w").close()
    wait_done(running)
    with pytest.raises(errors.AlreadyExistsError, match="finished snapshot"):
        distributed_save(Dataset.range(3), running, dispatcher.target)
    with pytest.raises(errors.InvalidArgumentError, match="absolute"):
        distributed_save(Dataset.range(3), "relative/snap", dispatcher.target)
    with pytest.raises(errors.InvalidArgumentError, match="Unsupported snapshot compression"):
        distributed_save(Dataset.range(3), str(tmp_path / "x"), dispatcher.target, "SNAPPY")
    with pytest.raises(TypeError, match="must be a tw.data.Dataset"):
        distributed_save([1, 2, 3], str(tmp_path / "y"), dispatcher.target)
    with pytest.raises(errors.InvalidArgumentError, match="splittable"):
        distributed_save(
            Dataset.from_generator(
                lambda: iter([1]), output_signature=tw.data.TensorSpec((), np.int64)
            ),
            str(tmp_path / "z"),
            dispatcher.target,
        )
    with pytest.raises(errors.InvalidArgumentError, match="infinite"):
        distributed_save(Dataset.range(3).repeat(), str(tmp_path / "w"), dispatcher.target)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(errors.PermissionDeniedError, match="cannot write"):
        distributed_save(Dataset.range(3), str(blocker / "snap"), dispatcher.target)


def test_a_failing_pipeline_fails_the_save_with_its_reason(service_factory, tmp_path):
    dispatcher, _ = service_factory(1)
    path = str(tmp_path / "snap")

    def boom(x):
        if int(x) == 7:
            raise ValueError("element seven is bad")
        return x

    distributed_save(Dataset.range(20).map(boom), path, dispatcher.target)
    wait_until(lambda: os.path.exists(os.path.join(path, fmt.ERROR_FILE)), "the ERROR file")
    with pytest.raises(errors.FailedPreconditionError, match="element seven is bad"):
        Dataset.load(path)


def test_a_worker_that_cannot_write_fails_the_save_with_its_reason(service_factory, tmp_path):
    """A worker that refuses pipelines sent as code (while the dispatcher takes them)."""
    dispatcher, _ = service_factory(1, worker_config={"registered_pipelines_only": True})
    path = str(tmp_path / "snap")
    distributed_save(Dataset.range(5), path, dispatcher.target)
    wait_until(lambda: os.path.exists(os.path.join(path, fmt.ERROR_FILE)), "the ERROR file")
    with pytest.raises(errors.FailedPreconditionError, match="registered pipelines only"):
        Dataset.load(path)


def test_dispatcher_restart_in_process_continues_the_save(service_factory, tmp_path):
    """The journal keeps the save; the directory keeps its chunks (in-process servers)."""
    work_dir = str(tmp_path / "work")
    gate = str(tmp_path / "gate")
    path = str(tmp_path / "snap")
    dispatcher, _ = service_factory(0, work_dir=work_dir, fault_tolerant_mode=True)
    port = int(dispatcher.target.rsplit(":", 1)[1])
    service_factory.add_worker(dispatcher, heartbeat_interval_ms=100)
    ds = Dataset.range(60).map(functools.partial(gated, gate=gate, from_value=30))
    distributed_save(ds, path, dispatcher.target)
    wait_until(lambda: len(fmt.chunk_numbers(path)) >= 10, "the first chunks")
    dispatcher.stop()
    restarted, _ = service_factory(0, work_dir=work_dir, fault_tolerant_mode=True, port=port)
    open(gate, "w").close()
    wait_done(path)
    assert [int(x) for x in Dataset.load(path)] == list(range(60))
    with pytest.raises(errors.AlreadyExistsError, match="finished snapshot"):
        distributed_save(Dataset.range(3), path, restarted.target)


# -- kill -9 of real processes ------------------------------------------------------------------


def _tmp_chunks(path: str) -> int:
    try:
        return sum(name.startswith(".tmp-") for name in os.listdir(os.path.join(path, "chunks")))
    except FileNotFoundError:
        return 0


@pytest.fixture
def cross_process(protocol):
    if protocol == "inproc":
        pytest.skip("inproc cannot reach servers in other processes (runs with grpc)")
    return protocol


def test_dispatcher_kill_9_mid_save_completes_after_restart(cross_process, tmp_path):
    work_dir, gate, path = str(tmp_path / "work"), str(tmp_path / "gate"), str(tmp_path / "snap")
    with data_service_processes(
        2, protocol=cross_process, dispatcher_args=["--work_dir", work_dir, "--fault_tolerant"]
    ) as (dispatcher, _):
        ds = Dataset.range(80).map(functools.partial(gated, gate=gate, from_value=40))
        distributed_save(ds, path, f"{cross_process}://{dispatcher.address}")
        wait_until(lambda: len(fmt.chunk_numbers(path)) >= 20, "the first chunks")
        dispatcher.restart(timeout=60)  # kill -9, then serve the same port from the journal
        assert not fmt.is_finished(path)
        open(gate, "w").close()
        wait_done(path, timeout=60)
    # Splits in order, each once; map keeps each split's elements together: in order.
    assert [int(x) for x in Dataset.load(path)] == list(range(80))
    assert _tmp_chunks(path) == 0  # the dispatcher removed what dead writers left


@pytest.mark.parametrize("comes_back", [False, True], ids=["dropped", "restarted"])
def test_worker_kill_9_mid_save_completes(cross_process, tmp_path, comes_back):
    """Both workers are in the middle of a chunk when one is killed: its split is written
    by the other once the dispatcher dropped it, or by its successor at the same address."""
    gate, path = str(tmp_path / "gate"), str(tmp_path / "snap")
    # Restarted: a timeout it cannot reach, so the new process's first request is what
    # hands the old one's split out again.
    timeout_ms = "60000" if comes_back else "1000"
    with data_service_processes(
        2, protocol=cross_process, dispatcher_args=["--worker_timeout_ms", timeout_ms]
    ) as (dispatcher, workers):
        ds = Dataset.range(80).map(functools.partial(gated, gate=gate, from_value=40))
        distributed_save(ds, path, f"{cross_process}://{dispatcher.address}")
        wait_until(lambda: _tmp_chunks(path) == 2, "both workers writing a gated chunk")
        if comes_back:
            workers[0].restart(timeout=60)
        else:
            workers[0].kill()
        open(gate, "w").close()
        wait_done(path, timeout=60)
    loaded = [int(x) for x in Dataset.load(path)]
    assert Counter(loaded) == Counter(range(80))
    assert loaded == list(range(80))


def test_saves_survive_journal_compaction():
    from tensorwire_dataservice.service.state import DispatcherState

    state = DispatcherState()
    state.apply({"op": "start_snapshot", "path": "/a", "dataset_id": "1000", "request": "r"})
    state.apply({"op": "start_snapshot", "path": "/b", "dataset_id": "1000"})
    state.apply({"op": "finish_snapshot", "path": "/b", "error": "worker w: boom"})
    restored = DispatcherState.from_snapshot(state.snapshot())
    assert restored.snapshots == {
        "/a": {"dataset_id": "1000", "done": False, "error": "", "request": "r"},
        "/b": {"dataset_id": "1000", "done": True, "error": "worker w: boom", "request": ""},
    }
    older = state.snapshot()
    del older["snapshots"]  # a snapshot written before saves existed
    assert DispatcherState.from_snapshot(older).snapshots == {}


def test_the_dispatcher_refuses_malformed_metadata(service_factory, tmp_path):
    from tensorwire_dataservice.service.client import _dispatcher_call, register_dataset
    from tensorwire_dataservice.service.protocol import parse_service

    dispatcher, _ = service_factory(0)
    protocol, address = parse_service(dispatcher.target)
    dataset_id = register_dataset(dispatcher.target, Dataset.range(3))
    request = {"path": str(tmp_path / "m"), "dataset_id": dataset_id, "metadata": b"{}"}
    with pytest.raises(errors.InvalidArgumentError, match="malformed snapshot metadata"):
        _dispatcher_call(protocol, address, "Snapshot", request)
    assert not os.path.exists(tmp_path / "m")


def test_a_retried_start_is_accepted_once(service_factory, tmp_path):
    """The client's retry of a Snapshot whose reply was lost succeeds (same request id);
    another save to the path is refused; a directory left by a start that died before it
    was journaled (metadata only) is started again."""
    from tensorwire_dataservice.service.client import _dispatcher_call, register_dataset
    from tensorwire_dataservice.service.protocol import parse_service

    dispatcher, _ = service_factory(0)  # no worker: the save stays in progress
    protocol, address = parse_service(dispatcher.target)
    dataset_id = register_dataset(dispatcher.target, Dataset.range(3))
    metadata = fmt.metadata_bytes(tw.data.TensorSpec((), np.int64), "")
    path = str(tmp_path / "snap")
    request = {"path": path, "dataset_id": dataset_id, "metadata": metadata, "request": "r1"}
    _dispatcher_call(protocol, address, "Snapshot", request)
    _dispatcher_call(protocol, address, "Snapshot", request)  # the retry
    with pytest.raises(errors.AlreadyExistsError, match="in progress"):
        _dispatcher_call(protocol, address, "Snapshot", {**request, "request": "r2"})
    left = str(tmp_path / "left")
    fmt.write_metadata(left, metadata)
    _dispatcher_call(protocol, address, "Snapshot", {**request, "path": left, "request": "r3"})
    other = fmt.metadata_bytes(tw.data.TensorSpec((), np.int32), "")
    fmt.write_metadata(str(tmp_path / "other"), other)
    with pytest.raises(errors.AlreadyExistsError, match="not an empty directory"):
        _dispatcher_call(
            protocol,
            address,
            "Snapshot",
            {**request, "path": str(tmp_path / "other"), "request": "r4"},
        )


def test_a_writer_that_asks_again_gets_its_split_and_a_new_writer_takes_it_over(tmp_path):
    """The hand-out of splits to writers (one per save on each worker) survives a lost
    reply and a writer that ends: before, a retried GetSnapshotSplit drew a new split and
    the first stayed assigned to nobody who wrote it, so the save never finished."""
    from tensorwire_dataservice.service import pipeline
    from tensorwire_dataservice.service.config import DispatcherConfig
    from tensorwire_dataservice.service.dispatcher import _Dispatcher

    core = _Dispatcher(DispatcherConfig())
    worker = "localhost:1"
    core.worker_heartbeat({"worker_address": worker, "incarnation": "p1", "tasks": []})
    dataset_id = core.get_or_register_dataset(
        {"dataset_def": pipeline.serialize(Dataset.range(3)), "metadata": {}, "dataset_id": ""}
    )["dataset_id"]
    path = str(tmp_path / "snap")
    metadata = fmt.metadata_bytes(tw.data.TensorSpec((), np.int64), "")
    core.snapshot({"path": path, "dataset_id": dataset_id, "metadata": metadata})

    def ask(stream: str, **more):
        request = {"path": path, "worker_address": worker, "worker": "p1", "stream": stream}
        return core.get_snapshot_split({**request, **more})

    first = ask("s1")["number"]
    assert ask("s1")["number"] == first, "a retried request gets the split it was handed"
    assert ask("s2")["number"] == first, "a new writer on the worker takes over the old one's"
    for number in range(3):  # s2 writes every split, committing each with its next request
        fmt.write_chunk(path, number, iter([np.int64(number)]), "", None)
        reply = ask("s2", committed=number)
    assert reply == {"end": True}
    assert fmt.is_finished(path)
