"""The one target parser and its inverse."""

from __future__ import annotations

import pytest
from tensorwire import errors
from tensorwire.transport import split_address
from tensorwire.transport.kit.address import (
    bare_host,
    join_host_port,
    socket_peer_name,
    split_host_port,
)


@pytest.mark.parametrize(
    ("host", "port"), [("localhost", 2222), ("127.0.0.1", 0), ("::1", 80), ("fe80::1", 65535)]
)
def test_join_is_the_inverse_of_split(host: str, port: int) -> None:
    assert split_address(join_host_port(host, port)) == (host, port)


@pytest.mark.parametrize("bad", ["localhost", ":80", "host:x", "host:70000"])
def test_a_bad_target_says_what_is_wrong(bad: str) -> None:
    with pytest.raises(errors.InvalidArgumentError, match=repr(bad).replace("[", r"\[")):
        split_address(bad)


@pytest.mark.parametrize(
    ("address", "split"),
    [
        ("worker-7:%port%", ("worker-7", "%port%")),
        ("[::1]:%port%", ("::1", "%port%")),
        ("[::1]:80", ("::1", "80")),
        ("[::1]", ("::1", "")),
        ("localhost", ("localhost", "")),
        ("localhost:", ("localhost", "")),
    ],
)
def test_the_lexical_split_keeps_the_port_as_written(address: str, split: tuple[str, str]) -> None:
    assert split_host_port(address) == split


@pytest.mark.parametrize("bad", ["[::1]", "localhost:"])
def test_an_address_without_a_port_number_says_it_has_no_port(bad: str) -> None:
    with pytest.raises(errors.InvalidArgumentError, match="it has no port"):
        split_address(bad)


@pytest.mark.parametrize(("host", "bare"), [("[::1]", "::1"), ("::1", "::1"), ("a.b", "a.b")])
def test_a_bare_host_has_no_brackets(host: str, bare: str) -> None:
    assert bare_host(host) == bare


def test_socket_peers_are_named_as_grpc_names_them() -> None:
    assert socket_peer_name(("10.0.0.1", 5)) == "ipv4:10.0.0.1:5"
    assert socket_peer_name(("::1", 5, 0, 0)) == "ipv6:[::1]:5"
    assert socket_peer_name("/tmp/sock") == "/tmp/sock"
