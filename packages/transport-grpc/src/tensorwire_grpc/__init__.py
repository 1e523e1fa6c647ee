"""The grpc transport for tensorwire."""

from tensorwire._version import distribution_version

__version__ = distribution_version("tensorwire-grpc")

__all__ = ["__version__"]
