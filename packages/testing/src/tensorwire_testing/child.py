"""A ``python -m tensorwire <command>`` child process for fault tests.

The child prints one ready line once it serves; :meth:`ChildProcess.start` waits for it
with a deadline (retrying while a killed predecessor's port is still held), and the child
can then be killed with SIGKILL, stopped with SIGTERM, or restarted. Subclasses say which
command to run and which line means "ready".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from tensorwire import errors

from .waiting import scaled

__all__ = ["ChildProcess"]

_MAX_KEPT_LINES = 10_000


class ChildProcess:
    """Base of :class:`TaskProcess` and :class:`DataServiceProcess`."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        self.process: subprocess.Popen[str] | None = None
        self._lines: list[str] = []

    # -- what subclasses provide --------------------------------------------------------------
    @property
    def name(self) -> str:
        """How messages name this child (e.g. "/job:ps/task:0")."""
        raise NotImplementedError

    def command(self) -> list[str]:
        """Arguments after ``python -m tensorwire``."""
        raise NotImplementedError

    def is_ready_line(self, line: str) -> bool:
        raise NotImplementedError

    def on_ready(self, line: str) -> None:
        """Learn what the ready line says (e.g. the bound port)."""

    def retry_after_exit(self, output: str) -> bool:
        """Whether a child that exited before serving should be started again: by default
        only when its port was still held by a killed predecessor."""
        lowered = output.lower()
        return "in use" in lowered or "bind" in lowered or not output.strip()

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def start(self, timeout: float = 30.0) -> Any:
        """Launch the child and wait until it serves; returns self."""
        if self.process is not None and self.process.poll() is None:
            raise errors.FailedPreconditionError(f"{self.name} is already running")
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        while True:
            self._lines = []
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tensorwire", *self.command()],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env,
                start_new_session=True,
            )
            line = self._wait_ready(deadline)
            if line is not None:
                self.on_ready(line)
                threading.Thread(target=self._drain, daemon=True).start()
                return self
            output = "".join(self._lines[-30:])
            if not self.retry_after_exit(output):
                raise errors.FailedPreconditionError(
                    f"{self.name} exited before serving; output:\n{output}"
                )
            if time.monotonic() >= deadline:
                raise errors.DeadlineExceededError(
                    f"{self.name} did not start serving within {timeout}s; output:\n{output}"
                )
            time.sleep(0.2)

    def _wait_ready(self, deadline: float) -> str | None:
        process = self.process
        assert process is not None and process.stdout is not None
        found: list[str | None] = [None]

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self._lines.append(line)
                if self.is_ready_line(line):
                    found[0] = line.strip()
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(max(0.0, deadline - time.monotonic()))
        if found[0] is None:
            self.kill()
        return found[0]

    def _drain(self) -> None:
        process = self.process
        if process is None or process.stdout is None:
            return
        for line in process.stdout:
            if len(self._lines) < _MAX_KEPT_LINES:
                self._lines.append(line)

    def kill(self) -> None:
        """``kill -9`` the child (no clean shutdown) and reap it."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            timeout = scaled(timeout)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise errors.DeadlineExceededError(
                    f"{self.name} did not exit within {timeout}s of SIGTERM"
                ) from None
        return int(self.process.returncode)

    def restart(self, timeout: float = 30.0) -> Any:
        """Kill the child if it runs, then start it again (on the same port)."""
        self.kill()
        return self.start(timeout=timeout)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
