"""The ``tensorwire`` command's own options: ``--version``, and ``-v`` before or after the
subcommand (plugins' subcommands included)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import tensorwire as tw
from tensorwire.cli import build_parser, main, verbosity

# `dispatcher` comes from the tensorwire-dataservice distribution, through the entry point.
HAS_DATASERVICE = importlib.util.find_spec("tensorwire_dataservice") is not None


@pytest.mark.parametrize(
    ("argv", "command", "expected"),
    [
        (["server"], "server", 0),
        (["-v", "server"], "server", 1),
        (["server", "-v"], "server", 1),
        (["server", "--verbose", "--job_name", "ps"], "server", 1),
        (["-v", "server", "-v"], "server", 2),
        (["info", "-vv", "--json"], "info", 2),
    ],
)
def test_verbose_counts_before_and_after_the_subcommand(argv, command, expected):
    args = build_parser().parse_args(argv)
    assert verbosity(args) == expected
    assert args.command == command


@pytest.mark.skipif(not HAS_DATASERVICE, reason="needs tensorwire-dataservice")
@pytest.mark.parametrize(
    "argv",
    [["-v", "dispatcher"], ["dispatcher", "-v"], ["worker", "--dispatcher_address", "h:1", "-v"]],
)
def test_a_plugin_subcommand_takes_the_common_options_too(argv):
    args = build_parser().parse_args(argv)
    assert verbosity(args) == 1
    assert callable(args.func)


@pytest.mark.parametrize("argv", [["--version"], ["info", "--version"]])
def test_version_prints_the_version_and_exits_0(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"tensorwire {tw.__version__}\n"


def test_version_from_the_installed_command():
    result = subprocess.run(
        [sys.executable, "-m", "tensorwire", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"tensorwire {tw.__version__}"
