"""``tw.data``: a NumPy Dataset pipeline and the tf.data service.

``tw.data.Dataset`` and the pipeline's other public names come from
``tensorwire_dataservice.dataset``; ``tw.data.service`` is the tf.data service
(``DispatchServer``, ``WorkerServer``, ``distribute``, ...). Both are imported on first use,
so ``import tensorwire_dataservice`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from tensorwire._version import distribution_version

__version__ = distribution_version("tensorwire-dataservice")

__all__ = ["__version__", "service", "experimental", "Dataset"]


def _pipeline_names() -> list[str]:
    module = importlib.import_module(".dataset", __name__)
    return list(getattr(module, "__all__", []))


def __getattr__(name: str) -> Any:
    if name == "service":
        value = importlib.import_module(".service", __name__)
    elif name == "experimental":
        # TensorFlow spells it tf.data.experimental.service; offer the same path.
        value = importlib.import_module(".experimental", __name__)
    else:
        module = importlib.import_module(".dataset", __name__)
        if not hasattr(module, name) or name.startswith("_"):
            raise AttributeError(f"module 'tensorwire_dataservice' has no attribute {name!r}")
        value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    try:
        names = _pipeline_names()
    except ImportError:
        names = []
    return sorted(set(globals()) | set(__all__) | set(names))
