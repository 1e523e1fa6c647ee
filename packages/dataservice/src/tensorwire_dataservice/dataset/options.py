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
    """``tf.data.experimental.AutoShardPolicy``: the values of
    ``Options().experimental_distribute.auto_shard_policy``.

    Kept so TensorFlow code that sets the option runs unchanged; it has no effect here:
    the data service takes its sharding from ``distribute(processing_mode=...)`` (see
    ``ShardingPolicy``), and ``auto_shard`` shards a pipeline explicitly.

    Examples:
        >>> options = tw.data.Options()
        >>> options.experimental_distribute.auto_shard_policy = tw.data.AutoShardPolicy.DATA
        >>> options.experimental_distribute.auto_shard_policy
        2
    """

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
    """``tf.data.experimental.DistributeOptions``: ``Options().experimental_distribute``.

    Fields: ``auto_shard_policy`` (an ``AutoShardPolicy`` value, default AUTO) and
    ``num_devices``. Accepted and kept, without effect on this runtime.

    Examples:
        >>> options = tw.data.Options()
        >>> options.experimental_distribute.num_devices = 2
        >>> options.experimental_distribute
        DistributeOptions({'num_devices': 2})
    """

    _group_name = "DistributeOptions"
    _defaults = {"auto_shard_policy": AutoShardPolicy.AUTO, "num_devices": None}


class ThreadingOptions(_OptionGroup):
    """``tf.data.ThreadingOptions``: ``Options().threading``.

    Fields: ``max_intra_op_parallelism``, ``private_threadpool_size``. Accepted and kept,
    without effect: each parallel op here runs the threads its own arguments ask for.

    Examples:
        >>> options = tw.data.Options()
        >>> options.threading.private_threadpool_size = 4
        >>> options.threading.private_threadpool_size
        4
    """

    _group_name = "ThreadingOptions"
    _defaults = {"max_intra_op_parallelism": None, "private_threadpool_size": None}


class OptimizationOptions(_OptionGroup):
    """``tf.data.experimental.OptimizationOptions``: ``Options().experimental_optimization``.

    Fields: ``apply_default_optimizations``, ``filter_fusion``, ``inject_prefetch``,
    ``map_and_batch_fusion``, ``map_and_filter_fusion``, ``map_fusion``,
    ``map_parallelization``, ``noop_elimination``, ``parallel_batch``,
    ``shuffle_and_repeat_fusion``. Accepted and kept, without effect: this runtime does
    not rewrite pipelines.

    Examples:
        >>> options = tw.data.Options()
        >>> options.experimental_optimization.map_fusion = True
        >>> options.experimental_optimization.map_fusion
        True
    """

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
    """``tf.data.experimental.AutotuneOptions``: ``Options().autotune``.

    Fields: ``enabled``, ``cpu_budget``, ``ram_budget``. Accepted and kept, without
    effect: ``AUTOTUNE`` arguments take fixed defaults here (one thread per CPU).

    Examples:
        >>> options = tw.data.Options()
        >>> options.autotune.enabled = False
        >>> options.autotune.enabled
        False
    """

    _group_name = "AutotuneOptions"
    _defaults = {"enabled": None, "cpu_budget": None, "ram_budget": None}


class Options(_OptionGroup):
    """``tf.data.Options``: pipeline-wide settings, attached with ``Dataset.with_options``.

    Every field starts unset (reading it gives its default, None for plain fields) and is
    set by assignment; the option groups (``experimental_distribute``,
    ``experimental_optimization``, ``threading``, ``experimental_threading``,
    ``autotune``) are objects whose fields are set the same way. Honoured here:
    ``deterministic`` (and TensorFlow's older ``experimental_deterministic``), the default
    of ``map(..., num_parallel_calls=n, deterministic=None)``. The other fields are kept so
    TensorFlow code runs unchanged, without effect: ``experimental_slack``,
    ``experimental_external_state_policy``, ``experimental_warm_start`` and the groups
    (``DistributeOptions``, ``OptimizationOptions``, ``ThreadingOptions``,
    ``AutotuneOptions``).

    Raises:
      AttributeError: setting or reading a field that does not exist; the message lists
        the fields.

    Examples:
        >>> options = tw.data.Options()
        >>> options.deterministic = False
        >>> ds = tw.data.Dataset.range(8).map(lambda x: x + 1, num_parallel_calls=2)
        >>> sorted(int(x) for x in ds.with_options(options))
        [1, 2, 3, 4, 5, 6, 7, 8]
        >>> options.determinstic = True
        Traceback (most recent call last):
        ...
        AttributeError: Cannot set the property determinstic on Options; options are ...
    """

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
        """A new Options: these, overridden by every field ``other`` sets.

        Args:
          other: the options that win.

        Returns:
          A new ``Options``; neither input changes.

        Examples:
            >>> a, b = tw.data.Options(), tw.data.Options()
            >>> a.deterministic, b.experimental_slack = True, True
            >>> merged = a.merge(b)
            >>> merged.deterministic, merged.experimental_slack
            (True, True)
        """
        merged = copy.deepcopy(self)
        merged._merge(other)
        return merged

    def effective_deterministic(self) -> bool | None:
        """Whether parallel ops keep their input order under these options.

        Returns:
          ``deterministic`` if set, else ``experimental_deterministic``, else None (the
          ops' default: True).
        """
        value = self._values.get("deterministic")
        if value is None:
            value = self._values.get("experimental_deterministic")
        return value
