"""``tw.data.experimental.distributed_save``: ask the dispatcher to write a snapshot.

The client checks the arguments, registers the dataset and sends ``Snapshot``; the
dispatcher (``snapshot_manager.py``) and the workers (``snapshot_writer.py``) do the rest.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from tensorwire import errors

from ..dataset import snapshot_format as fmt
from ..dataset.base import INFINITE, DatasetBase
from .client import _dispatcher_call, register_dataset
from .protocol import parse_service

__all__ = ["distributed_save"]


def distributed_save(
    dataset: Any, path: str | os.PathLike[str], dispatcher_address: Any, compression: Any = "AUTO"
) -> None:
    """Write ``dataset`` once to ``path`` through the tf.data service workers (TF 2.14+).

    Returns once the dispatcher accepted the save, as TensorFlow; the workers write in the
    background. The source's splits are handed out by the dispatcher (dynamic sharding, so
    the pipeline needs a splittable source, as for ``distributed_epoch``); each worker
    writes the elements of a split as one chunk file, atomically. The save is resumable:
    with a fault-tolerant dispatcher (``work_dir``), a dispatcher killed and restarted
    continues it, and a worker that dies has its unfinished splits written by another. The
    snapshot has every element once; ``Dataset.load(path)`` reads it in split order (the
    dataset's order for pipelines that keep each split's elements together, e.g. ``map``,
    ``filter``). A ``DONE`` file says it is finished; see docs/design.md §6.

    Args:
      dataset: a ``tw.data.Dataset`` with a splittable source.
      path: an absolute path, a new or empty directory every worker can write.
      dispatcher_address: the dispatcher, ``"grpc://host:port"`` or ``"host:port"``.
      compression: ``"AUTO"`` (ZLIB level 1: the fastest stdlib codec, standing in for
        TensorFlow's Snappy), ``"GZIP"``, ``"ZLIB"``, or None / ``""`` for none.

    Raises:
      TypeError: ``dataset`` is not a dataset.
      InvalidArgumentError: a relative ``path``, an unknown ``compression``, a pipeline
        without a splittable source, an infinite dataset.
      AlreadyExistsError: a save to ``path`` is in progress, or ``path`` holds a finished
        snapshot (or other files).
      PermissionDeniedError: the dispatcher cannot write ``path``.
      UnimplementedError: an element spec a snapshot cannot store (a nested dataset).
      UnavailableError: the dispatcher did not answer within the client timeout.

    Examples:
        >>> tw.data.experimental.distributed_save(               # doctest: +SKIP
        ...     tw.data.Dataset.range(100), "/data/snap", dispatcher.target)
        >>> ds = tw.data.Dataset.load("/data/snap")               # once it is done
    """
    if not isinstance(dataset, DatasetBase):
        raise TypeError(
            f"distributed_save: `dataset` must be a tw.data.Dataset, got {type(dataset).__name__}"
        )
    if not isinstance(path, (str, os.PathLike)) or not os.fsdecode(path):
        raise errors.InvalidArgumentError(
            f"distributed_save: `path` must be a non-empty string, got {path!r}"
        )
    path = os.path.normpath(os.fsdecode(path))  # one spelling per directory
    if not os.path.isabs(path):
        raise errors.InvalidArgumentError(
            f"distributed_save: `path` must be absolute (the dispatcher and the workers "
            f"resolve it, each in its own working directory), got {path!r}"
        )
    comp, level = fmt.resolve_compression(compression)
    metadata = fmt.metadata_bytes(dataset.element_spec, comp, level)
    # Refused here, before anything is registered; the dispatcher checks again.
    from ..dataset.sharding import make_split_provider

    if dataset.cardinality() == INFINITE:
        raise errors.InvalidArgumentError(
            "distributed_save: the dataset is infinite (e.g. repeat() without a count); "
            "a snapshot must end"
        )

    try:
        make_split_provider(dataset)
    except errors.UnimplementedError as exc:
        raise errors.InvalidArgumentError(f"distributed_save: {exc}") from None
    protocol, address = parse_service(dispatcher_address)
    dataset_id = register_dataset((protocol, address), dataset, compression=None)
    _dispatcher_call(
        protocol,
        address,
        "Snapshot",
        # ``request`` makes a retry whose first attempt was accepted (its reply lost) a
        # success rather than "in progress".
        {
            "path": path,
            "dataset_id": dataset_id,
            "metadata": metadata,
            "request": secrets.token_hex(8),
        },
    )
