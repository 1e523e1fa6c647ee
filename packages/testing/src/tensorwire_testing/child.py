"""A ``python -m tensorwire <command>`` child process for fault and CLI tests.

The child prints one ready line once it serves; ``ChildProcess.start`` waits for it
with a deadline (retrying while a killed predecessor's port is still held), and the child
can then be killed with SIGKILL, stopped with SIGTERM or SIGINT, or restarted. A child that
is not expected to serve (one waiting for a peer, one that should fail) is started with
``ChildProcess.launch``, which does not wait; ``ChildProcess.wait_for_line`` and
``ChildProcess.wait`` then wait, with deadlines, for what it prints and for its exit.
Subclasses say which command to run and which line means "ready".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tensorwire import errors

from .waiting import scaled

__all__ = ["ChildProcess"]

_MAX_KEPT_LINES = 10_000
_TAIL_LINES = 30


class _Output:
    """The lines one launch of a child prints, read by a daemon thread as they come."""

    def __init__(self, stream: Iterable[str]) -> None:
        self.lines: list[str] = []
        self.closed = False  # the child closed its output: it has exited
        self._changed = threading.Condition()
        threading.Thread(
            target=self._read, args=(stream,), name="tensorwire-child-output", daemon=True
        ).start()

    def _read(self, stream: Iterable[str]) -> None:
        for line in stream:
            with self._changed:
                if len(self.lines) < _MAX_KEPT_LINES:
                    self.lines.append(line)
                    self._changed.notify_all()
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def text(self, last: int | None = None) -> str:
        with self._changed:
            return "".join(self.lines if last is None else self.lines[-last:])

    def first(self, matches: Callable[[str], bool], deadline: float) -> str | None:
        """The first line (stripped) for which ``matches`` holds; None when the output ends
        or ``deadline`` (monotonic) passes first."""
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if matches(line):
                        return line.strip()
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if self.closed or remaining <= 0:
                    return None
                self._changed.wait(remaining)


class ChildProcess:
    """Base of ``TaskProcess`` and ``DataServiceProcess``.

    Runs ``python -m tensorwire <command()>`` with stdout and stderr collected, in a new
    session (so a signal to the child does not reach the test). Timeouts of its methods
    are scaled by ``TENSORWIRE_TEST_TIMEOUT_SCALE``. A context manager that kills the
    child on exit.

    Args:
      env: the child's environment; default a copy of this process's.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        self.process: subprocess.Popen[str] | None = None
        self._output: _Output | None = None

    # -- what subclasses provide --------------------------------------------------------------
    @property
    def name(self) -> str:
        """How messages name this child (e.g. "/job:ps/task:0")."""
        raise NotImplementedError

    def command(self) -> list[str]:
        """Arguments after ``python -m tensorwire``."""
        raise NotImplementedError

    def argv(self) -> list[str]:
        """The whole command line: ``python -m tensorwire`` and ``command``, unless a
        subclass runs something else (a pod's command in a network namespace)."""
        return [sys.executable, "-m", "tensorwire", *self.command()]

    def is_ready_line(self, line: str) -> bool:
        """Whether ``line`` is the one the child prints once it serves."""
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
        """The child's process id, or None before the first launch."""
        return None if self.process is None else self.process.pid

    @property
    def output(self) -> str:
        """Everything the current launch printed so far (stdout and stderr)."""
        return "" if self._output is None else self._output.text()

    def _tail(self) -> str:
        return "" if self._output is None else self._output.text(last=_TAIL_LINES)

    def launch(self) -> Any:
        """Start the child and return at once (self), without waiting for a ready line.

        Its output is collected as it comes: ``output``, ``wait_for_line``. For a
        child not expected to serve (one that waits for a peer, one that should fail).

        Returns:
          self.

        Raises:
          FailedPreconditionError: the child is already running.

        Examples:
            >>> args = ["--dispatcher_address", "localhost:1"]           # doctest: +SKIP
            >>> worker = DataServiceProcess("worker", args)              # doctest: +SKIP
            >>> worker.launch().wait_for_line("dispatcher", timeout=30)  # doctest: +SKIP
        """
        if self.process is not None and self.process.poll() is None:
            raise errors.FailedPreconditionError(f"{self.name} is already running")
        self.process = subprocess.Popen(
            self.argv(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        self._output = _Output(self.process.stdout)
        return self

    def start(self, timeout: float = 30.0) -> Any:
        """Launch the child and wait until it serves; returns self.

        A child that exits before serving because its port is still held (a killed
        predecessor's socket) is launched again until ``timeout``.

        Args:
          timeout: seconds (scaled) the child may take to print its ready line.

        Returns:
          self, serving; ``on_ready`` has read its ready line.

        Raises:
          FailedPreconditionError: the child is already running, or it exited before
            serving for another reason (its output is quoted).
          DeadlineExceededError: it did not serve within ``timeout`` (it is killed; its
            output is quoted).

        Examples:
            >>> task = TaskProcess(cluster, "ps", 0).start(timeout=60)   # doctest: +SKIP
        """
        if self.process is not None and self.process.poll() is None:
            raise errors.FailedPreconditionError(f"{self.name} is already running")
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        while True:
            self.launch()
            assert self._output is not None
            line = self._output.first(self.is_ready_line, deadline)
            if line is not None:
                self.on_ready(line)
                return self
            assert self.process is not None
            # Its output ended (it exited, or is exiting), or it still runs past the deadline.
            exited = self._output.closed or self.process.poll() is not None
            self.kill()  # it exited, or it did not serve in time
            output = self._tail()
            if not exited:
                raise errors.DeadlineExceededError(
                    f"{self.name} was still running and had not started serving after "
                    f"{timeout}s (killed now); output:\n{output}"
                )
            if not self.retry_after_exit(output):
                raise errors.FailedPreconditionError(
                    f"{self.name} exited before serving; output:\n{output}"
                )
            if time.monotonic() >= deadline:
                raise errors.DeadlineExceededError(
                    f"{self.name} did not start serving within {timeout}s; output:\n{output}"
                )
            time.sleep(0.2)

    def wait_for_line(self, matches: str | Callable[[str], bool], timeout: float = 30.0) -> str:
        """The first line the child printed (stripped) that contains ``matches`` (a string)
        or for which ``matches(line)`` holds, waiting up to ``timeout`` seconds (scaled).

        Args:
          matches: a substring to look for, or a predicate on each line.
          timeout: seconds (scaled) to wait.

        Returns:
          The first matching line, stripped (it may have been printed before the call).

        Raises:
          FailedPreconditionError: the child was never started, or exited without printing
            such a line (its output is quoted).
          DeadlineExceededError: no such line was printed in time (output quoted).

        Examples:
            >>> process.wait_for_line("serving at", timeout=30)     # doctest: +SKIP
            'tensorwire dispatcher serving at grpc://localhost:41234'
        """
        if self._output is None:
            raise errors.FailedPreconditionError(f"{self.name} was never started")
        if isinstance(matches, str):
            wanted = repr(matches)
            text = matches
            predicate: Callable[[str], bool] = lambda line: text in line
        else:
            wanted = f"a line matching {getattr(matches, '__name__', matches)!r}"
            predicate = matches
        timeout = scaled(timeout)
        line = self._output.first(predicate, time.monotonic() + timeout)
        if line is not None:
            return line
        if self._output.closed:
            raise errors.FailedPreconditionError(
                f"{self.name} exited without printing {wanted}; output:\n{self._tail()}"
            )
        raise errors.DeadlineExceededError(
            f"{self.name} did not print {wanted} within {timeout}s; output:\n{self._tail()}"
        )

    def wait(self, timeout: float = 30.0) -> int:
        """Wait up to ``timeout`` seconds (scaled) for the child to exit by itself; returns
        its exit code. A child still running then is killed: ``DeadlineExceededError``.

        Args:
          timeout: seconds (scaled) to wait.

        Returns:
          The exit code (negative: killed by that signal).

        Raises:
          FailedPreconditionError: the child was never started.
          DeadlineExceededError: it was still running after ``timeout`` (it is killed).

        Examples:
            >>> process.launch().wait(timeout=30)                    # doctest: +SKIP
            2
        """
        if self.process is None:
            raise errors.FailedPreconditionError(f"{self.name} was never started")
        timeout = scaled(timeout)
        try:
            return int(self.process.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            self.kill()
            raise errors.DeadlineExceededError(
                f"{self.name} did not exit within {timeout}s; output:\n{self._tail()}"
            ) from None

    def kill(self) -> None:
        """``kill -9`` the child (no clean shutdown) and reap it.

        Does nothing when it is not running; never raises for that.
        """
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def terminate(self, timeout: float = 40.0, signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` (SIGTERM; SIGINT is what Ctrl-C sends) and wait for a clean exit;
        returns the exit code. A child still running after ``timeout`` seconds (scaled) is
        killed: ``DeadlineExceededError``. The default is longer than our servers' own
        stop deadline (``tensorwire.runtime.signals``), so a stop that hangs shows up as
        their exit status 1 with every thread's stack in the output, not as a kill.

        Args:
          timeout: seconds (scaled) to wait for the exit.
          signum: the signal to send.

        Returns:
          The exit code; 0 when the child was never started.

        Raises:
          DeadlineExceededError: it did not exit within ``timeout`` (it is killed).

        Examples:
            >>> task.terminate()                                     # doctest: +SKIP
            0
        """
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signum)
            timeout = scaled(timeout)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise errors.DeadlineExceededError(
                    f"{self.name} did not exit within {timeout}s of "
                    f"{signal.Signals(signum).name}; output:\n{self._tail()}"
                ) from None
        return int(self.process.returncode)

    def restart(self, timeout: float = 30.0) -> Any:
        """Kill the child if it runs, then start it again (on the same port).

        Args:
          timeout: as for ``start``.

        Returns:
          self, serving again.

        Raises:
          FailedPreconditionError: it exited before serving.
          DeadlineExceededError: it did not serve again within ``timeout``.

        Examples:
            >>> task.restart(timeout=60)                             # doctest: +SKIP
        """
        self.kill()
        return self.start(timeout=timeout)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
