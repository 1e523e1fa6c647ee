"""``tw.distribute.cluster_resolver``: TensorFlow's spelling of the resolvers tensorwire has
(the objects of ``tensorwire.cluster``). TensorFlow's others (``ClusterResolver``,
``SimpleClusterResolver``, ``UnionResolver``, GCE, Kubernetes, TPU) are not implemented."""

from __future__ import annotations

from ..cluster import SlurmClusterResolver, TFConfigClusterResolver

__all__ = ["SlurmClusterResolver", "TFConfigClusterResolver"]
