"""``tensorwire_testing.commands``: the free port runs handed to subprocesses."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from tensorwire_testing.commands import PRIVATE_PORTS_FROM, free_port_base, free_port_runs


def _ephemeral_low() -> int:
    """Read here, not through the module's own helper, so a wrong reading there fails."""
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_port_runs_are_free_apart_and_below_the_ephemeral_range():
    """Below the range the kernel hands outgoing connections, so no other process's
    connection can take one between the pick and the subprocess's bind."""
    low = _ephemeral_low()
    spans = (3, 1, 4)
    bases = free_port_runs(*spans)
    runs = [range(base, base + span) for base, span in zip(bases, spans, strict=True)]
    ports = [port for run in runs for port in run]
    assert len(set(ports)) == len(ports)
    assert PRIVATE_PORTS_FROM <= min(ports) and max(ports) < low
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # each one binds


def test_a_port_base_leaves_its_rank_free_below_the_ephemeral_range():
    low = _ephemeral_low()
    base = free_port_base(2)
    assert PRIVATE_PORTS_FROM <= base and base + 2 < low
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", base + 2))


@pytest.mark.parametrize("spans", [(), (0,), (2, -1)])
def test_a_run_of_no_ports_is_refused_saying_so(spans):
    with pytest.raises(ValueError, match="at least 1 port"):
        free_port_runs(*spans)
