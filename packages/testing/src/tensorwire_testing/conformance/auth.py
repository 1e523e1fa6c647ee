"""The cluster token: checked on every kind of call, before the handler runs."""

from __future__ import annotations

import pytest
from tensorwire import errors

from .base import SERVICE, BaseConformanceTests
from .service import payload

TOKEN = "conformance-s3cret"
MiB = 1 << 20


class BaseAuthTests(BaseConformanceTests):
    """Conformance checks of the cluster token: the right one is accepted, a wrong one is
    ``PermissionDeniedError``, a missing one ``UnauthenticatedError``, on calls and streams.

    Subclass it with a ``transport`` fixture to run only this group.

    Examples:
        >>> class TestMine(BaseAuthTests):                  # doctest: +SKIP
        ...     @pytest.fixture
        ...     def transport(self):
        ...         return MyTransport()
    """

    def test_right_token_is_accepted(self, serve, connect) -> None:
        channel = connect(serve(token=TOKEN).address, token=TOKEN)
        assert bytes(channel.call(SERVICE, "Echo", [b"in"], timeout=30)[0]) == b"in"
        assert len(list(channel.stream(SERVICE, "Count", [b"2"], timeout=30))) == 2

    def test_wrong_token_is_permission_denied(self, serve, connect) -> None:
        channel = connect(serve(token=TOKEN).address, token="wrong")
        with pytest.raises(errors.PermissionDeniedError):
            channel.call(SERVICE, "Echo", [b"x"], timeout=30)

    def test_missing_token_is_unauthenticated(self, serve, connect) -> None:
        channel = connect(serve(token=TOKEN).address, token=None)
        with pytest.raises(errors.UnauthenticatedError):
            channel.call(SERVICE, "Echo", [b"x"], timeout=30)

    def test_token_checked_on_streams(self, serve, connect) -> None:
        channel = connect(serve(token=TOKEN).address, token="wrong")
        with pytest.raises(errors.PermissionDeniedError):
            list(channel.stream(SERVICE, "Count", [b"2"], timeout=30))

    def test_token_checked_on_large_requests(self, serve, connect) -> None:
        channel = connect(serve(token=TOKEN).address, token=None)
        with pytest.raises(errors.UnauthenticatedError):
            channel.call(SERVICE, "Digest", [payload(5 * MiB)], timeout=30)

    def test_token_checked_on_call_async(self, serve, connect) -> None:
        channel = connect(serve(token=TOKEN).address, token="wrong")
        with pytest.raises(errors.PermissionDeniedError):
            channel.call_async(SERVICE, "Echo", [b"x"], timeout=30).result(timeout=30)

    def test_server_without_token_accepts_any(self, serve, connect) -> None:
        channel = connect(serve(token=None).address, token="whatever")
        assert channel.call(SERVICE, "Echo", [b"x"], timeout=30)
