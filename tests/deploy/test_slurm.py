"""examples/slurm/: the sbatch scripts run to the end on a real single-node SLURM.

The module starts its own SLURM for the duration of the tests: munged with a fresh key,
slurmctld and slurmd (Debian's slurm-wlm 22.05) in a private folder on free ports, the one
node named ``localhost`` so the tasks' addresses resolve without DNS. Each script is
submitted with ``sbatch`` as a user would, from the checkout's root; ``srun`` launches
every task (``tensorwire dispatcher|worker|server --slurm``). The daemons are this test's
children and are stopped by their process ids at the end; nothing outlives it.

The job's end is seen by polling ``scontrol show job`` every half second with a deadline,
rather than ``sbatch --wait``: that polls with a back-off growing to 32 seconds, which
would add up to half a minute to every job.

Needs root and the packages slurm-wlm and munge: ``nox -s slurm`` (or ``nox -s deploy``)
installs them with apt-get and runs this; elsewhere it skips and says so.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from tensorwire_testing.commands import free_port_runs

REPO = Path(__file__).resolve().parents[2]
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "squeue", "scancel")
#: Generous bounds for a loaded two-core machine (a job takes 10-20 s there).
START_TIMEOUT = 60.0
JOB_TIMEOUT = 240.0
STOP_TIMEOUT = 20.0


def _why_not() -> str | None:
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if missing:
        return (
            f"SLURM is not installed ({', '.join(missing)} missing): nox -s slurm installs "
            "slurm-wlm and munge with apt-get and runs this test"
        )
    if os.geteuid() != 0:
        return "the private SLURM runs its daemons as root (CI runs as root)"
    return None


class Slurm:
    """A single-node SLURM of this test's own; a context manager that stops it."""

    def __init__(self) -> None:
        # munged wants its socket's folder searchable by all (a pytest tmp_path is not).
        self.root = Path(tempfile.mkdtemp(prefix="tw-slurm-"))
        self.root.chmod(0o755)
        self.daemons: list[subprocess.Popen[bytes]] = []
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for folder in ("state", "spool"):
            (self.root / folder).mkdir()
        self.conf = self.root / "slurm.conf"
        self.conf.write_text(self._config(), encoding="utf-8")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        self.env["SLURM_CONF"] = str(self.conf)

    def _config(self) -> str:
        root = self.root
        controller_port, node_port = free_port_runs(1, 1)
        return f"""\
ClusterName=tensorwire
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={controller_port}
SlurmdPort={node_port}
AuthType=auth/munge
AuthInfo=socket={root}/munge.socket
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
# No cgroups in a container: processes tracked by parent id, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
# Eight CPUs on a two-core machine: the scripts' five tasks mostly wait on the network.
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs=8 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""

    def start(self) -> Slurm:
        root = self.root
        self._daemon(
            "munged",
            "--foreground",
            f"--key-file={root}/munge.key",
            f"--socket={root}/munge.socket",
            f"--pid-file={root}/munged.pid",
            f"--log-file={root}/munged.log",
            f"--seed-file={root}/munged.seed",
        )
        self._wait_for(lambda: (root / "munge.socket").exists(), "munged's socket")
        self._daemon("slurmctld", "-D", "-f", str(self.conf))
        self._daemon("slurmd", "-D", "-f", str(self.conf), "-N", "localhost")
        self._wait_for(lambda: self._run("sinfo", "-h", "-o", "%t").strip() == "idle", "node")
        return self

    def _daemon(self, *argv: str) -> None:
        with open(self.root / f"{argv[0]}.out", "wb") as log:  # the child keeps its copy
            self.daemons.append(
                subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env)
            )

    def _run(
        self, *argv: str, cwd: Path | None = None, env: Mapping[str, str] | None = None
    ) -> str:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, cwd=cwd, env=env or self.env
        )
        return result.stdout if result.returncode == 0 else ""

    def _wait_for(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not condition():
            for daemon in self.daemons:
                if daemon.poll() is not None:
                    raise RuntimeError(f"{daemon.args[0]} exited: {self.logs()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"SLURM's {what} not ready in {START_TIMEOUT}s: {self.logs()}")
            time.sleep(0.2)

    def logs(self) -> str:
        return "\n".join(
            f"== {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.root.glob("*.*"))
            if path.suffix in (".log", ".out")
        )

    def run_job(self, script: str, env: Mapping[str, str]) -> tuple[str, str, str]:
        """Submit ``script`` (relative to the checkout) from the checkout's root and wait
        for its end; returns (state, exit code, what its batch script printed)."""
        output = self.root / f"{Path(script).stem}.out"
        job = self._run(
            "sbatch", "--parsable", f"--output={output}", script, cwd=REPO, env={**self.env, **env}
        ).strip()
        assert job, f"sbatch {script} failed: {self.logs()}"
        deadline = time.monotonic() + JOB_TIMEOUT
        while True:
            record = self._run("scontrol", "show", "job", job)
            state = re.search(r"JobState=(\S+)", record)
            if state and state.group(1) not in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING"):
                break
            if time.monotonic() > deadline:
                subprocess.run(["scancel", job], env=self.env, timeout=60, check=False)
                raise TimeoutError(f"job {script} did not end in {JOB_TIMEOUT}s: {self.logs()}")
            time.sleep(0.5)
        exit_code = re.search(r"ExitCode=(\S+)", record)
        printed = output.read_text(errors="replace") if output.exists() else ""
        return state.group(1), exit_code.group(1) if exit_code else "?", printed

    def stop(self) -> None:
        jobs = self._run("squeue", "-h", "-o", "%i").split()
        if jobs:
            subprocess.run(["scancel", *jobs], env=self.env, timeout=60, check=False)
        for daemon in reversed(self.daemons):  # slurmd, slurmctld, then munged
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait(timeout=STOP_TIMEOUT)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def slurm() -> Iterator[Slurm]:
    reason = _why_not()
    if reason is not None:
        pytest.skip(reason)
    cluster = Slurm()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def job_env(tmp_path) -> dict[str, str]:
    """What a user exports before sbatch: the credentials folder, the Python and the
    tensorwire command of this test, free port bases, and where the tasks' logs go."""
    auth = tmp_path / "auth"
    subprocess.run(
        ["sh", str(REPO / "deploy/kubernetes/make-auth-secret.sh"), str(auth)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    bin_dir = Path(sys.executable).parent
    data_port_base, train_port_base = free_port_runs(3, 3)
    return {
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PYTHON": sys.executable,
        "TENSORWIRE": str(bin_dir / "tensorwire"),
        "TENSORWIRE_AUTH_DIR": str(auth),
        "TENSORWIRE_LOGS": str(tmp_path / "logs"),
        "DATA_PORT_BASE": str(data_port_base),
        "TRAIN_PORT_BASE": str(train_port_base),
    }


def _task_logs(env: Mapping[str, str], prefix: str) -> dict[str, str]:
    folder = Path(env["TENSORWIRE_LOGS"])
    return {p.name: p.read_text(errors="replace") for p in sorted(folder.glob(f"{prefix}-*.out"))}


def test_the_data_service_script_serves_its_reader_from_a_dispatcher_and_two_workers(
    slurm, job_env
):
    state, exit_code, printed = slurm.run_job("examples/slurm/data_service.sbatch", job_env)
    assert (state, exit_code) == ("COMPLETED", "0:0"), printed + slurm.logs()
    port = int(job_env["DATA_PORT_BASE"])
    assert f"read 1000 elements through grpc://localhost:{port}, each exactly once" in printed
    logs = _task_logs(job_env, "data")
    assert list(logs) == ["data-0.out", "data-1.out", "data-2.out"]
    assert f"tensorwire dispatcher serving at grpc://localhost:{port}" in logs["data-0.out"]
    for task in (1, 2):  # each worker on its own port, registered with task 0
        assert (
            f"tensorwire worker serving at localhost:{port + task} (dispatcher localhost:{port})"
            in logs[f"data-{task}.out"]
        )
    for text in logs.values():  # the script stopped them with SIGTERM: a clean exit
        assert "SIGTERM; stopping" in text


def test_the_parameter_server_script_trains_on_its_ps_and_workers(slurm, job_env):
    state, exit_code, printed = slurm.run_job("examples/slurm/parameter_server.sbatch", job_env)
    assert (state, exit_code) == ("COMPLETED", "0:0"), printed + slurm.logs()
    assert "step   99" in printed
    first, last = map(float, re.search(r"loss (\S+) -> (\S+)", printed).groups())  # type: ignore[union-attr]
    assert last < first / 10
    port = int(job_env["TRAIN_PORT_BASE"])
    logs = _task_logs(job_env, "train")
    for task, device in enumerate(("/job:ps/task:0", "/job:worker/task:0", "/job:worker/task:1")):
        assert (
            f"tensorwire server {device} serving grpc://localhost:{port + task}"
            in logs[f"train-{task}.out"]
        )
