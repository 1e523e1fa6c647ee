"""Throwaway TLS material for tests: a CA, a server certificate for localhost, a client one,
and a client certificate from an unrelated CA (a stranger mutual TLS must refuse).

Needs the ``cryptography`` package (a test requirement, not a dependency of tensorwire).
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["TestCertificates", "make_test_certificates", "tls_config"]

#: Names the server certificate is valid for, besides 127.0.0.1.
SERVER_NAMES = ("localhost", "tensorwire.test")


class TestCertificates(NamedTuple):
    """PEM file paths."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    stranger_cert: str
    stranger_key: str


def _write(directory: Path, stem: str, cert: Any, key: Any) -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization

    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def make_test_certificates(directory: Path | str) -> TestCertificates:
    """Write the certificates and keys into ``directory``; valid for one day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = Path(directory)
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def issue(common: str, issuer: Any = None, *, usages: Any = (), sans: Any = ()) -> Any:
        """(certificate, key); self-signed CA when ``issuer`` is None."""
        key = ec.generate_private_key(ec.SECP256R1())
        issuer_cert, issuer_key = issuer if issuer is not None else (None, key)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common))
            .issuer_name(issuer_cert.subject if issuer_cert is not None else name(common))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True
            )
        )
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        return builder.sign(issuer_key, hashes.SHA256()), key

    ca = issue("tensorwire test CA")
    # A task is a server and, through its own session, a client of the other tasks: its
    # certificate serves both purposes.
    server = issue(
        "localhost",
        ca,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        sans=[
            *(x509.DNSName(n) for n in SERVER_NAMES),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ],
    )
    client = issue("tensorwire client", ca, usages=[ExtendedKeyUsageOID.CLIENT_AUTH])
    stranger = issue("stranger", issue("another CA"), usages=[ExtendedKeyUsageOID.CLIENT_AUTH])
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    return TestCertificates(
        str(ca_path),
        *_write(directory, "server", *server),
        *_write(directory, "client", *client),
        *_write(directory, "stranger", *stranger),
    )


def tls_config(certs: TestCertificates, *, role: str = "server", mutual: bool = False) -> Any:
    """A ``ConfigProto`` using ``certs``: ``role="server"`` for servers, ``"client"`` for
    sessions (presenting the client certificate when ``mutual``)."""
    import tensorwire as tw

    config = tw.ConfigProto()
    tls = config.tensorwire.tls
    tls.root_certificates_file = certs.ca
    if role == "server":
        tls.certificate_chain_file = certs.server_cert
        tls.private_key_file = certs.server_key
        tls.require_client_auth = mutual
    elif mutual:
        tls.certificate_chain_file = certs.client_cert
        tls.private_key_file = certs.client_key
    return config
