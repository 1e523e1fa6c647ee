"""Iterator checkpoints of local pipelines: ``state_dict()`` / ``load_state_dict(state)``.

Every pipeline of :mod:`checkpoint_pipelines` is checkpointed at several points (before the
first element, after the first, in the middle, before the last, at the end and after
exhaustion), the state pickled, and restored into a fresh iterator of a freshly built
dataset (as a restarted trainer would): the elements before the checkpoint plus the
restored ones must equal the uninterrupted run, and the original iterator's own tail. The
same is checked in a new process. States with elements buffered or in flight are made with
events, never with sleeps.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from collections import Counter
from typing import Any

import numpy as np
import pytest
from tensorwire import errors
from tensorwire_dataservice.dataset import Dataset, DatasetBase, IterationContext

HERE = os.path.dirname(os.path.abspath(__file__))
# The pipelines live in a module of their own so a subprocess can build them too.
sys.path.insert(0, HERE)
import checkpoint_pipelines as pipelines  # noqa: E402


def canon_all(elements: list[Any]) -> list[Any]:
    return [pipelines.canon(e) for e in elements]


def checkpoint_points(n: int) -> list[int]:
    return sorted({0, 1, n // 3, n // 2, max(0, n - 1), n} & set(range(n + 1)))


def resume(dataset: DatasetBase, state: Any) -> list[Any]:
    it = iter(dataset)
    it.load_state_dict(pickle.loads(pickle.dumps(state)))
    return canon_all(list(it))


@pytest.mark.parametrize("name", pipelines.names())
def test_restore_at_every_point_equals_the_uninterrupted_run(name: str, tmp_path: Any) -> None:
    directory = str(tmp_path)
    full = canon_all(list(pipelines.build(name, directory)))
    assert full, f"{name} must produce elements to be a meaningful test"
    for k in checkpoint_points(len(full)):
        it = iter(pipelines.build(name, directory))
        head = canon_all([next(it) for _ in range(k)])
        state = it.state_dict()
        tail = canon_all(list(it))
        assert head + tail == full, f"{name}: saving at {k} changed the original's elements"
        restored = resume(pipelines.build(name, directory), state)
        assert restored == tail, f"{name}: restored at {k} of {len(full)}"


@pytest.mark.parametrize("name", ["range", "batch", "prefetch_chain", "parallel_interleave"])
def test_state_after_exhaustion_restores_to_nothing(name: str, tmp_path: Any) -> None:
    it = iter(pipelines.build(name, str(tmp_path)))
    assert list(it)
    state = it.state_dict()
    assert state["iterator"] is None
    assert resume(pipelines.build(name, str(tmp_path)), state) == []


def test_restore_in_a_new_process(tmp_path: Any) -> None:
    """Every pipeline saved mid-way here, restored by another Python process."""
    directory = str(tmp_path)
    expected = {}
    states = {}
    for name in pipelines.names():
        full = list(pipelines.build(name, directory))
        k = len(full) // 2
        it = iter(pipelines.build(name, directory))
        for _ in range(k):
            next(it)
        states[name] = it.state_dict()
        expected[name] = canon_all(list(it))
    states_file = tmp_path / "states.pickle"
    out_file = tmp_path / "tails.pickle"
    states_file.write_bytes(pickle.dumps(states))
    script = (
        "import pickle, sys\n"
        f"sys.path.insert(0, {HERE!r})\n"
        "import checkpoint_pipelines as p\n"
        f"states = pickle.load(open({str(states_file)!r}, 'rb'))\n"
        "tails = {}\n"
        "for name, state in states.items():\n"
        f"    it = iter(p.build(name, {directory!r}))\n"
        "    it.load_state_dict(state)\n"
        "    tails[name] = [p.canon(e) for e in it]\n"
        f"pickle.dump(tails, open({str(out_file)!r}, 'wb'))\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    tails = pickle.loads(out_file.read_bytes())
    assert set(tails) == set(expected)
    for name in expected:
        assert tails[name] == expected[name], name


# -- elements buffered or in flight -------------------------------------------------------


class Gate:
    """A map function that records which inputs it has seen, and blocks on one of them
    until released: a deterministic way to hold elements in flight."""

    def __init__(self, block_on: int | None = None) -> None:
        self.seen: list[int] = []
        self.block_on = block_on
        self.lock = threading.Condition()
        self.released = threading.Event()

    def __call__(self, x: Any) -> Any:
        if self.block_on is not None and int(x) == self.block_on:
            assert self.released.wait(10), "the test never released the gate"
        with self.lock:
            self.seen.append(int(x))
            self.lock.notify_all()
        return x * 10

    def wait_seen(self, count: int) -> None:
        with self.lock:
            assert self.lock.wait_for(lambda: len(self.seen) >= count, timeout=10)


def test_prefetch_saves_a_full_buffer(tmp_path: Any) -> None:
    gate = Gate()
    ds = Dataset.range(100).map(gate).prefetch(8)
    it = iter(ds)
    head = [int(next(it)) for _ in range(3)]
    # The producer fills the buffer (8) and holds one more it cannot put: 3 + 8 + 1 read.
    gate.wait_seen(12)
    state = it.state_dict()
    assert len(state["iterator"]["buffer"]) >= 8
    tail = [int(x) for x in it]
    assert head + tail == [x * 10 for x in range(100)]
    assert [int(x) for x in _fresh(Dataset.range(100).map(Gate()).prefetch(8), state)] == tail


def test_parallel_map_saves_tasks_in_flight() -> None:
    gate = Gate(block_on=6)
    ds = Dataset.range(40).map(gate, num_parallel_calls=3)
    it = iter(ds)
    head = [int(next(it)) for _ in range(4)]
    # Element 6 is being mapped (blocked) and later ones are queued or done: in flight.
    gate.wait_seen(6)
    state = it.state_dict()
    saved = state["iterator"]
    assert any(
        "elements" in task and 6 in [int(e) for e in task["elements"]] for task in saved["tasks"]
    ), saved["tasks"]
    gate.released.set()
    tail = [int(x) for x in it]
    assert head + tail == [x * 10 for x in range(40)]
    restored = _fresh(Dataset.range(40).map(Gate(), num_parallel_calls=3), state)
    assert [int(x) for x in restored] == tail


def test_parallel_map_nondeterministic_restores_the_same_elements() -> None:
    """deterministic=False: the order is timing's, but nothing is lost or repeated."""
    ds = Dataset.range(200).map(lambda x: x + 1, num_parallel_calls=3, deterministic=False)
    it = iter(ds)
    head = [int(next(it)) for _ in range(50)]
    state = it.state_dict()
    it.close()
    restored = [int(x) for x in _fresh(ds, state)]
    assert Counter(head + restored) == Counter(range(1, 201))


def test_parallel_interleave_saves_read_ahead_elements() -> None:
    gates = {i: Gate() for i in range(5)}

    def make() -> Any:
        return Dataset.range(5).interleave(
            lambda i: Dataset.range(int(i) * 100, int(i) * 100 + 20).map(gates[int(i)]),
            cycle_length=3,
            block_length=4,
            num_parallel_calls=3,
        )

    expected = [int(x) // 10 for x in make()]
    for gate in gates.values():
        gate.seen.clear()
    it = iter(make())
    head = [int(next(it)) // 10 for _ in range(6)]
    # Each open slot's thread reads its block_length (4) ahead plus one it holds; the
    # consumer took 4 elements from slot 0 and 2 from slot 1.
    for i, taken in enumerate([4, 2, 0]):
        gates[i].wait_seen(taken + 4 + 1)
    state = it.state_dict()
    slots = state["iterator"]["slots"]
    assert sum(len(s["state"]["buffer"]) for s in slots if s is not None) >= 4
    tail = [int(x) // 10 for x in it]
    assert head + tail == expected
    assert [int(x) // 10 for x in _fresh(make(), state)] == tail


def _fresh(dataset: DatasetBase, state: Any) -> list[Any]:
    it = iter(dataset)
    it.load_state_dict(pickle.loads(pickle.dumps(state)))
    return list(it)


# -- randomness -----------------------------------------------------------------------------


def test_unseeded_shuffle_resumes_exactly_within_the_iteration() -> None:
    """Unseeded: the random generator's state is saved, so the restored iterator continues
    the original's order."""
    ds = Dataset.range(100).shuffle(20)
    it = iter(ds)
    head = [int(next(it)) for _ in range(37)]
    state = it.state_dict()
    tail = [int(x) for x in it]
    assert sorted(head + tail) == list(range(100))
    assert [int(x) for x in _fresh(Dataset.range(100).shuffle(20), state)] == tail


def test_unseeded_random_resumes_exactly() -> None:
    ds = Dataset.random().take(3000)
    it = iter(ds)
    for _ in range(1500):
        next(it)
    state = it.state_dict()
    tail = [int(x) for x in it]
    assert [int(x) for x in _fresh(Dataset.random().take(3000), state)] == tail


def test_a_restored_pass_continues_the_epoch_count() -> None:
    """A seeded reshuffling shuffle iterated again after a restored pass shuffles as the
    next epoch of the uninterrupted run would."""
    reference = Dataset.range(20).shuffle(20, seed=9)
    epochs = [[int(x) for x in reference] for _ in range(3)]
    it = iter(reference_copy := Dataset.range(20).shuffle(20, seed=9))
    [next(it) for _ in range(5)]
    state = it.state_dict()
    restored_ds = Dataset.range(20).shuffle(20, seed=9)
    tail = [int(x) for x in _fresh(restored_ds, state)]
    assert tail == epochs[0][5:]
    assert [int(x) for x in restored_ds] == epochs[1]
    assert reference_copy is not restored_ds


# -- refusals ---------------------------------------------------------------------------------


def test_state_of_another_pipeline_is_refused_clearly() -> None:
    it = iter(Dataset.range(10).map(lambda x: x + 1))
    next(it)
    state = it.state_dict()
    other = iter(Dataset.range(10).batch(2))
    with pytest.raises(errors.InvalidArgumentError) as info:
        other.load_state_dict(state)
    message = str(info.value)
    assert "different pipeline" in message
    assert "MapDataset(RangeDataset)" in message and "BatchDataset(RangeDataset)" in message


def test_something_else_than_a_state_is_refused() -> None:
    with pytest.raises(errors.InvalidArgumentError, match="state_dict"):
        iter(Dataset.range(3)).load_state_dict({"position": 1})
    state = iter(Dataset.range(3)).state_dict()
    state["version"] = 999
    with pytest.raises(errors.InvalidArgumentError, match="version 999"):
        iter(Dataset.range(3)).load_state_dict(state)


def test_load_state_dict_after_next_is_refused() -> None:
    ds = Dataset.range(5)
    state = iter(ds).state_dict()
    it = iter(ds)
    next(it)
    with pytest.raises(errors.FailedPreconditionError, match="before its first next"):
        it.load_state_dict(state)


def test_a_plain_generator_names_itself() -> None:
    def numbers() -> Any:
        yield from range(5)

    it = iter(Dataset.from_generator(numbers, output_types=np.int64).map(lambda x: x))
    next(it)
    with pytest.raises(errors.UnimplementedError) as info:
        it.state_dict()
    assert "GeneratorDataset" in str(info.value) and "numbers" in str(info.value)


class PlainDataset(Dataset):
    """A dataset following only the base contract: a plain generator iterator."""

    _op_name = "PlainDataset"

    def _iterator(self, ctx: IterationContext) -> Any:
        yield from (np.int64(i) for i in range(3))

    def _compute_element_spec(self) -> Any:
        return Dataset.range(1).element_spec


def test_a_dataset_without_checkpoint_support_names_itself() -> None:
    it = iter(PlainDataset().batch(2))
    with pytest.raises(errors.UnimplementedError, match="PlainDataset cannot be checkpointed"):
        it.state_dict()
    # Restoring needs the same support: even a state of the right shape is refused.
    state = iter(Dataset.range(3).batch(2)).state_dict()
    state["fingerprint"] = _fingerprint_of(PlainDataset().batch(2))
    with pytest.raises(errors.UnimplementedError, match="PlainDataset cannot be checkpointed"):
        iter(PlainDataset().batch(2)).load_state_dict(state)


def _fingerprint_of(dataset: DatasetBase) -> str:
    from tensorwire_dataservice.dataset import checkpoint

    return checkpoint.fingerprint(dataset)


def test_a_closed_or_failed_iterator_has_no_state() -> None:
    it = iter(Dataset.range(5))
    it.close()
    with pytest.raises(errors.FailedPreconditionError, match="closed"):
        it.state_dict()

    def fails_on_two(x: Any) -> Any:
        if x == 2:
            raise ZeroDivisionError("two")
        return x

    failing = iter(Dataset.range(5).map(fails_on_two))
    next(failing)
    next(failing)
    with pytest.raises(ZeroDivisionError):
        next(failing)
    with pytest.raises(errors.FailedPreconditionError, match="failed"):
        failing.state_dict()


def test_state_is_plain_data() -> None:
    """No pickled functions or pipeline objects: the pickle names only builtins and NumPy."""
    import pickletools

    ds = (
        Dataset.range(50)
        .map(lambda x: x * 2, num_parallel_calls=2)
        .shuffle(5, seed=1)
        .batch(3)
        .prefetch(2)
    )
    it = iter(ds)
    next(it)
    data = pickle.dumps(it.state_dict())
    modules = {
        arg.split(" ")[0]
        for op, arg, _ in pickletools.genops(data)
        if op.name in ("GLOBAL", "STACK_GLOBAL") and isinstance(arg, str)
    }
    assert modules <= {"numpy", "numpy.core.multiarray", "numpy._core.multiarray", "builtins"}
