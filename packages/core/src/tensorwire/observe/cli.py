"""``tensorwire status <target>``: a server's status snapshot, as tables or JSON.

Works against a task server (``tensorwire server``), a dispatcher and a worker: each serves
``tensorwire.Status`` (``service``). The call carries the token and TLS settings of the
flags, else of the ``TENSORWIRE_*`` variables, like every other call; a refusal (no token,
a wrong one) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Sequence
from typing import Any

__all__ = ["register", "render"]


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover - the loop returns


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "  ") -> list[str]:
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return [
        indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]


def _calls(status: Any) -> list[str]:
    if not status.calls:
        return ["calls: not counted (the server has no metrics port)"]
    rows = [
        (
            c.method,
            c.path,
            c.calls,
            c.errors,
            _bytes(c.request_bytes),
            _bytes(c.response_bytes),
            f"{1000 * c.seconds / c.calls:.2f} ms" if c.calls else "-",
        )
        for c in status.calls
    ]
    return ["calls:", *_table(("METHOD", "PATH", "CALLS", "ERRORS", "IN", "OUT", "MEAN"), rows)]


def _head(status: Any, name: str) -> str:
    return (
        f"{name} {status.target}  (tensorwire {status.version}, pid {status.pid}, "
        f"up {_duration(status.uptime_seconds)})"
    )


def _task_server(status: Any) -> list[str]:
    lines = [_head(status, f"task server {status.task}")]
    for job, tasks in sorted(status.cluster.items()):
        shown = tasks if isinstance(tasks, list) else [f"{k}: {v}" for k, v in tasks.items()]
        lines.append(f"  job {job}: {', '.join(map(str, shown))}")
    total = sum(v.nbytes for v in status.variables)
    lines.append(
        f"variables: {len(status.variables)} ({_bytes(total)}); tensors sent and not yet "
        f"received: {status.pending_sends}"
    )
    if status.variables:
        rows = [(v.name, list(v.shape), v.dtype, _bytes(v.nbytes)) for v in status.variables]
        lines.extend(_table(("NAME", "SHAPE", "DTYPE", "SIZE"), rows))
    return lines + _calls(status)


def _task_rows(tasks: Sequence[Any]) -> list[Sequence[Any]]:
    return [
        (
            t.task_id,
            t.job_id,
            t.worker_address,
            t.elements_produced,
            t.elements_served,
            f"{t.buffered}/{t.buffer_capacity}",
            f"{t.elements_per_second:.1f}",
            _bytes(t.bytes_served),
            "finished" if t.finished else "running",
        )
        for t in tasks
    ]


_TASK_HEADER = ("TASK", "JOB", "WORKER", "PRODUCED", "SERVED", "BUFFER", "ELEM/S", "SENT~", "STATE")


def _dispatcher(status: Any) -> list[str]:
    lines = [_head(status, "dispatcher")]
    journal = "not fault tolerant"
    if status.fault_tolerant:
        journal = f"journal {_bytes(status.journal_bytes)} in {status.work_dir}"
        if status.last_compaction is not None:
            when = datetime.datetime.fromtimestamp(status.last_compaction).isoformat(" ", "seconds")
            journal += f", last compacted {when}"
    lines.append(
        f"datasets {status.datasets}, readers {status.clients}, workers {len(status.workers)} "
        f"alive and {status.workers_lost} lost; {journal}"
    )
    if status.jobs:
        rows = []
        for j in status.jobs:
            wait = (
                f"{1000 * j.client_wait_seconds / j.client_elements:.2f} ms"
                if j.client_elements
                else "-"
            )
            state = "collected" if j.garbage_collected else "finished" if j.finished else "active"
            rate = sum(t.elements_per_second for t in j.tasks if not t.finished)
            rows.append(
                (
                    j.job_id,
                    j.job_name or "-",
                    j.processing_mode,
                    j.dataset_id,
                    ",".join(map(str, j.clients)) or "-",
                    len(j.tasks),
                    j.num_splits,
                    j.elements_produced,
                    j.elements_served,
                    j.buffered,
                    f"{rate:.1f}",
                    wait,
                    state,
                )
            )
        header = (
            "JOB", "NAME", "MODE", "DATASET", "READERS", "TASKS", "SPLITS", "PRODUCED",
            "SERVED", "BACKLOG", "ELEM/S", "WAIT/ELEM", "STATE",
        )  # fmt: skip
        lines += ["jobs:", *_table(header, rows)]
        active = [j for j in status.jobs if not (j.finished or j.garbage_collected)]
        if active:
            lines += ["input:", *(f"  job {j.job_id}: {j.diagnosis.text}" for j in active)]
        tasks = [t for j in status.jobs if not j.garbage_collected for t in j.tasks]
        if tasks:
            lines += ["tasks:", *_table(_TASK_HEADER, _task_rows(tasks))]
    else:
        lines.append("jobs: none")
    if status.workers:
        worker_rows = [
            (w.address, ",".join(map(str, w.tasks)) or "-", f"{w.seconds_since_heartbeat:.1f}s ago")
            for w in status.workers
        ]
        lines += ["workers:", *_table(("WORKER", "TASKS", "HEARTBEAT"), worker_rows)]
    return lines + _calls(status)


def _worker(status: Any) -> list[str]:
    lines = [
        _head(status, f"worker {status.worker_address}"),
        f"dispatcher {status.dispatcher_address} "
        f"({'registered' if status.registered else 'not registered yet'})",
    ]
    if status.tasks:
        lines += ["tasks:", *_table(_TASK_HEADER, _task_rows(status.tasks))]
        kept = sum(t.unconfirmed_bytes for t in status.tasks)
        readers = sum(t.unconfirmed_readers for t in status.tasks)
        lines.append(
            f"sent and not yet confirmed by readers (kept to resend): {_bytes(kept)} for "
            f"{readers} reader(s)"
        )
    else:
        lines.append("tasks: none")
    return lines + _calls(status)


def render(status: Any) -> str:
    """A status snapshot as the tables ``tensorwire status`` prints.

    Args:
      status: a ``TaskServerStatus``, ``DispatcherStatus``
        or ``WorkerStatus``.

    Returns:
      The text, lines joined by newlines.
    """
    kinds = {"task_server": _task_server, "dispatcher": _dispatcher, "worker": _worker}
    return "\n".join(kinds[status.kind](status))


def _cmd_status(args: argparse.Namespace) -> int:
    from ..runtime.cli import security_message
    from ..runtime.options import security_options
    from .service import fetch_status

    options = security_options(security_message(args), args.insecure)
    status = fetch_status(args.target, options, timeout=args.timeout)
    if args.json:
        print(json.dumps(status.as_dict(), indent=2, sort_keys=True))
    else:
        print(render(status))
    return 0


def register(subparsers: Any) -> None:
    """Add the ``status`` subcommand to the ``tensorwire`` command."""
    parser = subparsers.add_parser(
        "status", help="what a task server, dispatcher or worker is doing (tables or JSON)"
    )
    parser.add_argument("target", help="the server, e.g. grpc://localhost:5050")
    parser.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the answer (default 10)"
    )
    parser.add_argument(
        "--token", help="the cluster token to send (default: TENSORWIRE_CLUSTER_TOKEN)"
    )
    for name, what in (
        ("root_certificates_file", "PEM CA that verifies the server (turns on TLS)"),
        ("certificate_chain_file", "PEM client certificate, for mutual TLS"),
        ("private_key_file", "PEM private key of the client certificate"),
        ("server_name_override", "the name expected in the server's certificate"),
    ):
        parser.add_argument(f"--{name}", f"--{name.replace('_', '-')}", dest=name, help=what)
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow sending the token in plaintext beyond loopback",
    )
    parser.set_defaults(func=_cmd_status)
