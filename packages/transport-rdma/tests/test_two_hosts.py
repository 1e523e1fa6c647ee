"""RoCE between two kernels: a grpc+verbs server in one guest, its client in another.

Runs only in the harness' two-guest mode (``run_vm.py --two-guest``), which boots two QEMU
guests joined by a socket netdev over host loopback, attaches rxe to each one's NIC, and
sets ``TW_TWO_HOST_ROLE`` (server/client) and ``TW_TWO_HOST_PEER``. The client moves 1, 16
and 64 MiB both ways, checks every byte and that tensor bytes never crossed gRPC, then tells
the server it is done, with its results, so both guests' exit codes mean something.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

import numpy as np
import pytest
from tensorwire import errors
from tensorwire.transport import Service, TransportOptions, get_transport

ROLE = os.environ.get("TW_TWO_HOST_ROLE")
PEER = os.environ.get("TW_TWO_HOST_PEER", "")
PORT = 50051
MiB = 1 << 20
SIZES = [1 * MiB, 16 * MiB, 64 * MiB]

pytestmark = [
    pytest.mark.rdma,
    pytest.mark.skipif(
        ROLE is None,
        reason="runs only in the harness' two-guest mode: "
        "python3 packages/transport-rdma/harness/run_vm.py --two-guest",
    ),
]


def _pattern(nbytes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8)


def _my_address() -> str:
    return "10.77.0.1" if ROLE == "server" else "10.77.0.2"


def options() -> TransportOptions:
    # The GID is picked by address: the one rxe derived from this guest's wire address.
    return TransportOptions(extra={"rdma_address": _my_address()})


@pytest.mark.timeout(600)
def test_server_role():
    if ROLE != "server":
        pytest.skip("this guest is the client")
    done = threading.Event()
    seen: dict[str, object] = {}
    svc = Service("TwoHosts")

    @svc.unary("Ping")
    def ping(frames, context):
        return [b"pong"]

    @svc.unary("Digest")
    def digest(frames, context):
        seen.setdefault("sizes", []).append(frames[0].nbytes)
        return [hashlib.sha256(frames[0]).hexdigest().encode()]

    @svc.unary("Make")
    def make(frames, context):
        n, seed = json.loads(bytes(frames[0]))
        return [_pattern(n, seed)]

    @svc.unary("Done")
    def finished(frames, context):
        seen["client"] = json.loads(bytes(frames[0]))
        done.set()
        return []

    transport = get_transport("grpc+verbs")
    listener = transport.serve(f"{_my_address()}:{PORT}", [svc], options())
    listener.start()
    try:
        assert done.wait(540), "the client guest never reported back"
    finally:
        listener.stop(1)
    client = seen["client"]
    print("client report:", client)
    assert client["ok"] is True, client
    assert seen["sizes"] == SIZES


@pytest.mark.timeout(600)
def test_client_role():
    if ROLE != "client":
        pytest.skip("this guest is the server")
    transport = get_transport("grpc+verbs")
    ch = transport.connect(f"{PEER}:{PORT}", options())
    deadline = time.monotonic() + 300
    while True:  # the server guest boots at the same time as this one
        try:
            ch.call("TwoHosts", "Ping", [b""], timeout=5)
            break
        except (errors.UnavailableError, errors.DeadlineExceededError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    report: dict[str, object] = {"ok": False, "sizes": []}
    try:
        gid = next(iter(transport._verbs.values())).device.gid
        assert gid.gid.endswith(":0a4d:0002"), gid  # ::ffff:10.77.0.2
        for seed, size in enumerate(SIZES):
            payload = _pattern(size, seed)
            before = transport.stats.snapshot()
            start = time.monotonic()
            up = ch.call("TwoHosts", "Digest", [payload], timeout=300)
            t_up = time.monotonic() - start
            assert bytes(up[0]).decode() == hashlib.sha256(payload).hexdigest()
            start = time.monotonic()
            down = ch.call("TwoHosts", "Make", [json.dumps([size, seed]).encode()], timeout=300)
            t_down = time.monotonic() - start
            assert np.array_equal(np.frombuffer(down[0], np.uint8), payload)
            crossed = transport.stats.snapshot()["grpc_bytes"] - before["grpc_bytes"]
            assert crossed < 4096, crossed
            report["sizes"].append(
                {
                    "bytes": size,
                    "up_s": round(t_up, 3),
                    "down_s": round(t_down, 3),
                    "grpc_bytes": crossed,
                }
            )
            print(
                f"{size // MiB} MiB: up {size / t_up / 1e6:.1f} MB/s, "
                f"down {size / t_down / 1e6:.1f} MB/s, {crossed} bytes over gRPC"
            )
        report["ok"] = True
    finally:
        ch.call("TwoHosts", "Done", [json.dumps(report).encode()], timeout=60)
        ch.close()
