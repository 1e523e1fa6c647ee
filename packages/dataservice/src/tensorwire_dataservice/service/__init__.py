"""``tw.data.service``: the tf.data service (TensorFlow's ``tf.data.experimental.service``).

>>> dispatcher = DispatchServer()                                            # doctest: +SKIP
>>> worker = WorkerServer(WorkerConfig(dispatcher.target.split("://")[1]))   # doctest: +SKIP
>>> ds = tw.data.Dataset.range(10).apply(
...     distribute("parallel_epochs", dispatcher.target))                    # doctest: +SKIP

``to_torch(ds)`` / ``TorchDataset(ds)`` make it a PyTorch ``IterableDataset`` whose
DataLoader workers share one job per epoch (``torch_dataset``); they import torch, on
first use only.
"""

from __future__ import annotations

import importlib
from typing import Any

from .client import DataServiceDataset, distribute, from_dataset_id, register_dataset
from .config import DispatcherConfig, WorkerConfig, configure_client
from .dispatcher import DispatchServer
from .pipeline import register_pipeline, registered_pipeline
from .protocol import COMPRESSION_AUTO, COMPRESSION_NONE, COMPRESSION_SNAPPY, ShardingPolicy
from .trainer_cache import CrossTrainerCache
from .worker import WorkerServer

__all__ = [
    "DispatchServer",
    "WorkerServer",
    "DispatcherConfig",
    "WorkerConfig",
    "distribute",
    "register_dataset",
    "from_dataset_id",
    "ShardingPolicy",
    "COMPRESSION_AUTO",
    "COMPRESSION_NONE",
    "COMPRESSION_SNAPPY",
    "DataServiceDataset",
    "configure_client",
    "register_pipeline",
    "registered_pipeline",
    "CrossTrainerCache",
]

#: Public names that need torch, imported when first asked for (left out of ``__all__`` so
#: that ``import *`` does not import torch).
_TORCH_NAMES = ("TorchDataset", "to_torch")


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        try:
            module = importlib.import_module(".torch_dataset", __name__)
        except ImportError as exc:
            if exc.name != "torch" and not (exc.name or "").startswith("torch."):
                raise
            raise ImportError(
                f"tw.data.service.{name} needs PyTorch: pip install 'tensorwire-dataservice[torch]'"
            ) from exc
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_TORCH_NAMES))
