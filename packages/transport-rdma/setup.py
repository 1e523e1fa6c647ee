"""Build of tensorwire-rdma: its version and its pins on the other tensorwire distributions come
from the repository's one version number, ``VERSION`` (linked here; an sdist carries a copy).
Everything else is declared in pyproject.toml."""

import os

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "VERSION"), encoding="utf-8") as f:
    VERSION = f.read().strip()

setup(
    # pyverbs is not a dependency: it comes with rdma-core (Debian: python3-pyverbs), not from
    # PyPI, and is imported only when grpc+verbs is used.
    install_requires=[f"tensorwire=={VERSION}", f"tensorwire-grpc=={VERSION}"],
)
