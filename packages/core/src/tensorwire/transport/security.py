"""When a server may listen and a channel may send its token: the secure-by-default rules.

One policy for every server kind (task servers, data-service dispatchers and workers) and
every channel, whatever the transport:

* Loopback needs no configuration: only processes on this host can connect.
* A server bound beyond loopback must authenticate its callers, with mutual TLS or with a
  cluster token, or it refuses to start. A cluster token beyond loopback needs TLS as well,
  because the token travels with every call and plain gRPC would show it to anyone on the
  path (the bulk side channel never sends it: it proves it by HMAC, and it is off with TLS).
* A channel never sends its token in plaintext beyond loopback.
* ``insecure`` (``insecure=True``, ``--insecure`` or ``TENSORWIRE_INSECURE=1``) is the only
  way around these rules, and every server that uses it says so in the log.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os

from .. import errors
from .base import TransportOptions, split_address

__all__ = [
    "INSECURE_ENV",
    "LOOPBACK_HOSTS",
    "is_loopback",
    "insecure_from_env",
    "check_listen",
    "check_connect",
    "TOKEN_PROOF_BYTES",
    "token_proof",
    "proves_token",
]

log = logging.getLogger(__name__)

#: Set to 1 to let servers listen beyond loopback without authentication and channels send
#: a token in plaintext (an explicit, logged opt-out of ``check_listen``).
INSECURE_ENV = "TENSORWIRE_INSECURE"

#: Host names that always mean this host's loopback interface.
LOOPBACK_HOSTS = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})

_HOW = (
    "Give it a cluster token (TENSORWIRE_CLUSTER_TOKEN, the config's cluster_token, or "
    "--token) together with TLS (certificate_chain_file and private_key_file), or mutual "
    "TLS (also root_certificates_file with require_client_auth); or bind loopback only; or "
    "pass insecure=True / --insecure (TENSORWIRE_INSECURE=1) to accept anyone who can reach "
    "the port."
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an IP, brackets allowed) is this host's loopback."""
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # any other name may resolve anywhere


def insecure_from_env() -> bool:
    return os.environ.get(INSECURE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _serves_tls(options: TransportOptions) -> bool:
    return bool(options.tls_cert and options.tls_key)


def _mutual_tls(options: TransportOptions) -> bool:
    return _serves_tls(options) and bool(options.tls_client_ca)


def check_listen(what: str, host: str, options: TransportOptions) -> None:
    """Refuse a server configuration that would accept strangers beyond loopback.

    ``what`` names the server in messages (e.g. "tf.data service dispatcher"), ``host`` is
    the interface it binds. Raises ``FailedPreconditionError`` saying how to configure
    authentication; logs the warnings the configuration deserves otherwise.
    """
    if options.tls_root_ca and not options.tls_cert:
        log.warning(
            "%s: a root CA is configured but no certificate, so it serves plaintext; the CA "
            "only verifies the servers it calls (give certificate_chain_file and "
            "private_key_file to serve TLS)",
            what,
        )
    if _serves_tls(options) and not _mutual_tls(options) and options.token is None:
        log.warning(
            "%s: TLS authenticates only this server, and no cluster token is set: any client "
            "that trusts its certificate may call it (set a token, or require_client_auth)",
            what,
        )
    if is_loopback(host):
        return
    if options.insecure:
        log.warning(
            "%s listens on %s beyond loopback with insecure=True: %s",
            what,
            host,
            "no authentication is required"
            if options.token is None and not _mutual_tls(options)
            else "its cluster token crosses the network in plaintext",
        )
        return
    if options.token is None and not _mutual_tls(options):
        raise errors.FailedPreconditionError(
            f"{what} would listen on {host}, beyond loopback, without authentication: anyone "
            f"who could reach the port could make it run code. {_HOW}"
        )
    if options.token is not None and not _serves_tls(options):
        raise errors.FailedPreconditionError(
            f"{what} would listen on {host}, beyond loopback, with a cluster token but no "
            "TLS: every call carries the token, and plain gRPC would show it to anyone on "
            f"the network path. {_HOW}"
        )


def check_connect(address: str, options: TransportOptions) -> None:
    """Refuse to make a channel that would send the cluster token in plaintext beyond
    loopback (``FailedPreconditionError``, saying what to configure)."""
    if options.token is None or options.tls_enabled or options.insecure:
        return
    host, _ = split_address(address)
    if is_loopback(host):
        return
    raise errors.FailedPreconditionError(
        f"refusing to send the cluster token in plaintext to {address}: beyond loopback a "
        "token needs TLS (root_certificates_file, TENSORWIRE_TLS_ROOT_CA), or "
        f"{INSECURE_ENV}=1 to send it anyway"
    )


#: Length of a ``token_proof``.
TOKEN_PROOF_BYTES = 32


def token_proof(token: str | None, challenge: bytes) -> bytes:
    """What a peer answers to ``challenge`` to prove it holds the cluster token, without
    sending the token: HMAC-SHA256 keyed by the token (32 zero bytes when no token is set,
    so a server without a token takes any answer of the right length).

    Args:
      token: the cluster token, or None.
      challenge: the bytes to prove the token over: a fresh random nonce from the side that
        checks (plus, for a mutual proof, a label saying which side answers, so that one
        side's answer cannot be reflected back as the other's).

    Returns:
      ``TOKEN_PROOF_BYTES`` bytes.

    Examples:
        >>> from tensorwire.transport.security import token_proof, proves_token
        >>> proof = token_proof("s3cret", b"nonce")
        >>> proves_token("s3cret", b"nonce", proof), proves_token("other", b"nonce", proof)
        (True, False)
    """
    if token is None:
        return bytes(TOKEN_PROOF_BYTES)
    return hmac.new(token.encode(), challenge, hashlib.sha256).digest()


def proves_token(token: str | None, challenge: bytes, answer: bytes) -> bool:
    """Whether ``answer`` is ``token_proof(token, challenge)`` (compared in constant time).

    Args:
      token: the cluster token this side holds, or None (any answer of the right length).
      challenge: the bytes the peer was asked to prove the token over.
      answer: what the peer answered.

    Returns:
      True when the answer proves the token.

    Examples:
        >>> from tensorwire.transport.security import proves_token
        >>> proves_token(None, b"nonce", bytes(32))
        True
    """
    if token is None:
        return len(answer) == TOKEN_PROOF_BYTES
    return hmac.compare_digest(answer, token_proof(token, challenge))
