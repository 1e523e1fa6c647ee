#!/usr/bin/env python3
"""Regenerate (or check) tensorwire's generated protobuf modules.

    python tools/gen_protos.py            # rewrite packages/core/src/tensorwire/protos/*_pb2.py[i]
    python tools/gen_protos.py --check    # exit 1 with a summary if the committed files are stale

Code is generated with the toolchain pinned in tools/requirements-protos.txt (the oldest one
we support; that file says why). When the running interpreter does not have exactly those
versions, the script builds a private virtualenv with them under the user cache directory
(once) and re-runs itself there, so both commands work from any environment with network
access to PyPI. ``--no-bootstrap`` turns that off and fails instead.

The generated modules are post-processed in one way: they add their descriptors to
tensorwire's own descriptor pool (``tensorwire.protos._pool.POOL``) instead of protobuf's
default pool. The protos keep TensorFlow's package names (``tensorflow``, ``tensorflow.data``,
...) so full names, ``Any`` type URLs and text format match TensorFlow; in the default pool
those names would collide with a real TensorFlow imported into the same process
("duplicate symbol 'tensorflow.JobDef'"). See tensorwire/protos/_pool.py.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO / "tools" / "requirements-protos.txt"
PROTO_ROOT = REPO / "packages" / "core" / "src"  # import paths are relative to this
PROTO_DIR = PROTO_ROOT / "tensorwire" / "protos"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi")

# The exact lines protoc 25 writes for the default pool, and what they become.
_POOL_IMPORT = "from google.protobuf import descriptor_pool as _descriptor_pool\n"
_POOL_IMPORT_NEW = "from tensorwire.protos import _pool as _tensorwire_pool\n"
_POOL_CALL = "_descriptor_pool.Default().AddSerializedFile("
_POOL_CALL_NEW = "_tensorwire_pool.POOL.AddSerializedFile("


def _pins() -> dict[str, str]:
    """Package name -> pinned version, from requirements-protos.txt."""
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if match is None:
            raise SystemExit(f"{REQUIREMENTS}: expected 'name==version', got {line!r}")
        pins[match.group(1).lower()] = match.group(2)
    return pins


def _toolchain_mismatches(pins: dict[str, str]) -> list[str]:
    from importlib import metadata

    problems = []
    for name in ("grpcio-tools", "protobuf"):
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        if have != pins[name]:
            problems.append(f"{name}=={pins[name]} wanted, {have or 'nothing'} installed")
    return problems


def _bootstrap_python(pins: dict[str, str]) -> Path:
    """A cached virtualenv holding exactly the pinned toolchain; returns its python."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    tag = f"py{sys.version_info.major}{sys.version_info.minor}-{digest}"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    env_dir = cache / "tensorwire" / f"gen-protos-{tag}"
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    marker = env_dir / ".complete"
    if not marker.exists():
        print(f"gen_protos: creating {env_dir} with {REQUIREMENTS.name}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], check=True
        )
        marker.write_text(tag)
    return python


def _proto_files() -> list[Path]:
    return sorted(PROTO_DIR.glob("*.proto"))


def _postprocess(source: str, name: str) -> str:
    """Point a generated module at tensorwire's descriptor pool (see the module docstring)."""
    if source.count(_POOL_IMPORT) != 1 or source.count(_POOL_CALL) != 1:
        raise SystemExit(
            f"gen_protos: {name} does not look like protoc 25 output (descriptor pool lines "
            "not found); was the toolchain changed without updating this script?"
        )
    return source.replace(_POOL_IMPORT, _POOL_IMPORT_NEW).replace(_POOL_CALL, _POOL_CALL_NEW)


def generate(out_dir: Path) -> dict[str, str]:
    """Run protoc into out_dir; return {file name: content} of the finished modules."""
    protos = _proto_files()
    if not protos:
        raise SystemExit(f"gen_protos: no .proto files in {PROTO_DIR}")
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    result = subprocess.run(command, cwd=PROTO_ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"gen_protos: protoc failed:\n{result.stderr}")
    produced = {}
    for path in sorted((out_dir / "tensorwire" / "protos").iterdir()):
        if not path.name.endswith(GENERATED_SUFFIXES):
            continue
        text = path.read_text()
        if path.name.endswith(".py"):
            text = _postprocess(text, path.name)
        produced[path.name] = text
    return produced


def _committed() -> dict[str, str]:
    return {
        p.name: p.read_text()
        for p in sorted(PROTO_DIR.iterdir())
        if p.name.endswith(GENERATED_SUFFIXES)
    }


def check(produced: dict[str, str]) -> int:
    committed = _committed()
    problems = []
    for name in sorted(produced.keys() - committed.keys()):
        problems.append(f"missing: {name} (not generated/committed)")
    for name in sorted(committed.keys() - produced.keys()):
        problems.append(f"extra: {name} (no .proto generates it any more)")
    for name in sorted(produced.keys() & committed.keys()):
        if produced[name] != committed[name]:
            diff = list(
                difflib.unified_diff(
                    committed[name].splitlines(),
                    produced[name].splitlines(),
                    f"committed/{name}",
                    f"regenerated/{name}",
                    lineterm="",
                    n=1,
                )
            )
            shown = "\n".join("    " + line for line in diff[:20])
            more = f"\n    ... {len(diff) - 20} more diff lines" if len(diff) > 20 else ""
            problems.append(f"stale: {name}\n{shown}{more}")
    if problems:
        print(
            "Generated protobuf code is stale; run `nox -s protos` (or "
            "`python tools/gen_protos.py`) and commit the result:",
            file=sys.stderr,
        )
        for problem in problems:
            print("  " + problem, file=sys.stderr)
        return 1
    print(f"gen_protos: {len(produced)} generated files are up to date.")
    return 0


def write(produced: dict[str, str]) -> int:
    committed = _committed()
    for name in sorted(committed.keys() - produced.keys()):
        (PROTO_DIR / name).unlink()
        print(f"removed {name}")
    for name, text in produced.items():
        if committed.get(name) != text:
            (PROTO_DIR / name).write_text(text)
            print(f"wrote {name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temporary directory and fail if stale",
    )
    parser.add_argument(
        "--no-bootstrap",
        action="store_true",
        help="fail instead of creating a virtualenv with the pinned toolchain",
    )
    args = parser.parse_args(argv)

    pins = _pins()
    mismatches = _toolchain_mismatches(pins)
    if mismatches:
        if args.no_bootstrap:
            print(
                "gen_protos: wrong toolchain: "
                + "; ".join(mismatches)
                + f". Install it with: pip install -r {REQUIREMENTS}",
                file=sys.stderr,
            )
            return 2
        python = _bootstrap_python(pins)
        rerun = [str(python), str(Path(__file__).resolve()), "--no-bootstrap"]
        rerun += ["--check"] if args.check else []
        return subprocess.run(rerun).returncode

    with tempfile.TemporaryDirectory(prefix="tensorwire-protos-") as tmp:
        produced = generate(Path(tmp))
    return check(produced) if args.check else write(produced)


if __name__ == "__main__":
    sys.exit(main())
