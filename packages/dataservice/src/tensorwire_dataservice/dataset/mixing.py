"""Mixing several datasets: ``sample_from_datasets`` and ``choose_from_datasets``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from tensorwire import errors

from . import structure
from .base import INFINITE, UNKNOWN, DatasetBase, IterationContext
from .checkpoint import MultiInputIterator
from .dataset import Dataset
from .sources import claim_epoch, epoch_seed, resume_epoch
from .structure import TensorSpec

__all__ = ["SampleDataset", "ChooseDataset"]


def _check_datasets(datasets: Any) -> tuple[list[DatasetBase], Any]:
    datasets = list(datasets) if not isinstance(datasets, DatasetBase) else [datasets]
    if not datasets:
        raise ValueError("Invalid `datasets`. `datasets` should not be empty.")
    for ds in datasets:
        if not isinstance(ds, DatasetBase):
            raise TypeError(
                f"Invalid `datasets`. `datasets` must be a list of `tf.data.Dataset` objects, "
                f"found {type(ds).__name__}."
            )
    spec = datasets[0].element_spec
    for ds in datasets[1:]:
        try:
            structure.assert_same_structure(spec, ds.element_spec)
            spec = structure.merge_specs(spec, ds.element_spec)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                "Invalid `datasets`. The elements of `datasets` must have compatible types: "
                f"{datasets[0].element_spec} vs. {ds.element_spec}"
            ) from exc
    return datasets, spec


def _close(it: Any) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        close()


class SampleDataset(Dataset):
    """``Dataset.sample_from_datasets``: a weighted random choice per element.

    An exhausted input is dropped and the weights of the rest renormalized, unless
    ``stop_on_empty_dataset`` ends the whole dataset then.
    """

    _op_name = "DirectedInterleaveDataset"
    _epochs = 0  # iterations so far (transient: not pickled)

    def __init__(
        self,
        datasets: Any,
        weights: Any = None,
        seed: int | None = None,
        stop_on_empty_dataset: bool = False,
        rerandomize_each_iteration: bool | None = None,
    ) -> None:
        inputs, spec = _check_datasets(datasets)
        if weights is None:
            w = np.full(len(inputs), 1.0 / len(inputs))
        else:
            if isinstance(weights, DatasetBase):
                raise TypeError("`weights` given as a Dataset is not supported; pass a list")
            w = np.asarray(weights, dtype=np.float64).reshape(-1)
            if w.shape != (len(inputs),):
                raise ValueError(
                    "Invalid `weights`. The shape of `weights` should be compatible with "
                    f"`[len(datasets)]` but is {list(w.shape)}."
                )
            if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
                raise errors.InvalidArgumentError(
                    f"Invalid `weights`: they must be non-negative with a positive sum, got {w}"
                )
        self._input_datasets = tuple(inputs)
        self._weights = w
        self._seed = seed
        self._stop_on_empty = bool(stop_on_empty_dataset)
        self._rerandomize = bool(rerandomize_each_iteration)  # TF: same order by default
        self._spec = spec

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return _SampleIterator(self, ctx)

    def _sample(self, state: _SampleIterator) -> Iterator[Any]:
        if state._rng is None:
            state._epoch = claim_epoch(self, self._rerandomize)
            state._rng = epoch_seed(self._seed, state._epoch)
        rng = state._rng
        inputs = state._inputs  # a dropped input becomes None there, as a checkpoint saves
        its: list[Iterator[Any] | None] = [None if i is None else iter(i) for i in inputs]
        weights = state._weights
        try:
            while weights.sum() > 0:
                i = int(rng.choice(len(its), p=weights / weights.sum()))
                it = its[i]
                try:
                    yield next(it)  # type: ignore[arg-type]
                except StopIteration:
                    if self._stop_on_empty:
                        return
                    its[i] = inputs[i] = None
                    weights[i] = 0.0
        finally:
            for it in its:
                if it is not None:
                    _close(it)

    def _cardinality(self) -> int:
        cards = [ds._cardinality() for ds in self._input_datasets]
        if all(c == INFINITE for c in cards):
            return INFINITE
        return UNKNOWN

    def _compute_element_spec(self) -> Any:
        return self._spec


class _SampleIterator(MultiInputIterator):
    """Saves the inputs, their current weights (0 once dropped) and the random generator."""

    _dataset: SampleDataset

    def __init__(self, dataset: SampleDataset, ctx: IterationContext) -> None:
        super().__init__(dataset, ctx)
        self._weights = dataset._weights.copy()
        self._epoch: int | None = None
        self._rng: np.random.Generator | None = None

    def _run(self) -> Iterator[Any]:
        return self._dataset._sample(self)

    def _save(self) -> dict[str, Any]:
        state = super()._save()
        state["weights"] = self._weights.tolist()
        state["epoch"] = self._epoch
        state["rng"] = None if self._rng is None else self._rng.bit_generator.state
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self._weights = np.asarray(state["weights"], dtype=np.float64)
        if state["rng"] is not None:
            self._epoch = int(state["epoch"])
            self._rng = epoch_seed(self._dataset._seed, self._epoch)
            self._rng.bit_generator.state = state["rng"]
            resume_epoch(self._dataset, self._epoch)


class ChooseDataset(Dataset):
    """``Dataset.choose_from_datasets``: ``choice_dataset`` says which input gives each element.

    With ``stop_on_empty_dataset`` (the default) choosing an exhausted input ends the dataset;
    otherwise that choice is skipped.
    """

    _op_name = "DirectedInterleaveDataset"

    def __init__(
        self, datasets: Any, choice_dataset: Any, stop_on_empty_dataset: bool = True
    ) -> None:
        inputs, spec = _check_datasets(datasets)
        if not isinstance(choice_dataset, DatasetBase) or not (
            isinstance(choice_dataset.element_spec, TensorSpec)
            and choice_dataset.element_spec.shape == ()
            and choice_dataset.element_spec.dtype == np.int64
        ):
            raise TypeError(
                "Invalid `choice_dataset`. Elements of `choice_dataset` must be scalar "
                "`tf.int64` tensors."
            )
        self._input_datasets = (choice_dataset, *inputs)
        self._stop_on_empty = bool(stop_on_empty_dataset)
        self._spec = spec

    def _iterator(self, ctx: IterationContext) -> Iterator[Any]:
        return MultiInputIterator(self, ctx, self._choose)

    def _choose(self, inputs: list[Any]) -> Iterator[Any]:
        # A dropped input becomes None in `inputs` too, which is what a checkpoint saves.
        choices = iter(inputs[0])
        its: list[Iterator[Any] | None] = [None if i is None else iter(i) for i in inputs[1:]]
        try:
            for choice in choices:
                i = int(choice)
                if not 0 <= i < len(its):
                    raise errors.InvalidArgumentError(
                        f"Selector index out of range: choice_dataset gave {i} for "
                        f"{len(its)} datasets."
                    )
                it = its[i]
                if it is None:
                    continue
                try:
                    yield next(it)
                except StopIteration:
                    if self._stop_on_empty:
                        return
                    its[i] = inputs[i + 1] = None
        finally:
            _close(choices)
            for it in its:
                if it is not None:
                    _close(it)

    def _cardinality(self) -> int:
        return UNKNOWN

    def _compute_element_spec(self) -> Any:
        return self._spec
