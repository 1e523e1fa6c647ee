"""The grpc+verbs transport for tensorwire: gRPC for control and small frames, RDMA READ
over RC queue pairs (pyverbs) for large ones. See ``tensorwire_rdma.transport``."""

from tensorwire._version import distribution_version

__version__ = distribution_version("tensorwire-rdma")

__all__ = ["__version__"]
