#!/usr/bin/env python3
"""Run tensorwire's RDMA tests against real verbs: Soft-RoCE inside QEMU guests.

The host (no InfiniBand in its kernel, no RDMA hardware) boots Debian bookworm guests under
TCG, attaches ``rdma_rxe`` there, and runs a command against the project's own source tree,
which the guest sees read-only over virtio-9p at the same absolute path. The result is read
back from a per-run marker on the serial console, never from QEMU's exit status (QEMU exits 0
whatever the guest did).

Single guest (rxe on a dummy NIC)::

    python3 packages/transport-rdma/harness/run_vm.py -- -m rdma packages/transport-rdma/tests

The whole transport suite on ``grpc+verbs`` (every test that uses the chosen protocol, as
``tox -e py311-grpc`` runs it on ``grpc``; about a quarter of an hour under TCG)::

    python3 packages/transport-rdma/harness/run_vm.py --suite

Two guests joined by a QEMU socket netdev over host loopback, rxe on that wire, a server
test in one kernel and a client test in the other::

    python3 packages/transport-rdma/harness/run_vm.py --two-guest

What it caches (``$TENSORWIRE_RDMA_CACHE``, default ``<repo>/.cache/rdma-guest``): the guest
image (``image/``, rebuilt when ``build_image.sh`` changes) and a virtualenv made with the
host's Debian ``/usr/bin/python3`` (same Python 3.11.2 and glibc as the guest) with
``--system-site-packages`` so that, inside the guest, it also sees the guest's pyverbs. Our
five distributions are installed in it in editable mode, so each run tests the tree as it is.

Exit status: the guest command's exit status (both guests' worst in two-guest mode); 3 when a
guest gave no result (crash or timeout); 2 for a harness set-up error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import tomllib

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
PACKAGES = ("core", "transport-grpc", "transport-rdma", "dataservice", "testing")
#: What the tests need besides our packages; pyverbs comes from the guest's Debian.
TEST_REQUIREMENTS = (
    "pytest>=7",
    "grpcio>=1.63",
    "protobuf>=4.25",
    "pluggy>=1.3",
    "cloudpickle>=2.2",
    "numpy>=1.26",
    "prometheus_client>=0.16,<1",  # the core's; its metrics tests are in the --suite run
    "portpicker>=1.5",
)
DEBIAN_PYTHON = "/usr/bin/python3"
HOST_PACKAGES = "qemu-system-x86 debootstrap e2fsprogs python3-venv"
#: The guest runs about 5-10x slower than the host under TCG: test deadlines that bound a
#: process start or a recovery there stretch by this much (tensorwire_testing.waiting).
GUEST_TIMEOUT_SCALE = "4"
#: The transport suite: every test whose outcome depends on --tensorwire-protocol.
SUITE_ARGS = (
    "-v",  # a line per test: a slow or stuck test shows on the console as it happens
    "-rfE",
    "--durations=15",
    "--tensorwire-protocol=grpc+verbs",
    "--tensorwire-transport-tests",
    "packages/core/tests",
    "packages/dataservice/tests",
    "packages/testing/tests",
    "packages/transport-rdma/tests",
)


def log(message: str) -> None:
    print(f"run_vm: {message}", flush=True)


def fail(message: str) -> None:
    print(f"run_vm: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def cache_dir() -> Path:
    return Path(os.environ.get("TENSORWIRE_RDMA_CACHE") or REPO / ".cache" / "rdma-guest")


def ensure_image(cache: Path) -> Path:
    image = cache / "image"
    subprocess.run(["sh", str(HERE / "build_image.sh"), str(image)], check=True)
    return image


def ensure_venv(cache: Path) -> Path:
    """The guest-compatible virtualenv, (re)made when a pyproject, a setup.py, the version
    or this list changes."""
    if not Path(DEBIAN_PYTHON).exists():
        fail(f"{DEBIAN_PYTHON} is missing; apt-get install python3 python3-venv")
    venv = cache / "venv"
    digest = hashlib.sha256(" ".join(("deps-v2", *TEST_REQUIREMENTS)).encode())
    requirements = REPO / "requirements-test.txt"  # the suite's own test dependencies
    if requirements.exists():
        digest.update(requirements.read_bytes())
    # The version and the pins between the distributions come from VERSION and setup.py.
    for path in (REPO / "VERSION", *sorted((REPO / "packages").glob("*/setup.py"))):
        digest.update(path.read_bytes())
    for pkg in PACKAGES:
        # Editable installs follow the tree; only what pip records (dependencies, entry
        # points, scripts) needs a reinstall when it changes.
        with open(REPO / "packages" / pkg / "pyproject.toml", "rb") as f:
            project = tomllib.load(f).get("project", {})
        digest.update(
            json.dumps(
                {
                    k: project.get(k)
                    for k in (
                        "name",
                        "dependencies",
                        "optional-dependencies",
                        "entry-points",
                        "scripts",
                    )
                },
                sort_keys=True,
            ).encode()
        )
    key = digest.hexdigest()[:16]
    stamp = venv / "tw-key"
    if stamp.exists() and stamp.read_text().strip() == key:
        log(f"reusing virtualenv {venv}")
        return venv
    start = time.monotonic()
    log(f"making virtualenv {venv} with {DEBIAN_PYTHON}")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([DEBIAN_PYTHON, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, *TEST_REQUIREMENTS], check=True)
    if requirements.exists():
        subprocess.run([*pip, "-r", str(requirements)], check=True)
    # A pure build of the core: an editable build of the Cython codec would rewrite the
    # extension inside the shared source tree that the development venv also uses. The
    # guest imports whatever codec the tree holds (the compiled one is cp311, which the
    # guest's 3.11 loads) and falls back to the pure-Python twin otherwise.
    env = dict(os.environ, TENSORWIRE_PURE_BUILD="1")
    editable = []
    for pkg in PACKAGES:
        editable += ["-e", str(REPO / "packages" / pkg)]
    # With their dependencies: the packages' own (zstandard, ...) are not all test deps.
    subprocess.run([*pip, *editable], check=True, env=env)
    stamp.write_text(key + "\n")
    log(f"virtualenv ready in {time.monotonic() - start:.0f}s")
    return venv


def _listening(port: int) -> bool:
    """True when something on this host listens on 127.0.0.1:port (read, not probed:
    QEMU's socket netdev would take a probing connection as its peer)."""
    needle = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if parts[1] == needle and parts[3] == "0A":
                    return True
    except OSError:
        pass
    return False


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Guest:
    """One QEMU guest running one job; its console is copied to our stdout with a prefix."""

    def __init__(
        self,
        name: str,
        image: Path,
        cache: Path,
        job: str,
        *,
        net: str,
        addr: str,
        netdev: list[str],
        timeout: float,
        memory: int,
        cpus: int,
        env: dict[str, str],
    ) -> None:
        self.name = name
        self.nonce = secrets.token_hex(8)
        self.timeout = timeout
        self.rc: int | None = None
        self.lines: list[str] = []
        self.jobdir = cache / "jobs" / f"{name}-{self.nonce}"
        self.jobdir.mkdir(parents=True)
        shutil.copy(HERE / "guest_init.sh", self.jobdir / "guest_init.sh")
        shares = {"twsrc": str(REPO)}
        if not cache.resolve().is_relative_to(REPO):
            shares["twcache"] = str(cache.resolve())
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
        (self.jobdir / "env.sh").write_text(
            f"TW_NONCE={self.nonce}\n"
            f"TW_SHARES={shlex.quote(' '.join(f'{t}:{p}' for t, p in shares.items()))}\n"
            f"TW_NET={net}\nTW_ADDR={addr}\n{exports}"
        )
        (self.jobdir / "job.sh").write_text(f"cd {shlex.quote(str(REPO))}\n{job}\n")
        virtfs = [
            "-virtfs",
            f"local,path={self.jobdir},mount_tag=twjob,security_model=none",
        ]
        for tag, path in shares.items():
            virtfs += [
                "-virtfs",
                f"local,path={path},mount_tag={tag},security_model=none,readonly=on",
            ]
        self.argv = [
            "timeout",
            "--kill-after=10",
            str(int(timeout)),
            "qemu-system-x86_64",
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
            "-smp",
            str(cpus),
            "-m",
            str(memory),
            "-nodefaults",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-kernel",
            str(image / "vmlinuz"),
            "-initrd",
            str(image / "initrd.img"),
            "-append",
            "console=ttyS0 root=/dev/vda rw init=/sbin/tw-init panic=-1 quiet",
            "-drive",
            f"file={image / 'rootfs.ext4'},if=virtio,format=raw,snapshot=on",
            *virtfs,
            *netdev,
        ]
        self.proc: subprocess.Popen[str] | None = None
        self.thread = threading.Thread(target=self._pump, daemon=True)

    def start(self) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        log(f"{self.name}: qemu pid {self.proc.pid}")
        self.thread.start()

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        marker = f"TW-RDMA-EXIT-{self.nonce}="
        for line in self.proc.stdout:
            line = line.rstrip("\r\n")
            self.lines.append(line)
            print(f"[{self.name}] {line}", flush=True)
            if line.startswith(marker):
                try:
                    self.rc = int(line[len(marker) :])
                except ValueError:
                    pass

    def wait(self) -> int:
        assert self.proc is not None
        try:
            self.proc.wait(timeout=self.timeout + 30)
        except subprocess.TimeoutExpired:
            self.kill()
        self.thread.join(timeout=10)
        elapsed = time.monotonic() - self.started
        if self.rc is None:
            log(
                f"{self.name}: no result from the guest after {elapsed:.0f}s "
                f"(crashed, or killed by the {self.timeout:.0f}s timeout)"
            )
            return 3
        log(f"{self.name}: guest command exited {self.rc}; VM ran {elapsed:.0f}s")
        shutil.rmtree(self.jobdir, ignore_errors=True)
        return self.rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # `timeout` leads its own process group with qemu in it: end that group only.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)


def pytest_job(venv: Path, args: list[str]) -> str:
    argv = [str(venv / "bin" / "python"), "-m", "pytest", "-p", "no:cacheprovider", *args]
    return shlex.join(argv)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--command", help="a shell command to run in the guest instead of pytest")
    p.add_argument(
        "--two-guest",
        action="store_true",
        help="boot two guests joined by a socket netdev and run the two-host test",
    )
    p.add_argument(
        "--suite",
        action="store_true",
        help="run the whole transport suite on grpc+verbs (not only the rdma-marked tests)",
    )
    p.add_argument(
        "--prepare", action="store_true", help="only build/refresh the image and the virtualenv"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per VM (default 900; 2400 with --suite)",
    )
    p.add_argument("--memory", type=int, default=2048, help="MiB per guest")
    p.add_argument("--cpus", type=int, default=2, help="vCPUs per guest")
    p.add_argument(
        "pytest_args",
        nargs="*",
        metavar="-- PYTEST_ARG",
        help="pytest arguments for the guest, after `--` "
        "(default: -m rdma packages/transport-rdma/tests)",
    )
    argv = sys.argv[1:] if argv is None else argv
    tests: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, tests = argv[:cut], argv[cut + 1 :]
    ns = p.parse_args(argv)
    ns.tests = tests + ns.pytest_args
    if ns.timeout is None:
        ns.timeout = 2400.0 if ns.suite else 900.0

    for tool in ("qemu-system-x86_64", "timeout"):
        if shutil.which(tool) is None:
            fail(f"{tool} not found; apt-get install {HOST_PACKAGES}")
    t0 = time.monotonic()
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    image = ensure_image(cache)
    venv = ensure_venv(cache)
    log(f"prepared in {time.monotonic() - t0:.0f}s")
    if ns.prepare:
        return 0

    env = {"TENSORWIRE_RDMA_REQUIRE": "1", "TENSORWIRE_TEST_TIMEOUT_SCALE": GUEST_TIMEOUT_SCALE}
    if ns.two_guest:
        return run_two(ns, image, cache, venv, env, t0)
    if ns.command:
        job = ns.command
    elif ns.suite:
        job = pytest_job(venv, [*SUITE_ARGS, *ns.tests])
    else:
        job = pytest_job(venv, ns.tests or ["-m", "rdma", "packages/transport-rdma/tests"])
    guest = Guest(
        "guest",
        image,
        cache,
        job,
        net="dummy",
        addr="10.9.0.1/24",
        netdev=["-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0"],
        timeout=ns.timeout,
        memory=ns.memory,
        cpus=ns.cpus,
        env=env,
    )
    try:
        guest.start()
        rc = guest.wait()
    finally:
        guest.kill()
    log(f"total {time.monotonic() - t0:.0f}s, result {rc}")
    return rc


def run_two(
    ns: argparse.Namespace, image: Path, cache: Path, venv: Path, env: dict[str, str], t0: float
) -> int:
    port = _free_port()
    test = "packages/transport-rdma/tests/test_two_hosts.py"
    common = dict(timeout=ns.timeout, memory=min(ns.memory, 1536), cpus=1)
    extra = ns.tests or ["-rP"]  # -rP: show the client's transfer figures
    server = Guest(
        "server",
        image,
        cache,
        pytest_job(venv, ["-m", "rdma", test, *extra]),
        net="wire",
        addr="10.77.0.1/24",
        netdev=[
            "-netdev",
            f"socket,id=n0,listen=127.0.0.1:{port}",
            "-device",
            "virtio-net-pci,netdev=n0,mac=52:54:00:77:00:01",
        ],
        env=dict(env, TW_TWO_HOST_ROLE="server", TW_TWO_HOST_PEER="10.77.0.2"),
        **common,
    )
    client = Guest(
        "client",
        image,
        cache,
        pytest_job(venv, ["-m", "rdma", test, *extra]),
        net="wire",
        addr="10.77.0.2/24",
        netdev=[
            "-netdev",
            f"socket,id=n0,connect=127.0.0.1:{port}",
            "-device",
            "virtio-net-pci,netdev=n0,mac=52:54:00:77:00:02",
        ],
        env=dict(env, TW_TWO_HOST_ROLE="client", TW_TWO_HOST_PEER="10.77.0.1"),
        **common,
    )
    try:
        server.start()
        deadline = time.monotonic() + 30
        while not _listening(port):
            if time.monotonic() > deadline or server.proc.poll() is not None:  # type: ignore[union-attr]
                log("the server guest's socket netdev never listened")
                return 3
            time.sleep(0.1)
        client.start()
        rc_client = client.wait()
        rc_server = server.wait()
    finally:
        client.kill()
        server.kill()
    log(f"total {time.monotonic() - t0:.0f}s, server {rc_server}, client {rc_client}")
    return max(rc_server, rc_client)


if __name__ == "__main__":
    sys.exit(main())
