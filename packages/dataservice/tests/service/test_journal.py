"""The dispatcher journal: framing, checksums, torn tails, and in-process recovery."""

from __future__ import annotations

import os
import struct
import zlib

import pytest
import tensorwire as tw
from tensorwire import errors
from tensorwire_dataservice.service.journal import JOURNAL_FILE, Journal, read_journal
from tensorwire_dataservice.service.pipeline import decode_split

from .helpers import distribute, values

service = tw.data.service
Dataset = tw.data.Dataset


def _records(n):
    return [{"op": "register_worker", "address": f"localhost:{i}", "blob": b"x" * i}
            for i in range(n)]


def test_records_round_trip(tmp_path):
    journal = Journal(str(tmp_path))
    for record in _records(5):
        journal.write(record)
    journal.close()
    records, valid = read_journal(str(tmp_path))
    assert records == _records(5)
    assert valid == os.path.getsize(tmp_path / JOURNAL_FILE)


def test_record_format_is_length_crc_payload(tmp_path):
    journal = Journal(str(tmp_path))
    journal.write({"op": "x"})
    journal.close()
    data = (tmp_path / JOURNAL_FILE).read_bytes()
    length, crc = struct.unpack_from("<II", data)
    assert length == len(data) - 8
    assert crc == zlib.crc32(data[8:])


@pytest.mark.parametrize("cut", [1, 5, 9, 20])
def test_torn_tail_is_ignored_and_truncated(tmp_path, cut):
    journal = Journal(str(tmp_path))
    for record in _records(3):
        journal.write(record)
    journal.close()
    path = tmp_path / JOURNAL_FILE
    whole = path.read_bytes()
    extra = _framed({"op": "register_worker", "address": "torn", "blob": b"y" * 30})
    path.write_bytes(whole + extra[:cut])  # a crash in the middle of the fourth write
    records, valid = read_journal(str(tmp_path))
    assert records == _records(3) and valid == len(whole)
    journal = Journal(str(tmp_path), valid)
    journal.write({"op": "after"})
    journal.close()
    records, _ = read_journal(str(tmp_path))
    assert records == _records(3) + [{"op": "after"}]


def test_checksum_mismatch_stops_reading(tmp_path):
    journal = Journal(str(tmp_path))
    for record in _records(3):
        journal.write(record)
    journal.close()
    path = tmp_path / JOURNAL_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # flip a bit of the last record's payload
    path.write_bytes(bytes(data))
    records, _ = read_journal(str(tmp_path))
    assert records == _records(2)


def test_valid_checksum_but_garbage_is_data_loss(tmp_path):
    (tmp_path / JOURNAL_FILE).write_bytes(_framed_raw(b"not a codec message"))
    with pytest.raises(errors.DataLossError, match="does not decode"):
        read_journal(str(tmp_path))


def _framed_raw(payload: bytes) -> bytes:
    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def _framed(record) -> bytes:
    from tensorwire import codec

    return _framed_raw(codec.dumps(record))


# -- recovery in one process ------------------------------------------------------------------


def _ft_dispatcher(protocol, work_dir, port=0, **kw):
    return service.DispatchServer(service.DispatcherConfig(
        port=port, protocol=protocol, work_dir=str(work_dir), fault_tolerant_mode=True, **kw))


def test_restart_recovers_datasets_and_workers(protocol, tmp_path):
    dispatcher = _ft_dispatcher(protocol, tmp_path)
    port = int(dispatcher._address.split(":")[1])
    worker = service.WorkerServer(service.WorkerConfig(dispatcher._address, protocol=protocol))
    ds = Dataset.range(10)
    dataset_id = service.register_dataset(dispatcher.target, ds, dataset_id="kept")
    other = service.register_dataset(dispatcher.target, Dataset.range(3))
    worker.stop()
    dispatcher.stop()

    # The old worker is not coming back: a short worker timeout drops it after recovery.
    restarted = _ft_dispatcher(protocol, tmp_path, port=port, worker_timeout_ms=500)
    try:
        assert restarted._num_workers() == 1  # known from the journal until it times out
        assert service.register_dataset(restarted.target, Dataset.range(3)) == other
        worker = service.WorkerServer(service.WorkerConfig(
            restarted._address, protocol=protocol, heartbeat_interval_ms=50))
        got = values(service.from_dataset_id("parallel_epochs", restarted.target, dataset_id))
        assert got == list(range(10))
        # fresh ids continue after the recovered ones
        assert service.register_dataset(restarted.target, Dataset.range(4)) not in (other,)
        worker.stop()
    finally:
        restarted.stop()


def test_without_fault_tolerance_nothing_is_journaled(protocol, tmp_path):
    dispatcher = service.DispatchServer(service.DispatcherConfig(
        protocol=protocol, work_dir=str(tmp_path)))
    service.register_dataset(dispatcher.target, Dataset.range(3))
    dispatcher.stop()
    assert not (tmp_path / JOURNAL_FILE).exists()


def test_recovered_split_position(protocol, tmp_path):
    dispatcher = _ft_dispatcher(protocol, tmp_path)
    port = int(dispatcher._address.split(":")[1])
    worker = service.WorkerServer(service.WorkerConfig(dispatcher._address, protocol=protocol))
    # Far more splits than a worker fetches ahead, so some are left after the restart.
    ds = distribute(Dataset.range(10**8), dispatcher, "distributed_epoch", job_name="splits")
    it = iter(ds)
    first = [int(next(it)) for _ in range(10)]
    it.close()
    worker.stop()
    dispatcher.stop()
    given = [r for r in read_journal(str(tmp_path))[0] if r["op"] == "give_splits"]
    assert given and sum(r["count"] for r in given) > 0

    restarted = _ft_dispatcher(protocol, tmp_path, port=port)
    try:
        core = restarted._core
        job = next(iter(core.state.jobs.values()))
        assert job.num_splits > 0 and job.job_name == "splits"
        # The next split handed out (to a new worker incarnation) follows the ones given out
        # before the restart.
        task_id = job.task_ids[0]
        reply = core.get_splits({"job_id": job.job_id, "task_id": task_id, "max": 1,
                                 "position": 0, "worker": "new"})
        begin, _ = decode_split(reply["splits"][0])
        assert begin > max(first)
    finally:
        restarted.stop()


def test_lost_split_reply_is_handed_out_again_after_a_restart(protocol, tmp_path):
    """A worker asking again from the position of its last hand-out (the reply was lost in
    a dispatcher restart) gets the same splits, not new ones: nothing is skipped."""
    dispatcher = _ft_dispatcher(protocol, tmp_path)
    port = int(dispatcher._address.split(":")[1])
    try:
        dataset_id = service.register_dataset(dispatcher.target, Dataset.range(1000))
        core = dispatcher._core
        job_id = core.get_or_create_job({"dataset_id": dataset_id, "policy": 1})["job_id"]
        task_id = _add_task(core, job_id)
        ask = {"job_id": job_id, "task_id": task_id, "max": 4, "worker": "w1"}
        first = core.get_splits({**ask, "position": 0})["splits"]
        second = core.get_splits({**ask, "position": len(first)})["splits"]
        assert core.get_splits({**ask, "position": len(first)})["splits"] == second
    finally:
        dispatcher.stop()
    restarted = _ft_dispatcher(protocol, tmp_path, port=port)
    try:
        core = restarted._core
        again = core.get_splits({**ask, "position": len(first)})["splits"]
        assert [decode_split(s) for s in again] == [decode_split(s) for s in second]
        after = core.get_splits({**ask, "position": len(first) + len(second)})["splits"]
        assert decode_split(after[0])[0] == decode_split(second[-1])[1]  # the very next split
        # Another worker incarnation at the same position is a restarted worker: new splits.
        other = core.get_splits({**ask, "worker": "w2", "position": len(first)})["splits"]
        assert decode_split(other[0])[0] == decode_split(after[-1])[1]
    finally:
        restarted.stop()


def _add_task(core, job_id):
    """A task for ``job_id`` on a made-up worker, as a heartbeat would create it."""
    with core.lock:
        core._commit({"op": "register_worker", "address": "localhost:1"})
        job = core.state.jobs[job_id]
        core._commit({"op": "create_task", "task_id": core.state.next_task_id,
                      "job_id": job_id, "worker_address": "localhost:1"})
        return job.task_ids[-1]


def test_many_restarts_while_reading_distributed_epoch(cross_process_protocol, tmp_path):
    """TF's testDispatcherManyRestarts: each element exactly once across three restarts."""
    protocol = cross_process_protocol
    dispatcher = _ft_dispatcher(protocol, tmp_path)
    port = int(dispatcher._address.split(":")[1])
    worker = service.WorkerServer(service.WorkerConfig(dispatcher._address, protocol=protocol,
                                                       heartbeat_interval_ms=50))
    n = 3000
    ds = distribute(Dataset.range(n), dispatcher, "distributed_epoch", job_name="many",
                    max_outstanding_requests=1)
    it = iter(ds)
    got = []
    try:
        for _ in range(3):
            got.extend(int(next(it)) for _ in range(200))
            dispatcher.stop()
            dispatcher = _ft_dispatcher(protocol, tmp_path, port=port)
        got.extend(int(x) for x in it)
    finally:
        worker.stop()
        dispatcher.stop()
    assert sorted(got) == list(range(n))


def test_restart_between_iterations(protocol, tmp_path):
    dispatcher = _ft_dispatcher(protocol, tmp_path)
    port = int(dispatcher._address.split(":")[1])
    worker = service.WorkerServer(service.WorkerConfig(dispatcher._address, protocol=protocol,
                                                       heartbeat_interval_ms=50))
    try:
        ds = distribute(Dataset.range(20), dispatcher, "distributed_epoch")
        assert sorted(values(ds)) == list(range(20))
        dispatcher.stop()
        dispatcher = _ft_dispatcher(protocol, tmp_path, port=port)
        assert sorted(values(ds)) == list(range(20))
    finally:
        worker.stop()
        dispatcher.stop()


def test_change_processing_mode_after_restart_is_refused(protocol, tmp_path):
    dispatcher = _ft_dispatcher(protocol, tmp_path)
    port = int(dispatcher._address.split(":")[1])
    worker = service.WorkerServer(service.WorkerConfig(dispatcher._address, protocol=protocol,
                                                       heartbeat_interval_ms=50))
    try:
        it = iter(distribute(Dataset.range(10**6), dispatcher, "parallel_epochs",
                             job_name="job"))
        next(it)
        dispatcher.stop()
        dispatcher = _ft_dispatcher(protocol, tmp_path, port=port)
        with pytest.raises(errors.InvalidArgumentError, match="already an existing job"):
            next(iter(distribute(Dataset.range(10**6), dispatcher, "distributed_epoch",
                                 job_name="job")))
        it.close()
    finally:
        worker.stop()
        dispatcher.stop()
