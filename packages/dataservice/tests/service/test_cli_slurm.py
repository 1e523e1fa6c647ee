"""``tensorwire dispatcher --slurm`` / ``tensorwire worker --slurm``: task 0 of the SLURM
job step is the dispatcher, the others are workers, each on the port base plus its place
on its node; a task started as the wrong one says so."""

from __future__ import annotations

import pytest
from tensorwire_testing.commands import free_port_base, slurm_step_env
from tensorwire_testing.data_service import DataServiceProcess

EXIT_DEADLINE = 60.0


def test_task_0_is_the_dispatcher_and_task_1_a_worker_registered_with_it(
    cross_process_protocol,
):
    base = free_port_base()  # the dispatcher, task 0, serves at the base
    args = ["--protocol", cross_process_protocol, "--slurm", "--slurm_port_base", str(base)]
    dispatcher = DataServiceProcess("dispatcher", args, env=slurm_step_env(0, 2))
    worker = DataServiceProcess("worker", args, env=slurm_step_env(1, 2))
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
    process = DataServiceProcess(kind, ["--slurm"], env=slurm_step_env(rank, 3)).launch()
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
