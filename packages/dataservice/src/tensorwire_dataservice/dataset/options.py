"""``tf.data.Options``: pipeline-wide settings attached with ``Dataset.with_options``.

Honoured here: ``deterministic`` (the default of ``map(..., deterministic=None)`` with
``num_parallel_calls``). Accepted and kept, so TensorFlow code runs unchanged, but without
effect on this runtime: ``experimental_distribute.auto_shard_policy`` (the data service takes
its ``ShardingPolicy`` from ``distribute``), ``threading``, ``experimental_optimization``,
``experimental_slack``, ``experimental_external_state_policy``, ``autotune``.

Options set on several datasets of a pipeline merge: for each field, the value set
downstream (later ``with_options``) wins over one set upstream, as in TensorFlow.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["Options", "AutoShardPolicy"]


class AutoShardPolicy:
    """``tf.data.experimental.AutoShardPolicy`` values."""

    OFF = -1
    AUTO = 0
    FILE = 1
    DATA = 2
    HINT = 3


class _OptionGroup:
    """A group of optional fields: unset fields read as their default, and setting an
    unknown field is an AttributeError naming the group's fields (as TensorFlow does)."""

    _defaults: dict[str, Any] = {}
    _group_name = "Options"

    def __init__(self) -> None:
        object.__setattr__(self, "_values", {})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._defaults:
            value = self._values.get(name, self._defaults[name])
            if isinstance(value, type) and issubclass(value, _OptionGroup):
                value = value()
                self._values[name] = value
            return value
        raise AttributeError(
            f"{self._group_name} has no option {name!r}; options are "
            f"{', '.join(sorted(self._defaults))}"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._defaults:
            raise AttributeError(
                f"Cannot set the property {name} on {self._group_name}; options are "
                f"{', '.join(sorted(self._defaults))}"
            )
        self._values[name] = value

    def _merge(self, other: _OptionGroup) -> None:
        """Take every field ``other`` set (recursively for groups)."""
        for name, value in other._values.items():
            if isinstance(value, _OptionGroup):
                mine = getattr(self, name)
                mine._merge(value)
            else:
                self._values[name] = value

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._values == other._values

    def __repr__(self) -> str:
        return f"{self._group_name}({self._values})"

    def __getstate__(self) -> dict[str, Any]:
        return {"_values": self._values}

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "_values", state["_values"])


class DistributeOptions(_OptionGroup):
    _group_name = "DistributeOptions"
    _defaults = {"auto_shard_policy": AutoShardPolicy.AUTO, "num_devices": None}


class ThreadingOptions(_OptionGroup):
    _group_name = "ThreadingOptions"
    _defaults = {"max_intra_op_parallelism": None, "private_threadpool_size": None}


class OptimizationOptions(_OptionGroup):
    _group_name = "OptimizationOptions"
    _defaults = {
        "apply_default_optimizations": None,
        "filter_fusion": None,
        "inject_prefetch": None,
        "map_and_batch_fusion": None,
        "map_and_filter_fusion": None,
        "map_fusion": None,
        "map_parallelization": None,
        "noop_elimination": None,
        "parallel_batch": None,
        "shuffle_and_repeat_fusion": None,
    }


class AutotuneOptions(_OptionGroup):
    _group_name = "AutotuneOptions"
    _defaults = {"enabled": None, "cpu_budget": None, "ram_budget": None}


class Options(_OptionGroup):
    """``tf.data.Options``."""

    _group_name = "Options"
    _defaults = {
        "deterministic": None,
        "experimental_deterministic": None,
        "experimental_distribute": DistributeOptions,
        "experimental_external_state_policy": None,
        "experimental_optimization": OptimizationOptions,
        "experimental_slack": None,
        "experimental_warm_start": None,
        "threading": ThreadingOptions,
        "experimental_threading": ThreadingOptions,
        "autotune": AutotuneOptions,
    }

    def merge(self, other: Options) -> Options:
        """A new Options: these, overridden by every field ``other`` sets."""
        merged = copy.deepcopy(self)
        merged._merge(other)
        return merged

    def effective_deterministic(self) -> bool | None:
        value = self._values.get("deterministic")
        if value is None:
            value = self._values.get("experimental_deterministic")
        return value
