"""The ``tensorwire`` command.

Subcommands of other distributions join through the entry-point group ``tensorwire.cli``:
each entry point is a function ``register(subparsers)`` that adds its parsers and sets
``func`` on them (``parser.set_defaults(func=...)``); ``func(args)`` returns an exit code.

The common options (``-v``, ``--version``) are accepted before the subcommand and after it
(``tensorwire -v server ...`` and ``tensorwire server -v ...``): ``build_parser`` adds
them to every subcommand's parser, plugins' included, once all are registered.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import sys
from collections.abc import Sequence

CLI_ENTRY_POINT_GROUP = "tensorwire.cli"

log = logging.getLogger("tensorwire.cli")


def _cmd_info(args: argparse.Namespace) -> int:
    from .info import info

    data = info()
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    print(f"tensorwire {data['version']}")
    print(f"codec: {data['codec']}")
    if data["codec_pure_reason"]:
        print(f"  ({data['codec_pure_reason']})")
    print(f"copy: {data['copy']}")
    if data["copy_reason"]:
        print(f"  ({data['copy_reason']})")
    print("protocols:")
    for name, entry in data["protocols"].items():
        extra = {k: v for k, v in entry.items() if k not in ("plugin", "distribution", "version")}
        detail = "".join(f" {k}={v}" for k, v in extra.items())
        print(f"  {name:<12} {entry['distribution']} {entry['version']}{detail}")
    for err in data["plugin_errors"]:
        print(f"  (failed) plugin {err['plugin']} from {err['distribution']}: {err['reason']}")
    return 0


# Where a subcommand's parser counts the -v given after the subcommand. A separate dest from
# the main parser's: argparse lets a subparser's defaults overwrite what the main parser
# parsed, so one shared dest would lose the -v given before the subcommand.
_VERBOSE_AFTER_COMMAND = "verbose_after_command"


def _add_common_options(parser: argparse.ArgumentParser, verbose_dest: str) -> None:
    from . import __version__

    parser.add_argument(
        "-v",
        "--verbose",
        dest=verbose_dest,
        action="count",
        default=0,
        help="more logging (-v: info, -v -v: debug)",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"tensorwire {__version__}",
        help="print the version and exit",
    )


def verbosity(args: argparse.Namespace) -> int:
    """How many ``-v`` were given, before and after the subcommand."""
    return int(args.verbose) + int(getattr(args, _VERBOSE_AFTER_COMMAND, 0))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tensorwire", description=__doc__.splitlines()[0])
    _add_common_options(parser, "verbose")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info_parser = sub.add_parser("info", help="version, codec and installed protocols")
    info_parser.add_argument("--json", action="store_true", help="print JSON")
    info_parser.set_defaults(func=_cmd_info)
    try:
        from .runtime import cli as runtime_cli
    except ImportError:  # pragma: no cover - the runtime is part of the core
        pass
    else:
        runtime_cli.register(sub)
    from .observe import cli as observe_cli

    observe_cli.register(sub)
    for ep in importlib.metadata.entry_points(group=CLI_ENTRY_POINT_GROUP):
        try:
            ep.load()(sub)
        except ImportError as exc:
            log.warning("tensorwire command plugin %r could not be loaded: %s", ep.name, exc)
    # dict.fromkeys: a parser registered under aliases appears once per alias in choices.
    for command_parser in dict.fromkeys(sub.choices.values()):
        _add_common_options(command_parser, _VERBOSE_AFTER_COMMAND)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbosity(args), 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .errors import OpError

    try:
        return int(args.func(args) or 0)
    except (OpError, ValueError, TypeError) as exc:
        # Bad input or a server that cannot start: say what, without a traceback.
        log.debug("tensorwire %s failed", args.command, exc_info=True)
        print(f"tensorwire {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
