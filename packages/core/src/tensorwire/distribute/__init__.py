"""``tw.distribute``: TensorFlow's ``tf.distribute`` spellings of what tensorwire implements.

``tw.distribute.Server`` is ``tw.Server``, and ``tw.distribute.cluster_resolver`` holds the
resolvers tensorwire has. Strategies (``MultiWorkerMirroredStrategy``,
``ParameterServerStrategy``) and the rest of ``tf.distribute`` are not implemented, so not
here either.
"""

from __future__ import annotations

from ..runtime import Server
from . import cluster_resolver

__all__ = ["Server", "cluster_resolver"]
