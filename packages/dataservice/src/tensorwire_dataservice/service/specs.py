"""Checking a reader's ``element_spec`` against the spec of the registered dataset.

``from_dataset_id(..., element_spec=spec)`` takes the reader's word for the structure of
the elements; a spec that does not describe what the workers produce would only show up
later, as a confusing failure in the reader's pipeline. So when the registrant's spec is
known (sent with the registration, or rebuilt from a registered pipeline), the two must
be compatible: the same nesting, the same dtypes, and shapes that agree where both are
known (``None`` dimensions and unknown ranks match anything; names are ignored).
"""

from __future__ import annotations

from typing import Any

from tensorwire import errors

from ..dataset.structure import DatasetSpec, TensorSpec, assert_same_structure, flatten

__all__ = ["check_element_spec", "specs_compatible"]


def specs_compatible(given: Any, registered: Any) -> bool:
    """Whether the element spec ``given`` can describe the elements of ``registered``."""
    try:
        assert_same_structure(given, registered, "element specs")
    except (TypeError, ValueError):
        return False
    for a, b in zip(flatten(given), flatten(registered), strict=True):
        if isinstance(a, TensorSpec) and isinstance(b, TensorSpec):
            if not a.is_compatible_with(b):
                return False
        elif isinstance(a, DatasetSpec) and isinstance(b, DatasetSpec):
            if not specs_compatible(a.element_spec, b.element_spec):
                return False
        elif a != b:
            return False
    return True


def check_element_spec(given: Any, registered: Any, dataset_id: str) -> None:
    """Raise unless ``given`` is compatible with the spec ``registered`` for ``dataset_id``.

    Raises:
      InvalidArgumentError: the specs differ; the message shows both.
    """
    if not specs_compatible(given, registered):
        raise errors.InvalidArgumentError(
            f"The `element_spec` passed to from_dataset_id does not match the element spec "
            f"of the registered dataset {dataset_id}: got {given!r}, but the dataset was "
            f"registered with {registered!r}. Pass element_spec=None to take the "
            "registered one."
        )
