"""Build of tensorwire-dataservice: its version and its pins on the other tensorwire
distributions come from the repository's one version number, ``VERSION`` (linked here; an
sdist carries a copy). Everything else is declared in pyproject.toml."""

import os

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "VERSION"), encoding="utf-8") as f:
    VERSION = f.read().strip()

setup(
    install_requires=[
        f"tensorwire=={VERSION}",
        # The default protocol of the dispatcher, the workers and their clients.
        f"tensorwire-grpc=={VERSION}",
        "numpy>=1.24",
        "cloudpickle>=2.2",
        "zstandard>=0.22",
        "cramjam>=2.8",  # snappy for compression="SNAPPY"; maintained, wheels for every platform
        "google-crc32c>=1.5",  # TFRecord CRC-32C at C speed
    ],
    extras_require={
        # The framework examples (examples/dataservice_torch.py, examples/dataservice_jax.py)
        # and their tests; CI installs the CPU builds.
        "torch": ["torch>=2.0"],
        "jax": ["jax>=0.4"],
    },
)
