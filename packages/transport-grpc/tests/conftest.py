"""Fixtures of the grpc transport tests: the transport, and throwaway TLS certificates.

Certificates are made at test time with ``cryptography`` (the ``test`` extra of this
distribution) by ``tensorwire_testing.certificates``: a CA, a server certificate for
localhost/127.0.0.1 and the name ``tensorwire.test``, a client certificate from the same CA
and one from an unrelated CA.
"""

from __future__ import annotations

import pytest

# Register the conformance suite for assertion rewriting before anything imports it.
pytest.register_assert_rewrite("tensorwire_testing.conformance")


@pytest.fixture
def transport():
    """A fresh transport per test, so channel caches start empty; closed afterwards."""
    from tensorwire_grpc.transport import GrpcTransport

    transport = GrpcTransport()
    yield transport
    transport.close()


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip(
        "cryptography", reason="TLS tests need cryptography: pip install 'tensorwire-grpc[test]'"
    )
    from tensorwire_testing.certificates import make_test_certificates

    return make_test_certificates(tmp_path_factory.mktemp("certs"))
