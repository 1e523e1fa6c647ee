"""The transport conformance suite against ``grpc`` with the shared-memory mover taking
every message it can (threshold 1 byte, the TCP side channel off): whole unary calls go
through shared memory, and every stream message is parked and fetched through it."""

from __future__ import annotations

import pytest
from tensorwire.transport.base import TransportOptions
from tensorwire_testing.conformance import BaseTransportTests

EVERYTHING_SHM = {"shm": True, "bulk_tcp": False, "bulk_tcp_threshold_bytes": 1}


class TestGrpcConformanceEveryMessageShm(BaseTransportTests):
    """Every request and response, however small, moves through shared memory."""

    @pytest.fixture
    def server_options(self) -> TransportOptions:
        return TransportOptions(extra=dict(EVERYTHING_SHM))

    @pytest.fixture
    def channel_options(self) -> TransportOptions:
        return TransportOptions(extra=dict(EVERYTHING_SHM))
