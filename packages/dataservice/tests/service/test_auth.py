"""Authentication of the data service, and the secure-by-default rules of every server kind.

Every port of every server kind (task server, dispatcher, worker; their gRPC port and, on
grpc, their side-channel port) refuses a caller with no token, a wrong token, a replayed
side-channel proof, or a certificate its CA did not sign. Servers bound beyond loopback
without authentication refuse to start unless told ``insecure``.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import pytest
import tensorwire as tw
from tensorwire import errors
from tensorwire.transport import TransportOptions, get_transport, security
from tensorwire.transport.security import INSECURE_ENV
from tensorwire_dataservice.service import configure_client
from tensorwire_dataservice.service.config import BIND_HOST_ENV
from tensorwire_dataservice.service.protocol import pack

Dataset = tw.data.Dataset
service = tw.data.service
TOKEN = "s3cret-token"


@pytest.fixture(autouse=True)
def _clean_security(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in ("TENSORWIRE_CLUSTER_TOKEN", INSECURE_ENV, BIND_HOST_ENV):
        monkeypatch.delenv(name, raising=False)
    yield
    configure_client()  # back to the environment for the next test


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("cryptography", reason="cryptography makes the test certificates")
    from tensorwire_testing.certificates import make_test_certificates

    return make_test_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def grpc_only(protocol: str) -> None:
    if protocol != "grpc":
        pytest.skip(
            "uses the grpc transport (TLS, its side channel, real binds); runs in the grpc suite"
        )


def _servers(protocol: str, **security: Any) -> tuple[Any, Any]:
    dispatcher = service.DispatchServer(service.DispatcherConfig(protocol=protocol, **security))
    try:
        worker = service.WorkerServer(
            service.WorkerConfig(dispatcher._address, protocol=protocol, **security)
        )
    except BaseException:
        dispatcher.stop()
        raise
    return dispatcher, worker


def _read_all(dispatcher: Any, n: int = 20) -> list[int]:
    ds = Dataset.range(n).apply(service.distribute("parallel_epochs", dispatcher.target))
    return sorted(int(x) for x in ds)


def _all_methods(server: Any) -> list[tuple[str, str, bool]]:
    """(service, method, streaming) of every method a data-service server serves."""
    svc = server._core.service()
    return [(svc.name, name, m.streaming) for name, m in svc.methods.items()]


def _call_every_method(
    address: str,
    protocol: str,
    server: Any,
    options: TransportOptions,
    expected: type[errors.OpError],
) -> None:
    channel = get_transport(protocol).connect(address, options)
    try:
        for svc, method, streaming in _all_methods(server):
            request = pack({"dataset_id": "1", "worker_address": "x", "tasks": []})
            with pytest.raises(expected):
                if streaming:
                    list(channel.stream(svc, method, request, timeout=10))
                else:
                    channel.call(svc, method, request, timeout=10)
    finally:
        channel.close()


# -- the token -----------------------------------------------------------------------------
def test_a_token_protects_every_method_of_the_dispatcher_and_the_worker(protocol: str) -> None:
    dispatcher, worker = _servers(protocol, cluster_token=TOKEN)
    try:
        for server, address in (
            (dispatcher, dispatcher._address),
            (worker, worker._worker_address),
        ):
            _call_every_method(
                address, protocol, server, TransportOptions(), errors.UnauthenticatedError
            )
            _call_every_method(
                address,
                protocol,
                server,
                TransportOptions(token="wrong"),
                errors.PermissionDeniedError,
            )
        # A reader without the token is refused at once, with the reason.
        with pytest.raises(errors.UnauthenticatedError, match="token"):
            service.register_dataset(dispatcher.target, Dataset.range(3))
        configure_client(cluster_token="wrong")
        with pytest.raises(errors.PermissionDeniedError):
            service.register_dataset(dispatcher.target, Dataset.range(3))
        # With it, every element arrives.
        configure_client(cluster_token=TOKEN)
        assert _read_all(dispatcher) == list(range(20))
    finally:
        worker.stop()
        dispatcher.stop()


def test_a_token_protects_every_method_of_the_task_server(protocol):
    from tensorwire.runtime.worker_service import make_worker_service

    with _task_server_with(TOKEN, protocol=protocol) as server:
        svc = make_worker_service(server.state)
        channel = get_transport(protocol).connect(f"localhost:{server.port}", TransportOptions())
        wrong = get_transport(protocol).connect(
            f"localhost:{server.port}", TransportOptions(token="wrong")
        )
        try:
            for name, method in svc.methods.items():
                for ch, expected in (
                    (channel, errors.UnauthenticatedError),
                    (wrong, errors.PermissionDeniedError),
                ):
                    with pytest.raises(expected):
                        if method.streaming:
                            list(ch.stream(svc.name, name, [b"x"], timeout=10))
                        else:
                            ch.call(svc.name, name, [b"x"], timeout=10)
        finally:
            channel.close()
            wrong.close()


def test_the_token_comes_from_the_environment_too(protocol: str, monkeypatch):
    monkeypatch.setenv("TENSORWIRE_CLUSTER_TOKEN", TOKEN)
    dispatcher, worker = _servers(protocol)
    try:
        assert _read_all(dispatcher) == list(range(20))
        monkeypatch.delenv("TENSORWIRE_CLUSTER_TOKEN")
        with pytest.raises(errors.UnauthenticatedError):
            service.register_dataset(dispatcher.target, Dataset.range(3))
    finally:
        worker.stop()
        dispatcher.stop()


def test_a_worker_without_the_token_cannot_join(protocol: str) -> None:
    """A fake worker learns nothing: it cannot register, heartbeat or take splits."""
    dispatcher = service.DispatchServer(
        service.DispatcherConfig(protocol=protocol, cluster_token=TOKEN)
    )
    try:
        start = time.monotonic()
        with pytest.raises(errors.UnauthenticatedError):
            service.WorkerServer(service.WorkerConfig(dispatcher._address, protocol=protocol))
        assert time.monotonic() - start < 30  # refused, not retried until a timeout
        assert dispatcher._num_workers() == 0
    finally:
        dispatcher.stop()


def test_a_worker_refused_by_its_dispatcher_leaves_its_port_free(
    protocol: str, grpc_only: None
) -> None:
    """The constructor raised, so the caller holds no object to stop: the worker must have
    released its port itself (a bound listener left behind also keeps gRPC serving in the
    process, which a forked DataLoader worker then refuses to use)."""
    import portpicker

    port = portpicker.pick_unused_port()
    dispatcher = service.DispatchServer(
        service.DispatcherConfig(protocol=protocol, cluster_token=TOKEN)
    )
    try:
        with pytest.raises(errors.UnauthenticatedError):
            service.WorkerServer(
                service.WorkerConfig(dispatcher._address, port=port, protocol=protocol)
            )
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))  # EADDRINUSE if the refused worker still held it
        worker = service.WorkerServer(
            service.WorkerConfig(
                dispatcher._address, port=port, protocol=protocol, cluster_token=TOKEN
            )
        )
        worker.stop()
    finally:
        dispatcher.stop()


def test_dispatcher_calls_to_workers_carry_the_token(protocol: str) -> None:
    """Worker-to-dispatcher and dispatcher-to-worker calls (heartbeats, splits, nudges) all
    authenticate: a job over two workers, each fed splits, completes exactly."""
    dispatcher, worker = _servers(protocol, cluster_token=TOKEN)
    second = service.WorkerServer(
        service.WorkerConfig(dispatcher._address, protocol=protocol, cluster_token=TOKEN)
    )
    try:
        configure_client(cluster_token=TOKEN)
        ds = Dataset.range(200).apply(
            service.distribute("distributed_epoch", dispatcher.target, job_name="j")
        )
        assert Counter(int(x) for x in ds) == Counter(range(200))
    finally:
        second.stop()
        worker.stop()
        dispatcher.stop()


# -- the side channel: proofs, not tokens ------------------------------------------------------
def _side_port(server: Any) -> int:
    listener = server._listener
    assert listener.bulk is not None, "the side channel should be on for these options"
    return int(listener.bulk.port)


#: The verdict byte of a refused handshake: its status code (a message follows).
REFUSED = bytes([int(tw.errors.Code.UNAUTHENTICATED)])


def _handshake(port: int, answer: bytes | None) -> tuple[bytes, bytes]:
    """Connect to a side-channel port; returns (nonce, verdict byte). ``answer`` None
    answers with a correct proof of TOKEN for this connection's nonce."""
    from tensorwire_grpc import bulk
    from tensorwire_grpc.wire import Wire

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        wire = Wire(sock)  # it owns the socket from here (non-blocking, deadlines of its own)
        hello = wire.read(4 + bulk.protocol.NONCE_BYTES, time.monotonic() + 10)
        assert hello[:4] == bulk.protocol.MAGIC
        nonce = hello[4:]
        proof = security.token_proof(TOKEN, nonce) if answer is None else answer
        wire.send([bulk.protocol.MAGIC + proof], time.monotonic() + 10)
        return nonce, wire.read(1, time.monotonic() + 10)


def _task_server_with(token: str | None, **kw: Any) -> Any:
    config = tw.ConfigProto()
    if token:
        config.tensorwire.cluster_token = token
    return tw.Server({"ps": ["localhost:0"]}, config=config, **kw)


@pytest.mark.parametrize("kind", ["task server", "dispatcher", "worker"])
def test_side_channel_ports_refuse_no_proof_a_wrong_one_and_a_replayed_one(grpc_only, kind):
    from tensorwire_grpc import bulk

    made: list[Any] = []
    try:
        if kind == "task server":
            made.append(_task_server_with(TOKEN))
            port = _side_port(made[0])
        else:
            made.extend(_servers("grpc", cluster_token=TOKEN))
            port = _side_port(made[0] if kind == "dispatcher" else made[1])
        assert _handshake(port, bytes(bulk.protocol.MAC_BYTES))[1] == REFUSED
        assert (
            _handshake(port, security.token_proof("wrong", b"x" * bulk.protocol.NONCE_BYTES))[1]
            == REFUSED
        )
        # A proof seen on the wire is good for its own connection only: a new connection
        # gets a new nonce, and replaying the old answer is refused.
        nonce, verdict = _handshake(port, None)
        assert verdict == b"\x00"
        assert _handshake(port, security.token_proof(TOKEN, nonce))[1] == REFUSED
    finally:
        for server in reversed(made):
            server.stop()


# -- TLS and mutual TLS ----------------------------------------------------------------------
def _tls(certs: Any, *, cert: str, key: str, mutual: bool = True) -> dict[str, Any]:
    return {
        "certificate_chain_file": cert,
        "private_key_file": key,
        "root_certificates_file": certs.ca,
        "require_client_auth": mutual,
    }


def test_mutual_tls_data_service_refuses_a_strangers_certificate(grpc_only, certs):
    server_tls = _tls(certs, cert=certs.server_cert, key=certs.server_key)
    dispatcher, worker = _servers("grpc", tls=server_tls)
    try:
        assert dispatcher._listener.bulk is None  # plaintext side channel: off under TLS
        configure_client(tls=_tls(certs, cert=certs.client_cert, key=certs.client_key))
        assert _read_all(dispatcher) == list(range(20))
        stranger = TransportOptions(
            tls_root_ca=certs.ca, tls_cert=certs.stranger_cert, tls_key=certs.stranger_key
        )
        plaintext = TransportOptions()
        for server, address in (
            (dispatcher, dispatcher._address),
            (worker, worker._worker_address),
        ):
            for options in (stranger, plaintext):
                _call_every_method(address, "grpc", server, options, errors.UnavailableError)
    finally:
        worker.stop()
        dispatcher.stop()


def test_mutual_tls_task_server_refuses_a_strangers_certificate(grpc_only, certs):
    from tensorwire_testing.certificates import tls_config

    with tw.Server({"ps": ["localhost:0"]}, config=tls_config(certs, mutual=True)) as server:
        assert server._listener.bulk is None
        stranger = TransportOptions(
            tls_root_ca=certs.ca, tls_cert=certs.stranger_cert, tls_key=certs.stranger_key
        )
        channel = get_transport("grpc").connect(f"localhost:{server.port}", stranger)
        try:
            with pytest.raises(errors.UnavailableError):
                channel.call("tensorwire.WorkerService", "GetStatus", [b""], timeout=10)
        finally:
            channel.close()


# -- secure defaults -------------------------------------------------------------------------
def _make(kind: str, protocol: str, monkeypatch: pytest.MonkeyPatch, **security: Any) -> list[Any]:
    """A server of ``kind`` bound to every interface, with ``security`` settings."""
    if kind == "task server":
        insecure = security.pop("insecure", False)
        config = tw.ConfigProto()
        if security.get("cluster_token"):
            config.tensorwire.cluster_token = security["cluster_token"]
        for name, value in (security.get("tls") or {}).items():
            setattr(config.tensorwire.tls, name, value)
        return [
            tw.Server({"ps": ["0.0.0.0:0"]}, protocol=protocol, config=config, insecure=insecure)
        ]
    monkeypatch.setenv(BIND_HOST_ENV, "0.0.0.0")
    if kind == "dispatcher":
        return [service.DispatchServer(service.DispatcherConfig(protocol=protocol, **security))]
    # The worker's dispatcher stays on loopback (its own rules are tested as "dispatcher").
    monkeypatch.delenv(BIND_HOST_ENV)
    dispatcher = service.DispatchServer(service.DispatcherConfig(protocol=protocol, **security))
    monkeypatch.setenv(BIND_HOST_ENV, "0.0.0.0")
    try:
        return [
            service.WorkerServer(
                service.WorkerConfig(dispatcher._address, protocol=protocol, **security)
            ),
            dispatcher,
        ]
    except BaseException:
        dispatcher.stop()
        raise


KINDS = ["task server", "dispatcher", "worker"]


@pytest.mark.parametrize("kind", KINDS)
def test_beyond_loopback_without_authentication_refuses_to_start(grpc_only, kind, monkeypatch):
    with pytest.raises(errors.FailedPreconditionError, match="insecure") as info:
        _make(kind, "grpc", monkeypatch)
    assert "without authentication" in str(info.value)
    assert "--token" in str(info.value)  # says how to configure it


@pytest.mark.parametrize("kind", KINDS)
def test_beyond_loopback_a_token_needs_tls(grpc_only, kind, monkeypatch):
    with pytest.raises(errors.FailedPreconditionError, match="no TLS"):
        _make(kind, "grpc", monkeypatch, cluster_token=TOKEN)


@pytest.mark.parametrize("kind", KINDS)
def test_insecure_opt_out_starts_and_warns(grpc_only, kind, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="tensorwire.transport.security")
    for server in _make(kind, "grpc", monkeypatch, insecure=True):
        server.stop()
    assert any(
        "insecure=True" in r.getMessage() and "beyond loopback" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize("kind", KINDS)
def test_beyond_loopback_starts_with_mutual_tls_or_a_token_over_tls(
    grpc_only, kind, certs, monkeypatch
):
    mutual = _tls(certs, cert=certs.server_cert, key=certs.server_key)
    server_only = _tls(certs, cert=certs.server_cert, key=certs.server_key, mutual=False)
    for settings in ({"tls": mutual}, {"tls": server_only, "cluster_token": TOKEN}):
        for server in _make(kind, "grpc", monkeypatch, **settings):
            server.stop()


def test_insecure_from_the_environment(grpc_only, monkeypatch):
    monkeypatch.setenv(INSECURE_ENV, "1")
    for server in _make("dispatcher", "grpc", monkeypatch):
        server.stop()


def test_questionable_tls_settings_are_warned_about(grpc_only, certs, caplog):
    caplog.set_level(logging.WARNING, logger="tensorwire.transport.security")
    # A root CA without a certificate: the server would serve plaintext.
    service.DispatchServer(
        service.DispatcherConfig(tls={"root_certificates_file": certs.ca})
    ).stop()
    assert any("serves plaintext" in r.getMessage() for r in caplog.records)
    caplog.clear()
    # TLS that authenticates only the server, and no token: anyone may call.
    service.DispatchServer(
        service.DispatcherConfig(
            tls=_tls(certs, cert=certs.server_cert, key=certs.server_key, mutual=False)
        )
    ).stop()
    assert any("authenticates only this server" in r.getMessage() for r in caplog.records)


def test_a_channel_never_sends_its_token_in_plaintext_beyond_loopback(grpc_only, certs):
    transport = get_transport("grpc")
    with pytest.raises(errors.FailedPreconditionError, match="plaintext"):
        transport.connect("192.0.2.1:2222", TransportOptions(token=TOKEN))
    # Loopback, TLS, or the explicit opt-out are fine (channels connect lazily).
    for address, options in (
        ("127.0.0.1:2222", TransportOptions(token=TOKEN)),
        ("192.0.2.1:2222", TransportOptions(token=TOKEN, tls_root_ca=certs.ca)),
        ("192.0.2.1:2222", TransportOptions(token=TOKEN, insecure=True)),
        ("192.0.2.1:2222", TransportOptions()),
    ):
        transport.connect(address, options).close()


@pytest.mark.parametrize(
    "command",
    [
        ["dispatcher", "--host", "0.0.0.0"],
        ["worker", "--host", "0.0.0.0", "--dispatcher_address", "localhost:1"],
        ["server", "--cluster_spec", "ps=0.0.0.0:0", "--job_name", "ps", "--task_index", "0"],
        ["dispatcher", "--host", "0.0.0.0", "--token", TOKEN],
    ],
)
def test_cli_servers_refuse_to_listen_beyond_loopback_unauthenticated(command):
    done = subprocess.run(
        [sys.executable, "-m", "tensorwire", *command],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env_without_security(),
    )
    assert done.returncode == 2, done.stderr
    assert "beyond loopback" in done.stderr and "--insecure" in done.stderr
    assert "Traceback" not in done.stderr


def _env_without_security() -> dict[str, str]:
    import os

    drop = {"TENSORWIRE_CLUSTER_TOKEN", INSECURE_ENV, BIND_HOST_ENV}
    return {k: v for k, v in os.environ.items() if k not in drop}


# -- refusals carry reasons ------------------------------------------------------------------
def test_malformed_requests_are_invalid_argument_with_the_field(service_factory, protocol):
    """Requests missing fields, or with fields of the wrong type, are refused as
    INVALID_ARGUMENT naming the method and what was wrong, never UNKNOWN, for every method
    of the dispatcher and the worker."""
    dispatcher, (worker,) = service_factory(1)
    malformed = (
        {},
        {
            "task_id": "not a number",
            "job_id": [],
            "dataset_id": {},
            "tasks": 5,
            "worker_address": 3,
            "client_id": "x",
            "position": "y",
        },
    )
    refused: set[str] = set()
    for server, address in ((dispatcher, dispatcher._address), (worker, worker._worker_address)):
        channel = get_transport(protocol).connect(address, TransportOptions())
        try:
            for svc, method, streaming in _all_methods(server):
                for request in malformed:
                    try:
                        if streaming:
                            list(channel.stream(svc, method, pack(request), timeout=10))
                        else:
                            channel.call(svc, method, pack(request), timeout=10)
                    except errors.InvalidArgumentError as exc:
                        assert method in str(exc) or "must" in str(exc), exc
                        refused.add(method)
                    except (errors.NotFoundError, errors.FailedPreconditionError):
                        pass  # well-formed enough to be looked up, and not there
        finally:
            channel.close()
    # Everything that reads a field refused the malformed requests with the reason.
    assert refused >= {
        "GetElements",
        "TakeElements",
        "GetRoundElement",
        "GetSplits",
        "WorkerHeartbeat",
        "GetOrRegisterDataset",
        "GetOrCreateJob",
        "ClientHeartbeat",
    }, refused
