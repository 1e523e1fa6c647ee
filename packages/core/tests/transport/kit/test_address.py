"""The one target parser and its inverse."""

from __future__ import annotations

import pytest
from tensorwire import errors
from tensorwire.transport import split_address
from tensorwire.transport.kit.address import join_host_port, socket_peer_name


@pytest.mark.parametrize(
    ("host", "port"), [("localhost", 2222), ("127.0.0.1", 0), ("::1", 80), ("fe80::1", 65535)]
)
def test_join_is_the_inverse_of_split(host: str, port: int) -> None:
    assert split_address(join_host_port(host, port)) == (host, port)


@pytest.mark.parametrize("bad", ["localhost", ":80", "host:x", "host:70000"])
def test_a_bad_target_says_what_is_wrong(bad: str) -> None:
    with pytest.raises(errors.InvalidArgumentError, match=repr(bad).replace("[", r"\[")):
        split_address(bad)


def test_socket_peers_are_named_as_grpc_names_them() -> None:
    assert socket_peer_name(("10.0.0.1", 5)) == "ipv4:10.0.0.1:5"
    assert socket_peer_name(("::1", 5, 0, 0)) == "ipv6:[::1]:5"
    assert socket_peer_name("/tmp/sock") == "/tmp/sock"
