"""A Session over grpc: large variable reads, assigns and runs take the side channel whole."""

from __future__ import annotations

import numpy as np
import pytest
import tensorwire as tw
from tensorwire_grpc import bulk


@pytest.fixture
def bulk_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    made: list[str] = []
    real = bulk.call
    # The TCP mover itself: the shared-memory one would come first (test_shm_mover).
    monkeypatch.setenv("TENSORWIRE_GRPC_SHM", "0")

    def counting(peer, name, *args, **kwargs):
        made.append(name)
        return real(peer, name, *args, **kwargs)

    monkeypatch.setattr(bulk, "call", counting)
    return made


def _identity(x):
    return x


def test_large_reads_assigns_and_runs_are_side_channel_calls(bulk_calls: list[str]) -> None:
    with tw.Server({"ps": ["localhost:0"]}, protocol="grpc") as server:
        with tw.Session(server.target) as sess:
            value = np.arange(1 << 18, dtype=np.float32)  # 1 MiB
            var = sess.variable("big", value)
            bulk_calls.clear()
            # The session announces the read's size, so its small request goes whole over
            # the side channel and the response comes back on the same connection.
            np.testing.assert_array_equal(var.read(), value)
            assert bulk_calls == ["/tensorwire.WorkerService/VarRead"]
            var.assign(value + 1)  # a large request
            np.testing.assert_array_equal(var.assign_add(value, read_value=True), 2 * value + 1)
            np.testing.assert_array_equal(sess.run(_identity, value), value)
            assert len(bulk_calls) == 4
            # Small variables stay on the gRPC path: nothing announced, nothing large.
            small = sess.variable("small", np.zeros(4, np.float32))
            bulk_calls.clear()
            small.read()
            small.assign_add(np.ones(4, np.float32))
            assert bulk_calls == []
