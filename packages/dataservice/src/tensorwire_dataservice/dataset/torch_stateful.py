"""A local ``tw.data.Dataset`` for PyTorch's ``torchdata.stateful_dataloader.StatefulDataLoader``.

>>> loader = StatefulDataLoader(TorchIterableDataset(pipeline), batch_size=None)  # doctest: +SKIP
>>> state = loader.state_dict()          # includes each iterator's state_dict()
>>> loader2 = StatefulDataLoader(TorchIterableDataset(pipeline), batch_size=None)
>>> loader2.load_state_dict(state)       # resumes after the last element delivered

StatefulDataLoader checkpoints an ``IterableDataset`` whose iterator has ``state_dict()``
and ``load_state_dict(state)`` (its ``Stateful`` protocol): it calls ``iter(dataset)``,
then ``load_state_dict`` on that fresh iterator before the first ``next()``, which is the
contract of ``base.DatasetIterator``. So the adapter only hands out the pipeline's
own iterator. The DataLoader converts the NumPy elements to tensors (``batch_size=None``
when the pipeline batches already).

With ``num_workers > 1`` each DataLoader worker reads ``dataset.shard(num_workers, id)``
(``shard_by_worker=False`` reads the whole dataset in every worker). A checkpoint then
holds one state per worker and must be restored with the same ``num_workers``.
StatefulDataLoader takes a worker's ``state_dict()`` every ``snapshot_every_n_steps``
batches; a state copies the elements held in shuffle and prefetch buffers, so large
buffers make frequent snapshots costly.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from .base import DatasetBase, DatasetIterator

__all__ = ["TorchIterableDataset"]


class TorchIterableDataset(IterableDataset):
    """``dataset`` as a PyTorch ``IterableDataset`` whose iterators checkpoint.

    For torchdata's ``StatefulDataLoader``: its ``state_dict()`` then holds the pipeline
    iterator's ``DatasetIterator.state_dict``, and ``load_state_dict`` resumes after
    the last element delivered. The DataLoader converts the NumPy elements to tensors
    (``batch_size=None`` when the pipeline batches already). With ``num_workers > 1`` each
    worker reads ``dataset.shard(num_workers, worker_id)``; a checkpoint then holds one
    state per worker and must be restored with the same ``num_workers``. Import it from
    ``tensorwire_dataservice.dataset.torch_stateful`` (it needs torch).

    Args:
      dataset: the pipeline.
      shard_by_worker: shard between DataLoader workers (default); False makes every
        worker read the whole dataset.

    Raises:
      TypeError: ``dataset`` is not a ``tw.data`` dataset.

    Examples:
        >>> from torchdata.stateful_dataloader import StatefulDataLoader
        >>> from tensorwire_dataservice.dataset.torch_stateful import TorchIterableDataset
        >>> pipeline = tw.data.Dataset.range(6).batch(2)
        >>> loader = StatefulDataLoader(TorchIterableDataset(pipeline), batch_size=None)
        >>> batches = iter(loader)
        >>> next(batches).tolist()
        [0, 1]
        >>> state = loader.state_dict()
        >>> resumed = StatefulDataLoader(TorchIterableDataset(pipeline), batch_size=None)
        >>> resumed.load_state_dict(state)
        >>> [batch.tolist() for batch in resumed]
        [[2, 3], [4, 5]]
    """

    def __init__(self, dataset: DatasetBase, shard_by_worker: bool = True) -> None:
        if not isinstance(dataset, DatasetBase):
            raise TypeError(f"TorchIterableDataset wraps a tw.data.Dataset, got {dataset!r}")
        super().__init__()
        self.dataset = dataset
        self.shard_by_worker = bool(shard_by_worker)

    def __iter__(self) -> DatasetIterator:
        dataset: Any = self.dataset
        worker = get_worker_info()
        if self.shard_by_worker and worker is not None and worker.num_workers > 1:
            dataset = dataset.shard(worker.num_workers, worker.id)
        return DatasetIterator(dataset)

    def __repr__(self) -> str:
        return f"TorchIterableDataset({self.dataset!r})"
