"""What the data service needs from the Dataset pipeline, in one place.

The service treats a dataset as an opaque definition; this module is the only one that knows
how to serialize it, iterate it (whole, from splits, or statically sharded) and make a split
provider for it.

A definition is one of two kinds:

* code: a cloudpickle of the pipeline, functions included. Whoever unpickles it runs what
  the registrant wrote, which is the design (pipelines travel by value, as TensorFlow's
  graphs do) and why every server of the data service authenticates its callers.
* a reference to a registered pipeline: ``REFERENCE_MAGIC`` and a codec message
  ``{"name", "params"}``, made by ``registered_pipeline``. It carries data only; each
  process that rebuilds it runs its own registered factory. With
  ``registered_pipelines_only`` a dispatcher or worker accepts nothing else, so nothing it
  runs came from the network.

Splits (what the dispatcher hands workers in ``distributed_epoch``) are index ranges or file
names, encoded with the codec: never code.
"""

from __future__ import annotations

import hashlib
import pickle
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import cloudpickle
from tensorwire import codec, errors

__all__ = [
    "REFERENCE_MAGIC",
    "register_pipeline",
    "registered_pipeline",
    "is_reference",
    "reference_of",
    "check_definition",
    "serialize",
    "deserialize",
    "fingerprint",
    "cardinality",
    "is_infinite",
    "iterate",
    "iterate_splits",
    "nondeterminism",
    "iterate_shard",
    "make_split_provider",
    "split_provider_next",
    "encode_split",
    "decode_split",
]


def _dataset_module() -> Any:
    from .. import dataset as dataset_module

    return dataset_module


def _constants() -> tuple[int, int]:
    from ..dataset.base import INFINITE, UNKNOWN

    return int(INFINITE), int(UNKNOWN)


def unknown_cardinality() -> int:
    return _constants()[1]


def split_provider_base() -> type:
    from ..dataset.sharding import SplitProvider

    return SplitProvider


#: How a definition that names a registered pipeline begins (a pickle never does: its
#: first byte is the PROTO opcode 0x80).
REFERENCE_MAGIC = b"TWPIPE1\n"

_registry: dict[str, Callable[..., Any]] = {}
_registry_lock = threading.Lock()
#: Dataset objects made by registered_pipeline -> (name, params). By identity: a clone or a
#: transformed dataset is code again, as it must be.
_references: weakref.WeakKeyDictionary[Any, tuple[str, dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)


def register_pipeline(name: str, factory: Callable[..., Any]) -> None:
    """Make ``factory(**params) -> Dataset`` available by ``name`` in this process.

    Register the same names in the dispatcher's, the workers' and the readers' processes
    (for example in a module all of them import); then
    ``registered_pipeline(name, **params)`` crosses the network as data only.

    Args:
      name: the name readers use.
      factory: a function of keyword parameters that returns a ``tw.data.Dataset``.

    Raises:
      ValueError: an empty name, or a different factory already registered under it.
      TypeError: ``factory`` is not callable.

    Examples:
        >>> def squares(n):
        ...     return tw.data.Dataset.range(n).map(lambda x: x * x)
        >>> register_pipeline("squares", squares)                         # doctest: +SKIP
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a pipeline name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"the factory of pipeline {name!r} must be callable")
    with _registry_lock:
        known = _registry.get(name)
        if known is not None and known is not factory:
            raise ValueError(f"a different pipeline is already registered as {name!r}")
        _registry[name] = factory


def _factory(name: str) -> Callable[..., Any]:
    with _registry_lock:
        factory = _registry.get(name)
    if factory is None:
        raise errors.NotFoundError(
            f"no pipeline is registered as {name!r} in this process: call "
            f"tw.data.service.register_pipeline({name!r}, factory) here too (dispatcher, "
            "workers and readers each need it)"
        )
    return factory


def _build(name: str, params: dict[str, Any]) -> Any:
    try:
        return _factory(name)(**params)
    except errors.OpError:
        raise
    except Exception as exc:  # noqa: BLE001 - the factory is the user's code
        raise errors.InvalidArgumentError(
            f"registered pipeline {name!r} failed to build with {params!r}: {exc}"
        ) from exc


def registered_pipeline(name: str, /, **params: Any) -> Any:
    """The dataset ``factory(**params)`` of the pipeline registered as ``name``, marked so
    that the data service sends only its name and ``params`` (numbers, strings, lists,
    dicts, arrays), never code. Transforming it makes code again.

    Args:
      name: a name given to ``register_pipeline`` in this process.
      **params: the factory's keyword arguments; plain data only.

    Returns:
      The dataset the factory built, to which ``distribute`` can be applied.

    Raises:
      ValueError: a parameter that cannot travel as data.
      NotFoundError: no pipeline is registered as ``name`` in this process.

    Examples:
        >>> ds = registered_pipeline("squares", n=10).apply(
        ...     distribute("distributed_epoch", service))                   # doctest: +SKIP
    """
    try:
        codec.dumps(params)
    except Exception as exc:  # noqa: BLE001 - say which argument cannot travel as data
        raise ValueError(
            f"the parameters of pipeline {name!r} must be plain data (numbers, strings, "
            f"lists, dicts, arrays): {exc}"
        ) from exc
    dataset = _build(name, dict(params))
    _references[dataset] = (name, dict(params))
    return dataset


def is_reference(dataset_def: bytes) -> bool:
    return bytes(dataset_def[: len(REFERENCE_MAGIC)]) == REFERENCE_MAGIC


def reference_of(dataset_def: bytes) -> tuple[str, dict[str, Any]]:
    """(name, params) of a reference definition; InvalidArgumentError when malformed."""
    try:
        message = codec.loads(bytes(dataset_def[len(REFERENCE_MAGIC) :]))
        name, params = message["name"], message["params"]
        if not isinstance(name, str) or not isinstance(params, dict):
            raise TypeError("name must be a string and params a dict")
    except Exception as exc:  # noqa: BLE001 - bytes from the network
        raise errors.InvalidArgumentError(
            f"malformed registered-pipeline reference: {exc}"
        ) from None
    return name, params


def check_definition(dataset_def: bytes, code_allowed: bool) -> tuple[str, dict[str, Any]] | None:
    """Refuse a definition made of code where only registered pipelines may run, and a
    malformed reference; the reference's (name, params), or None for code."""
    if is_reference(dataset_def):
        return reference_of(dataset_def)
    if not code_allowed:
        raise errors.PermissionDeniedError(
            "this data service runs registered pipelines only (registered_pipelines_only): "
            "the dataset was sent as code; send tw.data.service.registered_pipeline(name, "
            "**params) instead, with the pipeline registered in every process"
        )
    return None


def serialize(dataset: Any) -> bytes:
    reference = _references.get(dataset)
    if reference is not None:
        name, params = reference
        return REFERENCE_MAGIC + codec.dumps({"name": name, "params": params})
    try:
        return cloudpickle.dumps(dataset, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - anything unpicklable in a user pipeline
        raise errors.InvalidArgumentError(
            f"the dataset cannot be sent to the tf.data service workers: {exc}"
        ) from exc


def deserialize(data: bytes, code_allowed: bool = True) -> Any:
    """Rebuild a definition: a reference by its registered factory, code by unpickling it
    (only when ``code_allowed``)."""
    reference = check_definition(data, code_allowed)
    if reference is not None:
        return _build(*reference)
    try:
        return pickle.loads(data)
    except Exception as exc:  # noqa: BLE001
        raise errors.InvalidArgumentError(
            f"the dataset definition received could not be rebuilt here: {exc}"
        ) from exc


def fingerprint(dataset_def: bytes) -> str:
    return hashlib.sha256(dataset_def).hexdigest()


def cardinality(dataset: Any) -> int:
    try:
        return int(dataset.cardinality())
    except Exception:  # noqa: BLE001 - an unknown size is a legal answer
        return _constants()[1]


def is_infinite(card: int) -> bool:
    return card == _constants()[0]


def _make_iterator(dataset: Any, split_provider: Any = None) -> Iterator[Any]:
    module = _dataset_module()
    make = getattr(module, "make_iterator", None)
    if make is None:
        from ..dataset.base import DatasetIterator

        return DatasetIterator(dataset, split_provider=split_provider)
    return make(dataset, split_provider=split_provider)


def nondeterminism(dataset: Any) -> str | None:
    """Why ``dataset`` may produce different elements, or a different order, from the same
    splits on another run; None when it does not (as far as the pipeline's structure shows:
    the functions it maps are taken to be pure).

    ``distributed_epoch`` replays a lost task's splits on another worker and leaves out the
    elements its readers already received, by their index in the task's output; that is
    exact only when a rerun yields the same elements at the same indices.
    """
    try:
        # Options act pipeline-wide, as iteration applies them: the root's.
        options = dataset.options()
        default = options.effective_deterministic() if options is not None else None
    except Exception:  # noqa: BLE001 - no options: TensorFlow's default (deterministic)
        default = None
    seen: set[int] = set()
    stack = [dataset]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        reason = _node_nondeterminism(node, default)
        if reason is not None:
            return reason
        try:
            stack.extend(node._inputs())
        except Exception:  # noqa: BLE001 - a node we cannot walk: say so rather than guess
            return f"{type(node).__name__} does not list its inputs"
    return None


def _node_nondeterminism(node: Any, default_deterministic: bool | None) -> str | None:
    name = type(node).__name__
    if name in ("ShuffleDataset", "SampleDataset", "RandomDataset") and (
        getattr(node, "_seed", 0) is None
    ):
        return f"{name} without a seed"
    if (
        name == "ListFilesDataset"
        and getattr(node, "_seed", 0) is None
        and getattr(node, "_shuffle", False)
    ):
        return "list_files shuffled without a seed"
    if name == "ParallelMapDataset":
        flag = getattr(node, "_deterministic", None)
        if flag is None:
            flag = default_deterministic
        if flag is False:
            return "map(..., deterministic=False)"
    if name == "GeneratorDataset":
        return "from_generator (a Python generator may yield anything on a rerun)"
    return None


def iterate(dataset: Any) -> Iterator[Any]:
    return iter(_make_iterator(dataset))


def iterate_splits(dataset: Any, split_provider: Any) -> Iterator[Any]:
    return iter(_make_iterator(dataset, split_provider))


def iterate_shard(dataset: Any, num_shards: int, index: int, policy: int) -> Iterator[Any]:
    from ..dataset.sharding import auto_shard

    sharded = auto_shard(dataset, num_shards, index, policy)
    return iterate(sharded)


def make_split_provider(dataset: Any) -> Any:
    try:
        from ..dataset.sharding import make_split_provider as make

        return make(dataset)
    except errors.OpError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise errors.InvalidArgumentError(
            f"distributed_epoch needs a splittable dataset source: {exc}"
        ) from exc


def split_provider_next(provider: Any) -> tuple[Any, bool]:
    """``(split, end_of_splits)``."""
    split = provider.get_next()
    return split, split is None


def encode_split(split: Any) -> bytes:
    return codec.dumps(split)


def decode_split(data: bytes) -> Any:
    try:
        return codec.loads(bytes(data))
    except Exception as exc:  # noqa: BLE001 - bytes from the network
        raise errors.InvalidArgumentError(f"malformed split from the dispatcher: {exc}") from None
