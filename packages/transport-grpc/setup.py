"""Build of tensorwire-grpc: its version and its pins on the other tensorwire distributions come
from the repository's one version number, ``VERSION`` (linked here; an sdist carries a copy).
Everything else is declared in pyproject.toml."""

import os

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "VERSION"), encoding="utf-8") as f:
    VERSION = f.read().strip()

setup(
    # 1.63: Server.add_registered_method_handlers and _registered_method calls (older versions
    # fall back to generic handlers, but are not tested).
    install_requires=[f"tensorwire=={VERSION}", "grpcio>=1.63", "numpy>=1.26"],
    extras_require={
        # What packages/transport-grpc/tests needs beyond pytest: throwaway TLS certificates
        # and the transport conformance suite.
        "test": ["pytest>=7", "cryptography>=41", f"tensorwire-testing=={VERSION}"],
    },
)
