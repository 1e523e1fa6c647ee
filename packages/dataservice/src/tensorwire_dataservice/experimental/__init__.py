"""``tw.data.experimental``: TensorFlow's spelling of the data service's home.

TensorFlow users write ``tf.data.experimental.service``, as an attribute or as a module
(``import tensorflow.data.experimental.service``); both name ``service`` here.
"""

import sys

from .. import service

# There is no file experimental/service.py: the module is registered under this second
# name so ``import tensorwire.data.experimental.service`` finds the one service module
# instead of failing (or loading a second copy with its own state).
sys.modules[f"{__name__}.service"] = service

__all__ = ["service"]
