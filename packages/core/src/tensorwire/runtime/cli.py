"""``tensorwire server``: run one task of a cluster as its own process.

The cluster comes from ``--cluster_spec`` (TensorFlow's flag format
``ps=host:port,host:port;worker=host:port``, or JSON), from the SLURM job step the process
runs in (``--slurm ps=1,worker=2``, one process per task launched by ``srun``) or, when
neither is given, from ``TF_CONFIG``.
Once serving, the command prints one line ``tensorwire server <task> serving <target>`` on
stdout (launchers wait for it), and on SIGTERM or SIGINT it stops with a grace period and
exits 0.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from .signals import STOP_DEADLINE_SECONDS, StopSignals, exit_if_stop_hangs

log = logging.getLogger(__name__)


def parse_cluster_spec(text: str) -> dict[str, list[str]]:
    """``"ps=a:1,b:2;worker=c:3"`` (or a JSON object) -> ``{"ps": ["a:1", "b:2"], ...}``."""
    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--cluster_spec is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError("--cluster_spec JSON must be an object of job -> addresses")
        return value
    cluster: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        job, sep, addresses = part.partition("=")
        if not sep or not job.strip():
            raise ValueError(
                f"--cluster_spec part {part!r} is not of the form job=host:port[,host:port]"
            )
        if job.strip() in cluster:
            raise ValueError(f"--cluster_spec names job {job.strip()!r} twice")
        cluster[job.strip()] = [a.strip() for a in addresses.split(",") if a.strip()]
    if not cluster:
        raise ValueError("--cluster_spec is empty")
    return cluster


def parse_slurm_jobs(text: str) -> dict[str, int] | None:
    """``"ps=1,worker=2"`` -> ``{"ps": 1, "worker": 2}``; ``""`` -> None (every task of the
    step is a worker)."""
    jobs: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        job, sep, count = (s.strip() for s in part.partition("="))
        if not sep or not job or not count.isdigit():
            raise ValueError(f"--slurm part {part!r} is not of the form job=number_of_tasks")
        if job in jobs:
            raise ValueError(f"--slurm names job {job!r} twice")
        jobs[job] = int(count)
    return jobs or None


def _server_args(args: argparse.Namespace) -> tuple[Any, str | None, int | None, str | None]:
    if args.cluster_spec:
        return parse_cluster_spec(args.cluster_spec), args.job_name, args.task_index, args.protocol
    from ..cluster import resolve_slurm, resolve_tf_config

    if args.slurm is not None:
        try:
            resolved = resolve_slurm(parse_slurm_jobs(args.slurm), port_base=args.slurm_port_base)
        except RuntimeError as exc:  # not inside a step, or the jobs do not fit it
            raise ValueError(f"--slurm: {exc}") from None
    else:
        resolved = resolve_tf_config()
    if not resolved.cluster_spec:
        raise ValueError(
            "give --cluster_spec or --slurm, or set TF_CONFIG with the cluster and this task"
        )
    job = args.job_name if args.job_name is not None else resolved.job_name
    task = args.task_index if args.task_index is not None else resolved.task_index
    protocol = args.protocol or resolved.rpc_layer or None
    return resolved.cluster_spec, job, task, protocol


def add_security_arguments(parser: argparse.ArgumentParser) -> None:
    """The token, TLS and insecure flags every server command takes (one spelling each,
    with TensorFlow-style underscores and dashed aliases)."""
    parser.add_argument(
        "--token", help="cluster token every call must carry (default: TENSORWIRE_CLUSTER_TOKEN)"
    )
    for name, what in (
        ("certificate_chain_file", "PEM certificate chain this server presents"),
        ("private_key_file", "PEM private key of that certificate"),
        (
            "root_certificates_file",
            "PEM CA that verifies peers (and clients, with --require_client_auth)",
        ),
    ):
        parser.add_argument(f"--{name}", f"--{name.replace('_', '-')}", dest=name, help=what)
    parser.add_argument(
        "--require_client_auth",
        "--require-client-auth",
        dest="require_client_auth",
        action="store_true",
        help="mutual TLS: callers must present a certificate of the root CA",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow listening beyond loopback without authentication (logged as a warning)",
    )


def security_message(args: argparse.Namespace) -> Any:
    """The security flags as a ``TensorwireOptions`` message (a command without
    ``--require_client_auth`` or ``--server_name_override`` leaves those unset)."""
    from ..protos import TensorwireOptions

    message = TensorwireOptions()
    if args.token:
        message.cluster_token = args.token
    for name in ("certificate_chain_file", "private_key_file", "root_certificates_file"):
        value = getattr(args, name)
        if value:
            setattr(message.tls, name, value)
    if getattr(args, "require_client_auth", False):
        message.tls.require_client_auth = True
    if getattr(args, "server_name_override", None):
        message.tls.server_name_override = args.server_name_override
    return message


def add_metrics_arguments(parser: argparse.ArgumentParser) -> None:
    """``--metrics_port`` and ``--metrics_host``, for every server command."""
    parser.add_argument(
        "--metrics_port",
        "--metrics-port",
        dest="metrics_port",
        type=int,
        default=None,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port)",
    )
    parser.add_argument(
        "--metrics_host",
        "--metrics-host",
        dest="metrics_host",
        default="127.0.0.1",
        help="interface of the metrics port (default 127.0.0.1; 0.0.0.0 lets other hosts "
        "read the metrics, which hold no secrets)",
    )


def announce_metrics(kind: str, url: str | None) -> None:
    """One stdout line with the metrics URL, printed before the ready line."""
    if url is not None:
        print(f"tensorwire {kind} metrics at {url}", flush=True)


def _config(args: argparse.Namespace) -> Any:
    from ..protos import ConfigProto

    config = ConfigProto()
    config.tensorwire.CopyFrom(security_message(args))
    if args.registered_functions_only:
        config.tensorwire.registered_functions_only = True
    if args.operation_timeout_ms:
        config.operation_timeout_in_ms = args.operation_timeout_ms
    return config


def _cmd_server(args: argparse.Namespace) -> int:
    from .server import Server

    cluster, job, task, protocol = _server_args(args)
    server = Server(
        cluster,
        job_name=job,
        task_index=task,
        protocol=protocol,
        config=_config(args),
        start=True,
        insecure=args.insecure,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
    )
    signals = StopSignals()  # before the ready line, so no signal is missed
    announce_metrics("server", server.metrics_url)
    print(f"tensorwire server {server.task_name} serving {server.target}", flush=True)
    signals.wait(until=lambda: server.join(timeout=0))
    log.info("stopping %s (%s)", server.task_name, signals.name)
    exit_if_stop_hangs(f"server {server.task_name}", (args.grace or 0) + STOP_DEADLINE_SECONDS)
    server.stop(grace=args.grace)
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "server", help="run one task of a cluster (tf.distribute.Server) until SIGTERM"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--cluster_spec", help="ps=host:port,...;worker=host:port,... or JSON")
    source.add_argument(
        "--slurm",
        nargs="?",
        const="",
        metavar="JOBS",
        help="the cluster of the SLURM job step this task runs in (launch with srun); JOBS "
        "splits its tasks into jobs by rank, e.g. ps=1,worker=2 (default: all workers)",
    )
    parser.add_argument(
        "--slurm_port_base",
        "--slurm-port-base",
        type=int,
        default=8888,
        help="with --slurm: the port of a node's first task; its next tasks take the next ports",
    )
    parser.add_argument("--job_name")
    parser.add_argument("--task_index", type=int)
    parser.add_argument("--protocol", help="transport protocol (default grpc)")
    add_security_arguments(parser)
    parser.add_argument(
        "--registered_functions_only", action="store_true", help="refuse functions sent by value"
    )
    parser.add_argument("--operation_timeout_ms", type=int, default=0)
    add_metrics_arguments(parser)
    parser.add_argument(
        "--grace", type=float, default=5.0, help="seconds calls in flight get to finish at shutdown"
    )
    parser.set_defaults(func=_cmd_server)
