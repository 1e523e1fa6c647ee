"""tools/gen_protos.py: staleness detection and the pool rewrite (without running protoc)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[4]
SCRIPT = REPO / "tools" / "gen_protos.py"


def _load():
    spec = importlib.util.spec_from_file_location("gen_protos", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load()


def test_check_accepts_the_committed_files_as_produced(capsys):
    assert gen.check(gen._committed()) == 0
    assert "up to date" in capsys.readouterr().out


def test_check_reports_stale_missing_and_extra_files(capsys):
    produced = gen._committed()
    produced["cluster_pb2.py"] += "# changed\n"
    produced["new_pb2.py"] = "x = 1\n"
    del produced["config_pb2.pyi"]
    assert gen.check(produced) == 1
    err = capsys.readouterr().err
    assert "stale: cluster_pb2.py" in err and "+# changed" in err
    assert "missing: new_pb2.py" in err
    assert "extra: config_pb2.pyi" in err
    assert "nox -s protos" in err


def test_postprocess_moves_registration_to_the_private_pool():
    generated = (
        "from google.protobuf import descriptor_pool as _descriptor_pool\n"
        "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(b'')\n"
    )
    out = gen._postprocess(generated, "x_pb2.py")
    assert "from tensorwire.protos import _pool as _tensorwire_pool\n" in out
    assert "_tensorwire_pool.POOL.AddSerializedFile(b'')" in out


def test_postprocess_refuses_output_it_does_not_recognise():
    with pytest.raises(SystemExit, match="does not look like protoc 25 output"):
        gen._postprocess("DESCRIPTOR = something_else()\n", "x_pb2.py")


def test_pins_are_read_from_the_requirements_file():
    pins = gen._pins()
    assert pins["grpcio-tools"].startswith("1.62.")
    assert pins["protobuf"].startswith("4.25.")


def _pinned_toolchain_installed() -> bool:
    pins = gen._pins()
    try:
        return all(metadata.version(n) == pins[n] for n in ("grpcio-tools", "protobuf"))
    except metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(
    not _pinned_toolchain_installed(),
    reason="needs the pinned toolchain of tools/requirements-protos.txt in this interpreter; "
    "CI runs `python tools/gen_protos.py --check`, which bootstraps it",
)
def test_committed_generated_code_is_fresh():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--no-bootstrap"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr


def test_no_bootstrap_with_the_wrong_toolchain_says_what_to_install():
    if _pinned_toolchain_installed():
        pytest.skip("this interpreter has the pinned toolchain, so nothing is wrong")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--no-bootstrap"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "requirements-protos.txt" in result.stderr
