"""``cache(filename="")``: remember the elements of the first complete iteration.

In memory (``filename=""``) the elements live on the dataset object, shared by every later
iteration in this process; a partial first iteration is discarded, so only a full pass
fills the cache. With a ``filename`` the elements are written to ``<filename>.twcache``
(renamed into place only once the pass is complete) and read back by later iterations,
including other processes. The file holds pickles: cache only to files you trust.

Checkpoints: a pass reading the cache saves its position (the index in memory, the offset
in the file). A pass filling the cache saves the input's state only, not the elements seen
so far: restored, it reads the rest of the input without filling the cache, and the next
full pass fills it. A reading pass restored where the memory cache is empty (another
process) reads the input from the start instead, skipping what was delivered, and so
fills the cache.
"""

from __future__ import annotations

import os
import pickle
import threading
from collections.abc import Iterator
from typing import Any

from tensorwire import errors

from .base import DatasetBase, IterationContext
from .checkpoint import UnaryIterator, remaining
from .dataset import UnaryDataset

__all__ = ["CacheDataset"]

_SUFFIX = ".twcache"


class CacheDataset(UnaryDataset):
    """See the module docstring."""

    _op_name = "CacheDataset"

    def __init__(self, input_dataset: DatasetBase, filename: str = "") -> None:
        super().__init__(input_dataset)
        self._filename = os.fsdecode(filename)
        self._memory: list[Any] | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_lock"] = None
        state["_memory"] = None  # a shipped pipeline recomputes its own cache
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __copy__(self) -> CacheDataset:
        clone = object.__new__(CacheDataset)
        clone.__setstate__(self.__getstate__())
        return clone

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return _CacheIterator(self, ctx)

    def _cached(self, it: _CacheIterator) -> Iterator[Any]:
        if it._mode == _PASS:  # restored in the middle of a filling pass
            yield from it._input
            return
        if self._filename:
            yield from self._file_iterator(it)
            return
        with self._lock:
            cached = self._memory
        skip = it._position
        if cached is not None:
            it._mode = _READ
            rows = iter(cached[skip:])
            it._rows = rows
            yield from rows
            return
        # Filling (a restored reading pass replays the input, skipping what was delivered).
        it._mode = _PASS
        seen: list[Any] = []
        for element in it._input:
            seen.append(element)
            if skip:
                skip -= 1
                continue
            yield element
        with self._lock:
            if self._memory is None:
                self._memory = seen

    def _file_iterator(self, it: _CacheIterator) -> Iterator[Any]:
        path = self._filename + _SUFFIX
        if it._mode == _READ and not os.path.exists(path):
            raise errors.NotFoundError(
                f"CacheDataset: the checkpoint was reading the cache file {path}, which no "
                "longer exists"
            )
        if os.path.exists(path):
            it._mode = _READ
            with open(path, "rb") as f:
                f.seek(it._offset)
                it._file = f
                while True:
                    try:
                        yield pickle.load(f)
                    except EOFError:
                        return
        it._mode = _PASS
        tmp = f"{path}.tmp.{os.getpid()}.{threading.get_ident()}"
        complete = False
        try:
            with open(tmp, "wb") as f:
                for element in it._input:
                    pickle.dump(element, f, protocol=pickle.HIGHEST_PROTOCOL)
                    yield element
            complete = True
            os.replace(tmp, path)
        finally:
            if not complete and os.path.exists(tmp):
                os.unlink(tmp)


#: What a cache pass is doing: reading the cache, or reading the input (filling the cache,
#: or not when restored mid-pass).
_READ, _PASS = "read", "pass"


class _CacheIterator(UnaryIterator):
    """See the module docstring for what is saved."""

    _dataset: CacheDataset

    def __init__(self, dataset: CacheDataset, ctx: IterationContext) -> None:
        super().__init__(dataset, ctx)
        self._mode: str | None = None  # None: not decided yet (not started)
        self._position = 0  # memory: index of the next element
        self._offset = 0  # file: offset of the next element
        self._rows: Iterator[Any] | None = None
        self._file: Any = None

    def _run(self) -> Iterator[Any]:
        return self._dataset._cached(self)

    def _save(self) -> dict[str, Any]:
        state = super()._save()
        position, offset = self._position, self._offset
        if self._rows is not None:
            memory = self._dataset._memory or ()
            position = len(memory) - remaining(self._rows)
        if self._file is not None:
            offset = self._file.tell()
        state.update(mode=self._mode, position=position, offset=offset)
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        if state["mode"] not in (None, _READ, _PASS):
            raise errors.InvalidArgumentError(
                f"CacheDataset: unknown mode {state['mode']!r} in the checkpoint"
            )
        self._mode = state["mode"]
        self._position = int(state["position"])
        self._offset = int(state["offset"])
