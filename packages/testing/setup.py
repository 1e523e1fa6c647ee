"""Build of tensorwire-testing: its version and its pins on the other tensorwire distributions come
from the repository's one version number, ``VERSION`` (linked here; an sdist carries a copy).
Everything else is declared in pyproject.toml."""

import os

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "VERSION"), encoding="utf-8") as f:
    VERSION = f.read().strip()

setup(
    install_requires=[
        f"tensorwire=={VERSION}",
        # The default protocol of create_local_cluster and the pytest fixtures.
        f"tensorwire-grpc=={VERSION}",
        "portpicker>=1.5",
    ],
)
