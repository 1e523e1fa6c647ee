"""Stopping a grpc listener that never started, when no thread can be started for it."""

from __future__ import annotations

import subprocess
import sys

from tensorwire_testing.waiting import scaled

# In a child: the gRPC server it leaves half-started must not meet this test process's exit.
_CHILD = r"""
import os, threading
from tensorwire.transport import TransportOptions
from tensorwire_grpc.transport import GrpcTransport

listener = GrpcTransport().serve("127.0.0.1:0", [], TransportOptions())
real_start = threading.Thread.start

def start(thread):
    if thread.name.endswith("(_serve)"):
        raise RuntimeError("can't start new thread")
    real_start(thread)

threading.Thread.start = start
listener.stop(0)
print("stopped", flush=True)
os._exit(0)
"""


def test_stop_returns_when_grpc_could_not_start_its_thread() -> None:
    # gRPC marks its server started before it starts the thread that would complete the
    # shutdown; a stop() that then shut it down would wait for ever.
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD],
            capture_output=True,
            text=True,
            timeout=scaled(60),
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"stop() hung; output: {exc.stdout!r} {exc.stderr!r}") from None
    assert done.returncode == 0 and "stopped" in done.stdout, done.stdout + done.stderr
    assert "keeps its port until it is garbage-collected" in done.stderr
