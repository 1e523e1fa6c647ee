"""``tw.data.Dataset``: a NumPy input pipeline mirroring ``tf.data.Dataset``.

Public surface (re-exported as ``tw.data.*`` by ``tensorwire_dataservice``):

- ``Dataset`` and the readers ``TFRecordDataset``, ``TextLineDataset``;
  ``TFRecordWriter`` / ``TFRecordOptions`` to write TFRecord files;
- ``TensorSpec`` (``element_spec`` leaves), constants ``INFINITE``,
  ``UNKNOWN``, ``AUTOTUNE``;
- the data-service contract: ``IterationContext`` and ``DatasetIterator``
  (subclassing, see ``base``), ``make_iterator``, ``SplitProvider``,
  ``make_split_provider``, ``auto_shard``, ``ShardingPolicy``,
  ``SHARD_HINT`` (see ``sharding``); ``to_codec`` / ``from_codec`` to carry
  string tensors (object arrays, which ``tensorwire.codec`` refuses) across the wire.
"""

from __future__ import annotations

from .base import AUTOTUNE, INFINITE, UNKNOWN, DatasetBase, DatasetIterator, IterationContext
from .dataset import Dataset, UnaryDataset, make_iterator
from .options import AutoShardPolicy, Options
from .sharding import (
    SHARD_HINT,
    FileSplitProvider,
    IndexSplitProvider,
    RepeatedSplitProvider,
    ShardingPolicy,
    Split,
    SplitProvider,
    auto_shard,
    default_split_size,
    find_split_source,
    make_split_provider,
)
from .structure import STRING, DatasetSpec, StringTensor, TensorSpec, from_codec, to_codec
from .tfrecord import (
    CRC32C_IMPLEMENTATION,
    TextLineDataset,
    TFRecordDataset,
    TFRecordOptions,
    TFRecordWriter,
    masked_crc32c,
)

#: ``tf.data.INFINITE_CARDINALITY`` / ``tf.data.UNKNOWN_CARDINALITY`` under TF's names too.
INFINITE_CARDINALITY = INFINITE
UNKNOWN_CARDINALITY = UNKNOWN

__all__ = [
    "AUTOTUNE",
    "AutoShardPolicy",
    "CRC32C_IMPLEMENTATION",
    "Dataset",
    "DatasetBase",
    "DatasetIterator",
    "DatasetSpec",
    "FileSplitProvider",
    "INFINITE",
    "INFINITE_CARDINALITY",
    "IndexSplitProvider",
    "IterationContext",
    "Options",
    "RepeatedSplitProvider",
    "SHARD_HINT",
    "STRING",
    "StringTensor",
    "ShardingPolicy",
    "Split",
    "SplitProvider",
    "TFRecordDataset",
    "TFRecordOptions",
    "TFRecordWriter",
    "TensorSpec",
    "TextLineDataset",
    "UNKNOWN",
    "UNKNOWN_CARDINALITY",
    "UnaryDataset",
    "auto_shard",
    "default_split_size",
    "find_split_source",
    "from_codec",
    "make_iterator",
    "make_split_provider",
    "masked_crc32c",
    "to_codec",
]
