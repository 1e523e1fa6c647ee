"""The transport conformance suite against ``grpc`` with the bulk side channel forced on for
every message (threshold 1 byte), and with it off (the pure gRPC paths)."""

from __future__ import annotations

import pytest
from tensorwire.transport.base import TransportOptions
from tensorwire_testing.conformance import BaseTransportTests

EVERYTHING_BULK = {"bulk_tcp": True, "bulk_tcp_threshold_bytes": 1, "shm": False}


class TestGrpcConformanceEveryMessageBulk(BaseTransportTests):
    """Every request and response, however small, travels over the side channel."""

    @pytest.fixture
    def server_options(self) -> TransportOptions:
        return TransportOptions(extra=dict(EVERYTHING_BULK))

    @pytest.fixture
    def channel_options(self) -> TransportOptions:
        return TransportOptions(extra=dict(EVERYTHING_BULK))


class TestGrpcConformanceBulkOff(BaseTransportTests):
    """Both movers off on both sides: the inline/chunked gRPC paths alone."""

    @pytest.fixture
    def server_options(self) -> TransportOptions:
        return TransportOptions(extra={"bulk_tcp": False, "shm": False})

    @pytest.fixture
    def channel_options(self) -> TransportOptions:
        return TransportOptions(extra={"bulk_tcp": False, "shm": False})
