"""PyTorch's DataLoader over the tf.data service: ``TorchDataset`` and ``to_torch``.

>>> dataset = pipeline.apply(tw.data.service.distribute("distributed_epoch", service))
>>> loader = torch.utils.data.DataLoader(
...     tw.data.service.to_torch(dataset), batch_size=None, num_workers=2)  # doctest: +SKIP

Each epoch reads every element once, however many DataLoader workers there are: the
workers of one epoch join one shared job of the service. They agree on its name without
talking to each other. PyTorch gives each worker ``get_worker_info().seed = base_seed +
worker id``, where the DataLoader draws ``base_seed`` afresh for every epoch, so ``seed -
id`` is common to the workers of one epoch and differs between epochs. With
``persistent_workers=True`` the workers (and their seeds) live on, so the number of
epochs a worker has iterated is part of the name too. A random token fixed when the
adapter is made keeps the jobs of different adapters (and different runs) apart. With
``num_workers=0`` the adapter reads the dataset itself, exactly as iterating it would
(its own ``job_name``, if any, shared with other trainers as in TensorFlow).

How a shared job divides the work: each element of the service's epoch goes to exactly
one reader. "distributed_epoch" is one pass over the dataset across all service workers;
"parallel_epochs" is one pass per service worker.

Elements arrive as nested structures of ``torch.Tensor`` made by ``torch.from_numpy``
(through ``tensorwire.frameworks``, which also gives bfloat16 and float8 arrays their torch
dtypes): a tensor shares the buffer the element was received into, with no copy beyond the
wire. Large received arrays are read-only views of the message (or, in process, of the
sender's array); their tensors must be treated as read-only as well (``.clone()`` one to
write to it). PyTorch's one-time warning about such arrays is taken, silenced, by
``tensorwire.frameworks``. Arrays PyTorch has no dtype for (strings, objects) are passed
through as NumPy. A pipeline may produce torch tensors itself: the service holds them as
NumPy views (its element specs are NumPy dtypes) and they reach the trainer as torch again.

The GPU: ``to_torch(dataset, device="cuda:0")`` places every tensor of an element on that
device as it is read, with one host-to-device copy straight from the received buffer (what
``tensorwire.codec.loads(..., device=)`` does; see ``tensorwire.frameworks.device_for``).
It applies where the adapter is iterated, so it goes with ``num_workers=0``, which suits
the service well (its workers do the preprocessing; the DataLoader only reads). As
PyTorch advises, no CUDA tensors are made in DataLoader worker processes: there the
adapter refuses a device other than the CPU. With ``num_workers > 0`` leave ``device`` unset, pass
``pin_memory=True`` to the DataLoader (its main process copies each batch into page-locked
memory, a host copy) and call ``batch.to(device, non_blocking=True)`` in the training
loop, as with any DataLoader. ``device="cpu"`` changes nothing. A device this process
lacks is refused when the adapter is made (``InvalidArgumentError`` naming it and the
devices there are). Strings stay NumPy on the host.

Start methods: "fork" (PyTorch's default on Linux), "spawn" and "forkserver" all work,
as long as the process that creates the DataLoader does not itself run a gRPC server
(a dispatcher or worker of the service): gRPC cannot be used in a child forked from
such a process; those workers fail with ``FailedPreconditionError`` saying so. Use
``multiprocessing_context="spawn"`` there.

Checkpoints: torchdata's ``StatefulDataLoader`` checkpoints a ``TorchDataset``: each
iterator has ``state_dict()``/``load_state_dict()`` (the service iterator's, see
``tensorwire_dataservice.service.checkpoint``), and a restored loader yields exactly the
elements the checkpointed one had not yielded, also in a new process. The state names the
job by id, so the restored loader's workers rejoin the checkpointed job whatever job name
they would make now. Keep ``snapshot_every_n_steps=1`` (its default) with ``num_workers >
0``: with a larger value StatefulDataLoader restores an older worker state and skips the
batches yielded since by count, which assumes the restored worker yields them again in the
same order; a service reader delivers the same elements, in another order.

Limits: coordinated reads (``num_consumers``) cannot be split among DataLoader workers.
A DataLoader whose ``generator`` is re-seeded to the same value before every epoch draws
the same ``base_seed`` each epoch; with non-persistent workers its epochs would then
share one job, so the second would find it finished (empty). Do not re-seed the
DataLoader's generator between epochs.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
from tensorwire import frameworks
from torch.utils.data import IterableDataset

from ..dataset import structure
from .client import DataServiceDataset
from .torch_workers import dataloader_worker

__all__ = ["TorchDataset", "to_torch"]


class TorchDataset(IterableDataset):
    """A ``torch.utils.data.IterableDataset`` of a tf.data service dataset.

    ``dataset`` is what ``tw.data.service.distribute`` (applied last) or
    ``tw.data.service.from_dataset_id`` returns. Iterated in DataLoader workers, the
    workers of one epoch share one job, so every element is read once per epoch; see the
    module documentation for how. Elements are nested ``torch.Tensor`` structures.
    Pass ``batch_size=None`` to the DataLoader when the pipeline batches already.

    Args:
      dataset: a ``DataServiceDataset``.
      device: where the tensors go (a torch device string or ``torch.device``, such as
        ``"cuda:0"``): one host-to-device copy per tensor, made by the process that
        iterates; only with ``num_workers=0`` for another device than the CPU (see the
        module documentation). None (the default) and ``"cpu"``: CPU tensors over the
        received buffers.

    Raises:
      TypeError: ``dataset`` is not a dataset of the tf.data service (apply ``distribute``
        last), or ``device`` is not a device.
      InvalidArgumentError: torch has no such ``device`` in this process; the message lists
        the devices it has.
      ValueError: (when iterated) ``device`` is not the CPU and this is a DataLoader worker.
      FailedPreconditionError: in a DataLoader worker forked from a process that serves
        gRPC (use ``multiprocessing_context="spawn"``).

    Examples:
        >>> loader = torch.utils.data.DataLoader(
        ...     TorchDataset(dataset), batch_size=None, num_workers=2)      # doctest: +SKIP
    """

    def __init__(self, dataset: DataServiceDataset, device: Any = None) -> None:
        if not isinstance(dataset, DataServiceDataset):
            raise TypeError(
                "TorchDataset reads a dataset of the tf.data service: pass the dataset that "
                "`dataset.apply(tw.data.service.distribute(...))` or "
                "`tw.data.service.from_dataset_id(...)` returns (apply distribute last), "
                f"not a {type(dataset).__name__}"
            )
        super().__init__()
        self.dataset = dataset
        #: A ``torch.device`` to place tensors on; None for the CPU (no copy).
        self.device = None if device is None else frameworks.device_for(frameworks.TORCH, device)
        #: Fixed here, in the process that makes the DataLoader; copied to its workers.
        self._token = uuid.uuid4().hex[:16]
        #: Iterations of this copy: a persistent worker's epochs.
        self._iterations = 0

    def job_name(self, worker: Any) -> str:
        """The shared job the DataLoader worker described by ``worker`` reads this epoch."""
        prefix = self.dataset._job_name or "torch"
        return f"{prefix}-{self._token}-{worker.seed - worker.id}-{self._iterations}"

    def __iter__(self) -> Iterator[Any]:
        worker = dataloader_worker()
        dataset = self.dataset
        if worker is not None:
            if dataset._num_consumers is not None:
                raise ValueError(
                    "coordinated reads (num_consumers) cannot be split among DataLoader "
                    "workers: read this dataset with num_workers=0"
                )
            if self.device is not None:
                raise ValueError(
                    f"to_torch(device='{self.device}') places tensors in the process that "
                    f"iterates, and DataLoader worker {worker.id} must not make {self.device} "
                    "tensors: read with num_workers=0, or leave device unset, pass "
                    "pin_memory=True to the DataLoader and call .to(device, "
                    "non_blocking=True) on each batch"
                )
            dataset = _with_job_name(dataset, self.job_name(worker))
        self._iterations += 1
        return _TensorIterator(dataset, self.device)

    def __repr__(self) -> str:
        return f"TorchDataset({self.dataset!r})"


def to_torch(dataset: DataServiceDataset, device: Any = None) -> TorchDataset:
    """``dataset`` (from the tf.data service) as a PyTorch ``IterableDataset``.

    The DataLoader workers of one epoch share one job of the service, so each element is
    read once per epoch; elements are nested ``torch.Tensor`` structures sharing the
    received buffers, or on ``device``. See ``TorchDataset``.

    Args:
      dataset: what ``distribute`` (applied last) or ``from_dataset_id`` returns.
      device: where the tensors go (``"cuda:0"``, a ``torch.device``), one host-to-device
        copy each; with ``num_workers=0`` only. None: CPU tensors, no copy.

    Returns:
      A ``TorchDataset``.

    Raises:
      TypeError: ``dataset`` is not a dataset of the tf.data service.
      InvalidArgumentError: torch has no such ``device`` in this process.
      ImportError: (from ``tw.data.service.to_torch``) PyTorch is not installed.

    Examples:
        >>> dataset = tw.data.Dataset.range(100).batch(10).apply(
        ...     tw.data.service.distribute("distributed_epoch", service))    # doctest: +SKIP
        >>> for batch in torch.utils.data.DataLoader(to_torch(dataset), batch_size=None):
        ...     print(batch.shape)                                          # doctest: +SKIP
        >>> on_gpu = to_torch(dataset, device="cuda:0")  # num_workers=0    # doctest: +SKIP
    """
    return TorchDataset(dataset, device)


def _with_job_name(dataset: DataServiceDataset, job_name: str) -> DataServiceDataset:
    clone = copy.copy(dataset)
    # Through the class's own pickling contract, which starts a fresh iteration count.
    clone.__setstate__({**dataset.__getstate__(), "_job_name": job_name})
    return clone


class _TensorIterator(Iterator[Any]):
    """The dataset's iterator with elements made torch tensors, and its checkpoints:
    ``state_dict()``/``load_state_dict()`` (torchdata's ``Stateful`` protocol) are the
    service iterator's (see ``checkpoint``)."""

    def __init__(self, dataset: DataServiceDataset, device: Any = None) -> None:
        self._iterator = dataset.as_numpy_iterator()
        self._device = device

    def __iter__(self) -> _TensorIterator:
        return self

    def __next__(self) -> Any:
        element = next(self._iterator)
        if self._device is None:
            return structure.map_structure(_to_tensor, element)
        return structure.map_structure(lambda v: _to_tensor(v, self._device), element)

    def state_dict(self) -> dict[str, Any]:
        return self._iterator.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._iterator.load_state_dict(state)

    def close(self) -> None:
        self._iterator.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - finalizer
            pass


def _to_tensor(value: Any, device: Any = None) -> Any:
    """``value`` as a torch tensor over its memory, or on ``device`` (a ``torch.device``,
    one host-to-device copy); strings, objects and raw bytes stay NumPy."""
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray) or value.dtype.kind in "OSUMm":
        return value  # strings, objects and datetimes have no torch dtype
    if value.dtype.kind == "V" and frameworks.ml_dtype(value.dtype.name) is None:
        return value  # structured or raw bytes
    try:
        # Shares the array's memory (ml_dtypes bfloat16/float8 as torch's own dtypes).
        return frameworks.restore(frameworks.TORCH, "", value, device)
    except TypeError:  # a dtype torch does not have (e.g. uint32 in older torch)
        return value
