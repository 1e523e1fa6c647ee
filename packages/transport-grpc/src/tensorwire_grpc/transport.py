"""``GrpcTransport``: serve tensorwire services over gRPC and reach them, reusing channels."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import grpc
from tensorwire.transport.base import Service, Transport, TransportOptions, split_address
from tensorwire.transport.security import check_connect

from . import forking
from . import options as opts
from .channel import GrpcChannel, SharedChannel
from .server import GrpcListener

__all__ = ["GrpcTransport", "PROTOCOL"]

PROTOCOL = "grpc"


class GrpcTransport(Transport):
    """The ``grpc`` protocol.

    Channels to the same address with options that build the same gRPC channel share one
    connection: ``connect`` hands out a light ``GrpcChannel`` per caller and the
    gRPC channel closes when the last of them is closed (or at ``close``). A shared
    channel whose last call found the server unreachable is not handed to new callers:
    they get a fresh one that connects at once, instead of gRPC's reconnect backoff.

    In a process forked from this one the transport starts over: it forgets the parent's
    channels and opens its own (see ``forking``).
    """

    protocols = (PROTOCOL,)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channels: dict[tuple[Any, ...], SharedChannel] = {}
        forking.after_fork_in_child(self)

    def _reset_after_fork(self) -> None:
        """In a forked child: leave the parent's channels alone and make new ones."""
        self._lock = threading.Lock()
        inherited, self._channels = list(self._channels.values()), {}
        for shared in inherited:
            shared.abandon()

    def serve(
        self, address: str, services: Sequence[Service], options: TransportOptions
    ) -> GrpcListener:
        forking.check_usable(f"serving gRPC on {address}")
        return GrpcListener(address, services, options)

    def connect(self, address: str, options: TransportOptions) -> GrpcChannel:
        split_address(address)  # a clear InvalidArgumentError for a bad address
        check_connect(address, options)  # never the token in plaintext beyond loopback
        forking.check_usable(f"connecting to {address}")
        key = (address, opts.cache_key(options))
        with self._lock:
            shared = self._channels.get(key)
            if shared is None or shared.unreachable:
                # (An unreachable one lives on for its current users until they close it.)
                shared = SharedChannel(address, options)
                self._channels[key] = shared
            shared.references += 1
        return GrpcChannel(self, address, options, shared)

    def _release(self, shared: SharedChannel) -> None:
        with self._lock:
            shared.references -= 1
            if shared.references > 0:
                return
            for key, value in list(self._channels.items()):
                if value is shared:
                    del self._channels[key]
        shared.close()

    def open_channels(self) -> int:
        """How many gRPC channels are open (for tests and ``status``)."""
        with self._lock:
            return len(self._channels)

    def close(self) -> None:
        """Close every gRPC channel this transport opened."""
        with self._lock:
            channels = list(self._channels.values())
            self._channels.clear()
        for shared in channels:
            shared.close()

    def status(self) -> dict[str, Any]:
        return {
            "grpc_version": grpc.__version__,
            "inline_bytes": opts.DEFAULT_INLINE_BYTES,
            "chunk_bytes": opts.DEFAULT_CHUNK_BYTES,
            "bulk_tcp": opts.bulk_tcp(TransportOptions()),
            "bulk_tcp_threshold_bytes": opts.bulk_threshold(TransportOptions()),
            "shm": opts.shm(TransportOptions()),
            "open_channels": self.open_channels(),
        }
