"""A server process told to stop exits within its stop deadline, whatever its threads do
(tensorwire.runtime.signals): real subprocesses, real signals."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

#: Far above what either child needs (it exits in about a second), for a loaded machine.
EXIT_DEADLINE = 60.0

_HANGING_STOP = textwrap.dedent(
    """
    import threading
    from tensorwire.runtime.signals import StopSignals, exit_if_stop_hangs

    def stuck_in_stop():
        threading.Event().wait()  # a thread that ignores the stop

    signals = StopSignals()
    print("ready", flush=True)
    signals.wait()
    exit_if_stop_hangs("the test's server", 1.0)
    threading.Thread(target=stuck_in_stop, name="stuck-in-stop").start()  # not a daemon
    """
)

_CLEAN_STOP = textwrap.dedent(
    """
    from tensorwire.runtime.signals import StopSignals, exit_if_stop_hangs

    signals = StopSignals()
    print("ready", flush=True)
    signals.wait()
    exit_if_stop_hangs("the test's server", 30.0)
    print(f"stopping on {signals.name}", flush=True)
    """
)


def _signalled(code: str, signum: int) -> subprocess.CompletedProcess[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        child.send_signal(signum)
        stdout, stderr = child.communicate(timeout=EXIT_DEADLINE)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)


def test_a_stop_that_hangs_exits_1_with_every_threads_stack() -> None:
    done = _signalled(_HANGING_STOP, signal.SIGTERM)
    assert done.returncode == 1, done.stderr
    assert "the test's server did not stop within 1s of the signal" in done.stderr
    assert "stuck_in_stop" in done.stderr  # the hung thread's stack says where it waits


def test_a_clean_stop_exits_0_and_names_the_signal() -> None:
    done = _signalled(_CLEAN_STOP, signal.SIGINT)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "stopping on SIGINT\n"
    assert "did not stop" not in done.stderr
