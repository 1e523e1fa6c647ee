"""``tw.train``: TensorFlow's ``tf.train`` spellings of what tensorwire implements.

A TensorFlow program ports by changing its import: each name here is the very object of the
same name on ``tw`` (``tw.train.Server is tw.Server``). Only names tensorwire implements are
here; the rest of ``tf.train`` (``Example``, ``Checkpoint``, ``Coordinator``, ...) is not.
"""

from __future__ import annotations

from .cluster import ClusterSpec
from .protos import ClusterDef, JobDef, ServerDef
from .runtime import Server

__all__ = ["ClusterDef", "ClusterSpec", "JobDef", "Server", "ServerDef"]
