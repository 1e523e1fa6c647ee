"""The dispatcher journal: framing, torn tails against corruption, size limits, records that
cannot be applied, compaction and crashes during it, and in-process recovery."""

from __future__ import annotations

import logging
import os
import struct
import tempfile
import time
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorwire as tw
from tensorwire import codec, errors
from tensorwire_dataservice.service import journal as journal_module
from tensorwire_dataservice.service import journal_format as fmt
from tensorwire_dataservice.service import pipeline
from tensorwire_dataservice.service.dispatcher import _Dispatcher
from tensorwire_dataservice.service.journal import Journal, recover
from tensorwire_dataservice.service.pipeline import decode_split
from tensorwire_dataservice.service.protocol import DISPATCHER_SERVICE, call, call_with_retries
from tensorwire_dataservice.service.state import DispatcherState

from .helpers import distribute, values

service = tw.data.service
Dataset = tw.data.Dataset


def _records(n):
    return [
        {"op": "register_worker", "address": f"localhost:{i}", "blob": b"x" * i} for i in range(n)
    ]


def _journal_with(work_dir, records) -> Path:
    journal = Journal(str(work_dir))
    for record in records:
        journal.write(record)
    journal.close()
    return Path(journal.path)


def _recovered(work_dir):
    return [entry.record for entry in recover(str(work_dir)).entries]


def test_records_round_trip(tmp_path):
    path = _journal_with(tmp_path, _records(5))
    recovery = recover(str(tmp_path))
    assert [e.record for e in recovery.entries] == _records(5)
    assert recovery.journal_end == path.stat().st_size
    assert all(e.path == str(path) for e in recovery.entries)


def test_file_and_frame_format(tmp_path):
    path = _journal_with(tmp_path, [{"op": "x"}])
    assert path.name == "journal-0000000000.log"
    data = path.read_bytes()
    magic, generation, file_crc = struct.unpack_from("<8sQI", data)
    assert (magic, generation, file_crc) == (b"TWJRNL\x00\x02", 0, zlib.crc32(data[:16]))
    length, payload_crc, header_crc = struct.unpack_from("<III", data, 20)
    payload = data[32 : 32 + length]
    assert header_crc == zlib.crc32(data[20:28]) and payload_crc == zlib.crc32(payload)
    assert codec.loads(payload) == {"op": "x"}
    assert data[32 + length :] == b"TWE\x01"


# -- torn tails are cut, corruption refuses to start ------------------------------------------


def test_every_torn_tail_of_the_last_write_is_cut(tmp_path):
    """A torn write is a prefix of the last write, possibly followed by zeros: every such
    tail is cut and the records before it kept."""
    path = _journal_with(tmp_path, _records(3))
    whole = path.read_bytes()
    last = fmt.frame(codec.dumps({"op": "register_worker", "address": "torn", "blob": b"y" * 30}))
    for cut in range(len(last)):
        for zeros in (0, 3, len(last) - cut, 4096):
            path.write_bytes(whole + last[:cut] + b"\x00" * zeros)
            recovery = recover(str(tmp_path))
            assert [e.record for e in recovery.entries] == _records(3), (cut, zeros)
            assert recovery.journal_end == len(whole)
    journal = Journal(str(tmp_path))  # opening cuts the tail; new records follow the old
    journal.write({"op": "after"})
    journal.close()
    assert _recovered(tmp_path) == _records(3) + [{"op": "after"}]


def _frame_offsets(path):
    return [f.offset for f in fmt.scan(path.read_bytes(), str(path)).frames]


# Offsets inside a frame: its length field, payload CRC, header CRC, the payload's first and
# last byte, and the end marker.
_PLACES = {
    "length": 1,
    "payload_crc": 5,
    "header_crc": 9,
    "payload_start": 12,
    "payload_end": -5,
    "end_marker": -1,
}


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _place(path, index, where):
    offsets = _frame_offsets(path)
    start = offsets[index]
    if _PLACES[where] >= 0:
        return start, start + _PLACES[where]
    end = offsets[index + 1] if index + 1 < len(offsets) else path.stat().st_size
    return start, end + _PLACES[where]


@pytest.mark.parametrize("where", sorted(_PLACES))
@pytest.mark.parametrize("index", [0, 2, 4], ids=["first", "middle", "last"])
def test_a_flipped_byte_is_corruption_naming_file_and_offset(tmp_path, where, index):
    path = _journal_with(tmp_path, _records(5))
    start, offset = _place(path, index, where)
    _flip(path, offset)
    with pytest.raises(errors.DataLossError, match=rf"{path} is corrupt at byte {start}:"):
        recover(str(tmp_path))
    size = path.stat().st_size
    with pytest.raises(errors.DataLossError):
        Journal(str(tmp_path))
    assert path.stat().st_size == size  # nothing was cut


def test_a_damaged_file_header_is_corruption(tmp_path):
    path = _journal_with(tmp_path, _records(2))
    _flip(path, 3)
    with pytest.raises(errors.DataLossError, match=rf"{path}: bad file header at byte 0"):
        recover(str(tmp_path))


def test_dispatcher_refuses_to_start_on_corruption(protocol, tmp_path):
    dispatcher = _ft_dispatcher(protocol, tmp_path)
    for i in range(3):
        service.register_dataset(dispatcher.target, Dataset.range(i + 1))
    dispatcher.stop()
    path = next(tmp_path.glob("journal-*.log"))
    start, offset = _place(path, 1, "length")
    _flip(path, offset)
    with pytest.raises(errors.DataLossError, match=rf"{path} is corrupt at byte {start}"):
        _ft_dispatcher(protocol, tmp_path)


# -- records the journal refuses, records recovery skips -----------------------------------


def test_record_limit_is_2_gib():
    assert fmt.MAX_RECORD_BYTES == 2**31
    fmt.check_record_size(2**31)
    with pytest.raises(errors.ResourceExhaustedError, match=f"record of {2**31 + 1} bytes"):
        fmt.check_record_size(2**31 + 1)


class _JustOver2GiB:
    """Stands for an encoded record one byte over the limit, without allocating it."""

    def __len__(self):
        return 2**31 + 1


def test_journal_refuses_a_record_over_2_gib_before_writing(tmp_path, monkeypatch):
    path = _journal_with(tmp_path, _records(1))
    size = path.stat().st_size
    journal = Journal(str(tmp_path))
    fake_codec = types.SimpleNamespace(dumps=lambda record: _JustOver2GiB(), loads=codec.loads)
    monkeypatch.setattr(journal_module, "codec", fake_codec)
    with pytest.raises(errors.ResourceExhaustedError, match="limit is 2147483648 bytes"):
        journal.write({"op": "huge"})
    monkeypatch.undo()
    journal.write({"op": "after"})
    journal.close()
    assert _recovered(tmp_path) == _records(1) + [{"op": "after"}]
    assert path.stat().st_size > size


def test_oversized_dataset_is_refused_and_nothing_changes(protocol, tmp_path, monkeypatch):
    monkeypatch.setattr(fmt, "MAX_RECORD_BYTES", 64 * 1024)
    dispatcher = _ft_dispatcher(protocol, tmp_path)
    port = int(dispatcher._address.split(":")[1])
    try:
        small = service.register_dataset(dispatcher.target, Dataset.range(3))
        path = Path(dispatcher._core.journal.path)
        size = path.stat().st_size
        big = Dataset.from_tensor_slices(np.arange(100_000, dtype=np.int64))
        with pytest.raises(errors.ResourceExhaustedError, match="limit is 65536 bytes"):
            service.register_dataset(dispatcher.target, big)
        assert path.stat().st_size == size
        assert list(dispatcher._core.state.datasets) == [small]
    finally:
        dispatcher.stop()
    restarted = _ft_dispatcher(protocol, tmp_path, port=port)
    try:
        assert list(restarted._core.state.datasets) == [small]
    finally:
        restarted.stop()


@pytest.mark.parametrize("bad", ["café", "²", "日本", "tab\there", 5])
def test_bad_dataset_ids_are_refused_and_a_restart_works(protocol, tmp_path, bad):
    dispatcher = _ft_dispatcher(protocol, tmp_path)
    port = int(dispatcher._address.split(":")[1])
    try:
        address = dispatcher._address
        request = {
            "dataset_def": pipeline.serialize(Dataset.range(3)),
            "metadata": {},
            "dataset_id": bad,
        }
        with pytest.raises(errors.InvalidArgumentError, match="printable ASCII"):
            # With retries, as every client calls a dispatcher: this process's cached
            # channel to the same address (a port the system gave an earlier test's
            # server) may still be in gRPC's reconnect backoff, failing at once for up to
            # 2 s (a CI failure).
            call_with_retries(
                lambda: call(
                    protocol, address, DISPATCHER_SERVICE, "GetOrRegisterDataset", request
                ),
                deadline=time.monotonic() + 30,
                what="GetOrRegisterDataset",
            )
        if isinstance(bad, str):
            with pytest.raises(errors.InvalidArgumentError, match="printable ASCII"):
                service.register_dataset(dispatcher.target, Dataset.range(3), dataset_id=bad)
        kept = service.register_dataset(dispatcher.target, Dataset.range(3), dataset_id="kept")
    finally:
        dispatcher.stop()
    restarted = _ft_dispatcher(protocol, tmp_path, port=port)
    try:
        assert list(restarted._core.state.datasets) == [kept]
    finally:
        restarted.stop()


def _write_raw_journal(work_dir, payloads):
    """A version-2 journal of exactly these payloads (bytes are framed as they are)."""
    path = Path(work_dir) / journal_module.journal_file(0)
    frames = [fmt.frame(p if isinstance(p, bytes) else codec.dumps(p)) for p in payloads]
    path.write_bytes(fmt.file_header(fmt.JOURNAL_MAGIC, 0) + b"".join(frames))
    return path


def test_records_that_pass_their_checksum_but_cannot_be_applied_are_skipped(tmp_path, caplog):
    dataset = {"op": "register_dataset", "fingerprint": "f", "dataset_def": b"", "metadata": {}}
    path = _write_raw_journal(
        tmp_path,
        [
            {"op": "register_worker", "address": "localhost:1"},
            {**dataset, "dataset_id": "²"},  # written by an older dispatcher before validation
            {**dataset, "dataset_id": 7},
            {"op": "create_task", "task_id": 5, "job_id": 12345, "worker_address": "localhost:1"},
            {"op": "acquire_client", "client_id": 9, "job_id": 12345},
            {"op": "no_such_op"},
            b"not a codec message",
            ["not", "a", "dict"],
            {"op": "register_worker", "address": "localhost:2"},
        ],
    )
    offsets = _frame_offsets(path)
    with caplog.at_level(logging.ERROR, logger="tensorwire_dataservice.service.dispatcher"):
        core = _Dispatcher(_config(tmp_path))
    try:
        skipped = [r.getMessage() for r in caplog.records if "is skipped" in r.getMessage()]
        assert len(skipped) == 7
        for message, offset in zip(skipped, offsets[1:8], strict=True):
            assert f"journal {path}: the record at byte {offset} cannot be applied" in message
        state = core.state
        assert sorted(state.workers) == ["localhost:1", "localhost:2"]
        # Nothing of the skipped records stayed behind, not even half of one.
        assert not state.datasets and not state.by_fingerprint and not state.tasks
        assert not state.clients and state.next_dataset_id == 1000
    finally:
        core.journal.close()


# -- compaction ----------------------------------------------------------------------------


def _config(work_dir, **kw):
    return service.DispatcherConfig(
        protocol="inproc", work_dir=str(work_dir), fault_tolerant_mode=True, **kw
    )


def _anonymous_job(core, dataset_id):
    """Create, read and release an anonymous job (collected at once); returns its id."""
    reply = core.get_or_create_job({"dataset_id": dataset_id, "policy": 0, "acquire": True})
    core.release_client({"client_id": reply["client_id"]})
    return reply["job_id"]


def _work_dir_bytes(work_dir):
    return sum(p.stat().st_size for p in Path(work_dir).iterdir())


@pytest.fixture
def fast_work_dir(tmp_path_factory):
    """A directory on tmpfs when there is one, so that fsync costs nothing."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="tw-journal-", dir=shm))
        yield path
        for child in path.iterdir():
            child.unlink()
        path.rmdir()
    else:
        yield tmp_path_factory.mktemp("journal")


def test_compaction_bounds_the_work_dir_and_a_restart_after_100k_jobs_replays_little(fast_work_dir):
    core = _Dispatcher(_config(fast_work_dir))
    dataset_id = core.get_or_register_dataset(
        {"dataset_def": pipeline.serialize(Dataset.range(3))}
    )["dataset_id"]
    kept = core.get_or_create_job(
        {"dataset_id": dataset_id, "policy": 0, "job_name": "kept", "acquire": True}
    )
    first = _anonymous_job(core, dataset_id)
    sizes = []
    for i in range(1, 100_000):
        last = _anonymous_job(core, dataset_id)
        if i % 10_000 == 0:
            sizes.append(_work_dir_bytes(fast_work_dir))
    core.journal.close()
    # ~600 bytes per job without compaction (60 MB); bounded and not growing with it.
    assert max(sizes) < 3 << 20 and sizes[-1] < sizes[0] + (1 << 20), sizes
    assert len(list(fast_work_dir.iterdir())) == 2

    recovery = recover(str(fast_work_dir))
    assert recovery.generation >= 30 and len(recovery.entries) <= journal_module.COMPACT_RECORDS
    restarted = _Dispatcher(_config(fast_work_dir))
    try:
        state = restarted.state
        assert len(state.jobs) <= journal_module.COMPACT_RECORDS
        assert state.jobs[kept["job_id"]].clients == {kept["client_id"]}
        # Collected ids keep their message and are never handed out again.
        for job_id in (first, last - 1):
            with pytest.raises(errors.NotFoundError, match="garbage collected"):
                restarted.acquire_client({"job_id": job_id})
        with pytest.raises(errors.NotFoundError, match=f"Job id {last + 10} not found"):
            restarted.acquire_client({"job_id": last + 10})
        assert _anonymous_job(restarted, dataset_id) > last
    finally:
        restarted.journal.close()


def _busy_core(work_dir):
    """A dispatcher with every kind of state, its journal holding records after a snapshot:
    a named job read by a client, a finished-reading anonymous job (collected), a collected
    named job, a worker with tasks, and split hand-outs (which add up, so a record applied
    twice would show)."""
    core = _Dispatcher(_config(work_dir))
    dataset_id = core.get_or_register_dataset(
        {"dataset_def": pipeline.serialize(Dataset.range(100))}
    )["dataset_id"]
    named = core.get_or_create_job(
        {"dataset_id": dataset_id, "policy": 1, "job_name": "named", "acquire": True}
    )
    task_id = _add_task(core, named["job_id"])
    _anonymous_job(core, dataset_id)
    with core.lock:
        core._compact()
    ask = {"job_id": named["job_id"], "task_id": task_id, "max": 3, **_WORKER}
    assert core.get_splits({**ask, "position": 0})["splits"]
    assert core.get_splits({**ask, "position": 3})["splits"]
    gone = core.get_or_create_job({"dataset_id": dataset_id, "policy": 0, "job_name": "gone"})[
        "job_id"
    ]
    with core.lock:
        core._collect(core.state.jobs[gone])
    _anonymous_job(core, dataset_id)
    return core


class _Killed(BaseException):
    """The process "dies" here: no handler below it runs (like kill -9)."""


class _DiesAtStep:
    """Stands in for ``os`` in journal.py and dies before its ``step``-th system call that
    can change the disk (every boundary between two steps a kill -9 could hit)."""

    CALLS = {"open", "pwrite", "write", "fsync", "replace", "rename", "unlink", "ftruncate"}

    def __init__(self, step):
        self.step = step
        self.made = 0

    def __getattr__(self, name):
        real = getattr(os, name)
        if name not in self.CALLS:
            return real

        def call(*args, **kwargs):
            if self.made == self.step:
                raise _Killed(name)
            self.made += 1
            return real(*args, **kwargs)

        return call


def _abandon(core):
    """What kill -9 does to the dead dispatcher's journal: its descriptor just goes away."""
    fd = core.journal._fd
    if fd is not None:
        os.close(fd)


def test_a_crash_at_any_step_of_a_compaction_recovers_before_or_after(tmp_path, monkeypatch):
    outcomes = []
    for step in range(100):
        work_dir = tmp_path / f"step{step}"
        core = _busy_core(work_dir)
        before = core.state.snapshot()
        killer = _DiesAtStep(step)
        monkeypatch.setattr(journal_module, "os", killer)
        try:
            with core.lock:
                core._compact()
            completed = True
        except _Killed:
            completed = False
        finally:
            monkeypatch.setattr(journal_module, "os", os)
        after = core.state.snapshot()
        assert before != after  # the collected jobs are forgotten
        _abandon(core)

        restarted = _Dispatcher(_config(work_dir))
        recovered = restarted.state.snapshot()
        assert recovered in (before, after), f"a mix after dying at step {step}"
        outcomes.append(recovered == after)
        # The directory is usable again: one generation is left and it takes new records.
        restarted.get_or_register_dataset({"dataset_def": pipeline.serialize(Dataset.range(7))})
        restarted.journal.close()
        names = sorted(p.name for p in work_dir.iterdir())
        assert len(names) == 2 and not any(n.endswith(".tmp") for n in names), names
        assert len(_Dispatcher(_config(work_dir)).state.datasets) == 2
        if completed:
            break
    assert completed and step > 8, "the compaction never finished"
    assert not outcomes[0] and outcomes[-1]  # both sides of the commit point were hit


def _v1_journal(work_dir, records, tail=b""):
    data = b""
    for record in records:
        payload = codec.dumps(record)
        data += struct.pack("<II", len(payload), zlib.crc32(payload)) + payload
    path = Path(work_dir) / journal_module.LEGACY_JOURNAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data + tail)
    return path


def _same_but_id_base(state, expected):
    """``state`` recovered ``expected``'s records; a dispatcher recovering without a snapshot
    starts its ids at a fresh random base, so only those may be higher."""
    ours, theirs = state.snapshot(), expected.snapshot()
    ids, expected_ids = ours.pop("next_ids"), theirs.pop("next_ids")
    return ours == theirs and all(ids[k] >= expected_ids[k] for k in ids)


_V1_RECORDS = [
    {
        "op": "register_dataset",
        "dataset_id": "1000",
        "fingerprint": "f",
        "dataset_def": b"d",
        "metadata": {},
    },
    {"op": "register_worker", "address": "localhost:1"},
    {
        "op": "create_job",
        "job_id": 50,
        "job_name": "",
        "iteration": 0,
        "dataset_id": "1000",
        "policy": 0,
        "num_consumers": -1,
        "target_workers": "AUTO",
    },
    {"op": "create_task", "task_id": 60, "job_id": 50, "worker_address": "localhost:1"},
    {"op": "produce_splits", "job_id": 50, "count": 4, "exhausted": False},
    {"op": "acquire_client", "client_id": 70, "job_id": 50},
]


def test_a_version_1_journal_is_recovered_then_compacted(tmp_path):
    _v1_journal(tmp_path, _V1_RECORDS, tail=b"\x10\x00\x00")  # and a torn tail
    core = _Dispatcher(_config(tmp_path))
    expected = DispatcherState()
    for record in _V1_RECORDS:
        expected.apply(record)
    try:
        assert _same_but_id_base(core.state, expected)
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "journal-0000000001.log",
            "snapshot-0000000001.tws",
        ]
        client_id = core.acquire_client({"job_id": 50})["client_id"]
    finally:
        core.journal.close()
    assert _Dispatcher(_config(tmp_path)).state.clients == {70: 50, client_id: 50}


def test_a_crash_at_any_step_of_the_version_1_upgrade_recovers(tmp_path, monkeypatch):
    expected = DispatcherState()
    for record in _V1_RECORDS:
        expected.apply(record)
    for step in range(100):
        work_dir = tmp_path / f"step{step}"
        _v1_journal(work_dir, _V1_RECORDS)
        monkeypatch.setattr(journal_module, "os", _DiesAtStep(step))
        try:
            _Dispatcher(_config(work_dir)).journal.close()
            completed = True
        except _Killed:
            completed = False
        finally:
            monkeypatch.setattr(journal_module, "os", os)
        core = _Dispatcher(_config(work_dir))
        core.journal.close()
        assert _same_but_id_base(core.state, expected), step
        assert not (work_dir / journal_module.LEGACY_JOURNAL_FILE).exists()
        if completed:
            break
    assert completed and step > 5


def test_a_failed_compaction_leaves_the_journal_working(tmp_path, monkeypatch):
    core = _busy_core(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    attempts = []

    def no_space(*args):
        attempts.append(args)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal_module, "_write_snapshot", no_space)
    monkeypatch.setattr(journal_module, "COMPACT_RECORDS", 3)
    with core.lock:
        core._commit({"op": "register_worker", "address": "localhost:8"})  # compaction fails
        core._commit({"op": "register_worker", "address": "localhost:9"})  # postponed
    assert len(attempts) == 1
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    live = core.state.snapshot()
    core.journal.close()
    assert _Dispatcher(_config(tmp_path)).state.snapshot()["workers"] == live["workers"]


def test_named_jobs_stay_known_after_they_are_collected_and_forgotten(tmp_path):
    core = _busy_core(tmp_path)
    with core.lock:
        core._compact()
    core.journal.close()
    restarted = _Dispatcher(_config(tmp_path))
    try:
        dataset_id = next(iter(restarted.state.datasets))
        with pytest.raises(errors.NotFoundError, match="garbage collected"):
            restarted.get_or_create_job({"dataset_id": dataset_id, "policy": 0, "job_name": "gone"})
        assert all(not j.garbage_collected for j in restarted.state.jobs.values())
    finally:
        restarted.journal.close()


def test_snapshot_round_trips_the_whole_state(tmp_path):
    core = _busy_core(tmp_path)
    core.journal.close()
    state = core.state
    restored = DispatcherState.from_snapshot(state.snapshot())
    assert vars(restored) == vars(state)
    assert codec.loads(codec.dumps(state.snapshot())) == state.snapshot()


def test_snapshot_fields_missing_from_an_older_version_take_their_defaults(tmp_path):
    core = _busy_core(tmp_path)
    core.journal.close()
    snap = core.state.snapshot()
    index = snap["fields"]["tasks"].index("splits_given")
    snap["fields"]["tasks"] = [n for n in snap["fields"]["tasks"] if n != "splits_given"]
    snap["tasks"] = [row[:index] + row[index + 1 :] for row in snap["tasks"]]
    restored = DispatcherState.from_snapshot(snap)
    assert all(t.splits_given == 0 for t in restored.tasks.values())
    assert restored.tasks.keys() == core.state.tasks.keys()
    snap["fields"]["tasks"].append("from_the_future")
    snap["tasks"] = [[*row, 1] for row in snap["tasks"]]
    with pytest.raises(errors.DataLossError, match="from_the_future"):
        DispatcherState.from_snapshot(snap)


def test_a_damaged_snapshot_refuses_to_start(tmp_path):
    core = _busy_core(tmp_path)
    core.journal.close()
    path = next(tmp_path.glob("snapshot-*.tws"))
    _flip(path, path.stat().st_size // 2)
    with pytest.raises(errors.DataLossError, match=str(path)):
        _Dispatcher(_config(tmp_path))


# -- recovery in one process ------------------------------------------------------------------


def _ft_dispatcher(protocol, work_dir, port=0, **kw):
    return service.DispatchServer(
        service.DispatcherConfig(
            port=port, protocol=protocol, work_dir=str(work_dir), fault_tolerant_mode=True, **kw
        )
    )


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
        worker = service.WorkerServer(
            service.WorkerConfig(restarted._address, protocol=protocol, heartbeat_interval_ms=50)
        )
        got = values(service.from_dataset_id("parallel_epochs", restarted.target, dataset_id))
        assert got == list(range(10))
        # fresh ids continue after the recovered ones
        assert service.register_dataset(restarted.target, Dataset.range(4)) not in (other,)
        worker.stop()
    finally:
        restarted.stop()


def test_without_fault_tolerance_nothing_is_journaled(protocol, tmp_path):
    dispatcher = service.DispatchServer(
        service.DispatcherConfig(protocol=protocol, work_dir=str(tmp_path))
    )
    service.register_dataset(dispatcher.target, Dataset.range(3))
    dispatcher.stop()
    assert not list(tmp_path.iterdir())


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
    given = [r for r in _recovered(tmp_path) if r["op"] == "give_splits"]
    assert given and sum(r["count"] for r in given) > 0

    restarted = _ft_dispatcher(protocol, tmp_path, port=port)
    try:
        core = restarted._core
        job = next(iter(core.state.jobs.values()))
        assert job.num_splits > 0 and job.job_name == "splits"
        # The next split handed out follows the ones given out before the restart.
        task = core.state.tasks[job.task_ids[0]]
        reply = core.get_splits(
            {
                "job_id": job.job_id,
                "task_id": task.task_id,
                "max": 1,
                "position": task.num_recorded_splits,
                "generation": task.generation,
                "worker_address": task.worker_address,
                "worker": core.state.workers[task.worker_address]["incarnation"],
            }
        )
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
        ask = {"job_id": job_id, "task_id": task_id, "max": 4, **_WORKER}
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
        # Another worker process than the one registered at the address waits.
        assert core.get_splits({**ask, "worker": "w2", "position": 0})["wait"]
        # Once it registered (its heartbeat), it replays the task's splits from the first,
        # in the order they were handed out: its readers had no elements to report.
        core.worker_heartbeat({"worker_address": "localhost:1", "incarnation": "w2", "tasks": []})
        replay = {**ask, "worker": "w2", "generation": 1}
        again = core.get_splits({**replay, "position": 0})["splits"]
        again += core.get_splits({**replay, "position": len(again)})["splits"]
        assert again[: len(first) + len(second)] == first + second
    finally:
        restarted.stop()


#: The made-up worker of _add_task, as a GetSplits request names it.
_WORKER = {"worker": "w1", "worker_address": "localhost:1", "generation": 0}


def _add_task(core, job_id):
    """A task for ``job_id`` on a made-up worker, as a heartbeat would create it."""
    with core.lock:
        core._commit({"op": "register_worker", "address": "localhost:1", "incarnation": "w1"})
        job = core.state.jobs[job_id]
        core._commit(
            {
                "op": "create_task",
                "task_id": core.state.next_task_id,
                "job_id": job_id,
                "worker_address": "localhost:1",
            }
        )
        return job.task_ids[-1]


def test_many_restarts_while_reading_distributed_epoch(cross_process_protocol, tmp_path):
    """TF's testDispatcherManyRestarts: each element exactly once across three restarts."""
    protocol = cross_process_protocol
    dispatcher = _ft_dispatcher(protocol, tmp_path)
    port = int(dispatcher._address.split(":")[1])
    worker = service.WorkerServer(
        service.WorkerConfig(dispatcher._address, protocol=protocol, heartbeat_interval_ms=50)
    )
    n = 3000
    ds = distribute(
        Dataset.range(n),
        dispatcher,
        "distributed_epoch",
        job_name="many",
        max_outstanding_requests=1,
    )
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
    worker = service.WorkerServer(
        service.WorkerConfig(dispatcher._address, protocol=protocol, heartbeat_interval_ms=50)
    )
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
    worker = service.WorkerServer(
        service.WorkerConfig(dispatcher._address, protocol=protocol, heartbeat_interval_ms=50)
    )
    try:
        it = iter(distribute(Dataset.range(10**6), dispatcher, "parallel_epochs", job_name="job"))
        next(it)
        dispatcher.stop()
        dispatcher = _ft_dispatcher(protocol, tmp_path, port=port)
        with pytest.raises(errors.InvalidArgumentError, match="already an existing job"):
            next(
                iter(
                    distribute(
                        Dataset.range(10**6), dispatcher, "distributed_epoch", job_name="job"
                    )
                )
            )
        it.close()
    finally:
        worker.stop()
        dispatcher.stop()
