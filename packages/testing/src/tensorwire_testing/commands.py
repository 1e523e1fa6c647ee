"""The ``tensorwire`` command as tests run it: a real subprocess, in a user's environment.

Shared by the tests of several distributions that drive the command line: ``run_status``
for ``tensorwire status``, and what a SLURM job step gives a task (``slurm_step_env``,
``free_port_base``) for the ``--slurm`` options of ``server``, ``dispatcher`` and ``worker``;
``free_port_runs`` for tests whose subprocesses bind ports they are told.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from pathlib import Path

__all__ = [
    "run_status",
    "slurm_step_env",
    "free_port_base",
    "free_port_runs",
    "COMMAND_DEADLINE",
    "PRIVATE_PORTS_FROM",
]

#: Generous for a loaded two-core machine; the commands answer in about a second.
COMMAND_DEADLINE = 120.0

#: ``free_port_runs`` picks from here up to the kernel's ephemeral range (portpicker, which
#: local clusters use as TensorFlow does, picks below it).
PRIVATE_PORTS_FROM = 25000


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
    port, ``base + rank``, free (``free_port_runs``: the ports ``base .. base + rank``).

    Free a moment ago, not reserved: the task binds it itself.

    Args:
      rank: the task whose port must be free.

    Returns:
      The port base.

    Examples:
        >>> base = free_port_base(1)
        >>> PRIVATE_PORTS_FROM <= base < base + 1 < 65536
        True
    """
    return free_port_runs(rank + 1)[0]


def free_port_runs(*spans: int) -> list[int]:
    """For each span, the first of that many consecutive ports, all free now and apart
    from the other spans' ports.

    They lie between ``PRIVATE_PORTS_FROM`` and the kernel's ephemeral range. A port from
    that range (what binding port 0 returns) is handed to any process's outgoing
    connection at any moment, so one found free was sometimes taken before the test's
    subprocess bound it (CI beside a busy process lost a SLURM job's port that way).
    Free a moment ago, not reserved.

    Args:
      *spans: how many consecutive ports each run needs (each at least 1).

    Returns:
      The first port of each run, in the order of ``spans``.

    Raises:
      ValueError: a span below 1.
      RuntimeError: no free run of a span was found in 200 tries, or the ephemeral range
        leaves no room above ``PRIVATE_PORTS_FROM``.

    Examples:
        >>> first, second = free_port_runs(3, 2)
        >>> len(set(range(first, first + 3)) & set(range(second, second + 2)))
        0
    """
    if not spans or min(spans) < 1:
        raise ValueError(f"each span must be at least 1 port, got {spans!r}")
    stop = _ephemeral_low() - max(spans)
    if stop <= PRIVATE_PORTS_FROM:
        raise RuntimeError(
            f"the kernel's ephemeral port range starts at {stop + max(spans)}: no run of "
            f"{max(spans)} ports fits between {PRIVATE_PORTS_FROM} and it"
        )
    taken: set[int] = set()
    bases: list[int] = []
    # A generator of its own: a test that seeds the global one (hypothesis, a fixed
    # seed) would otherwise make two test processes try the same ports in the same order.
    chooser = random.Random()
    for span in spans:
        for _ in range(200):
            base = chooser.randrange(PRIVATE_PORTS_FROM, stop)
            ports = set(range(base, base + span))
            if not ports & taken and all(map(_is_free, ports)):
                taken |= ports
                bases.append(base)
                break
        else:
            raise RuntimeError(
                f"no {span} consecutive free ports found from {PRIVATE_PORTS_FROM} to "
                f"{stop + span - 1} in 200 tries"
            )
    return bases


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux's default when unreadable)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
