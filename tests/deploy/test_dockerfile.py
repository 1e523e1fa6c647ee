"""The Dockerfile, checked without a container runtime (none runs here or in CI): a
slim base pinned by tag, a non-root user, the tensorwire command as an exec-form
ENTRYPOINT, and every file it copies present in the build context and not excluded by
.dockerignore. That the manifests' commands run on that ENTRYPOINT is test_kubernetes.py's
part."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text(encoding="utf-8")
INSTRUCTIONS = [
    (line.split(" ", 1)[0].upper(), line.split(" ", 1)[1].strip())
    for line in re.sub(r"\\\n", " ", DOCKERFILE).splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]


def _ignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # Docker matches a pattern against the path and every parent folder of it.
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(prefix, pattern.removeprefix("**/"))
        for pattern in patterns
        for prefix in prefixes
    )


def test_the_base_image_is_slim_and_pinned():
    (default,) = [rest for kind, rest in INSTRUCTIONS if kind == "ARG" and "PYTHON_IMAGE" in rest]
    image = default.split("=", 1)[1]
    name, _, tag = image.partition(":")
    assert name == "python" and tag and tag != "latest" and "slim" in tag
    assert [rest for kind, rest in INSTRUCTIONS if kind == "FROM"] == [
        "${PYTHON_IMAGE} AS build",
        "${PYTHON_IMAGE}",
    ]


def test_the_image_runs_the_tensorwire_command_as_an_unprivileged_user():
    final = INSTRUCTIONS[max(i for i, (kind, _) in enumerate(INSTRUCTIONS) if kind == "FROM") :]
    (user,) = [rest for kind, rest in final if kind == "USER"]
    uid, _, gid = user.partition(":")
    assert int(uid) >= 1000 and int(gid) >= 1000
    (entrypoint,) = [rest for kind, rest in final if kind == "ENTRYPOINT"]
    assert entrypoint == '["tensorwire"]'  # exec form: signals reach tensorwire, not a shell
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="tensorwire")
    assert script.value == "tensorwire.cli:main"


def test_everything_it_copies_is_in_the_build_context():
    copied = 0
    for kind, rest in INSTRUCTIONS:
        if kind != "COPY" or "--from=" in rest:
            continue
        for source in shlex.split(rest)[:-1]:
            assert (REPO / source).exists(), source
            assert not _ignored(source), f"{source} is excluded by .dockerignore"
            copied += 1
    assert copied >= 5


def test_the_build_context_leaves_out_caches_and_in_place_binaries():
    for path in (
        ".git",
        ".nox/tests/bin/python",
        "packages/core/src/tensorwire/codec/_codec_c.cpython-311-x86_64-linux-gnu.so",
        "packages/core/src/tensorwire/__pycache__/cli.cpython-311.pyc",
        "packages/core/build/lib/tensorwire/cli.py",
    ):
        assert _ignored(path), path
    for path in ("packages/core/src/tensorwire/cli.py", "examples/parameter_server.py"):
        assert not _ignored(path), path
