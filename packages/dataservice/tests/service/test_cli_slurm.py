"""``tensorwire dispatcher --slurm`` / ``tensorwire worker --slurm``: task 0 of the SLURM
job step is the dispatcher, the others are workers, each on the port base plus its place
on its node; a task started as the wrong one says so."""

from __future__ import annotations

import os
import socket

import pytest
from tensorwire_testing.data_service import DataServiceProcess

EXIT_DEADLINE = 60.0


def _step(rank: int, tasks: int) -> dict[str, str]:
    """What srun sets for one task of a single-node step of ``tasks`` tasks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(
        SLURM_PROCID=str(rank),
        SLURM_STEP_NODELIST="localhost",
        SLURM_STEP_TASKS_PER_NODE=str(tasks),
        SLURM_STEP_NUM_TASKS=str(tasks),
    )
    return env


def _free_port_base() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_task_0_is_the_dispatcher_and_task_1_a_worker_registered_with_it(
    cross_process_protocol,
):
    base = _free_port_base()
    args = ["--protocol", cross_process_protocol, "--slurm", "--slurm_port_base", str(base)]
    dispatcher = DataServiceProcess("dispatcher", args, env=_step(0, 2))
    worker = DataServiceProcess("worker", args, env=_step(1, 2))
    try:
        dispatcher.start(timeout=EXIT_DEADLINE)
        assert dispatcher.port == base
        worker.start(timeout=EXIT_DEADLINE)
        assert worker.wait_for_line("serving at") == (
            f"tensorwire worker serving at localhost:{base + 1} (dispatcher localhost:{base})"
        )
    finally:
        worker.kill()
        dispatcher.kill()


@pytest.mark.parametrize(
    ("kind", "rank", "message"),
    [
        ("dispatcher", 1, "task 1 of the job step is a worker"),
        ("worker", 0, "task 0 of the job step is the dispatcher"),
    ],
)
def test_a_task_started_as_the_wrong_kind_says_which_it_is(kind, rank, message):
    process = DataServiceProcess(kind, ["--slurm"], env=_step(rank, 3)).launch()
    try:
        assert process.wait(timeout=EXIT_DEADLINE) == 2
        assert message in process.output
        assert "srun --multi-prog" in process.output
    finally:
        process.kill()


def test_a_worker_given_neither_a_dispatcher_address_nor_slurm_says_what_it_needs():
    process = DataServiceProcess("worker").launch()
    try:
        assert process.wait(timeout=EXIT_DEADLINE) == 2
        assert "give --dispatcher_address (host:port of the dispatcher), or --slurm" in (
            process.output
        )
    finally:
        process.kill()
