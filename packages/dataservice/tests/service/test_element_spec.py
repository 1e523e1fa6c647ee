"""from_dataset_id(..., element_spec=...) is checked against the registered dataset's spec."""

from __future__ import annotations

import numpy as np
import pytest
import tensorwire as tw
from tensorwire import errors
from tensorwire_dataservice.dataset.structure import TensorSpec

from .helpers import values

Dataset = tw.data.Dataset
service = tw.data.service


def _read(dispatcher, dataset_id, element_spec):
    return service.from_dataset_id(
        "parallel_epochs", dispatcher.target, dataset_id, element_spec=element_spec
    )


def test_a_matching_spec_is_accepted(service_factory):
    dispatcher, _ = service_factory(1)
    dataset = Dataset.range(5)
    dataset_id = service.register_dataset(dispatcher.target, dataset)
    ds = service.from_dataset_id(
        "parallel_epochs", dispatcher.target, dataset_id, element_spec=dataset.element_spec
    )
    assert values(ds) == list(range(5))


def test_a_compatible_spec_with_unknown_dimensions_is_accepted(service_factory):
    dispatcher, _ = service_factory(1)
    dataset = Dataset.from_tensors(np.zeros((2, 3), np.float32))
    dataset_id = service.register_dataset(dispatcher.target, dataset)
    spec = TensorSpec((None, 3), np.float32)
    ds = _read(dispatcher, dataset_id, spec)
    assert ds.element_spec == spec


def test_a_different_dtype_is_refused_at_the_call_showing_both_specs(service_factory):
    dispatcher, _ = service_factory(1)
    dataset = Dataset.range(5)
    dataset_id = service.register_dataset(dispatcher.target, dataset)
    wrong = TensorSpec((), np.float32)
    with pytest.raises(errors.InvalidArgumentError) as info:
        _read(dispatcher, dataset_id, wrong)
    message = str(info.value)
    assert repr(wrong) in message and repr(dataset.element_spec) in message
    assert dataset_id in message


def test_a_different_structure_is_refused(service_factory):
    dispatcher, _ = service_factory(1)
    dataset = Dataset.from_tensor_slices({"x": np.arange(4), "y": np.arange(4.0)})
    dataset_id = service.register_dataset(dispatcher.target, dataset)
    wrong = (TensorSpec((), np.int64), TensorSpec((), np.float64))
    with pytest.raises(errors.InvalidArgumentError, match="does not match the element spec"):
        _read(dispatcher, dataset_id, wrong)


def test_a_different_shape_is_refused(service_factory):
    dispatcher, _ = service_factory(1)
    dataset = Dataset.from_tensors(np.zeros((2, 3), np.float32))
    dataset_id = service.register_dataset(dispatcher.target, dataset)
    wrong = TensorSpec((2, 4), np.float32)
    with pytest.raises(errors.InvalidArgumentError, match="does not match"):
        _read(dispatcher, dataset_id, wrong)
