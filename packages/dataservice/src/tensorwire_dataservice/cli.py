"""``tensorwire dispatcher`` and ``tensorwire worker``: dedicated data-service processes.

Each command starts its server, prints one ready line to stdout
(``tensorwire dispatcher serving at grpc://localhost:5050``), and runs until SIGTERM or
SIGINT, on which it stops the server and exits 0.

Start-up says what it is doing and can be interrupted the same way: a worker whose dispatcher
does not answer logs whom it waits for (at once, then every few seconds) while it retries
with back-off, and a dispatcher logs that it is replaying its journal; SIGTERM or SIGINT
during either ends the process at once with exit code 0. A port already in use is one line
on stderr and exit code 2, before the transport tries to bind.

With ``--slurm``, both take their places from the SLURM job step they run in (one step
launched by ``srun --multi-prog``): task 0 is the dispatcher, every other task a worker,
each on ``--slurm_port_base`` plus its position on its node.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

from tensorwire.runtime.signals import StopSignals, exit_if_stop_hangs

__all__ = ["register"]

log = logging.getLogger(__name__)

#: How long a start-up step is given to finish once it has been cancelled.
_CANCEL_GRACE = 5.0


def _dedicated_process() -> None:
    # A server process runs producer threads beside the transport's threads; a short GIL
    # switch interval keeps a busy producer from delaying the thread that sends elements
    # (first-element latency) by the default 5 ms per switch.
    sys.setswitchinterval(0.0005)
    # A service's log is its progress report: show the data service's INFO lines (start-up
    # steps, registrations, job collection) unless -v already asked for more.
    package = logging.getLogger("tensorwire_dataservice")
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)


def _start_up(
    signals: StopSignals, step: Callable[[], Any], cancel: Callable[[], None] | None = None
) -> Any:
    """``step()`` (a server's start-up) in a helper thread, while the main thread watches
    for signals; returns what ``step`` returned, or None when a signal came first.

    After a signal, ``cancel()`` (if given) ends the step and it gets a few seconds to do
    so; a step that cannot be cancelled (a dispatcher replaying its journal) is left behind
    in its daemon thread, which ends with the process. A server the step produced anyway is
    stopped. Errors of ``step`` propagate.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = step()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="tensorwire-start-up", daemon=True)
    thread.start()
    if not signals.wait(until=lambda: not thread.is_alive()):
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]
    exit_if_stop_hangs(f"start-up ({signals.name})")
    if cancel is not None:
        cancel()
        thread.join(_CANCEL_GRACE)
    late = outcome.get("value")
    if late is not None:
        late.stop()
    return None


def _refuse_port_in_use(kind: str, protocol: str, port: int) -> None:
    """Fail with one clear line when ``port`` is taken, before the transport tries to bind
    (gRPC would log its own error lines first)."""
    if not port or protocol == "inproc":  # 0 picks a free port; inproc opens no socket
        return
    from tensorwire import errors

    from .service.config import configured_bind_host

    host = configured_bind_host()
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, OverflowError):
        return  # a bad host or port: the transport's error says what is wrong
    for family, socktype, proto, _, sockaddr in addresses:
        with socket.socket(family, socktype, proto) as probe:
            # As the servers do: a predecessor's connections in TIME_WAIT are no obstacle.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise errors.UnavailableError(
                        f"cannot listen on {host}:{port}: the port is already in use "
                        f"(another {kind}, or another program, is serving there)"
                    ) from None
                return


def _bind(args: argparse.Namespace) -> None:
    from .service.config import BIND_HOST_ENV

    if args.host:
        os.environ[BIND_HOST_ENV] = args.host


def _apply_slurm(args: argparse.Namespace, kind: str) -> None:
    """``--slurm``: set the port, the interface and the addresses from the job step, where
    task 0 is the dispatcher and the other tasks are workers (see
    ``tensorwire.cluster.resolve_slurm``)."""
    if not args.slurm:
        return
    from tensorwire.cluster import resolve_slurm
    from tensorwire.transport.base import split_address
    from tensorwire.transport.security import is_loopback

    try:
        resolved = resolve_slurm(port_base=args.slurm_port_base)
    except RuntimeError as exc:  # not inside a step
        raise ValueError(f"--slurm: {exc}") from None
    addresses = [str(address) for address in resolved.cluster_spec.job_tasks("worker")]
    rank = int(resolved.task_index or 0)  # resolve_slurm checked it is a task of the step
    if (rank == 0) != (kind == "dispatcher"):
        role = "the dispatcher" if rank == 0 else "a worker"
        raise ValueError(
            f"--slurm: task {rank} of the job step is {role} (task 0 is the dispatcher, the "
            "others are workers): launch the step with srun --multi-prog, running "
            "'tensorwire dispatcher --slurm' as task 0 and 'tensorwire worker --slurm' as "
            "the others"
        )
    if kind == "worker" and len(addresses) < 2:
        raise ValueError("--slurm: the job step has one task, the dispatcher; add workers")
    host, port = split_address(addresses[rank])
    if args.port:
        raise ValueError("--slurm sets the port (--slurm_port_base); leave --port out")
    args.port = int(port)
    if args.host is None and not is_loopback(host):
        args.host = "0.0.0.0"  # other nodes must reach it, as tw.Server does for its task
    if kind == "worker":
        args.dispatcher_address = addresses[0]
        args.worker_address = args.worker_address or addresses[rank]
    log.info("%s: task %d of the SLURM job step, at %s", kind, rank, addresses[rank])


def _security(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields the security flags set."""
    from tensorwire.runtime.cli import security_message

    message = security_message(args)
    return {
        "cluster_token": message.cluster_token or None,
        "tls": message.tls if message.HasField("tls") else None,
        "insecure": args.insecure,
        "registered_pipelines_only": args.registered_pipelines_only,
    }


def _metrics(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields the metrics flags set."""
    return {"metrics_port": args.metrics_port, "metrics_host": args.metrics_host}


def _import_pipelines(args: argparse.Namespace) -> None:
    """Import the modules that register pipelines (``--import``), before serving."""
    import importlib

    for name in args.imports or ():
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - the user's module: say which one failed
            raise ValueError(f"--import {name}: {type(exc).__name__}: {exc}") from exc


def _cmd_dispatcher(args: argparse.Namespace) -> int:
    from tensorwire.runtime.cli import announce_metrics

    from .service import DispatcherConfig, DispatchServer

    _apply_slurm(args, "dispatcher")
    _bind(args)
    _import_pipelines(args)
    config = DispatcherConfig(
        port=args.port,
        protocol=args.protocol,
        work_dir=args.work_dir,
        fault_tolerant_mode=args.fault_tolerant,
        worker_addresses=args.worker_addresses or None,
        job_gc_check_interval_ms=args.job_gc_check_interval_ms,
        job_gc_timeout_ms=args.job_gc_timeout_ms,
        worker_timeout_ms=args.worker_timeout_ms,
        **_security(args),
        **_metrics(args),
    )
    _dedicated_process()
    signals = StopSignals()  # before the ready line, so no signal is missed
    _refuse_port_in_use("dispatcher", config.protocol, config.port)
    if config.fault_tolerant_mode:
        log.info("dispatcher: recovering its state from the journal in %s", config.work_dir)
    server = _start_up(signals, lambda: DispatchServer(config))
    if server is None:
        log.info("dispatcher: %s during start-up; exiting", signals.name)
        return 0
    announce_metrics("dispatcher", server.metrics_url)
    print(f"tensorwire dispatcher serving at {server.target}", flush=True)
    try:
        signals.wait()
        log.info("dispatcher: %s; stopping", signals.name)
    finally:
        exit_if_stop_hangs(f"dispatcher {server.target}")
        server.stop()
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from tensorwire.runtime.cli import announce_metrics

    from .service import WorkerConfig, WorkerServer

    _apply_slurm(args, "worker")
    if not args.dispatcher_address:
        raise ValueError("give --dispatcher_address (host:port of the dispatcher), or --slurm")
    _bind(args)
    _import_pipelines(args)
    config = WorkerConfig(
        dispatcher_address=args.dispatcher_address,
        worker_address=args.worker_address,
        port=args.port,
        protocol=args.protocol,
        heartbeat_interval_ms=args.heartbeat_interval_ms,
        dispatcher_timeout_ms=args.dispatcher_timeout_ms,
        **_security(args),
        **_metrics(args),
    )
    _dedicated_process()
    signals = StopSignals()  # before the ready line, so no signal is missed
    _refuse_port_in_use("worker", config.protocol, config.port)
    server = WorkerServer(config, start=False)
    log.info(
        "worker %s: registering with the dispatcher at %s",
        server._worker_address,
        config.dispatcher_address,
    )

    def register() -> Any:
        server.start()
        return server

    if _start_up(signals, register, cancel=server.stop) is None:
        log.info(
            "worker: %s while waiting for the dispatcher at %s; exiting",
            signals.name,
            config.dispatcher_address,
        )
        return 0
    announce_metrics("worker", server.metrics_url)
    print(
        f"tensorwire worker serving at {server._worker_address} "
        f"(dispatcher {args.dispatcher_address})",
        flush=True,
    )
    try:
        signals.wait()
        log.info("worker: %s; stopping", signals.name)
    finally:
        exit_if_stop_hangs(f"worker {server._worker_address}")
        server.stop()
    return 0


def register(subparsers: Any) -> None:
    """Add the ``dispatcher`` and ``worker`` subcommands to the ``tensorwire`` command."""
    from tensorwire.runtime.cli import add_metrics_arguments, add_security_arguments

    def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
        add_security_arguments(parser)
        add_metrics_arguments(parser)
        parser.add_argument(
            "--import",
            dest="imports",
            action="append",
            metavar="MODULE",
            help="import MODULE first (one that calls register_pipeline); repeatable",
        )
        parser.add_argument(
            "--registered_pipelines_only",
            "--registered-pipelines-only",
            dest="registered_pipelines_only",
            action="store_true",
            help="run only registered pipelines: refuse datasets sent as code",
        )
        parser.add_argument(
            "--slurm",
            action="store_true",
            help="take the port and addresses from the SLURM job step (srun --multi-prog): "
            "task 0 is the dispatcher, the other tasks are workers",
        )
        parser.add_argument(
            "--slurm_port_base",
            "--slurm-port-base",
            type=int,
            default=8888,
            help="with --slurm: the port of a node's first task; its next tasks take the "
            "next ports",
        )

    d = subparsers.add_parser("dispatcher", help="run a tf.data service dispatcher")
    d.add_argument("--port", type=int, default=0, help="port to bind (0: any free port)")
    d.add_argument("--protocol", default=None, help="transport protocol (default grpc)")
    d.add_argument(
        "--host",
        default=None,
        help="interface to bind (default 127.0.0.1; 0.0.0.0 for other hosts)",
    )
    d.add_argument("--work_dir", "--work-dir", default=None, help="journal directory")
    d.add_argument(
        "--fault_tolerant",
        "--fault-tolerant",
        action="store_true",
        help="journal every state change in --work_dir and recover from it",
    )
    d.add_argument(
        "--worker_addresses",
        "--worker-addresses",
        nargs="*",
        default=None,
        help="fixed worker list for static sharding",
    )
    d.add_argument("--job_gc_check_interval_ms", type=int, default=None)
    d.add_argument("--job_gc_timeout_ms", type=int, default=None)
    d.add_argument("--worker_timeout_ms", type=int, default=None)
    add_pipeline_arguments(d)
    d.set_defaults(func=_cmd_dispatcher)

    w = subparsers.add_parser("worker", help="run a tf.data service worker")
    w.add_argument(
        "--dispatcher_address",
        "--dispatcher-address",
        default=None,
        help="host:port of the dispatcher (required unless --slurm)",
    )
    w.add_argument("--port", type=int, default=0, help="port to bind (0: any free port)")
    w.add_argument("--protocol", default=None, help="transport protocol (default grpc)")
    w.add_argument(
        "--host",
        default=None,
        help="interface to bind (default 127.0.0.1; 0.0.0.0 for other hosts)",
    )
    w.add_argument(
        "--worker_address",
        "--worker-address",
        default=None,
        help="address clients use to reach this worker (default localhost:%%port%%)",
    )
    w.add_argument("--heartbeat_interval_ms", type=int, default=None)
    w.add_argument("--dispatcher_timeout_ms", type=int, default=None)
    add_pipeline_arguments(w)
    w.set_defaults(func=_cmd_worker)


if __name__ == "__main__":  # pragma: no cover
    from tensorwire.cli import main

    sys.exit(main())
