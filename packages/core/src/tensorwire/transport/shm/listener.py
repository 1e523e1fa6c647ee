"""Finding a peer on this host: the abstract-socket listener, ``connect`` and the handshake.

The listener's name is told to the peer over the control channel (``address``); the peer
connecting to it is the same-host proof (see the package docstring for why it is one).
"""

from __future__ import annotations

import logging
import secrets
import select
import socket
import time

from ... import errors
from .. import security
from . import protocol as p
from .connection import HANDSHAKE_SECONDS, ShmConnection, ShmLimits, track_socket
from .pool import PROCESS_BUDGET, ShmBudget

__all__ = ["ShmListener", "connect", "ADDRESS_PREFIX"]

log = logging.getLogger(__name__)

#: Every listener's abstract name starts with this, then 32 random hex digits.
ADDRESS_PREFIX = "tensorwire-shm-"
_STATUS_OK = 0
_PROOF_BYTES = security.TOKEN_PROOF_BYTES
_MAX_REASON_BYTES = 1024


def _seqpacket() -> socket.socket:
    return socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)


def _handshake_deadline(deadline: float | None) -> float:
    limit = time.monotonic() + HANDSHAKE_SECONDS
    return limit if deadline is None else min(deadline, limit)


def _receive(sock: socket.socket, size: int, deadline: float, what: str) -> bytes:
    sock.settimeout(max(0.0, deadline - time.monotonic()))
    try:
        data = sock.recv(size)
    except TimeoutError:
        raise errors.DeadlineExceededError(
            f"the shared-memory handshake timed out waiting for the {what}"
        ) from None
    except OSError as exc:
        raise errors.UnavailableError(
            f"the shared-memory handshake failed waiting for the {what}: {exc}"
        ) from None
    if not data:
        raise errors.UnavailableError(
            f"the peer closed the shared-memory connection before sending the {what}"
        )
    return data


def _send(sock: socket.socket, data: bytes, deadline: float) -> None:
    sock.settimeout(max(0.0, deadline - time.monotonic()))
    try:
        sock.sendall(data)
    except OSError as exc:
        raise errors.UnavailableError(f"the shared-memory handshake failed: {exc}") from None


def _refuse(sock: socket.socket, error: errors.OpError, deadline: float) -> None:
    """Tell the peer why it is refused (best effort), then raise ``error`` here too."""
    reason = error.message.encode()[:_MAX_REASON_BYTES]
    try:
        _send(sock, p.STATUS.pack(int(error.code)) + reason, deadline)
    except errors.OpError:
        pass
    raise error


class ShmListener:
    """Listens for shared-memory connections on an abstract Unix socket.

    Abstract names live in the network namespace, not in a file system: nothing is left
    behind when the process dies, and only processes on this host (in this network
    namespace) can connect. The name is random, told to peers over the control channel.

    Args:
      token: the cluster token peers must prove (None: no token, any local peer).
      limits: this side's limits, for every connection it accepts.
      budget: what the segments of its connections count against (the process's).

    Examples:
        >>> from tensorwire.transport.shm import ShmListener
        >>> with ShmListener(token=None) as listener:
        ...     listener.address.startswith("tensorwire-shm-")
        True
    """

    def __init__(
        self,
        token: str | None,
        limits: ShmLimits | None = None,
        budget: ShmBudget = PROCESS_BUDGET,
    ) -> None:
        self.token = token
        self.limits = limits or ShmLimits()
        self.budget = budget
        self.address = ADDRESS_PREFIX + secrets.token_hex(16)
        self._sock = _seqpacket()
        track_socket(self._sock)
        try:
            self._sock.bind("\0" + self.address)
            self._sock.listen(64)
        except OSError:
            self._sock.close()
            raise

    def accept(self, deadline: float | None = None) -> ShmConnection:
        """The next connection whose peer proved the token.

        The handshake runs here, so a peer that connects and says nothing holds the caller
        for at most ``HANDSHAKE_SECONDS``: a server accepts on a thread of its own and
        hands each connection on.

        Args:
          deadline: ``time.monotonic()`` value to stop waiting for a peer at (None: no
            limit). The handshake of a peer that came takes at most ``HANDSHAKE_SECONDS``
            more, whatever the deadline.

        Returns:
          The connection.

        Raises:
          DeadlineExceededError: nobody connected before the deadline, or the peer's
            handshake timed out.
          PermissionDeniedError: the peer did not prove the token (it was told why, and its
            socket closed).
          UnavailableError: the listener is closed, or the peer left mid-handshake.
        """
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            ready, _, _ = select.select([self._sock], [], [], left)
        except (OSError, ValueError):
            raise errors.UnavailableError("the shared-memory listener is closed") from None
        if not ready:
            raise errors.DeadlineExceededError(
                "no shared-memory peer connected before the deadline"
            )
        try:
            sock, _ = self._sock.accept()
        except OSError as exc:
            raise errors.UnavailableError(f"accepting a shared-memory peer failed: {exc}") from None
        try:
            # The handshake gets its own HANDSHAKE_SECONDS: ``deadline`` bounds the wait for
            # a peer, and a server that polls accept() with short deadlines would otherwise
            # cut short the handshake of a peer that came just before one of them ended.
            return self._handshake(sock, _handshake_deadline(None))
        except BaseException:
            sock.close()
            raise

    def _handshake(self, sock: socket.socket, deadline: float) -> ShmConnection:
        nonce = secrets.token_bytes(p.NONCE_BYTES)
        _send(sock, p.HELLO.pack(p.MAGIC, nonce, self.limits.max_mapped_bytes), deadline)
        answer = _receive(sock, p.PROVE.size + _PROOF_BYTES + 1, deadline, "client's proof")
        if len(answer) != p.PROVE.size + _PROOF_BYTES or answer[:4] != p.MAGIC:
            _refuse(
                sock,
                errors.InvalidArgumentError(
                    "the peer does not speak this shared-memory protocol "
                    f"(expected {p.MAGIC!r}, got {answer[:4]!r})"
                ),
                deadline,
            )
        _, peer_nonce, peer_max_mapped = p.PROVE.unpack_from(answer)
        proof = answer[p.PROVE.size :]
        if not security.proves_token(self.token, p.CLIENT_LABEL + nonce + peer_nonce, proof):
            _refuse(
                sock,
                errors.PermissionDeniedError(
                    "the shared-memory peer did not prove this server's cluster token"
                ),
                deadline,
            )
        own = security.token_proof(self.token, p.SERVER_LABEL + peer_nonce + nonce)
        _send(sock, p.STATUS.pack(_STATUS_OK) + own, deadline)
        sock.settimeout(None)
        return ShmConnection(sock, self.limits, peer_max_mapped, self.budget)

    def close(self) -> None:
        """Stop listening (connections already made stay up)."""
        self._sock.close()

    def __enter__(self) -> ShmListener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def connect(
    address: str,
    token: str | None,
    *,
    limits: ShmLimits | None = None,
    deadline: float | None = None,
    budget: ShmBudget = PROCESS_BUDGET,
) -> ShmConnection:
    """Connect to a ``ShmListener`` on this host and prove the cluster token both ways.

    Args:
      address: the listener's ``address``, as its side told it over the control channel.
      token: the cluster token (None when the cluster has none).
      limits: this side's limits.
      deadline: ``time.monotonic()`` value to give up at; the handshake takes at most
        ``HANDSHAKE_SECONDS`` anyway.
      budget: what this side's segments count against (the process's).

    Returns:
      The connection: the peer is on this host, in this network namespace, and holds the
      token.

    Raises:
      InvalidArgumentError: ``address`` is not a shared-memory listener's address.
      UnavailableError: no such listener here (the peer is on another host or in another
        network namespace, or gone), or it closed mid-handshake.
      PermissionDeniedError: the listener refused this side's proof (its reason included),
        or it could not prove the token itself.
      DeadlineExceededError: the handshake did not finish in time.

    Examples:
        >>> import threading
        >>> from tensorwire.transport.shm import ShmListener, connect
        >>> with ShmListener(token="t") as listener:
        ...     accepted = []
        ...     server = threading.Thread(target=lambda: accepted.append(listener.accept()))
        ...     server.start()
        ...     with connect(listener.address, "t") as client:
        ...         server.join()
        ...         client.send([b"hello"])
        ...         bytes(accepted[0].receive().frames[0])
        ...     accepted[0].close()
        b'hello'
    """
    if not address.startswith(ADDRESS_PREFIX) or "\0" in address:
        raise errors.InvalidArgumentError(
            f"{address!r} is not a shared-memory listener's address (it starts with "
            f"{ADDRESS_PREFIX!r})"
        )
    limits = limits or ShmLimits()
    hand_deadline = _handshake_deadline(deadline)
    sock = _seqpacket()
    try:
        sock.settimeout(max(0.0, hand_deadline - time.monotonic()))
        try:
            sock.connect("\0" + address)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise errors.UnavailableError(
                f"no shared-memory listener {address} on this host ({exc.strerror}): the "
                "peer is on another host, in another network namespace, or gone"
            ) from None
        except OSError as exc:
            raise errors.UnavailableError(
                f"could not connect to shared-memory listener {address}: {exc}"
            ) from None
        hello = _receive(sock, p.HELLO.size + 1, hand_deadline, "listener's greeting")
        if len(hello) != p.HELLO.size or hello[:4] != p.MAGIC:
            raise errors.UnavailableError(
                f"{address} does not speak this shared-memory protocol (expected "
                f"{p.MAGIC!r}, got {hello[:4]!r})"
            )
        _, server_nonce, peer_max_mapped = p.HELLO.unpack(hello)
        nonce = secrets.token_bytes(p.NONCE_BYTES)
        proof = security.token_proof(token, p.CLIENT_LABEL + server_nonce + nonce)
        _send(sock, p.PROVE.pack(p.MAGIC, nonce, limits.max_mapped_bytes) + proof, hand_deadline)
        answer = _receive(sock, 1 + _MAX_REASON_BYTES, hand_deadline, "listener's answer")
        status = answer[0]
        if status != _STATUS_OK:
            reason = answer[1:].decode(errors="replace")
            raise errors.from_code(
                status, f"the shared-memory listener refused this connection: {reason}"
            )
        if not security.proves_token(token, p.SERVER_LABEL + nonce + server_nonce, answer[1:]):
            raise errors.PermissionDeniedError(
                f"shared-memory listener {address} did not prove the cluster token"
            )
        sock.settimeout(None)
        return ShmConnection(sock, limits, peer_max_mapped, budget)
    except BaseException:
        sock.close()
        raise
