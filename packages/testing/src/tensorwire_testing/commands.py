"""The ``tensorwire`` command as tests run it: a real subprocess, in a user's environment.

Shared by the tests of several distributions that drive the command line: ``run_status``
for ``tensorwire status``, and what a SLURM job step gives a task (``slurm_step_env``,
``free_port_base``) for the ``--slurm`` options of ``server``, ``dispatcher`` and ``worker``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

__all__ = ["run_status", "slurm_step_env", "free_port_base", "COMMAND_DEADLINE"]

#: Generous for a loaded two-core machine; the commands answer in about a second.
COMMAND_DEADLINE = 120.0


def run_status(
    *args: str, env: dict[str, str] | None = None, timeout: float = COMMAND_DEADLINE
) -> subprocess.CompletedProcess[str]:
    """Run ``tensorwire status *args`` to completion and return what it printed.

    The child gets this process's environment without any ``TENSORWIRE_*`` variable (a
    test run's own settings must not leak into the command), plus ``env``.

    Args:
      *args: the command's arguments after ``status`` (a target, ``--json``, ...).
      env: variables to set for the child.
      timeout: seconds before ``subprocess.TimeoutExpired`` is raised.

    Returns:
      The completed process, ``stdout``/``stderr`` as text.

    Examples:
        >>> result = run_status("grpc://localhost:1234", "--json")  # doctest: +SKIP
        >>> result.returncode                                       # doctest: +SKIP
        0
    """
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TENSORWIRE_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "tensorwire.cli", "status", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
    )


def slurm_step_env(rank: int, tasks: int) -> dict[str, str]:
    """The environment srun gives task ``rank`` of a single-node step of ``tasks`` tasks.

    This process's environment without its own ``SLURM_*`` variables (tests may run inside
    a real job), plus the ones the ``--slurm`` options read.

    Args:
      rank: the task's place in the step (``SLURM_PROCID``).
      tasks: the number of tasks in the step, all on ``localhost``.

    Returns:
      An environment for ``subprocess``.

    Examples:
        >>> slurm_step_env(1, 3)["SLURM_PROCID"]
        '1'
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(
        SLURM_PROCID=str(rank),
        SLURM_STEP_NODELIST="localhost",
        SLURM_STEP_TASKS_PER_NODE=str(tasks),
        SLURM_STEP_NUM_TASKS=str(tasks),
    )
    return env


def free_port_base(rank: int = 0) -> int:
    """A ``--slurm_port_base`` at which task ``rank`` (of a single-node step) finds its
    port, ``base + rank``, free: a port the system just handed out, minus ``rank``.

    Free a moment ago, not reserved: the task binds it itself.

    Args:
      rank: the task whose port must be free.

    Returns:
      The port base.

    Examples:
        >>> base = free_port_base(1)
        >>> 0 < base + 1 < 65536
        True
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1]) - rank
