"""The transport conformance suite: checks any tensorwire transport runs against itself.

A transport author subclasses the base classes and provides a ``transport`` fixture::

    # test_my_transport.py
    import pytest
    from tensorwire_testing.conformance import BaseTransportTests

    class TestMyTransport(BaseTransportTests):
        @pytest.fixture
        def transport(self):
            return MyTransport()

Optional fixtures to override in the subclass: ``address`` (where listeners bind, default
``"127.0.0.1:0"``), ``server_options`` and ``channel_options`` (the ``TransportOptions`` of
each side, e.g. with TLS files). Pick single groups instead of the whole suite by
subclassing ``BaseEchoTests``, ``BaseLargeMessageTests``, ... one at a time
(``BaseLoadTests`` has hundreds of calls wait on one server at once), and
skip a check your transport cannot pass by overriding it with a ``pytest.mark.skip`` that
says why.

The checks live in the submodules of this package. Importing it registers them for
pytest's assertion rewriting (so failures show values), provided it is imported while pytest
collects, i.e. from a test module or conftest, before anything imports the submodules.
"""

from __future__ import annotations

import pytest

# Must run before the submodules are imported, or pytest cannot rewrite their asserts.
pytest.register_assert_rewrite(
    "tensorwire_testing.conformance.base",
    "tensorwire_testing.conformance.echo",
    "tensorwire_testing.conformance.large",
    "tensorwire_testing.conformance.failures",
    "tensorwire_testing.conformance.streaming",
    "tensorwire_testing.conformance.concurrency",
    "tensorwire_testing.conformance.auth",
    "tensorwire_testing.conformance.listener",
    "tensorwire_testing.conformance.load",
)

from .auth import BaseAuthTests  # noqa: E402
from .base import BaseConformanceTests, within  # noqa: E402
from .concurrency import BaseConcurrencyTests  # noqa: E402
from .echo import BaseEchoTests  # noqa: E402
from .failures import ERROR_CLASSES, BaseErrorTests  # noqa: E402
from .large import BaseLargeMessageTests  # noqa: E402
from .listener import BaseListenerTests  # noqa: E402
from .load import BaseLoadTests  # noqa: E402
from .service import SERVICE, ConformanceState, make_service, payload  # noqa: E402
from .streaming import BaseStreamTests  # noqa: E402

__all__ = [
    "BaseTransportTests",
    "BaseConformanceTests",
    "BaseEchoTests",
    "BaseLargeMessageTests",
    "BaseErrorTests",
    "BaseStreamTests",
    "BaseConcurrencyTests",
    "BaseAuthTests",
    "BaseListenerTests",
    "BaseLoadTests",
    "ERROR_CLASSES",
    "SERVICE",
    "ConformanceState",
    "make_service",
    "payload",
    "within",
]


class BaseTransportTests(
    BaseEchoTests,
    BaseLargeMessageTests,
    BaseErrorTests,
    BaseStreamTests,
    BaseConcurrencyTests,
    BaseAuthTests,
    BaseListenerTests,
    BaseLoadTests,
):
    """Every conformance check. Subclass it and provide a ``transport`` fixture."""
