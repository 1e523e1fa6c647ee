"""Verbs resources through pyverbs: device choice, RC queue pairs, RDMA READ with deadlines.

Everything that touches ``pyverbs`` lives here, and ``pyverbs`` is imported only when a
function below is called, so importing ``tensorwire_rdma`` costs nothing on a host without
rdma-core. ``open_device`` is where "no pyverbs" and "no device" become errors that say
how to fix them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import random
import threading
import time
from typing import Any

from tensorwire import errors

log = logging.getLogger(__name__)

#: Environment variable naming the verbs device to use (e.g. ``rxe0``, ``mlx5_0``).
DEVICE_ENV = "TENSORWIRE_RDMA_DEVICE"

INSTALL_HINT = (
    "install rdma-core's Python bindings (Debian/Ubuntu: apt-get install python3-pyverbs; "
    "Fedora: dnf install python3-pyverbs) into the Python that runs tensorwire"
)
DEVICE_HINT = (
    "attach an RDMA NIC, or enable Soft-RoCE on an Ethernet interface with "
    "`modprobe rdma_rxe && rdma link add rxe0 type rxe netdev <interface>`"
)

_IBV_PORT_ACTIVE = 4
_MTU_BYTES = {1: 256, 2: 512, 3: 1024, 4: 2048, 5: 4096}


class VerbsUnavailable(errors.FailedPreconditionError):
    """grpc+verbs was asked for where verbs cannot run (no pyverbs, no device, no port)."""


def import_pyverbs() -> Any:
    """The ``pyverbs`` package, or ``VerbsUnavailable`` saying how to get it."""
    try:
        import pyverbs
        import pyverbs.device  # noqa: F401 - the compiled part; fails without libibverbs
    except ImportError as exc:
        raise VerbsUnavailable(
            f"grpc+verbs needs pyverbs, which cannot be imported here ({exc}); {INSTALL_HINT}"
        ) from exc
    return pyverbs


def _name(dev: Any) -> str:
    name = dev.name
    return name.decode() if isinstance(name, bytes) else str(name)


@dataclasses.dataclass(frozen=True)
class GidChoice:
    index: int
    gid: str
    gid_type: str


def _gid_type_name(value: int) -> str:
    return {0: "IB/RoCE v1", 1: "RoCE v1", 2: "RoCE v2"}.get(value, str(value))


def _gid_entries(ctx: Any, port: int, table_len: int) -> list[tuple[int, str, int]]:
    """(index, gid, type) of every populated GID of a port, type as ``query_gid_ex`` gives it
    (``query_gid_type`` uses the sysfs numbering, where RoCE v2 reads like v1)."""
    out = []
    for i in range(min(table_len, 256)):
        try:
            entry = ctx.query_gid_ex(port, i)
        except Exception:  # noqa: BLE001 - an empty slot raises ENODATA
            continue
        gid = str(ctx.query_gid(port, i))
        if gid.replace("0", "").replace(":", ""):
            out.append((i, gid, int(entry.gid_type)))
    return out


def _ipv4_of_gid(gid: str) -> str | None:
    try:
        addr = ipaddress.IPv6Address(gid)
    except ValueError:
        return None
    return str(addr.ipv4_mapped) if addr.ipv4_mapped is not None else None


def choose_gid(entries: list[tuple[int, str, int]], address: str | None = None) -> GidChoice:
    """RoCE v2 first; among those the IPv4-mapped GID of ``address`` when given, else any
    IPv4-mapped one (routable, unlike a link-local GID), else the first. Never index 0 by
    default: on RoCE that is the link-local GID and its type depends on the NIC."""
    if not entries:
        raise VerbsUnavailable(f"the port has no GID configured; {DEVICE_HINT}")
    v2 = [e for e in entries if e[2] == 2] or entries
    if address:
        for i, gid, t in v2:
            if _ipv4_of_gid(gid) == address or gid == address:
                return GidChoice(i, gid, _gid_type_name(t))
        raise VerbsUnavailable(
            f"no GID of the chosen port carries the address {address!r}; GIDs: "
            + ", ".join(g for _, g, _ in entries)
        )
    mapped = [e for e in v2 if _ipv4_of_gid(e[1])]
    i, gid, t = (mapped or v2)[0]
    return GidChoice(i, gid, _gid_type_name(t))


def probe() -> dict[str, Any]:
    """What verbs this process can see, for ``tw.info()``. Never raises."""
    try:
        pyverbs = import_pyverbs()
    except VerbsUnavailable as exc:
        return {"pyverbs": None, "devices": [], "problem": str(exc)}
    from pyverbs.device import Context, get_device_list

    result: dict[str, Any] = {"pyverbs": getattr(pyverbs, "__version__", "present"), "devices": []}
    try:
        devices = get_device_list()
    except Exception as exc:  # noqa: BLE001
        result["problem"] = f"listing verbs devices failed: {exc}"
        return result
    for dev in devices:
        name = _name(dev)
        entry: dict[str, Any] = {"name": name, "ports": []}
        try:
            with Context(name=name) as ctx:
                attr = ctx.query_device()
                for port in range(1, attr.phys_port_cnt + 1):
                    pa = ctx.query_port(port)
                    entry["ports"].append(
                        {
                            "port": port,
                            "active": pa.state == _IBV_PORT_ACTIVE,
                            "mtu": _MTU_BYTES.get(pa.active_mtu, pa.active_mtu),
                            "gids": [
                                f"{g} ({_gid_type_name(t)})"
                                for _, g, t in _gid_entries(ctx, port, pa.gid_tbl_len)
                            ],
                        }
                    )
        except Exception as exc:  # noqa: BLE001
            entry["problem"] = str(exc)
        result["devices"].append(entry)
    if not devices:
        result["problem"] = f"no verbs device; {DEVICE_HINT}"
    return result


class Device:
    """An opened verbs device: context, protection domain, port, GID, path MTU."""

    def __init__(self, ctx: Any, name: str, port: int, gid: GidChoice, mtu: int) -> None:
        from pyverbs.pd import PD

        self.ctx = ctx
        self.name = name
        self.port = port
        self.gid = gid
        self.mtu = mtu  # the ibv_mtu enum value
        self.pd = PD(ctx)
        attr = ctx.query_device()
        # How many RDMA READs may be outstanding per QP, both ways (rxe: 128, ConnectX: 16).
        self.max_rd_atomic = max(1, min(16, attr.max_qp_init_rd_atom, attr.max_qp_rd_atom))
        self.max_msg = int(ctx.query_port(port).max_msg_sz) or (1 << 30)

    def describe(self) -> str:
        return (
            f"{self.name} port {self.port}, GID {self.gid.index} {self.gid.gid} "
            f"({self.gid.gid_type}), path MTU {_MTU_BYTES.get(self.mtu, self.mtu)}"
        )

    def close(self) -> None:
        try:
            self.pd.close()
            self.ctx.close()
        except Exception:  # noqa: BLE001 - best effort at shutdown
            log.debug("closing %s failed", self.name, exc_info=True)


def open_device(extra: dict[str, Any]) -> Device:
    """The device named by ``extra["rdma_device"]`` or $TENSORWIRE_RDMA_DEVICE, else the
    first device with an active port. Port and GID likewise (``rdma_port``,
    ``rdma_gid_index``, ``rdma_address``). Raises ``VerbsUnavailable`` saying what is
    missing and how to fix it."""
    import_pyverbs()
    from pyverbs.device import Context, get_device_list

    wanted = extra.get("rdma_device") or os.environ.get(DEVICE_ENV) or None
    try:
        names = [_name(d) for d in get_device_list()]
    except Exception as exc:  # noqa: BLE001
        raise VerbsUnavailable(f"listing verbs devices failed ({exc}); {DEVICE_HINT}") from exc
    if not names:
        raise VerbsUnavailable(f"grpc+verbs found no verbs (RDMA) device; {DEVICE_HINT}")
    if wanted is not None and wanted not in names:
        source = "rdma_device" if extra.get("rdma_device") else DEVICE_ENV
        raise VerbsUnavailable(
            f"verbs device {wanted!r} (from {source}) does not exist; "
            f"devices here: {', '.join(names)}"
        )
    want_port = extra.get("rdma_port")
    problems = []
    for name in [wanted] if wanted else names:
        ctx = Context(name=name)
        ports = range(1, ctx.query_device().phys_port_cnt + 1)
        for port in [int(want_port)] if want_port else ports:
            pa = ctx.query_port(port)
            if pa.state != _IBV_PORT_ACTIVE:
                problems.append(f"{name} port {port} is not active (state {pa.state})")
                continue
            entries = _gid_entries(ctx, port, pa.gid_tbl_len)
            if extra.get("rdma_gid_index") is not None:
                index = int(extra["rdma_gid_index"])
                match = [e for e in entries if e[0] == index]
                if not match:
                    raise VerbsUnavailable(f"{name} port {port} has no GID at index {index}")
                gid = GidChoice(index, match[0][1], _gid_type_name(match[0][2]))
            else:
                gid = choose_gid(entries, extra.get("rdma_address"))
            device = Device(ctx, name, port, gid, pa.active_mtu)
            log.info("grpc+verbs uses %s", device.describe())
            return device
        ctx.close()
    raise VerbsUnavailable(
        "grpc+verbs found no active verbs port (" + "; ".join(problems) + f"); {DEVICE_HINT}"
    )


@dataclasses.dataclass(frozen=True)
class QPInfo:
    """What the other side needs to connect an RC queue pair to ours."""

    qpn: int
    psn: int
    gid: str
    mtu: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QPInfo:
        try:
            return cls(int(d["qpn"]), int(d["psn"]), str(d["gid"]), int(d["mtu"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.InvalidArgumentError(f"malformed queue-pair info {d!r}") from exc


class QueuePair:
    """One RC queue pair with its own completion queue.

    Work is serialised by a lock: a caller posts its READs and polls them to completion
    (or to its deadline) before the next caller goes. A failed work request leaves the QP
    in the error state; the QP is then ``broken`` and every later use raises at once, so the
    owner makes a new one.
    """

    DEPTH = 64

    def __init__(self, device: Device) -> None:
        import pyverbs.enums as e
        from pyverbs.cq import CQ
        from pyverbs.qp import QP, QPCap, QPInitAttr

        self.device = device
        self.cq = CQ(device.ctx, self.DEPTH * 2)
        cap = QPCap(max_send_wr=self.DEPTH, max_recv_wr=1, max_send_sge=1, max_recv_sge=1)
        self.qp = QP(device.pd, QPInitAttr(qp_type=e.IBV_QPT_RC, scq=self.cq, rcq=self.cq, cap=cap))
        self.psn = random.getrandbits(24)
        self.lock = threading.Lock()
        self.broken: str | None = None
        self._closing = threading.Event()
        self._next_wr = 1

    def info(self) -> QPInfo:
        return QPInfo(self.qp.qp_num, self.psn, self.device.gid.gid, self.device.mtu)

    def connect(self, remote: QPInfo) -> None:
        """INIT -> RTR -> RTS towards ``remote``. RoCE needs the GRH (``is_global``)."""
        import pyverbs.enums as e
        from pyverbs.addr import GID, AHAttr, GlobalRoute
        from pyverbs.qp import QPAttr

        dev = self.device
        attr = QPAttr(qp_state=e.IBV_QPS_INIT, port_num=dev.port)
        # A fresh QPAttr leaves access, rd_atomic, timeout and retries at 0: set them all.
        attr.qp_access_flags = (
            e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_READ | e.IBV_ACCESS_REMOTE_WRITE
        )
        attr.pkey_index = 0
        try:
            self.qp.to_init(attr)
            gr = GlobalRoute(dgid=GID(remote.gid), sgid_index=dev.gid.index)
            gr.hop_limit = 64
            attr.ah_attr = AHAttr(gr=gr, is_global=1, port_num=dev.port)
            attr.path_mtu = min(dev.mtu, remote.mtu)
            attr.dest_qp_num = remote.qpn
            attr.rq_psn = remote.psn
            attr.max_dest_rd_atomic = dev.max_rd_atomic
            attr.min_rnr_timer = 12
            self.qp.to_rtr(attr)
            attr.sq_psn = self.psn
            # 4.096 us * 2**14 ~ 67 ms per try, 7 tries: a vanished peer fails a READ in
            # about half a second instead of hanging it.
            attr.timeout = 14
            attr.retry_cnt = 7
            attr.rnr_retry = 7
            attr.max_rd_atomic = dev.max_rd_atomic
            self.qp.to_rts(attr)
        except Exception as exc:  # noqa: BLE001 - PyverbsRDMAError and friends
            raise errors.UnavailableError(
                f"connecting an RC queue pair on {dev.name} to {remote.gid} "
                f"(qpn {remote.qpn}) failed: {exc}"
            ) from exc

    def read(
        self, pieces: list[tuple[int, int, int, int, int]], deadline: float | None, what: str
    ) -> None:
        """RDMA READ each ``(local_addr, lkey, length, remote_addr, rkey)`` and wait for all.

        Up to ``max_rd_atomic`` READs are in flight at once (a pipeline); a frame larger
        than the port's largest message is split. Raises ``DataLossError`` when the peer's
        memory is not there any more (access error), ``UnavailableError`` when the peer does
        not answer (retries exhausted, QP flushed), ``DeadlineExceededError`` at the deadline.
        """
        import pyverbs.enums as e
        from pyverbs.wr import SGE, SendWR

        work: list[tuple[int, int, int, int, int]] = []
        step = min(self.device.max_msg, 1 << 30)
        for laddr, lkey, length, raddr, rkey in pieces:
            off = 0
            while off < length:
                n = min(step, length - off)
                work.append((laddr + off, lkey, n, raddr + off, rkey))
                off += n
        with self.lock:
            if self._closing.is_set():
                raise errors.UnavailableError(f"{what}: the RDMA connection is closed")
            if self.broken:
                raise errors.UnavailableError(f"RDMA queue pair is unusable: {self.broken}")
            window = self.device.max_rd_atomic
            posted = done = 0
            outstanding: set[int] = set()
            idle_since = time.monotonic()
            while done < len(work):
                while posted < len(work) and len(outstanding) < window:
                    laddr, lkey, n, raddr, rkey = work[posted]
                    wr_id = self._next_wr
                    self._next_wr += 1
                    wr = SendWR(
                        wr_id=wr_id,
                        opcode=e.IBV_WR_RDMA_READ,
                        num_sge=1,
                        sg=[SGE(laddr, n, lkey)],
                        send_flags=e.IBV_SEND_SIGNALED,
                    )
                    wr.set_wr_rdma(rkey, raddr)
                    try:
                        self.qp.post_send(wr)
                    except Exception as exc:  # noqa: BLE001
                        self._fail(f"posting an RDMA READ failed: {exc}", outstanding)
                        raise errors.UnavailableError(
                            f"{what}: posting an RDMA READ failed: {exc}"
                        ) from exc
                    outstanding.add(wr_id)
                    posted += 1
                npolled, wcs = self.cq.poll(num_entries=16)
                if npolled:
                    idle_since = time.monotonic()
                for wc in wcs[:npolled]:
                    outstanding.discard(wc.wr_id)
                    if wc.status != e.IBV_WC_SUCCESS:
                        reason = _wc_status(wc.status)
                        self._fail(f"RDMA READ completed with {reason}", outstanding)
                        if wc.status in (
                            e.IBV_WC_REM_ACCESS_ERR,
                            e.IBV_WC_REM_INV_REQ_ERR,
                            e.IBV_WC_LOC_PROT_ERR,
                        ):
                            raise errors.DataLossError(
                                f"{what}: RDMA READ failed with {reason}: the peer's buffer "
                                "is gone or was never registered"
                            )
                        raise errors.UnavailableError(
                            f"{what}: RDMA READ failed with {reason}: the peer is unreachable "
                            "or went away mid-transfer"
                        )
                    done += 1
                if npolled:
                    continue
                now = time.monotonic()
                if self._closing.is_set():
                    self._fail("the connection was closed", outstanding)
                    raise errors.UnavailableError(
                        f"{what}: the RDMA connection was closed during the transfer"
                    )
                if deadline is not None and now > deadline:
                    self._fail("a transfer passed its deadline", outstanding)
                    raise errors.DeadlineExceededError(
                        f"{what}: RDMA READ of {len(work)} piece(s) passed the deadline"
                    )
                # Spin briefly (a completion is usually microseconds away on a NIC), then
                # back off so a slow transfer does not burn a core holding the GIL.
                if now - idle_since > 0.0005:
                    time.sleep(0.0002 if now - idle_since < 0.05 else 0.002)

    def _fail(self, reason: str, outstanding: set[int]) -> None:
        """Mark the QP broken and flush it, so no READ still in flight can land in a buffer
        that is handed out again (buffers of a failed transfer are never reused)."""
        import pyverbs.enums as e
        from pyverbs.qp import QPAttr

        self.broken = reason
        try:
            self.qp.modify(QPAttr(qp_state=e.IBV_QPS_ERR), e.IBV_QP_STATE)
        except Exception:  # noqa: BLE001
            log.debug("moving a QP to the error state failed", exc_info=True)
        deadline = time.monotonic() + 2.0
        while outstanding and time.monotonic() < deadline:
            npolled, wcs = self.cq.poll(num_entries=16)
            for wc in wcs[:npolled]:
                outstanding.discard(wc.wr_id)
            if not npolled:
                time.sleep(0.001)
        log.warning("RDMA queue pair %s failed: %s", self.qp.qp_num, reason)

    def close(self) -> None:
        """Destroy the QP and CQ once no transfer uses them (a running one is told to stop;
        freeing a CQ under a poller would crash the process)."""
        self._closing.set()
        if not self.lock.acquire(timeout=10):
            log.warning("a transfer on QP %s did not stop; leaking it", self.qp.qp_num)
            return
        try:
            self.qp.close()
            self.cq.close()
        except Exception:  # noqa: BLE001
            log.debug("closing a QP failed", exc_info=True)
        finally:
            self.lock.release()


def _wc_status(status: int) -> str:
    try:
        from pyverbs.enums import ibv_wc_status

        return ibv_wc_status(status).name
    except Exception:  # noqa: BLE001
        return f"completion status {status}"
