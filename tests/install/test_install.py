"""Installation as a user does it: from the wheelhouse ``nox -s build`` makes, into fresh
virtualenvs, with nothing from this source tree on the path.

Run by ``nox -s install_check`` (which ``nox -s tests``, hence CI, calls): it builds the
wheelhouse into dist/ and runs this file with ``TENSORWIRE_WHEELHOUSE`` pointing at it. The
normal pytest run does not collect this folder.

Our five distributions come only from the wheelhouse (``pip install --no-index``); their
third-party dependencies are downloaded from the index once per run into
``.cache/install-check/wheels`` and installed from there.

README snippets
---------------
Every fenced block opened with ```python in README.md and packages/*/README.md runs here
verbatim, as its own script, in a fresh virtualenv holding ``tensorwire[all]`` from the
wheelhouse. It must exit 0 within 180 s, print something on stdout, and print no gRPC
C-core log line (``I0102 03:04:05.678 123 chttp2_transport.cc:1403] ...``). A block that
cannot run alone (it continues an earlier block, needs a GPU, a second host, ...) opts out
with the HTML comment ``<!-- not-run -->`` on the last non-blank line before its opening
fence; the marker is invisible on GitHub and in the docs. Blocks in other languages
(```sh, ```text, ...) never run.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
VERSION = (ROOT / "VERSION").read_text(encoding="utf-8").strip()
OURS = {
    "tensorwire": "packages/core",
    "tensorwire-grpc": "packages/transport-grpc",
    "tensorwire-rdma": "packages/transport-rdma",
    "tensorwire-dataservice": "packages/dataservice",
    "tensorwire-testing": "packages/testing",
}
#: The core's extras and the distributions each must bring.
EXTRAS = {
    "grpc": {"tensorwire-grpc"},
    "rdma": {"tensorwire-rdma"},
    "data": {"tensorwire-dataservice"},
    "testing": {"tensorwire-testing"},
    "all": set(OURS) - {"tensorwire"},
}
NOT_RUN_MARKER = "<!-- not-run -->"
PIP_TIMEOUT = 600
RUN_TIMEOUT = 180


def _load_grpc_logs() -> ModuleType:
    """``tensorwire_testing.grpc_logs``, loaded from its file: this process runs with none of
    our distributions installed (they are what is under test), and the module needs only
    the standard library. One definition of a gRPC C-core log line for every test."""
    path = ROOT / "packages/testing/src/tensorwire_testing/grpc_logs.py"
    spec = importlib.util.spec_from_file_location("_tensorwire_grpc_logs", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: Finds gRPC C-core log lines (``core_log_lines``) in what a snippet printed.
GRPC_LOGS = _load_grpc_logs()


# -- the README snippets ------------------------------------------------------------------
@dataclass(frozen=True)
class Snippet:
    readme: Path
    line: int  # of the opening fence, 1-based
    code: str

    @property
    def name(self) -> str:
        return f"{self.readme.relative_to(ROOT)}:{self.line}"


def python_blocks(readme: Path) -> Iterator[Snippet]:
    """The ```python blocks of ``readme`` that are not marked ``<!-- not-run -->``."""
    lines = readme.read_text(encoding="utf-8").splitlines()
    previous = ""  # the last non-blank line before the current one
    index = 0
    while index < len(lines):
        line = lines[index]
        fence = re.match(r"^(\s*)(`{3,}|~{3,})\s*(\S*)", line)
        if fence is None:
            if line.strip():
                previous = line.strip()
            index += 1
            continue
        indent, marks, language = fence.groups()
        start = index
        body: list[str] = []
        index += 1
        while index < len(lines) and not re.match(rf"^\s*{re.escape(marks)}\s*$", lines[index]):
            text = lines[index]
            body.append(text[len(indent) :] if text.startswith(indent) else text)
            index += 1
        if index >= len(lines):
            raise ValueError(f"{readme}:{start + 1}: code block never closed")
        index += 1  # the closing fence
        if language.lower() in ("python", "py", "python3") and previous != NOT_RUN_MARKER:
            yield Snippet(readme, start + 1, "\n".join(body) + "\n")
        previous = line.strip()


def all_snippets() -> list[Snippet]:
    readmes = [ROOT / "README.md", *sorted(ROOT.glob("packages/*/README.md"))]
    return [snippet for readme in readmes if readme.exists() for snippet in python_blocks(readme)]


def test_the_snippet_extractor_honours_the_marker(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "# t\n\n```python\nprint(1)\n```\n\n<!-- not-run -->\n\n```python\nprint(2)\n```\n\n"
        "```sh\necho 3\n```\n\n```py\n    print(4)\n```\n\n- item\n\n  ```python\n  print(5)\n"
        "  ```\n",
        encoding="utf-8",
    )
    found = [(s.line, s.code) for s in python_blocks(readme)]
    assert found == [(3, "print(1)\n"), (17, "    print(4)\n"), (23, "print(5)\n")]


# -- helpers ------------------------------------------------------------------------------
def run(
    args: Sequence[str | Path],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = RUN_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [str(a) for a in args],
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{' '.join(map(str, args))} did not finish in {timeout:.0f}s; "
            f"output so far:\n{exc.stdout}\n{exc.stderr}"
        )


def check(result: subprocess.CompletedProcess[str], what: str) -> str:
    if result.returncode != 0:
        pytest.fail(
            f"{what} exited {result.returncode}\n--- stdout\n{result.stdout}\n"
            f"--- stderr\n{result.stderr}"
        )
    return result.stdout


def wheel_metadata(wheel: Path) -> list[tuple[str, str]]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(name).decode("utf-8")
    header = text.split("\n\n", 1)[0]
    return [tuple(line.split(": ", 1)) for line in header.splitlines() if ": " in line]


@dataclass
class Venv:
    path: Path
    wheelhouse: Path
    third_party: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not k.startswith("PIP_")
        }
        env["PATH"] = f"{self.path / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.path)
        env.update(extra)
        return env

    def pip_install(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """pip install into this venv with our distributions from the wheelhouse only."""
        return run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                self.python,
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--no-index",
                "--find-links",
                self.wheelhouse,
                "--find-links",
                self.third_party,
                *args,
            ],
            env=env or self.env(),
            timeout=PIP_TIMEOUT,
        )

    def python_run(self, code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
        script = cwd / "script.py"
        script.write_text(code, encoding="utf-8")
        return run([self.python, script], env=self.env(**env), cwd=cwd)


# -- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    where = os.environ.get("TENSORWIRE_WHEELHOUSE")
    if not where:
        pytest.fail(
            "TENSORWIRE_WHEELHOUSE is not set: run these tests with "
            "`nox -s install_check`, which builds the wheelhouse first"
        )
    path = Path(where)
    if not path.is_dir():
        pytest.fail(f"the wheelhouse {path} does not exist; `nox -s build` makes it")
    return path


@pytest.fixture(scope="session")
def wheels(wheelhouse: Path) -> dict[str, Path]:
    """distribution -> its one wheel in the wheelhouse."""
    found: dict[str, list[Path]] = {}
    for wheel in wheelhouse.glob("*.whl"):
        found.setdefault(str(canonicalize_name(wheel.name.split("-")[0])), []).append(wheel)
    for dist in OURS:
        if len(found.get(dist, [])) != 1:
            pytest.fail(
                f"expected exactly one wheel of {dist} in {wheelhouse}, "
                f"found {[p.name for p in found.get(dist, [])]}"
            )
    return {dist: found[dist][0] for dist in OURS}


@pytest.fixture(scope="session")
def third_party(wheels: dict[str, Path]) -> Path:
    """Every third-party wheel our distributions (and the core's sdist build) need,
    downloaded from the index once per run."""
    requirements: set[str] = set()
    for wheel in wheels.values():
        for key, value in wheel_metadata(wheel):
            if key != "Requires-Dist":
                continue
            requirement = Requirement(value)
            if canonicalize_name(requirement.name) in OURS:
                continue
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue  # the framework extras (torch, jax) and the grpc test extra
            requirements.add(str(requirement))
    with open(ROOT / "packages/core/pyproject.toml", "rb") as f:
        requirements.update(tomllib.load(f)["build-system"]["requires"])
    dest = ROOT / ".cache" / "install-check" / "wheels"
    dest.mkdir(parents=True, exist_ok=True)
    # One download at a time (pytest-xdist workers each ask); the second finds every file.
    with open(dest.parent / "download.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        check(
            run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--disable-pip-version-check",
                    "--no-input",
                    "--prefer-binary",
                    "--dest",
                    dest,
                    *sorted(requirements),
                ],
                timeout=PIP_TIMEOUT,
            ),
            "downloading the third-party wheels",
        )
    return dest


@pytest.fixture
def make_venv(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path, third_party: Path):
    def make(name: str) -> Venv:
        path = tmp_path_factory.mktemp("venv") / name
        check(run([sys.executable, "-m", "venv", "--without-pip", path]), f"making {path}")
        return Venv(path, wheelhouse, third_party)

    return make


@pytest.fixture(scope="session")
def venv_all(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path, third_party: Path) -> Venv:
    path = tmp_path_factory.mktemp("venv") / "all"
    check(run([sys.executable, "-m", "venv", "--without-pip", path]), f"making {path}")
    venv = Venv(path, wheelhouse, third_party)
    check(venv.pip_install("tensorwire[all]"), "pip install 'tensorwire[all]'")
    return venv


def installed(venv: Venv) -> dict[str, str]:
    out = check(
        run(
            [
                venv.python,
                "-c",
                "import importlib.metadata as m, json; print(json.dumps("
                "{d.metadata['Name']: d.version for d in m.distributions()}))",
            ],
            env=venv.env(),
        ),
        "listing the installed distributions",
    )
    return {str(canonicalize_name(k)): v for k, v in json.loads(out).items()}


# -- the wheelhouse -----------------------------------------------------------------------
def test_wheelhouse_has_a_wheel_and_an_sdist_of_each_at_the_one_version(
    wheelhouse: Path, wheels: dict[str, Path]
) -> None:
    for dist, wheel in wheels.items():
        meta = wheel_metadata(wheel)
        assert ("Version", VERSION) in meta, f"{wheel.name} is not version {VERSION}: {meta}"
        sdist = wheelhouse / f"{dist.replace('-', '_')}-{VERSION}.tar.gz"
        assert sdist.is_file(), f"no sdist {sdist.name} in {wheelhouse}"
        # Every pin on another of ours is exactly this version.
        for key, value in meta:
            if key == "Requires-Dist" and canonicalize_name(Requirement(value).name) in OURS:
                assert str(Requirement(value).specifier) == f"=={VERSION}", f"{wheel.name}: {value}"
    core = wheel_metadata(wheels["tensorwire"])
    extras = {v for k, v in core if k == "Provides-Extra"}
    assert extras == set(EXTRAS), f"the core's extras are {extras}, want {set(EXTRAS)}"
    for extra, dists in EXTRAS.items():
        brought = {
            str(canonicalize_name(Requirement(v).name))
            for k, v in core
            if k == "Requires-Dist"
            and Requirement(v).marker is not None
            and Requirement(v).marker.evaluate({"extra": extra})
        }
        assert dists <= brought, f"tensorwire[{extra}] brings {brought}, want {dists}"
    for dist in ("tensorwire-dataservice", "tensorwire-testing", "tensorwire-rdma"):
        required = {
            str(canonicalize_name(Requirement(v).name))
            for k, v in wheel_metadata(wheels[dist])
            if k == "Requires-Dist"
        }
        assert "tensorwire-grpc" in required, f"{dist} must bring its default protocol: {required}"


@pytest.mark.parametrize("extra", sorted(set(EXTRAS) - {"all"}))
def test_each_extra_resolves_from_the_wheelhouse(extra: str, make_venv, tmp_path: Path) -> None:
    # What pip would install into a fresh virtualenv (resolved, not installed: tensorwire[all]
    # and each distribution alone are installed for real below).
    venv = make_venv(f"extra-{extra}")
    report = tmp_path / "report.json"
    check(
        venv.pip_install("--dry-run", "--report", str(report), f"tensorwire[{extra}]"),
        f"pip install --dry-run 'tensorwire[{extra}]'",
    )
    chosen = {
        str(canonicalize_name(item["metadata"]["name"])): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    want = {"tensorwire", "tensorwire-grpc", *EXTRAS[extra]}
    assert {d: v for d, v in chosen.items() if d in OURS} == {d: VERSION for d in want}


def test_core_wheel_is_manylinux_and_stripped(wheels: dict[str, Path], tmp_path: Path) -> None:
    from elftools.elf.elffile import ELFFile

    wheel = wheels["tensorwire"]
    assert "manylinux" in wheel.name, f"the core wheel is not manylinux-tagged: {wheel.name}"
    shown = check(run([sys.executable, "-m", "auditwheel", "show", wheel]), "auditwheel show")
    tag = re.search(r'consistent with the following platform tag:\s*"(manylinux_\w+)"', shown)
    assert tag is not None, f"auditwheel show names no manylinux tag:\n{shown}"
    print(f"auditwheel show: {wheel.name} is consistent with {tag.group(1)}")
    with zipfile.ZipFile(wheel) as archive:
        extensions = sorted(n for n in archive.namelist() if n.endswith(".so"))
        modules = [n.split(".cpython")[0] for n in extensions]
        assert modules == ["tensorwire/codec/_codec_c", "tensorwire/transport/kit/_copy_c"], (
            f"the core wheel should hold the codec and the copy kernel only: {extensions}"
        )
        archive.extractall(tmp_path, extensions)
    for extension in extensions:
        with open(tmp_path / extension, "rb") as f:
            sections = [s.name for s in ELFFile(f).iter_sections()]
        unstripped = [s for s in sections if s.startswith(".debug") or s == ".symtab"]
        assert not unstripped, f"{extension} is not stripped: it has {unstripped}"


# -- tensorwire[all] and the README snippets ----------------------------------------------
@pytest.mark.xdist_group("venv-all")
def test_all_extra_installs_every_distribution(venv_all: Venv) -> None:
    versions = installed(venv_all)
    assert {d: versions.get(d) for d in OURS} == {d: VERSION for d in OURS}
    out = check(
        run([venv_all.path / "bin" / "tensorwire", "info"], env=venv_all.env()), "tensorwire info"
    )
    assert "codec: compiled" in out, out
    assert "copy: streaming" in out, out  # the wheel's copy kernel (x86-64)
    for protocol in ("grpc ", "grpc+verbs ", "inproc "):
        assert f"  {protocol}" in out, f"{protocol.strip()} is not listed:\n{out}"


SNIPPETS = all_snippets()


def test_readmes_have_snippets() -> None:
    assert SNIPPETS, "no ```python block found in README.md or packages/*/README.md"


@pytest.mark.xdist_group("venv-all")
@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.name for s in SNIPPETS])
def test_readme_snippet_runs_verbatim(snippet: Snippet, venv_all: Venv, tmp_path: Path) -> None:
    result = venv_all.python_run(snippet.code, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"{snippet.name} exited {result.returncode} (mark it {NOT_RUN_MARKER} if it cannot "
        f"run alone)\n--- code\n{snippet.code}--- output\n{output}"
    )
    assert result.stdout.strip(), f"{snippet.name} printed nothing on stdout\n{output}"
    core_lines = GRPC_LOGS.core_log_lines(output)
    assert not core_lines, f"{snippet.name} printed gRPC C-core log lines: {core_lines}\n{output}"


# -- each distribution alone ---------------------------------------------------------------
GRPC_SESSION = """
import numpy as np
import tensorwire as tw

server = tw.Server.create_local_server()
with tw.Session(server.target) as sess:
    print(server.target, sess.run(np.add, np.arange(3), 1).tolist())
"""

ALONE = {
    "tensorwire-grpc": (GRPC_SESSION, r"^grpc://localhost:\d+ \[1, 2, 3\]$"),
    "tensorwire-rdma": (
        # No pyverbs here: grpc+verbs is installed and says what it misses; grpc works.
        GRPC_SESSION
        + """
status = tw.info()["protocols"]["grpc+verbs"]["verbs"]
print("verbs problem:", status["problem"])
""",
        r"^grpc://localhost:\d+ \[1, 2, 3\]\nverbs problem: grpc\+verbs needs pyverbs",
    ),
    "tensorwire-dataservice": (
        """
import tensorwire as tw

dispatcher = tw.data.service.DispatchServer()
worker = tw.data.service.WorkerServer(tw.data.service.WorkerConfig(
    dispatcher_address=dispatcher.target.split("://")[1]))
dataset = tw.data.Dataset.range(5).apply(tw.data.service.distribute(
    processing_mode="parallel_epochs", service=dispatcher.target))
print(dispatcher.target, sorted(int(x) for x in dataset.as_numpy_iterator()))
""",
        r"^grpc://localhost:\d+ \[0, 1, 2, 3, 4\]$",
    ),
    "tensorwire-testing": (
        """
import numpy as np
import tensorwire as tw

workers, ps = tw.test.create_local_cluster(num_workers=2, num_ps=1)
with tw.Session(workers[0].target) as sess:
    w = sess.variable("w", np.zeros(3, np.float32), device="/job:ps/task:0")
    w.assign_add(np.ones(3, np.float32))
    print(workers[0].target, sess.run(np.sum, w.read(), device="/job:worker/task:1"))
""",
        r"^grpc://localhost:\d+ 3\.0$",
    ),
}


@pytest.mark.parametrize("dist", sorted(ALONE))
def test_distribution_installs_alone_and_works_with_its_defaults(
    dist: str, make_venv, tmp_path: Path
) -> None:
    venv = make_venv(dist)
    check(venv.pip_install(dist), f"pip install {dist}")
    versions = installed(venv)
    ours = {d for d in OURS if d in versions}
    want = {"tensorwire", "tensorwire-grpc", dist}
    assert ours == want, f"pip install {dist} brought {sorted(ours)}, want {sorted(want)}"
    code, expected = ALONE[dist]
    out = check(venv.python_run(code, tmp_path), f"{dist} with its defaults")
    assert re.search(expected, out.strip()), f"{dist}: unexpected output {out!r}"


def test_core_alone_runs_inproc_and_names_a_working_command_for_grpc(
    make_venv, tmp_path: Path
) -> None:
    venv = make_venv("core")
    check(venv.pip_install("tensorwire"), "pip install tensorwire")
    assert {d for d in OURS if d in installed(venv)} == {"tensorwire"}
    out = check(
        venv.python_run(
            """
import json
import numpy as np
import tensorwire as tw

server = tw.Server({"local": ["localhost:0"]}, job_name="local", task_index=0, protocol="inproc")
with tw.Session(server.target) as sess:
    result = sess.run(np.add, np.arange(3), 1).tolist()
try:
    tw.Server.create_local_server()
except tw.errors.NotFoundError as exc:
    missing = str(exc)
else:
    missing = None
print(json.dumps({"codec": tw.info()["codec"], "protocols": sorted(tw.info()["protocols"]),
                  "result": result, "missing": missing}))
""",
            tmp_path,
        ),
        "the core alone",
    )
    report = json.loads(out)
    assert report["codec"] == "compiled" and report["protocols"] == ["inproc"], report
    assert report["result"] == [1, 2, 3], report
    missing = report["missing"]
    assert missing is not None, "create_local_server worked without tensorwire-grpc"
    command = re.search(r"not installed: (pip install \S+)$", missing)
    assert command is not None, f"the message names no pip command: {missing}"
    # The command, as printed, in this venv (pip finds the distribution in the wheelhouse,
    # as it will on the index once published).
    assert command.group(1) == f"pip install tensorwire-grpc=={VERSION}", missing
    check(venv.pip_install(*command.group(1).split()[2:]), command.group(1))
    out = check(venv.python_run(GRPC_SESSION, tmp_path), "grpc after the named command")
    assert re.search(ALONE["tensorwire-grpc"][1], out.strip()), out


# -- no C compiler ------------------------------------------------------------------------
def test_core_from_source_without_a_compiler_is_pure_with_one_warning(
    make_venv, tmp_path: Path
) -> None:
    # A clean copy of packages/core as a checkout holds it (no build/ left by earlier builds,
    # which could hold a compiled extension), the VERSION link resolved.
    source = tmp_path / "core"
    shutil.copytree(
        ROOT / "packages/core",
        source,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "*.so", "*.c", "__pycache__"),
    )
    venv = make_venv("pure")
    result = venv.pip_install("-v", str(source), env=venv.env(CC="/bin/false"))
    output = check(result, f"CC=/bin/false pip install {source}")
    warnings = [
        line.strip()
        for line in (result.stdout + result.stderr).splitlines()
        if "WARNING: tensorwire:" in line
    ]
    assert len(warnings) == 1, f"want one warning line from the build, got {warnings}\n{output}"
    assert "pure-Python codec" in warnings[0] and "/bin/false" in warnings[0], warnings[0]
    assert "copy kernel" in warnings[0], warnings[0]  # the same line names both
    print(f"CC=/bin/false build: {warnings[0]}")
    info = check(run([venv.path / "bin" / "tensorwire", "info"], env=venv.env()), "tensorwire info")
    assert "codec: python" in info, info
    assert "copy: numpy" in info, info
    # Each says why, from the build's record.
    assert "built without the compiled codec: the C compiler '/bin/false' failed" in info, info
    assert "built without the compiled copy kernel: the C compiler '/bin/false' failed" in info
    assert "--only-binary tensorwire" in info, info
    out = check(
        venv.python_run(
            "import numpy as np, tensorwire as tw\n"
            "a = np.arange(6.0).reshape(2, 3)\n"
            "back = tw.codec.loads(tw.codec.dumps({'a': a}))['a']\n"
            "print(tw.codec.IMPLEMENTATION, (back == a).all())\n",
            tmp_path,
        ),
        "the pure codec",
    )
    assert out.split() == ["python", "True"], out


# -- one version ----------------------------------------------------------------------------
def test_bump_moves_every_version_and_pin(tmp_path: Path) -> None:
    nox_python = os.environ.get("TENSORWIRE_NOX_PYTHON")
    if not nox_python:
        pytest.fail(
            "TENSORWIRE_NOX_PYTHON (the Python that runs nox) is not set: run these "
            "tests with `nox -s install_check`"
        )
    tree = tmp_path / "repo"
    files = check(
        run(
            [
                "git",
                "ls-files",
                "-z",
                "VERSION",
                "noxfile.py",
                "packages/*/VERSION",
                "packages/*/pyproject.toml",
                "packages/*/setup.py",
                "packages/*/README.md",
                "packages/*/src/*",
            ],
            cwd=ROOT,
        ),
        "git ls-files",
    ).split("\0")
    for name in filter(None, files):
        target = tree / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_symlink():
            target.symlink_to(os.readlink(ROOT / name))
        else:
            shutil.copy2(ROOT / name, target)
    bumped = "99.1.0"
    check(
        run(
            [nox_python, "-m", "nox", "-f", tree / "noxfile.py", "-s", "bump", "--", bumped],
            cwd=tree,
        ),
        "nox -s bump",
    )
    assert (tree / "VERSION").read_text().strip() == bumped
    refused = run(
        [nox_python, "-m", "nox", "-f", tree / "noxfile.py", "-s", "bump", "--", "1.0"], cwd=tree
    )
    assert refused.returncode != 0 and "is not above the current version" in (
        refused.stdout + refused.stderr
    ), refused.stdout + refused.stderr
    out = tmp_path / "wheels"
    for dist, folder in OURS.items():
        # Metadata is what counts here: a pure build (no Cython, no numpy) with this
        # environment's setuptools (nox -s install_check installs it) is enough, and quick.
        check(
            run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "wheel",
                    "--disable-pip-version-check",
                    "--no-deps",
                    "--no-build-isolation",
                    "--wheel-dir",
                    out,
                    tree / folder,
                ],
                env=dict(os.environ, TENSORWIRE_PURE_BUILD="1"),
                timeout=PIP_TIMEOUT,
            ),
            f"building {dist} after the bump",
        )
    for wheel in out.glob("*.whl"):
        meta = wheel_metadata(wheel)
        assert ("Version", bumped) in meta, f"{wheel.name}: {meta}"
        pins = [
            v
            for k, v in meta
            if k == "Requires-Dist" and canonicalize_name(Requirement(v).name) in OURS
        ]
        assert pins, f"{wheel.name} pins nothing of ours"
        assert all(str(Requirement(p).specifier) == f"=={bumped}" for p in pins), pins
