"""Chaos: the trainer itself killed -9 and restored from its last checkpoint.

A trainer process reads a ``distributed_epoch`` job of a deterministic pipeline from two
worker processes and a fault-tolerant dispatcher process. Every ``EVERY`` elements it
pickles, to a real file (written aside, then renamed), its iterator's ``state_dict()``
together with the elements it has consumed so far (its "model"). Each seed kills the
trainer with SIGKILL at random moments, and sometimes the dispatcher (restarted on its
journal) or a worker (its tasks replay) too before the trainer comes back; each new
trainer loads the last checkpoint and reads on. Elements consumed after the last
checkpoint die with the trainer. Whatever the seed, the last trainer's model holds every
element exactly once: exactly once relative to the checkpoint.
"""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import cloudpickle
import pytest
import tensorwire as tw
from tensorwire_testing.data_service import data_service_processes
from tensorwire_testing.waiting import scaled

from .helpers import RESTART_TIMEOUT

cloudpickle.register_pickle_by_value(sys.modules[__name__])

SEEDS = range(3)
KILLS = 2
N = 400
EVERY = 25

_TRAINER = textwrap.dedent(
    """
    import faulthandler, logging, os, pickle, signal, sys
    import tensorwire as tw

    # For the test's message should this trainer stall: what the client did, and on
    # SIGUSR1 where every thread is.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    target, dataset_id, checkpoint, every, done = sys.argv[1:]
    every = int(every)
    it = iter(tw.data.service.from_dataset_id("distributed_epoch", target, dataset_id))
    model = []
    if os.path.exists(checkpoint):
        with open(checkpoint, "rb") as f:
            saved = pickle.load(f)
        it.load_state_dict(saved["iterator"])
        model = saved["model"]
    for x in it:
        model.append(int(x))
        if len(model) % every == 0:
            with open(checkpoint + ".tmp", "wb") as f:
                pickle.dump({"iterator": it.state_dict(), "model": model}, f)
            os.replace(checkpoint + ".tmp", checkpoint)
    with open(done, "wb") as f:
        pickle.dump(model, f)
    """
)


def _slow(x):
    time.sleep(0.002)  # a job of about a second: the kills land mid-epoch
    return x


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tensorwire_protocol):
    if tensorwire_protocol != "grpc":
        # The processes speak grpc whatever the leg: running them once is enough.
        pytest.skip("kills real processes over grpc; runs with --tensorwire-protocol=grpc")
    work_dir = str(tmp_path_factory.mktemp("chaos-trainer"))
    with data_service_processes(
        2, dispatcher_args=["--work_dir", work_dir, "--fault_tolerant"]
    ) as (dispatcher, workers):
        yield dispatcher, workers


def _trainer(
    target: str, dataset_id: str, checkpoint: str, done: str, log: str
) -> subprocess.Popen:
    env = {**os.environ, "TENSORWIRE_DATA_CLIENT_TIMEOUT": str(scaled(60.0))}
    with open(log, "ab") as output:
        return subprocess.Popen(
            [sys.executable, "-c", _TRAINER, target, dataset_id, checkpoint, str(EVERY), done],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def _log_end(log: str) -> str:
    """The end of the trainers' log."""
    with open(log, errors="replace") as f:
        return f.read()[-12_000:]


def _stalled(trainer: subprocess.Popen, log: str, cluster) -> str:
    """Why the last trainer did not finish: its stacks and log, the cluster's output."""
    trainer.send_signal(signal.SIGUSR1)  # the trainer's faulthandler dumps its stacks
    time.sleep(2)
    trainer.kill()
    trainer.wait(timeout=scaled(30))
    dispatcher, workers = cluster
    parts = [f"the last trainer did not finish; its log ends:\n{_log_end(log)}"]
    for process in [dispatcher, *workers]:
        parts.append(f"{process.name} output ends:\n{process.output[-3_000:]}")
    return "\n".join(parts)


@pytest.mark.parametrize("seed", SEEDS)
def test_trainer_kill_restores_exactly_once_from_its_checkpoint(cluster, tmp_path, seed):
    rng = random.Random(seed)
    dispatcher, workers = cluster
    target = f"grpc://{dispatcher.address}"
    # A dataset per seed (its own id, its own job).
    dataset_id = tw.data.service.register_dataset(
        target, tw.data.Dataset.range(N).map(_slow), dataset_id=f"chaos-trainer-{seed}"
    )
    checkpoint, done = str(tmp_path / "checkpoint.pickle"), str(tmp_path / "done.pickle")
    log = str(tmp_path / "trainers.log")
    kills = 0
    for _ in range(KILLS):
        trainer = _trainer(target, dataset_id, checkpoint, done, log)
        try:
            # Kill it at a random moment after it checkpointed at least once (this run).
            before = os.stat(checkpoint).st_mtime_ns if os.path.exists(checkpoint) else 0
            deadline = time.monotonic() + scaled(60)
            while trainer.poll() is None and time.monotonic() < deadline:
                if os.path.exists(checkpoint) and os.stat(checkpoint).st_mtime_ns != before:
                    break
                time.sleep(0.01)
            time.sleep(rng.random() * 0.2)
        finally:
            trainer.kill()
            trainer.wait(timeout=scaled(30))
        if trainer.returncode == 0:
            break  # it finished before the kill
        kills += 1
        # Sometimes kill -9 a worker or the dispatcher too (restarted at once: the worker's
        # tasks replay, the dispatcher recovers from its journal).
        for victim in [dispatcher, rng.choice(workers)]:
            if rng.random() < 0.4:
                victim.restart(timeout=RESTART_TIMEOUT)
    if not os.path.exists(done):
        trainer = _trainer(target, dataset_id, checkpoint, done, log)
        try:
            status = trainer.wait(timeout=scaled(120))
        except subprocess.TimeoutExpired:
            pytest.fail(_stalled(trainer, log, cluster))
        if status != 0:
            pytest.fail(f"the last trainer failed ({status}); its log ends:\n{_log_end(log)}")
    model = pickle.loads(open(done, "rb").read())
    counts = Counter(model)
    repeated = sorted(x for x, c in counts.items() if c > 1)
    assert not repeated, f"seed {seed} ({kills} kills): repeated {repeated[:20]}"
    assert sorted(counts) == list(range(N)), (
        f"seed {seed} ({kills} kills): lost {sorted(set(range(N)) - set(counts))[:20]}"
    )
    assert kills >= 1, "the trainer was never killed mid-epoch"
