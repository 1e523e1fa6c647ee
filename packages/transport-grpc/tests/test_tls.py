"""TLS and mutual TLS from TransportOptions, with certificates made at test time."""

from __future__ import annotations

import pytest
from tensorwire import errors
from tensorwire.transport import Service, TransportOptions
from tensorwire_testing.conformance import (
    BaseAuthTests,
    BaseEchoTests,
    BaseLargeMessageTests,
    BaseStreamTests,
)

echo = Service("tls.Echo")
echo.unary("Echo")(lambda frames, context: frames)


def _serve(transport, options: TransportOptions):
    listener = transport.serve("127.0.0.1:0", [echo], options)
    listener.start()
    return listener


def _server_tls(certs, *, mutual: bool = False, **more) -> TransportOptions:
    return TransportOptions(
        tls_cert=certs.server_cert,
        tls_key=certs.server_key,
        tls_client_ca=certs.ca if mutual else None,
        **more,
    )


def test_tls_call_succeeds(transport, certs) -> None:
    listener = _serve(transport, _server_tls(certs))
    try:
        channel = transport.connect(listener.address, TransportOptions(tls_root_ca=certs.ca))
        assert bytes(channel.call("tls.Echo", "Echo", [b"secret"], timeout=10)[0]) == b"secret"
    finally:
        listener.stop(0)


def test_plaintext_client_cannot_talk_to_a_tls_server(transport, certs) -> None:
    listener = _serve(transport, _server_tls(certs))
    try:
        channel = transport.connect(listener.address, TransportOptions())
        with pytest.raises(errors.UnavailableError):
            channel.call("tls.Echo", "Echo", [b"x"], timeout=10)
    finally:
        listener.stop(0)


def test_client_rejects_a_server_its_ca_did_not_sign(transport, certs) -> None:
    listener = _serve(
        transport, TransportOptions(tls_cert=certs.stranger_cert, tls_key=certs.stranger_key)
    )
    try:
        channel = transport.connect(listener.address, TransportOptions(tls_root_ca=certs.ca))
        with pytest.raises(errors.UnavailableError):
            channel.call("tls.Echo", "Echo", [b"x"], timeout=10)
    finally:
        listener.stop(0)


def test_tls_server_name_override(transport, certs) -> None:
    listener = _serve(transport, _server_tls(certs))
    try:
        options = TransportOptions(tls_root_ca=certs.ca, tls_server_name="tensorwire.test")
        channel = transport.connect(listener.address, options)
        assert bytes(channel.call("tls.Echo", "Echo", [b"n"], timeout=10)[0]) == b"n"
        wrong = TransportOptions(tls_root_ca=certs.ca, tls_server_name="not-in-the-cert.test")
        with pytest.raises(errors.UnavailableError):
            transport.connect(listener.address, wrong).call("tls.Echo", "Echo", [], timeout=10)
    finally:
        listener.stop(0)


def test_mutual_tls_accepts_a_client_certificate(transport, certs) -> None:
    listener = _serve(transport, _server_tls(certs, mutual=True))
    try:
        options = TransportOptions(
            tls_root_ca=certs.ca, tls_cert=certs.client_cert, tls_key=certs.client_key
        )
        channel = transport.connect(listener.address, options)
        assert bytes(channel.call("tls.Echo", "Echo", [b"m"], timeout=10)[0]) == b"m"
    finally:
        listener.stop(0)


def test_mutual_tls_rejects_a_client_without_a_certificate(transport, certs) -> None:
    listener = _serve(transport, _server_tls(certs, mutual=True))
    try:
        channel = transport.connect(listener.address, TransportOptions(tls_root_ca=certs.ca))
        with pytest.raises(errors.UnavailableError):
            channel.call("tls.Echo", "Echo", [b"x"], timeout=10)
    finally:
        listener.stop(0)


def test_mutual_tls_rejects_a_certificate_from_another_ca(transport, certs) -> None:
    listener = _serve(transport, _server_tls(certs, mutual=True))
    try:
        options = TransportOptions(
            tls_root_ca=certs.ca, tls_cert=certs.stranger_cert, tls_key=certs.stranger_key
        )
        with pytest.raises(errors.UnavailableError):
            transport.connect(listener.address, options).call("tls.Echo", "Echo", [], timeout=10)
    finally:
        listener.stop(0)


def test_mutual_tls_and_a_wrong_token_is_permission_denied(transport, certs) -> None:
    listener = _serve(transport, _server_tls(certs, mutual=True, token="t0ken"))
    try:
        base = dict(tls_root_ca=certs.ca, tls_cert=certs.client_cert, tls_key=certs.client_key)
        wrong = transport.connect(listener.address, TransportOptions(token="nope", **base))
        with pytest.raises(errors.PermissionDeniedError):
            wrong.call("tls.Echo", "Echo", [], timeout=10)
        missing = transport.connect(listener.address, TransportOptions(**base))
        with pytest.raises(errors.UnauthenticatedError):
            missing.call("tls.Echo", "Echo", [], timeout=10)
        right = transport.connect(listener.address, TransportOptions(token="t0ken", **base))
        assert bytes(right.call("tls.Echo", "Echo", [b"ok"], timeout=10)[0]) == b"ok"
    finally:
        listener.stop(0)


def test_server_with_a_cert_but_no_key_is_invalid(transport, certs) -> None:
    with pytest.raises(errors.InvalidArgumentError, match="tls_key"):
        transport.serve("127.0.0.1:0", [echo], TransportOptions(tls_cert=certs.server_cert))


def test_missing_certificate_file_names_the_file(transport, tmp_path) -> None:
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(errors.InvalidArgumentError, match="nope.pem"):
        transport.serve("127.0.0.1:0", [echo], TransportOptions(tls_cert=missing, tls_key=missing))
    with pytest.raises(errors.InvalidArgumentError, match="nope.pem"):
        transport.connect("127.0.0.1:1", TransportOptions(tls_root_ca=missing))


class TestMutualTLSConformance(BaseEchoTests, BaseStreamTests, BaseAuthTests):
    """Unary, streaming and token checks of the conformance suite, over mutual TLS."""

    @pytest.fixture
    def server_options(self, certs) -> TransportOptions:
        return _server_tls(certs, mutual=True)

    @pytest.fixture
    def channel_options(self, certs) -> TransportOptions:
        return TransportOptions(
            tls_root_ca=certs.ca, tls_cert=certs.client_cert, tls_key=certs.client_key
        )


class TestTLSLargeMessages(BaseLargeMessageTests):
    """Chunked messages over TLS (the 120 MB case is left to the plaintext suite)."""

    max_test_message_bytes = 24_000_000

    @pytest.fixture
    def server_options(self, certs) -> TransportOptions:
        return _server_tls(certs)

    @pytest.fixture
    def channel_options(self, certs) -> TransportOptions:
        return TransportOptions(tls_root_ca=certs.ca)
