"""The grpc transport for tensorwire."""

# First, before any module of this package imports grpc: gRPC's C core reads its log settings
# when grpc is imported, and ours default to silence (see .core_logging).
from .core_logging import apply_default as _quiet_grpc_core

_quiet_grpc_core()

from tensorwire._version import distribution_version  # noqa: E402 - after the log default

__version__ = distribution_version("tensorwire-grpc")

__all__ = ["__version__"]
