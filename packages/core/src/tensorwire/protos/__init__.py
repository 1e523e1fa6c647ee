"""TensorFlow-compatible protocol buffers: cluster, server, session and data-service configs.

Every message here has TensorFlow's full name (package ``tensorflow``, ``tensorflow.data`` or
``tensorflow.data.experimental``) and TensorFlow's field numbers, so bytes serialized by
TensorFlow 2.x parse here with the same values and ours parse there. ``ConfigProto`` declares
only the fields a distributed runtime honours; TensorFlow's other fields survive a round trip
as unknown fields. tensorwire's own options live in ``ConfigProto.tensorwire`` (field 1000,
message ``tensorwire.TensorwireOptions``).

The classes are registered in a descriptor pool of our own, not protobuf's default pool, so
they coexist with a real TensorFlow in one process (see ``_pool.py``). To use a message
object built by TensorFlow's own classes, pass it through ``convert``.

The ``.proto`` sources sit beside the generated ``*_pb2.py`` / ``*_pb2.pyi`` files, which are
committed; ``nox -s protos`` (``python tools/gen_protos.py``) regenerates them.
"""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message

from .cluster_pb2 import ClusterDef, JobDef
from .config_pb2 import ConfigProto, SessionMetadata
from .data_service_pb2 import (
    CrossTrainerCacheOptions,
    DataServiceConfig,
    DataServiceMetadata,
    DeploymentMode,
    ProcessingModeDef,
)
from .device_filters_pb2 import ClusterDeviceFilters, JobDeviceFilters, TaskDeviceFilters
from .rpc_options_pb2 import RPCOptions
from .service_config_pb2 import DispatcherConfig, WorkerConfig
from .tensorflow_server_pb2 import ServerDef
from .tensorwire_options_pb2 import TensorwireOptions, TLSOptions

__all__ = [
    "ClusterDef",
    "JobDef",
    "ServerDef",
    "ConfigProto",
    "SessionMetadata",
    "RPCOptions",
    "TensorwireOptions",
    "TLSOptions",
    "ClusterDeviceFilters",
    "JobDeviceFilters",
    "TaskDeviceFilters",
    "DispatcherConfig",
    "WorkerConfig",
    "ProcessingModeDef",
    "ShardingPolicy",
    "DeploymentMode",
    "DataServiceMetadata",
    "DataServiceConfig",
    "CrossTrainerCacheOptions",
    "convert",
]

#: The enum tf.data service users know as ``ShardingPolicy`` (OFF, DYNAMIC, FILE, DATA,
#: FILE_OR_DATA, HINT), as declared inside ``ProcessingModeDef``.
ShardingPolicy = ProcessingModeDef.ShardingPolicy

_M = TypeVar("_M", bound=Message)


def convert(message: Any, message_type: type[_M]) -> _M:
    """Return ``message`` as an instance of ``message_type``.

    An instance of ``message_type`` is returned as is. A message of another class with the
    same full name -- typically TensorFlow's own ``tf.train.ServerDef`` or
    ``tf.compat.v1.ConfigProto`` -- is converted through its serialized bytes, which is
    lossless because the field numbers match (fields unknown to tensorwire are kept).

    Args:
      message: a protobuf message, of any class whose ``DESCRIPTOR.full_name`` is that of
        ``message_type``.
      message_type: the tensorwire class wanted, e.g. ``tw.ServerDef``.

    Returns:
      ``message`` itself when it already is a ``message_type``, else a new one parsed from
      its bytes.

    Raises:
      TypeError: if ``message`` is not a protobuf message of that full name.

    Examples:
        >>> from tensorwire.protos import convert
        >>> config = tw.ConfigProto(operation_timeout_in_ms=5000)
        >>> convert(config, tw.ConfigProto) is config
        True
        >>> convert(tw.JobDef(name="ps"), tw.ServerDef)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        TypeError: expected a tensorflow.ServerDef protocol buffer, got ...JobDef

        With TensorFlow installed, its own messages convert::

            server_def = convert(tf.train.ServerDef(job_name="worker"), tw.ServerDef)
    """
    if isinstance(message, message_type):
        return message
    want = message_type.DESCRIPTOR.full_name
    descriptor = getattr(message, "DESCRIPTOR", None)
    have = getattr(descriptor, "full_name", None)
    if have != want or not hasattr(message, "SerializeToString"):
        raise TypeError(
            f"expected a {want} protocol buffer, got {type(message).__module__}."
            f"{type(message).__qualname__}"
        )
    try:
        return message_type.FromString(message.SerializeToString())
    except DecodeError as exc:  # pragma: no cover - same full name, incompatible layout
        raise TypeError(f"cannot read a {type(message).__qualname__} as {want}: {exc}") from exc
