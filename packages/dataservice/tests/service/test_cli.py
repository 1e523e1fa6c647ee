"""``tensorwire dispatcher`` / ``tensorwire worker`` as real processes: what they say while
they start and wait, and that SIGTERM and SIGINT end them at any point.

"Promptly" is a generous deadline (scaled by TENSORWIRE_TEST_TIMEOUT_SCALE), never a tight
bound: these tests must pass beside another CPU-heavy process.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator

import pytest
from tensorwire_dataservice.service.journal import journal_file
from tensorwire_testing.data_service import DataServiceProcess

#: Seconds a signalled process may take to exit: far above the fraction of a second it
#: needs, so a loaded machine does not fail the test, and above its own stop deadline.
EXIT_DEADLINE = 40.0


@pytest.fixture
def processes(cross_process_protocol: str) -> Iterator[list[DataServiceProcess]]:
    """Processes a test launches, killed at its end whatever happened."""
    made: list[DataServiceProcess] = []
    yield made
    for process in made:
        process.kill()


def _launch(
    processes: list[DataServiceProcess], kind: str, protocol: str, *args: str, port: int = 0
) -> DataServiceProcess:
    process = DataServiceProcess(kind, ["--protocol", protocol, *args], port=port)
    processes.append(process)
    return process.launch()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nothing else takes it) but never
    listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another program is serving on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_worker_waiting_for_its_dispatcher_says_so_and_exits_on_signal(
    processes, cross_process_protocol, silent_port, signum
):
    dispatcher = f"localhost:{silent_port}"
    worker = _launch(
        processes, "worker", cross_process_protocol, "--dispatcher_address", dispatcher
    )
    line = worker.wait_for_line(f"waiting for the tf.data service dispatcher at {dispatcher}")
    assert "retrying" in line
    assert worker.terminate(timeout=EXIT_DEADLINE, signum=signum) == 0
    assert "Traceback" not in worker.output


def test_dispatcher_on_a_port_in_use_fails_with_one_clear_line(
    processes, cross_process_protocol, busy_port
):
    dispatcher = _launch(processes, "dispatcher", cross_process_protocol, port=busy_port)
    assert dispatcher.wait(timeout=EXIT_DEADLINE) == 2
    lines = [line for line in dispatcher.output.splitlines() if line.strip()]
    assert lines[-1] == (
        f"tensorwire dispatcher: cannot listen on 127.0.0.1:{busy_port}: the port is already "
        "in use (another dispatcher, or another program, is serving there)"
    ), dispatcher.output
    assert "Traceback" not in dispatcher.output
    assert not any("add_port" in line for line in lines), "gRPC's own bind error leaked"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO")
def test_dispatcher_stuck_replaying_its_journal_says_so_and_exits_on_sigterm(
    processes, cross_process_protocol, tmp_path
):
    # A journal that never delivers a byte (a FIFO nobody writes to) stands for a work_dir
    # on a file system that stopped answering: reading it blocks for good.
    os.mkfifo(tmp_path / journal_file(0))
    dispatcher = _launch(
        processes,
        "dispatcher",
        cross_process_protocol,
        "--work_dir",
        str(tmp_path),
        "--fault_tolerant",
    )
    dispatcher.wait_for_line(f"recovering its state from the journal in {tmp_path}")
    assert dispatcher.terminate(timeout=EXIT_DEADLINE) == 0
    assert "Traceback" not in dispatcher.output
