"""``grpc+verbs``: gRPC carries calls and small frames, RDMA READ carries large frames.

A call's large frames (at least ``rdma_threshold`` bytes) never cross gRPC. The side that
holds them registers them and sends, in the call, only where they are (address, rkey,
length); the receiving side pulls them with RDMA READs, pipelined on an RC queue pair, into
registered buffers from its pool, and the completion of its own READs is what tells it the
data has landed. Concretely:

* **request**: the channel registers its large frames in place (registration cache, zero
  copy) and puts their descriptors in the call's metadata (key ``tensorwire-rdma``); the
  server READs them before running the handler and answers only after, so the caller's
  memory is free again when the call returns.
* **response**: the server copies each large result frame into a pooled registered buffer
  (a snapshot, as gRPC serialisation would take) and answers with a small header frame
  describing it; the channel READs it and then releases the server's buffer with a small
  ``Release`` call.

The two peers agree on RDMA in the control plane's mover handshake (``kit.handshake``, the
grpc transport's ``Bulk/Hello``): the listener offers the ``verbs`` mover, with the
``FEATURE_READ`` bit, when it has a verbs device; the channel asks for it and takes
``choose_mover``'s answer. Only when ``verbs`` is chosen does it set up a queue pair, with
the ``tensorwire.rdma.Verbs/Connect`` control call (each side sends QP number, PSN, GID and
path MTU). A server that offers no ``verbs`` (plain ``grpc``, ``grpc+verbs`` without a
device, or an older peer) is called over plain gRPC for everything, without a ``Connect``.
A server without verbs still answers ``Connect`` with UNIMPLEMENTED, for older channels that
ask it. Calls without the metadata key are plain gRPC calls, so a ``grpc`` client can call a
``grpc+verbs`` server too.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from tensorwire import errors
from tensorwire.transport import get_transport
from tensorwire.transport.base import (
    CallContext,
    Channel,
    Frames,
    Listener,
    Service,
    Transport,
    TransportOptions,
)
from tensorwire.transport.kit import handshake
from tensorwire.transport.kit.framing import check_size
from tensorwire.transport.kit.tickets import TicketStore

from . import verbs
from .buffers import RegistrationCache, next_id, registered_pool

log = logging.getLogger(__name__)

PROTOCOL = "grpc+verbs"
CONTROL_SERVICE = "tensorwire.rdma.Verbs"
METADATA_KEY = "tensorwire-rdma"
#: Frames of at least this many bytes move by RDMA (``extra["rdma_threshold"]``).
DEFAULT_THRESHOLD = 64 * 1024
#: A response buffer the client never released is dropped after this many seconds.
LEASE_SECONDS = 300.0
#: The ``path`` label of calls whose payload moved by RDMA (``tensorwire.observe.calls``).
CALL_PATH = "rdma"
#: This mover's name in the handshake (``kit.handshake.MOVER_PREFERENCE``).
MOVER = "verbs"
#: Feature bit of a ``verbs`` offer: large frames move by RDMA READ as this module's
#: docstring says, queue pairs being set up by ``Connect``. A channel uses only an offer
#: that has it, so a later, different protocol can offer another bit instead.
FEATURE_READ = 1
_STALE = "unknown RDMA connection"


def _mv(frame: Any) -> memoryview:
    view = memoryview(frame)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


class Stats:
    """Bytes that crossed gRPC and bytes that moved by RDMA, counted by channels (each byte
    of a call crosses through exactly one channel, so nothing is counted twice)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.grpc_bytes = 0
        self.rdma_bytes = 0

    def add(self, grpc: int = 0, rdma: int = 0) -> None:
        with self._lock:
            self.grpc_bytes += grpc
            self.rdma_bytes += rdma

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"grpc_bytes": self.grpc_bytes, "rdma_bytes": self.rdma_bytes}


class Verbs:
    """The verbs resources one transport shares: device, buffer pool, registration cache."""

    def __init__(self, extra: dict[str, Any]) -> None:
        self.device = verbs.open_device(extra)
        self.pool = registered_pool(self.device, int(extra.get("rdma_pool_bytes", 512 << 20)))
        self.regcache = RegistrationCache(
            self.device, int(extra.get("rdma_regcache_bytes", 1 << 30))
        )

    def read_into_pool(
        self,
        qp: verbs.QueuePair,
        remote: list[tuple[int, int, int]],
        deadline: float | None,
        what: str,
    ) -> list[memoryview]:
        """READ each remote ``(addr, rkey, nbytes)`` into a registered buffer of its own
        from the pool; the frames returned are views of them (a buffer goes back to the
        pool once nothing refers to it)."""
        buffers = [self.pool.take_registered(n) for _, _, n in remote]
        pieces = [
            (int(array.ctypes.data), int(mr.lkey), n, addr, rkey)
            for (array, mr), (addr, rkey, n) in zip(buffers, remote, strict=True)
        ]
        try:
            qp.read(pieces, deadline, what)
        except BaseException:
            for array, _ in buffers:
                self.pool.discard(array)  # the failed READs may still land there
            raise
        return [
            memoryview(array[:n])  # type: ignore[arg-type]  # an ndarray is a buffer
            for (array, _), (_, _, n) in zip(buffers, remote, strict=True)
        ]


def _transfer_options(extra: dict[str, Any]) -> int:
    value = extra.get("rdma_threshold", DEFAULT_THRESHOLD)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise errors.InvalidArgumentError(
            f"rdma_threshold must be a positive number of bytes, got {value!r}"
        )
    return value


# ---------------------------------------------------------------------------------------
# Server side


class _ServerState:
    def __init__(
        self, verbs_: Verbs | None, why_not: str, threshold: int, limit: int | None = None
    ) -> None:
        self.limit = limit
        self.verbs = verbs_
        self.why_not = why_not
        self.threshold = threshold
        self.lock = threading.Lock()
        self.conns: dict[int, verbs.QueuePair] = {}
        #: Response buffers lent to a connection's READs, by lease id, owned by the
        #: connection. One the client never released, or whose connection was dropped,
        #: may still be read: it is discarded, never reused.
        self.leases: TicketStore[Any] = TicketStore(
            LEASE_SECONDS, what="RDMA response buffers lent to readers", on_expire=self._discard
        )

    def _discard(self, array: Any) -> None:
        if self.verbs is not None:
            self.verbs.pool.discard(array)

    # -- the handshake -------------------------------------------------------------------
    def offers(self) -> list[handshake.MoverOffer]:
        """The ``verbs`` offer in the control plane's handshake; none without a device."""
        if self.verbs is None:
            return []
        return [handshake.MoverOffer(MOVER, 0, FEATURE_READ)]

    # -- control methods ---------------------------------------------------------------
    def connect(self, frames: list[memoryview], context: CallContext) -> Frames:
        if self.verbs is None:
            raise errors.UnimplementedError(f"this server has no RDMA: {self.why_not}")
        request = json.loads(bytes(frames[0]))
        remote = verbs.QPInfo.from_dict(request["qp"])
        qp = verbs.QueuePair(self.verbs.device)
        try:
            qp.connect(remote)
        except BaseException:
            qp.close()
            raise
        conn = next_id()
        with self.lock:
            self.conns[conn] = qp
        log.debug("RDMA connection %d from %s (qpn %d)", conn, context.peer, remote.qpn)
        return [json.dumps({"conn": conn, "qp": qp.info().to_dict()}).encode()]

    def release(self, frames: list[memoryview], context: CallContext) -> Frames:
        request = json.loads(bytes(frames[0]))
        conn = int(request.get("conn", -1))
        for lease in request.get("leases", []):
            # Only the connection a buffer was leased to may release it: another client
            # releasing it early could make its reader see a reused buffer. Taken, the
            # buffer has no reference left and is free in the pool again.
            self.leases.take(int(lease), owner=conn)
        return []

    def disconnect(self, frames: list[memoryview], context: CallContext) -> Frames:
        conn = int(json.loads(bytes(frames[0]))["conn"])
        self.drop(conn)
        return []

    def drop(self, conn: int) -> None:
        with self.lock:
            qp = self.conns.pop(conn, None)
        if qp is not None:
            qp.close()
        # The client may still be reading its leased buffers: never reuse those.
        self.leases.drop_owner(conn)

    def control_service(self) -> Service:
        svc = Service(CONTROL_SERVICE)
        svc.add("Connect", self.connect)
        svc.add("Release", self.release)
        svc.add("Disconnect", self.disconnect)
        return svc

    # -- data path -----------------------------------------------------------------------
    def _qp(self, conn: int) -> verbs.QueuePair:
        with self.lock:
            qp = self.conns.get(conn)
        if qp is None:
            raise errors.AbortedError(f"{_STALE} {conn}: the server restarted or dropped it")
        return qp

    def gather(
        self, envelope: dict[str, Any], frames: list[memoryview], context: CallContext, what: str
    ) -> tuple[int, list[memoryview]]:
        """The request's full frames, its large ones READ from the caller; marks the call's
        payload path ``rdma`` when any moved that way."""
        conn = int(envelope["c"])
        remote = envelope.get("f", [])
        total = int(envelope.get("n", len(frames)))
        # Checked even without RDMA frames: the reply may carry some, and a client still
        # holding a queue pair to a previous server process on this port must reconnect.
        if self.verbs is None:
            raise errors.AbortedError(f"{_STALE} {conn}: this server has no RDMA")
        qp = self._qp(conn)
        if qp.broken:
            self.drop(conn)
            raise errors.AbortedError(f"{_STALE} {conn}: its queue pair failed ({qp.broken})")
        if not remote:
            return conn, frames
        descs = _descriptors(remote, total, what)
        check_size(
            [n for *_, n in descs] + [f.nbytes for f in frames], self.limit, f"{what}: request"
        )
        context.payload_path = CALL_PATH
        context.payload_bytes_in += sum(n for *_, n in descs)
        try:
            landed = self.verbs.read_into_pool(
                qp, [(a, k, n) for _, a, k, n in descs], context.deadline, what
            )
        except errors.OpError:
            if qp.broken:
                self.drop(conn)
            raise
        out: list[memoryview | None] = [None] * total
        for (i, _, _, _), view in zip(descs, landed, strict=True):
            out[i] = view
        small = iter(frames)
        try:
            full = [f if f is not None else next(small) for f in out]
        except StopIteration:
            raise errors.DataLossError(
                f"{what}: the call has fewer frames than announced"
            ) from None
        return conn, full

    def scatter(self, conn: int, result: Frames, context: CallContext) -> list[Any]:
        """The result as [header, small frames...]; large frames wait in leased buffers
        (and mark the call's payload path ``rdma``)."""
        assert self.verbs is not None
        header: list[list[int]] = []
        small: list[Any] = []
        views = [_mv(f) for f in result]
        for i, view in enumerate(views):
            if view.nbytes < self.threshold:
                small.append(view)
                continue
            array, mr = self.verbs.pool.take_registered(view.nbytes)
            array[: view.nbytes] = view  # the snapshot; gRPC would copy as well
            lease = self.leases.put(array, ticket=next_id(), owner=conn)
            header.append([i, int(array.ctypes.data), int(mr.rkey), view.nbytes, lease])
        if header:
            context.payload_path = CALL_PATH
            context.payload_bytes_out += sum(entry[3] for entry in header)
        head = json.dumps({"n": len(views), "r": header}).encode()
        return [head, *small]

    def wrap(self, service: Service) -> Service:
        wrapped = Service(service.name)
        for name, method in service.methods.items():
            what = f"/{service.name}/{name}"
            if method.streaming:
                wrapped.add(name, self._stream_handler(method.handler, what), streaming=True)
            else:
                wrapped.add(name, self._unary_handler(method.handler, what))
        return wrapped

    def _unary_handler(self, handler: Any, what: str) -> Any:
        def run(frames: list[memoryview], context: CallContext) -> Frames:
            raw = context.metadata.get(METADATA_KEY)
            if raw is None:  # a plain grpc client
                return handler(frames, context)
            conn, full = self.gather(_parse(raw), frames, context, what)
            return self.scatter(conn, handler(full, context), context)

        return run

    def _stream_handler(self, handler: Any, what: str) -> Any:
        def run(frames: list[memoryview], context: CallContext) -> Iterator[Frames]:
            raw = context.metadata.get(METADATA_KEY)
            if raw is None:
                yield from handler(frames, context)
                return
            conn, full = self.gather(_parse(raw), frames, context, what)
            for message in handler(full, context):
                yield self.scatter(conn, message, context)

        return run

    def close(self) -> None:
        with self.lock:
            conns = list(self.conns)
        for conn in conns:
            self.drop(conn)


def _descriptors(remote: list[Any], total: int, what: str) -> list[tuple[int, int, int, int]]:
    """(index, addr, rkey, nbytes) of each RDMA frame, checked against the frame count."""
    try:
        descs = [(int(i), int(a), int(k), int(n)) for i, a, k, n in remote]
    except (TypeError, ValueError) as exc:
        raise errors.DataLossError(f"{what}: malformed RDMA frame descriptors: {exc}") from exc
    indexes = [d[0] for d in descs]
    if (
        len(set(indexes)) != len(indexes)
        or any(not 0 <= i < total for i in indexes)
        or any(d[3] < 0 for d in descs)
    ):
        raise errors.DataLossError(f"{what}: RDMA frame descriptors do not fit {total} frames")
    return descs


def _parse(raw: str) -> dict[str, Any]:
    try:
        envelope = json.loads(raw)
        if not isinstance(envelope, dict) or "c" not in envelope:
            raise ValueError("no connection id")
        return envelope
    except ValueError as exc:
        raise errors.InvalidArgumentError(f"malformed {METADATA_KEY} metadata: {exc}") from exc


class RdmaListener(Listener):
    def __init__(self, inner: Listener, state: _ServerState) -> None:
        self._inner = inner
        self._state = state
        self.address = inner.address
        self.port = inner.port

    def start(self) -> None:
        self._inner.start()

    def stop(self, grace: float | None = None) -> None:
        self._inner.stop(grace)
        self._state.close()

    def wait(self, timeout: float | None = None) -> bool:
        return self._inner.wait(timeout)


# ---------------------------------------------------------------------------------------
# Client side


def _no_handshake(options: TransportOptions) -> errors.FailedPreconditionError:
    name = options.extra.get("rdma_control_protocol", "grpc")
    return errors.FailedPreconditionError(
        f"grpc+verbs cannot run over the {name!r} transport: it does not carry the mover "
        "handshake (tensorwire.transport.kit.handshake) by which peers agree on RDMA; use "
        "'grpc' (or 'inproc' within one process)"
    )


class RdmaChannel(Channel):
    def __init__(
        self,
        transport: RdmaTransport,
        inner: Channel,
        address: str,
        verbs_: Verbs | None,
        threshold: int,
        limit: int | None = None,
    ) -> None:
        self._limit = limit
        self._transport = transport
        self._inner = inner
        assert isinstance(inner, handshake.AsksMovers)  # ``RdmaTransport.connect`` checked
        #: The control channel, as the one that asks the mover handshake.
        self._handshake: handshake.AsksMovers = inner
        self.address = address
        self._verbs = verbs_
        self._threshold = threshold
        self._lock = threading.Lock()
        self._qp: verbs.QueuePair | None = None
        self._conn: int | None = None
        #: Whether the calls go by RDMA: False without a device here, once the server
        #: offered no ``verbs`` in the handshake, or refused ``Connect`` after offering it.
        self.rdma = verbs_ is not None
        #: Set when ``Connect`` was refused: the server changed under the handshake's answer.
        self._refused = False
        self._closed = False

    # -- connection --------------------------------------------------------------------
    def _agreed(self, timeout: float | None) -> bool:
        """Whether the handshake chose ``verbs`` with this server (asked once by the control
        channel, which keeps the answer; asked again when it could not be asked)."""
        offers = self._handshake.mover_offers((MOVER,), timeout=timeout)
        offer = handshake.choose_mover((MOVER,), offers)
        agreed = offer is not None and bool(offer.features & FEATURE_READ)
        if self.rdma and not agreed:
            log.info("peer %s offers no RDMA; this channel uses plain gRPC", self.address)
        self.rdma = agreed
        return agreed

    def _connection(self, timeout: float | None) -> tuple[int, verbs.QueuePair] | None:
        with self._lock:
            if self._verbs is None or self._refused:
                return None
            if self._qp is not None and not self._qp.broken and self._conn is not None:
                return self._conn, self._qp
            if self._qp is not None:
                self._forget_locked()
            if not self._agreed(timeout):
                return None
            qp = verbs.QueuePair(self._verbs.device)
            request = json.dumps({"qp": qp.info().to_dict()}).encode()
            self._transport.stats.add(grpc=len(request))
            try:
                reply = self._connect_call(request, timeout)
            except errors.UnimplementedError as exc:
                # It offered verbs, yet has none now: another server took the address.
                qp.close()
                self.rdma, self._refused = False, True
                log.info(
                    "peer %s offered RDMA but refused to connect (%s); this channel uses "
                    "plain gRPC",
                    self.address,
                    exc.message if hasattr(exc, "message") else exc,
                )
                return None
            except BaseException:
                qp.close()
                raise
            answer = json.loads(bytes(reply[0]))
            try:
                qp.connect(verbs.QPInfo.from_dict(answer["qp"]))
            except BaseException:
                qp.close()
                raise
            self._qp, self._conn = qp, int(answer["conn"])
            return self._conn, qp

    def _connect_call(self, request: bytes, timeout: float | None) -> list[memoryview]:
        """The Connect handshake, retried while the first gRPC connection is still being
        made (a slow or busy peer can miss gRPC's first connect attempt). It has no effect
        on the server until it succeeds, so retrying it is safe; at most 10 s of retries.
        A refused connection is not retried: nothing listens there, the peer is down, and
        the caller hears so at once rather than when its deadline is nearly spent."""
        give_up = time.monotonic() + min(10.0, timeout if timeout is not None else 10.0)
        while True:
            left = None if timeout is None else max(0.1, give_up - time.monotonic())
            try:
                return self._inner.call(CONTROL_SERVICE, "Connect", [request], timeout=left)
            except errors.UnavailableError as exc:
                if "Connection refused" in str(exc):
                    raise
                if timeout is not None and time.monotonic() >= give_up and timeout <= 10.0:
                    # The caller's own deadline ran out while gRPC was still connecting.
                    raise errors.DeadlineExceededError(
                        f"setting up the RDMA connection to {self.address} exceeded the "
                        f"call's {timeout}s deadline ({exc})"
                    ) from exc
                if time.monotonic() + 0.2 >= give_up:
                    raise
                time.sleep(0.2)

    def _forget_locked(self) -> None:
        qp, conn = self._qp, self._conn
        self._qp = self._conn = None
        if qp is not None:
            qp.close()
        if conn is not None:
            try:
                self._inner.call_async(
                    CONTROL_SERVICE, "Disconnect", [json.dumps({"conn": conn}).encode()], timeout=5
                )
            except Exception:  # noqa: BLE001 - the server may be gone; it cleans up itself
                pass

    # -- data path -----------------------------------------------------------------------
    def _prepare(
        self, conn: int, frames: Frames
    ) -> tuple[list[memoryview], dict[str, Any], list[memoryview], int]:
        """Small frames to send, the envelope, the registered large frames, gRPC bytes."""
        assert self._verbs is not None
        views = [_mv(f) for f in frames]
        small, remote, registered = [], [], []
        for i, view in enumerate(views):
            if view.nbytes < self._threshold:
                small.append(view)
                continue
            addr, _, rkey = self._verbs.regcache.acquire(view)
            registered.append(view)
            remote.append([i, addr, rkey, view.nbytes])
        envelope = {"c": conn, "n": len(views), "f": remote}
        return small, envelope, registered, sum(v.nbytes for v in small)

    def _finish(
        self,
        conn: int,
        qp: verbs.QueuePair,
        message: list[memoryview],
        deadline: float | None,
        what: str,
    ) -> list[memoryview]:
        """Turn a [header, small...] reply into the full frames, READing the large ones."""
        assert self._verbs is not None
        if not message:
            raise errors.DataLossError(f"{what}: reply without its RDMA header frame")
        head = json.loads(bytes(message[0]))
        small = message[1:]
        remote = head.get("r", [])
        landed: list[memoryview] = []
        try:
            _descriptors([r[:4] for r in remote], int(head["n"]), what)
            check_size(
                [int(r[3]) for r in remote] + [len(m) for m in small],
                self._limit,
                f"{what}: response",
            )
        except errors.OpError:
            self._release(conn, [int(r[4]) for r in remote])
            raise
        if remote:
            try:
                landed = self._verbs.read_into_pool(
                    qp, [(int(a), int(k), int(n)) for _, a, k, n, _ in remote], deadline, what
                )
            finally:
                self._release(conn, [int(r[4]) for r in remote])
        self._transport.stats.add(
            grpc=sum(len(m) for m in message), rdma=sum(v.nbytes for v in landed)
        )
        out: list[memoryview | None] = [None] * int(head["n"])
        for r, view in zip(remote, landed, strict=True):
            out[int(r[0])] = view
        rest = iter(small)
        try:
            return [f if f is not None else next(rest) for f in out]
        except StopIteration:
            raise errors.DataLossError(f"{what}: reply has fewer frames than announced") from None

    def _release(self, conn: int, leases: list[int]) -> None:
        request = json.dumps({"conn": conn, "leases": leases}).encode()
        self._transport.stats.add(grpc=len(request))  # control bytes count too
        try:
            self._inner.call_async(CONTROL_SERVICE, "Release", [request], timeout=30)
        except Exception:  # noqa: BLE001 - leases expire on the server anyway
            log.debug("releasing %s failed", leases, exc_info=True)

    def _after_failure(self, qp: verbs.QueuePair, registered: list[memoryview]) -> None:
        """A failed call may leave the peer reading our memory: never reuse those MRs."""
        assert self._verbs is not None
        for view in registered:
            self._verbs.regcache.forget(view)
        if qp.broken:
            self._forget_if_current(qp)

    def _forget_if_current(self, qp: verbs.QueuePair) -> None:
        with self._lock:
            if self._qp is qp:
                self._forget_locked()

    def _envelope(
        self, conn: int, frames: Frames, metadata: Mapping[str, str] | None
    ) -> tuple[list[memoryview], list[memoryview], dict[str, str]]:
        """The frames that go over gRPC, the registered ones the server reads by RDMA, and
        the call metadata carrying their descriptors; counted in the stats."""
        small, envelope, registered, nbytes = self._prepare(conn, frames)
        md = dict(metadata or {})
        md[METADATA_KEY] = json.dumps(envelope)
        # The descriptors travel as gRPC metadata: they count as bytes over gRPC too.
        self._transport.stats.add(
            grpc=nbytes + len(md[METADATA_KEY]), rdma=sum(v.nbytes for v in registered)
        )
        return small, registered, md

    def _settle(self, qp: verbs.QueuePair, registered: list[memoryview], ok: bool) -> None:
        """After a call: registrations go back to the cache, or are dropped on failure."""
        if ok:
            assert self._verbs is not None
            for view in registered:
                self._verbs.regcache.release(view)
        else:
            self._after_failure(qp, registered)

    def call(
        self,
        service: str,
        method: str,
        frames: Frames,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> list[memoryview]:
        if self._closed:
            raise errors.CancelledError("channel is closed")
        for attempt in (1, 2):
            deadline = _deadline(timeout)
            link = self._connection(timeout)
            if link is None:
                return self._plain_call(service, method, frames, timeout, metadata)
            conn, qp = link
            small, registered, md = self._envelope(conn, frames, metadata)
            ok = False
            try:
                reply = self._inner.call(service, method, small, timeout=timeout, metadata=md)
                result = self._finish(conn, qp, reply, deadline, f"/{service}/{method}")
                ok = True
                return result
            except errors.AbortedError as exc:
                if _STALE not in str(exc) or attempt == 2:
                    raise
                # The server lost our connection before running the handler: redo both.
                self._forget_if_current(qp)
            finally:
                self._settle(qp, registered, ok)
        raise AssertionError("unreachable")

    def _plain_call(
        self,
        service: str,
        method: str,
        frames: Frames,
        timeout: float | None,
        metadata: Mapping[str, str] | None,
    ) -> list[memoryview]:
        views = [_mv(f) for f in frames]
        reply = self._inner.call(service, method, views, timeout=timeout, metadata=metadata)
        self._transport.stats.add(grpc=sum(v.nbytes for v in views) + sum(len(m) for m in reply))
        return reply

    def stream(
        self,
        service: str,
        method: str,
        frames: Frames,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Iterator[list[memoryview]]:
        if self._closed:
            raise errors.CancelledError("channel is closed")
        deadline = _deadline(timeout)
        link = self._connection(timeout)
        what = f"/{service}/{method}"
        if link is None:
            views = [_mv(f) for f in frames]
            self._transport.stats.add(grpc=sum(v.nbytes for v in views))
            for message in self._inner.stream(
                service, method, views, timeout=timeout, metadata=metadata
            ):
                self._transport.stats.add(grpc=sum(len(m) for m in message))
                yield message
            return
        for attempt in (1, 2):
            conn, qp = link
            small, registered, md = self._envelope(conn, frames, metadata)
            ok = False
            started = False
            try:
                for message in self._inner.stream(
                    service, method, small, timeout=timeout, metadata=md
                ):
                    started = True
                    yield self._finish(conn, qp, message, deadline, what)
                ok = True
                return
            except errors.AbortedError as exc:
                if started or _STALE not in str(exc) or attempt == 2:
                    raise
                # The server lost our connection before running the handler: redo both.
                self._forget_if_current(qp)
            finally:
                self._settle(qp, registered, ok)
            link = self._connection(timeout)
            if link is None:  # the new server has no RDMA
                yield from self._inner.stream(
                    service, method, [_mv(f) for f in frames], timeout=timeout, metadata=metadata
                )
                return

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._forget_locked()
        self._inner.close()


# ---------------------------------------------------------------------------------------


class RdmaTransport(Transport):
    """``grpc+verbs`` over the ``grpc`` transport (``extra["rdma_control_protocol"]`` may name
    another one, e.g. ``inproc`` in tests). Options it reads from ``TransportOptions.extra``:
    ``rdma_device``, ``rdma_port``, ``rdma_gid_index``, ``rdma_address``, ``rdma_threshold``,
    ``rdma_fallback``, ``rdma_pool_bytes``, ``rdma_regcache_bytes``."""

    protocols = (PROTOCOL,)

    def __init__(self) -> None:
        self.stats = Stats()
        self._lock = threading.Lock()
        self._verbs: dict[tuple[Any, ...], Verbs] = {}

    def _inner(self, options: TransportOptions) -> Transport:
        return get_transport(str(options.extra.get("rdma_control_protocol", "grpc")))

    def _resources(self, options: TransportOptions) -> tuple[Verbs | None, str]:
        """The verbs resources for these options, or (None, why) when falling back."""
        extra = options.extra
        key = tuple(
            extra.get(k) for k in ("rdma_device", "rdma_port", "rdma_gid_index", "rdma_address")
        )
        with self._lock:
            found = self._verbs.get(key)
            if found is not None:
                return found, ""
            try:
                made = Verbs(extra)
            except verbs.VerbsUnavailable as exc:
                if not extra.get("rdma_fallback"):
                    raise verbs.VerbsUnavailable(
                        f"{exc.message if hasattr(exc, 'message') else exc}; or set "
                        "TransportOptions.extra['rdma_fallback'] = True to run over plain gRPC"
                    ) from exc
                log.warning(
                    "grpc+verbs falls back to plain gRPC (rdma_fallback is set): %s",
                    exc.message if hasattr(exc, "message") else exc,
                )
                return None, str(exc)
            self._verbs[key] = made
            return made, ""

    def serve(
        self, address: str, services: Sequence[Service], options: TransportOptions
    ) -> Listener:
        threshold = _transfer_options(options.extra)
        verbs_, why_not = self._resources(options)
        state = _ServerState(verbs_, why_not, threshold, options.max_message_bytes)
        wrapped = [state.wrap(s) for s in services]
        inner = self._inner(options).serve(address, [*wrapped, state.control_service()], options)
        if not isinstance(inner, handshake.OffersMovers):
            inner.stop(0)
            raise _no_handshake(options)
        inner.offer_mover(MOVER, state.offers)
        return RdmaListener(inner, state)

    def connect(self, address: str, options: TransportOptions) -> Channel:
        threshold = _transfer_options(options.extra)
        verbs_, _ = self._resources(options)
        inner = self._inner(options).connect(address, options)
        if not isinstance(inner, handshake.AsksMovers):
            inner.close()
            raise _no_handshake(options)
        return RdmaChannel(self, inner, address, verbs_, threshold, options.max_message_bytes)

    def status(self) -> dict[str, Any]:
        try:
            return {"verbs": verbs.probe(), **self.stats.snapshot()}
        except Exception as exc:  # noqa: BLE001 - status must not raise
            return {"verbs": {"problem": f"{type(exc).__name__}: {exc}"}}
