"""How a server process (``tensorwire server|dispatcher|worker``) meets SIGTERM and SIGINT.

``StopSignals`` records the signal for the main thread to act on; ``exit_if_stop_hangs``
bounds what follows: a process told to stop exits within a known time whatever its
threads do, as launchers (Kubernetes' grace period, SLURM's ``KillWait``, a test's
teardown) expect, and says where it was stuck when it has to cut the stop short.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["STOP_DEADLINE_SECONDS", "StopSignals", "exit_if_stop_hangs"]

log = logging.getLogger(__name__)

#: How often the main thread looks for a signal (see StopSignals).
POLL_INTERVAL = 0.1
#: Seconds a server process may take to stop once signalled (beyond a grace it was given
#: for calls in flight); then it exits anyway, with status 1. Inside Kubernetes' default
#: 30 s grace period.
STOP_DEADLINE_SECONDS = 20.0
#: The exit status of a stop that was cut short.
STOP_HUNG_STATUS = 1


class StopSignals:
    """SIGTERM and SIGINT, recorded for the main thread to act on.

    The handler only stores the signal number. It must not take a lock: setting a
    ``threading.Event`` from a handler deadlocks when the signal lands while the main
    thread holds that Event's own lock (inside ``Event.wait``, between its steps). So the
    main thread polls every 0.1 s, in ``time.sleep``, where a handler is always safe.
    Create it on the main thread, before announcing that the process serves, so that no
    signal is missed.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        signal.signal(signal.SIGTERM, self._record)
        signal.signal(signal.SIGINT, self._record)

    def _record(self, signum: int, frame: Any) -> None:
        self.received = signum

    @property
    def name(self) -> str:
        """The signal's name (``"SIGTERM"``), or ``"none"``."""
        return signal.Signals(self.received).name if self.received is not None else "none"

    def wait(self, until: Callable[[], bool] | None = None) -> bool:
        """Block until a signal arrives (True) or ``until()`` holds (False)."""
        while self.received is None:
            if until is not None and until():
                return False
            time.sleep(POLL_INTERVAL)
        return True


def exit_if_stop_hangs(what: str, seconds: float = STOP_DEADLINE_SECONDS) -> None:
    """Arm a watchdog for a stop that is about to begin: when the process is still alive
    ``seconds`` later (a thread that ignores the stop, a non-daemon thread the interpreter
    waits for at exit), every thread's stack goes to stderr, so the log says where it
    hung, and the process exits with status 1 (``STOP_HUNG_STATUS``).

    Nothing is lost by that exit that a stop would have kept: the journal's records are
    on disk once they were acknowledged, and a torn last record is dropped at replay.

    Args:
      what: names the process in the message (``"dispatcher grpc://localhost:5050"``).
      seconds: how long the stop may take.
    """

    def cut_short() -> None:
        sys.stderr.write(
            f"tensorwire: {what} did not stop within {seconds:g}s of the signal; "
            "every thread's stack follows, then the process exits with status "
            f"{STOP_HUNG_STATUS}\n"
        )
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(STOP_HUNG_STATUS)

    timer = threading.Timer(seconds, cut_short)
    timer.name = "tensorwire-stop-watchdog"
    timer.daemon = True
    timer.start()
