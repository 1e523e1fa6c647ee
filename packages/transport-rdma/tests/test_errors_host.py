"""Honest failure where verbs cannot run: no pyverbs, or pyverbs without any device.

These run on any host. Each case runs in a fresh interpreter whose import system is set up
for the case (pyverbs blocked, or a stand-in for rdma-core's bindings on a machine with no
RDMA device), so the parent's registry and imports are untouched.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tensorwire import errors
from tensorwire.transport import TransportOptions, get_transport

BLOCK_PYVERBS = textwrap.dedent("""
    import sys
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name == "pyverbs" or name.startswith("pyverbs."):
                raise ImportError("No module named 'pyverbs' (blocked by the test)")
            return None
    sys.meta_path.insert(0, _Block())
""")

# What rdma-core's bindings look like on a machine with libibverbs and no RDMA device: the
# device list is empty. (A stand-in for the third-party library, not for our code.)
NO_DEVICE_PYVERBS = {
    "pyverbs/__init__.py": "__version__ = '44.0'\n",
    "pyverbs/device.py": textwrap.dedent("""
        def get_device_list():
            return []
        class Context:
            def __init__(self, name=None):
                raise RuntimeError(f"no such device {name}")
    """),
}


# What rdma-core's bindings look like on a machine with one active RoCE v2 port: enough of
# them to open the device and make queue pairs (a stand-in for the third-party library, not
# for our code; nothing here can move a byte, so a test using it must not need to).
ONE_DEVICE_PYVERBS = {
    "pyverbs/__init__.py": "__version__ = '44.0-stub'\n",
    "pyverbs/device.py": textwrap.dedent("""
        from types import SimpleNamespace as _NS
        class _Dev:
            name = b"stub0"
        def get_device_list():
            return [_Dev()]
        class Context:
            def __init__(self, name=None):
                if name != "stub0":
                    raise RuntimeError(f"no such device {name}")
            def query_device(self):
                return _NS(phys_port_cnt=1, max_qp_init_rd_atom=16, max_qp_rd_atom=16)
            def query_port(self, port):
                return _NS(state=4, gid_tbl_len=2, active_mtu=3, max_msg_sz=1 << 30)
            def query_gid_ex(self, port, index):
                if index != 1:
                    raise OSError("ENODATA")
                return _NS(gid_type=2)
            def query_gid(self, port, index):
                return "0000:0000:0000:0000:0000:ffff:7f00:0001"
            def close(self):
                pass
            def __enter__(self):
                return self
            def __exit__(self, *exc):
                self.close()
    """),
    "pyverbs/pd.py": "class PD:\n    def __init__(self, ctx): pass\n    def close(self): pass\n",
    "pyverbs/enums.py": "IBV_QPT_RC = 2\n",
    "pyverbs/cq.py": "class CQ:\n    def __init__(self, ctx, n): pass\n    def close(self): pass\n",
    "pyverbs/qp.py": textwrap.dedent("""
        class QPCap:
            def __init__(self, **kw): pass
        class QPInitAttr:
            def __init__(self, **kw): pass
        class QP:
            qp_num = 17
            def __init__(self, pd, attr): pass
            def close(self): pass
    """),
}
STUBS = {"no-device": NO_DEVICE_PYVERBS, "one-device": ONE_DEVICE_PYVERBS}


def run_case(body: str, tmp_path: Path, *, prelude: str = "", stub: bool | str = False) -> dict:
    code = (
        prelude
        + textwrap.dedent("""
        import json, logging, sys
        records = []
        class _Keep(logging.Handler):
            def emit(self, record):
                records.append(record.getMessage())
        logging.getLogger("tensorwire_rdma").addHandler(_Keep())
        logging.getLogger("tensorwire_rdma").setLevel(logging.INFO)
        from tensorwire import errors
        from tensorwire.transport import Service, TransportOptions, get_transport
        out = {}
    """)
        + textwrap.dedent(body)
        + "\nout['logs'] = records\nprint(json.dumps(out))\n"
    )
    env = None
    if stub:
        root = tmp_path / "stub"
        for rel, text in STUBS["no-device" if stub is True else str(stub)].items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        import os

        # The stub first; the rest of the path as this process has it (a worktree's
        # sources when PYTHONPATH names them).
        path = [str(root), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


ASK = """
    t = get_transport("grpc+verbs")
    for what, fn in [("serve", lambda: t.serve("127.0.0.1:0", [], TransportOptions(
                          extra={"rdma_control_protocol": "inproc"}))),
                     ("connect", lambda: t.connect("127.0.0.1:1", TransportOptions(
                          extra={"rdma_control_protocol": "inproc"})))]:
        try:
            fn()
            out[what] = "no error"
        except errors.OpError as exc:
            out[what] = [type(exc).__name__, str(exc)]
    out["status"] = t.status()["verbs"]
"""


def test_without_pyverbs_asking_for_grpc_verbs_says_install_pyverbs(tmp_path):
    out = run_case(ASK, tmp_path, prelude=BLOCK_PYVERBS)
    for what in ("serve", "connect"):
        name, message = out[what]
        assert name == "VerbsUnavailable"  # a FailedPreconditionError
        assert "needs pyverbs" in message
        assert "apt-get install python3-pyverbs" in message
    assert out["status"]["pyverbs"] is None
    assert "python3-pyverbs" in out["status"]["problem"]


def test_without_a_device_the_error_says_how_to_enable_soft_roce(tmp_path):
    out = run_case(ASK, tmp_path, stub=True)
    for what in ("serve", "connect"):
        name, message = out[what]
        assert name == "VerbsUnavailable"
        assert "no verbs (RDMA) device" in message
        assert "rdma link add rxe0 type rxe netdev" in message
    assert out["status"]["pyverbs"] == "44.0"
    assert out["status"]["devices"] == []


def test_verbs_unavailable_is_a_failed_precondition():
    from tensorwire_rdma.verbs import VerbsUnavailable

    assert issubclass(VerbsUnavailable, errors.FailedPreconditionError)


FALLBACK = """
    svc = Service("Test")
    svc.add("Echo", lambda frames, context: list(frames))
    opts = TransportOptions(extra={"rdma_control_protocol": "inproc", "rdma_fallback": True})
    t = get_transport("grpc+verbs")
    listener = t.serve("127.0.0.1:0", [svc], opts)
    listener.start()
    ch = t.connect(f"127.0.0.1:{listener.port}", opts)
    payload = bytes(range(256)) * 8192   # 2 MiB: above the threshold, yet over gRPC
    reply = ch.call("Test", "Echo", [b"h", payload], timeout=30)
    out["echo_ok"] = bytes(reply[0]) == b"h" and bytes(reply[1]) == payload
    out["rdma"] = ch.rdma
    out["stats"] = t.stats.snapshot()
    ch.close()
    listener.stop(0)
"""


@pytest.mark.parametrize("case", ["no-pyverbs", "no-device"])
def test_fallback_uses_plain_grpc_and_logs_it(tmp_path, case):
    out = run_case(
        FALLBACK,
        tmp_path,
        prelude=BLOCK_PYVERBS if case == "no-pyverbs" else "",
        stub=case == "no-device",
    )
    assert out["echo_ok"] is True
    assert out["rdma"] is False
    assert out["stats"]["rdma_bytes"] == 0
    assert out["stats"]["grpc_bytes"] >= 2 * 2 * 1024 * 1024
    assert any("falls back to plain gRPC" in line for line in out["logs"]), out["logs"]


def test_bad_threshold_is_rejected():
    with pytest.raises(errors.InvalidArgumentError, match="rdma_threshold"):
        get_transport("grpc+verbs").connect(
            "127.0.0.1:1", TransportOptions(extra={"rdma_threshold": -5})
        )


def test_info_reports_verbs_without_failing():
    import tensorwire as tw

    entry = tw.info()["protocols"]["grpc+verbs"]
    assert entry["distribution"] == "tensorwire-rdma"
    assert "verbs" in entry and "devices" in entry["verbs"]
    assert "error" not in entry


def test_plugin_import_does_not_import_pyverbs_or_grpc():
    code = (
        "import sys, tensorwire_rdma.plugin; "
        "print(any(m.split('.')[0] in ('pyverbs', 'grpc') for m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr


NO_CONNECT = """
    from tensorwire.observe import CallMeter
    svc = Service("Test")
    svc.add("Echo", lambda frames, context: list(frames))
    meter = CallMeter()
    t = get_transport("grpc+verbs")
    if CASE == "plain grpc":
        listener = get_transport("grpc").serve("127.0.0.1:0", [svc], TransportOptions())
    else:  # grpc+verbs whose device cannot be opened: it serves, and offers no verbs
        listener = t.serve("127.0.0.1:0", [svc], TransportOptions(
            call_meter=meter, extra={"rdma_device": "nosuch9", "rdma_fallback": True}))
    listener.start()
    ch = t.connect(f"127.0.0.1:{listener.port}", TransportOptions())  # has a device
    payload = bytes(range(256)) * 8192   # 2 MiB: above the threshold
    ok = True
    for _ in range(3):
        reply = ch.call("Test", "Echo", [b"h", payload], timeout=30)
        ok = ok and bytes(reply[0]) == b"h" and bytes(reply[1]) == payload
    out["echo_ok"] = ok
    out["rdma"] = ch.rdma
    out["stats"] = t.stats.snapshot()
    out["served"] = sorted({s.method for s in meter.snapshot()})
    out["connects"] = sum(s.calls for s in meter.snapshot() if s.method.endswith("/Connect"))
    ch.close()
    listener.stop(0)
"""


@pytest.mark.parametrize("server", ["plain grpc", "grpc+verbs without a device"])
def test_a_server_that_offers_no_verbs_is_never_asked_to_connect(tmp_path, server):
    # The channel has a device (the stand-in above): it would set up a queue pair if the
    # handshake chose verbs. The server offers none, so its large frames go over gRPC and
    # no Connect ever reaches the server (counted by the server's own call meter).
    out = run_case(f"    CASE = {server!r}\n" + NO_CONNECT, tmp_path, stub="one-device")
    if server != "plain grpc":
        assert out["connects"] == 0
        assert out["served"] == ["/Test/Echo"], out["served"]
    # (A plain grpc server counts no call to a method it does not serve: the log says
    # that the handshake, not a refused Connect, sent the channel to gRPC.)
    assert not any("Connect" in line for line in out["logs"]), out["logs"]
    assert any("offers no RDMA" in line for line in out["logs"]), out["logs"]
    assert out["echo_ok"] is True
    assert out["rdma"] is False
    assert out["stats"]["rdma_bytes"] == 0
    assert out["stats"]["grpc_bytes"] >= 3 * 2 * 2 * 1024 * 1024
