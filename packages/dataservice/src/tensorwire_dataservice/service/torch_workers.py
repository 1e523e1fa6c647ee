"""Which PyTorch DataLoader worker this process is, found without importing torch.

A DataLoader worker has imported ``torch.utils.data`` before it iterates a dataset, so
looking in ``sys.modules`` is enough: ``import tensorwire`` never imports torch.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["dataloader_worker", "warn_if_every_worker_reads_everything"]

log = logging.getLogger(__name__)

_warned = False


def dataloader_worker() -> Any | None:
    """``torch.utils.data.get_worker_info()`` in a DataLoader worker process, else None."""
    data = sys.modules.get("torch.utils.data")
    if data is None:
        return None
    return data.get_worker_info()


def warn_if_every_worker_reads_everything(dataset: Any) -> None:
    """Warn (once per process) when DataLoader workers would each read the whole dataset.

    Called when a data-service dataset without a ``job_name`` starts an iteration: each
    DataLoader worker then creates its own anonymous job and the DataLoader yields every
    element once per worker.
    """
    global _warned
    info = dataloader_worker()
    if _warned or info is None or info.num_workers < 2:
        return
    _warned = True
    log.warning(
        "DataLoader worker %d of %d is iterating the tf.data service dataset %s on its "
        "own: without a job_name every DataLoader worker reads the whole dataset, so each "
        "element arrives %d times per epoch. Wrap the dataset with "
        "tw.data.service.to_torch(dataset) (a torch IterableDataset whose workers share "
        "one job per epoch), or iterate it with num_workers=0.",
        info.id,
        info.num_workers,
        getattr(dataset, "dataset_id", "?"),
        info.num_workers,
    )
