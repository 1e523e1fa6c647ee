"""``tw.data.experimental``: TensorFlow's spelling of the data service's home.

TensorFlow users write ``tf.data.experimental.service``, as an attribute or as a module
(``import tensorflow.data.experimental.service``); both name ``service`` here.
``distributed_save`` writes a snapshot through the service (``Dataset.load`` reads it).
"""

import sys

from .. import service
from ..service.snapshot_client import distributed_save

# There is no file experimental/service.py: the module is registered under this second
# name so ``import tensorwire.data.experimental.service`` finds the one service module
# instead of failing (or loading a second copy with its own state).
sys.modules[f"{__name__}.service"] = service

__all__ = ["distributed_save", "service"]
