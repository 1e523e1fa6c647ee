"""A loopback TCP proxy that delays, refuses or cuts connections, for fault tests.

Put it between a client and a task (connect the client to ``proxy.address``) and then:
``proxy.delay = 0.2`` adds latency to every forwarded chunk, ``proxy.frozen = True`` stops
forwarding (what is sent stays in the connections, as in a network that went silent),
``proxy.cut()`` breaks every open connection, ``proxy.refuse = True`` closes new
connections on arrival. ``close()`` stops it; it is a context manager.

It forwards the one port it was given. The grpc transport's TCP side channel (large calls,
and small ones once its port is known) connects to the server's side port directly, past
the proxy: a fault test that must see every call set ``TENSORWIRE_GRPC_BULK_TCP_SMALL_CALLS=0``
(small calls) or ``TENSORWIRE_GRPC_BULK_TCP=0`` (all) for the clients it puts behind it.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time

__all__ = ["LoopbackProxy"]

_CHUNK = 1 << 20
#: How often a frozen connection's pump looks whether it may forward again (or was cut).
_FROZEN_LOOK_S = 0.01


class LoopbackProxy:
    """A TCP proxy on a free loopback port that forwards to ``target``.

    Args:
      target: ``"host:port"`` of the server to forward to.
      delay: seconds added before every forwarded chunk (settable later: ``proxy.delay``).

    Attributes ``refuse`` (close new connections on arrival), ``silent`` (how many of the
    next connections to accept and leave silent, never forwarded: a connection attempt that
    times out, as on a loaded machine; counted in ``held``), ``frozen`` (forward nothing
    on the open connections until it is False again: what was sent waits in them, and is
    lost if they are then cut), ``delay`` and ``target`` (where later connections go) can
    be changed while it runs; ``cut()`` breaks every open connection; ``close()`` stops it.

    It forwards the one port it is given. With the ``grpc`` transport a channel learns in
    its first calls of the server's faster ways (its TCP side channel, shared memory on one
    host), which go around the proxy; so that every call goes through it, and is delayed
    or cut, set ``TENSORWIRE_GRPC_BULK_TCP=0`` and ``TENSORWIRE_GRPC_SHM=0`` in the
    process that makes the calls (or ``TransportOptions.extra`` ``bulk_tcp`` / ``shm``
    False), before its channels are made.

    Raises:
      ValueError: ``target`` has no valid port.

    Examples:
        >>> server = tw.test.create_local_server()                     # doctest: +SKIP
        >>> with tw.test.LoopbackProxy(server.target.split("://")[1]) as proxy:
        ...     sess = tw.Session(f"grpc://{proxy.address}")            # doctest: +SKIP
        ...     proxy.cut()                                             # doctest: +SKIP
    """

    def __init__(self, target: str, delay: float = 0.0) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host.strip("[]") or "127.0.0.1", int(port))
        self.delay = delay
        self.refuse = False
        self.silent = 0
        self._frozen = False
        # Held while a pump reads, so that once ``frozen = True`` returns no read is under
        # way: what is sent after it stays in the connection.
        self._freeze_lock = threading.Lock()
        #: Connections accepted and left silent (``silent``), closed by ``close``.
        self.held: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._connections: list[tuple[socket.socket, socket.socket]] = []
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        accept = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        accept.start()
        self._threads.append(accept)

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.refuse:
                client.close()
                continue
            if self.silent:
                self.silent -= 1
                self.held.append(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections.append((client, upstream))
            pump = threading.Thread(
                target=self._pump, args=(client, upstream), name="proxy-pump", daemon=True
            )
            pump.start()
            self._threads.append(pump)

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        selector = selectors.DefaultSelector()
        for sock in peers:
            sock.setblocking(True)
            selector.register(sock, selectors.EVENT_READ)
        try:
            while not self._closed.is_set():
                if self._frozen:
                    time.sleep(_FROZEN_LOOK_S)
                    continue
                for key, _ in selector.select(timeout=0.2):
                    source = key.fileobj
                    with self._freeze_lock:
                        if self._frozen:
                            break
                        try:
                            data = source.recv(_CHUNK)  # type: ignore[union-attr]
                        except OSError:
                            return
                    if not data:
                        return
                    if self.delay:
                        time.sleep(self.delay)
                    try:
                        peers[source].sendall(data)  # type: ignore[index]
                    except OSError:
                        return
        finally:
            selector.close()
            for sock in peers:
                _close(sock)
            with self._lock:
                if (client, upstream) in self._connections:
                    self._connections.remove((client, upstream))

    @property
    def frozen(self) -> bool:
        """Whether the open connections forward nothing (what is sent waits in them)."""
        return self._frozen

    @frozen.setter
    def frozen(self, value: bool) -> None:
        with self._freeze_lock:
            self._frozen = value

    def cut(self) -> None:
        """Break every open connection (peers see a reset/EOF)."""
        with self._lock:
            connections, self._connections = self._connections, []
        for client, upstream in connections:
            _close(client)
            _close(upstream)

    def close(self) -> None:
        self._closed.set()
        self.cut()
        for sock in self.held:
            _close(sock)
        _close(self._listener)
        for thread in self._threads:
            thread.join(timeout=2)

    def __enter__(self) -> LoopbackProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
