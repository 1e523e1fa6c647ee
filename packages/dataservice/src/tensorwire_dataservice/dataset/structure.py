"""Nested element structures: flattening, packing, NumPy conversion and ``TensorSpec``.

An element of a ``Dataset`` is a nested structure whose
containers are tuples (namedtuples included) and dicts, and whose leaves are NumPy values:
``np.ndarray``, NumPy scalars (``np.int64(3)``) and ``bytes`` for string scalars (as
TensorFlow's ``as_numpy_iterator`` gives them). torch/JAX tensors given as values become
NumPy views of their memory (``tensorwire.frameworks.to_numpy``). String tensors of rank >= 1
are ``object`` arrays of ``bytes``.

Python values are converted the way TensorFlow converts them to tensors: ``int`` becomes
int32 (int64 when it does not fit), ``float`` float32, ``bool`` bool, ``str`` UTF-8 ``bytes``,
and a ``list`` is one tensor, not a structure. Dicts flatten in sorted key order, like
``tf.nest``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
from tensorwire import errors, frameworks

__all__ = [
    "TensorSpec",
    "DatasetSpec",
    "STRING",
    "flatten",
    "pack_sequence_as",
    "map_structure",
    "assert_same_structure",
    "normalize_element",
    "normalize_function_output",
    "spec_from_value",
    "merge_specs",
    "stack_components",
    "StringTensor",
    "to_codec",
    "from_codec",
]

#: The dtype used for string tensors (TensorFlow's ``tf.string``): object arrays of bytes.
STRING = np.dtype(object)

Shape = "tuple[int | None, ...] | None"

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


class TensorSpec:
    """The type of one component of an element: a shape and a dtype (``tf.TensorSpec``).

    The leaves of ``Dataset.element_spec``, and what ``from_generator`` takes as its
    ``output_signature``. Unlike ``tf.TensorSpec``, ``dtype`` is a ``numpy.dtype``; string
    tensors use ``STRING`` (object arrays of ``bytes``), shown as ``string``.

    Args:
      shape: a sequence of ints or None (a dimension of unknown size), or None for
        unknown rank.
      dtype: anything ``numpy.dtype`` takes.
      name: an optional name, as in TensorFlow.

    Raises:
      TypeError: ``dtype`` is not a NumPy dtype.

    Examples:
        >>> spec = tw.data.TensorSpec((None, 3), np.float32)
        >>> spec
        TensorSpec(shape=(None, 3), dtype=float32, name=None)
        >>> spec.is_compatible_with(np.zeros((5, 3), np.float32))
        True
    """

    __slots__ = ("_shape", "_dtype", "_name")

    def __init__(self, shape: Sequence[int | None] | None, dtype: Any, name: str | None = None):
        self._shape = None if shape is None else tuple(None if d is None else int(d) for d in shape)
        self._dtype = np.dtype(dtype)
        self._name = name

    @property
    def shape(self) -> tuple[int | None, ...] | None:
        """The shape: a tuple of ints and None (unknown sizes), or None (unknown rank)."""
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        """The ``numpy.dtype`` of the component (``STRING`` for strings)."""
        return self._dtype

    @property
    def name(self) -> str | None:
        """The optional name given at construction."""
        return self._name

    def is_compatible_with(self, other: Any) -> bool:
        """Whether ``other`` (a TensorSpec or a value) could be described by this spec.

        Args:
          other: a ``TensorSpec``, or a value (array, NumPy scalar, ``bytes``).

        Returns:
          True when the dtypes are equal and the shapes agree wherever both are known.
        """
        if not isinstance(other, TensorSpec):
            other = spec_from_value(other)
            if not isinstance(other, TensorSpec):
                return False
        if self._dtype != other._dtype:
            return False
        if self._shape is None or other._shape is None:
            return True
        if len(self._shape) != len(other._shape):
            return False
        return all(
            a is None or b is None or a == b
            for a, b in zip(self._shape, other._shape, strict=False)
        )

    def most_specific_compatible_spec(self, other: TensorSpec) -> TensorSpec:
        """The narrowest spec that describes both (dims that differ become ``None``).

        Args:
          other: another spec of the same dtype.

        Returns:
          A new ``TensorSpec``: unknown rank when the ranks differ.

        Raises:
          TypeError: the dtypes differ.
        """
        if self._dtype != other._dtype:
            raise TypeError(f"Incompatible dtypes: {self._dtype} vs {other._dtype}")
        if self._shape is None or other._shape is None or len(self._shape) != len(other._shape):
            return TensorSpec(None, self._dtype)
        dims = [a if a == b else None for a, b in zip(self._shape, other._shape, strict=False)]
        return TensorSpec(dims, self._dtype)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TensorSpec)
            and self._shape == other._shape
            and self._dtype == other._dtype
            and self._name == other._name
        )

    def __hash__(self) -> int:
        return hash((self._shape, self._dtype, self._name))

    def __repr__(self) -> str:
        dtype = "string" if self._dtype == STRING else self._dtype.name
        return f"TensorSpec(shape={self._shape}, dtype={dtype}, name={self._name!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (TensorSpec, (self._shape, self._dtype, self._name))


class DatasetSpec:
    """The type of a component that is itself a dataset (``tf.data.DatasetSpec``).

    The components of ``window`` elements are datasets; their specs are DatasetSpecs.

    Args:
      element_spec: the element spec of the datasets it describes.

    Examples:
        >>> tw.data.Dataset.range(5).window(2).element_spec
        DatasetSpec(TensorSpec(shape=(), dtype=int64, name=None))
    """

    __slots__ = ("_element_spec",)

    def __init__(self, element_spec: Any) -> None:
        self._element_spec = element_spec

    @property
    def element_spec(self) -> Any:
        """The element spec of the datasets this spec describes."""
        return self._element_spec

    def most_specific_compatible_spec(self, other: Any) -> DatasetSpec:
        """The narrowest spec that describes both.

        Args:
          other: another ``DatasetSpec``.

        Returns:
          A DatasetSpec of the merged element specs.

        Raises:
          TypeError: ``other`` is not a DatasetSpec, or the element specs are incompatible.
        """
        if not isinstance(other, DatasetSpec):
            raise TypeError(f"Incompatible specs: {self} vs {other}")
        return DatasetSpec(merge_specs(self._element_spec, other._element_spec))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DatasetSpec) and self._element_spec == other._element_spec

    def __hash__(self) -> int:
        return hash(("DatasetSpec", repr(self._element_spec)))

    def __repr__(self) -> str:
        return f"DatasetSpec({self._element_spec!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (DatasetSpec, (self._element_spec,))


def _is_dataset(value: Any) -> bool:
    return hasattr(value, "_iterator") and hasattr(value, "element_spec")


# --------------------------------------------------------------------------------- nesting


def _is_namedtuple(value: Any) -> bool:
    return isinstance(value, tuple) and hasattr(type(value), "_fields")


def _is_container(value: Any) -> bool:
    return isinstance(value, (tuple, dict))


def flatten(structure: Any) -> list[Any]:
    """The leaves of ``structure`` in a fixed order (dicts by sorted key)."""
    if isinstance(structure, tuple):
        out: list[Any] = []
        for item in structure:
            out.extend(flatten(item))
        return out
    if isinstance(structure, dict):
        out = []
        for key in sorted(structure):
            out.extend(flatten(structure[key]))
        return out
    return [structure]


def _pack(structure: Any, flat: Sequence[Any], pos: int) -> tuple[Any, int]:
    if isinstance(structure, tuple):
        items = []
        for item in structure:
            packed, pos = _pack(item, flat, pos)
            items.append(packed)
        if _is_namedtuple(structure):
            return type(structure)(*items), pos
        return tuple(items), pos
    if isinstance(structure, dict):
        packed_dict = {}
        for key in sorted(structure):
            packed_dict[key], pos = _pack(structure[key], flat, pos)
        # Keep the caller's key order, not the flattening order.
        return type(structure)((k, packed_dict[k]) for k in structure), pos
    return flat[pos], pos + 1


def pack_sequence_as(structure: Any, flat: Sequence[Any]) -> Any:
    """Rebuild ``structure``'s shape with the leaves ``flat`` (inverse of ``flatten``)."""
    packed, used = _pack(structure, flat, 0)
    if used != len(flat):
        raise ValueError(f"Structure had {used} leaves but {len(flat)} values were given")
    return packed


def assert_same_structure(a: Any, b: Any, what: str = "structures") -> None:
    """Raise TypeError/ValueError unless ``a`` and ``b`` have the same nesting."""
    if isinstance(a, tuple) != isinstance(b, tuple) or isinstance(a, dict) != isinstance(b, dict):
        raise TypeError(f"The two {what} don't have the same nested structure: {a!r} vs {b!r}")
    if isinstance(a, tuple):
        if len(a) != len(b) or _is_namedtuple(a) != _is_namedtuple(b):
            raise ValueError(f"The two {what} don't have the same nested structure: {a!r} vs {b!r}")
        for x, y in zip(a, b, strict=False):
            assert_same_structure(x, y, what)
    elif isinstance(a, dict):
        if set(a) != set(b):
            raise ValueError(f"The two {what} don't have the same keys: {sorted(a)} vs {sorted(b)}")
        for key in a:
            assert_same_structure(a[key], b[key], what)


def map_structure(fn: Callable[..., Any], *structures: Any) -> Any:
    """Apply ``fn`` to corresponding leaves of ``structures``; same nesting out."""
    first = structures[0]
    for other in structures[1:]:
        assert_same_structure(first, other)
    flats = [flatten(s) for s in structures]
    return pack_sequence_as(first, [fn(*leaves) for leaves in zip(*flats, strict=False)])


# ------------------------------------------------------------------------------ conversion

_FAST_LEAVES = (np.ndarray, np.generic, bytes)
#: Scalar leaves that are final as they are: ``isinstance(v, NUMPY_LEAVES)`` skips conversion.
NUMPY_LEAVES = (np.number, np.bool_, bytes)


def _convert_leaf(value: Any) -> Any:
    if isinstance(value, _FAST_LEAVES):
        return value
    if isinstance(value, bool):
        return np.bool_(value)
    if isinstance(value, int):
        return np.int32(value) if _INT32_MIN <= value <= _INT32_MAX else np.int64(value)
    if isinstance(value, float):
        return np.float32(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (list, range)):
        return _convert_list(list(value))
    if value is None:
        raise TypeError("None is not a valid element component (it cannot become a tensor)")
    if _is_dataset(value):
        return value  # a nested dataset (e.g. a window) is a component of its own
    if frameworks.is_tensor(value):
        # torch/JAX/DLPack: a NumPy view (one device-to-host copy for a GPU tensor); bfloat16
        # and float8 become ml_dtypes arrays, which np.asarray cannot make of a torch tensor.
        return frameworks.to_numpy(value)
    if hasattr(value, "__array__"):
        return np.asarray(value)
    raise TypeError(f"Cannot convert {value!r} of type {type(value).__name__} to a NumPy tensor")


def _convert_list(value: list[Any]) -> np.ndarray:
    flat_probe = value
    while isinstance(flat_probe, list) and flat_probe:
        flat_probe = flat_probe[0]
    if isinstance(flat_probe, (str, bytes)):
        return _normalize_array(np.array(value))
    arr = np.asarray(value)
    if arr.dtype == object:
        raise ValueError(f"Can't convert non-rectangular Python sequence to a tensor: {value!r}")
    # TensorFlow's defaults for Python numbers: int32 when it fits, float32.
    if arr.dtype == np.int64 and arr.size and _INT32_MIN <= arr.min() and arr.max() <= _INT32_MAX:
        arr = arr.astype(np.int32)
    elif arr.dtype == np.int64 and not arr.size:
        arr = arr.astype(np.int32)
    elif arr.dtype == np.float64 and not _has_numpy_float64(value):
        arr = arr.astype(np.float32)
    return arr


def _has_numpy_float64(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_numpy_float64(v) for v in value)
    return isinstance(value, np.floating) and value.dtype == np.float64


def _normalize_array(value: np.ndarray) -> np.ndarray:
    # NumPy unicode/bytes arrays become object arrays of bytes (TensorFlow's tf.string).
    out = np.empty(value.shape, dtype=object)
    flat = out.reshape(-1)
    for i, item in enumerate(value.reshape(-1)):
        flat[i] = item.encode("utf-8") if isinstance(item, str) else bytes(item)
    return out


def normalize_element(value: Any) -> Any:
    """Convert a user value to an element: containers kept, leaves made NumPy values."""
    if isinstance(value, tuple):
        items = [normalize_element(v) for v in value]
        return type(value)(*items) if _is_namedtuple(value) else tuple(items)
    if isinstance(value, dict):
        return type(value)((k, normalize_element(v)) for k, v in value.items())
    if isinstance(value, np.ndarray):
        return _normalize_array(value) if value.dtype.kind in "US" else value
    if isinstance(value, np.str_):
        return str(value).encode("utf-8")
    if isinstance(value, np.bytes_):
        return bytes(value)
    return _convert_leaf(value)


def normalize_function_output(value: Any) -> Any:
    """Normalize what a user function returned; a top-level list is a tuple, as in TF."""
    if isinstance(value, NUMPY_LEAVES):
        return value
    if type(value) is list:
        value = tuple(value)
    return normalize_element(value)


# --------------------------------------------------------------------------------- specs


def _leaf_spec(value: Any) -> Any:
    if _is_dataset(value):
        return DatasetSpec(value.element_spec)
    if isinstance(value, bytes):
        return TensorSpec((), STRING)
    if isinstance(value, np.generic):
        return TensorSpec((), value.dtype)
    arr = np.asarray(value)
    return TensorSpec(arr.shape, arr.dtype)


def spec_from_value(value: Any) -> Any:
    """The nested ``TensorSpec`` structure describing an element value."""
    if isinstance(value, tuple):
        items = [spec_from_value(v) for v in value]
        return type(value)(*items) if _is_namedtuple(value) else tuple(items)
    if isinstance(value, dict):
        return type(value)((k, spec_from_value(v)) for k, v in value.items())
    return _leaf_spec(value)


def merge_specs(a: Any, b: Any) -> Any:
    """The most specific spec structure compatible with both ``a`` and ``b``."""
    return map_structure(lambda x, y: x.most_specific_compatible_spec(y), a, b)


def stack_components(values: Sequence[Any], component: int) -> np.ndarray:
    """Stack leaves of equal shape into one array with a new leading axis (``batch``)."""
    first = values[0]
    if isinstance(first, bytes):
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    if isinstance(first, np.generic):
        # Scalars: np.array over the list is several times faster than np.stack.
        try:
            return np.array(values, dtype=first.dtype)
        except (TypeError, ValueError):
            pass
    shape = np.shape(first)
    for i, v in enumerate(values):
        if np.shape(v) != shape:
            raise errors.InvalidArgumentError(
                f"Cannot batch tensors with different shapes in component {component}. "
                f"First element had shape {list(shape)} and element {i} had shape "
                f"{list(np.shape(v))}."
            )
    if isinstance(first, np.ndarray) and first.dtype == object:
        out = np.empty((len(values),) + shape, dtype=object)
        for i, v in enumerate(values):
            out[i] = v
        return out
    return np.stack(values)


def iter_flat_pairs(structure: Any, specs: Any) -> Iterable[tuple[Any, Any]]:
    """Leaves of ``structure`` paired with the matching leaves of ``specs``."""
    return zip(flatten(structure), flatten(specs), strict=False)


# ------------------------------------------------------------------- codec compatibility


class StringTensor(NamedTuple):
    """A string tensor (object array of bytes) in a form ``tensorwire.codec`` carries.

    The codec refuses object arrays; ``to_codec`` swaps each for one of these and
    ``from_codec`` swaps it back, so elements cross the wire losslessly (bytes may hold
    NULs, which fixed-width ``S`` arrays would drop).

    Attributes:
      shape: the shape of the string tensor.
      values: its entries, flattened in C order.

    Examples:
        >>> tw.data.to_codec(np.array([b"a", b"b c"], dtype=object))
        StringTensor(shape=(2,), values=[b'a', b'b c'])
    """

    shape: tuple[int, ...]
    values: list[bytes]


def _has_object_arrays(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.dtype == object
    if isinstance(value, tuple):
        return any(_has_object_arrays(v) for v in value)
    if isinstance(value, dict):
        return any(_has_object_arrays(v) for v in value.values())
    return False


def _swap(value: Any, leaf: Callable[[Any], Any]) -> Any:
    if isinstance(value, tuple):
        items = [_swap(v, leaf) for v in value]
        return type(value)(*items) if _is_namedtuple(value) else tuple(items)
    if isinstance(value, dict):
        return type(value)((k, _swap(v, leaf)) for k, v in value.items())
    return leaf(value)


def _encode_leaf(value: Any) -> Any:
    if isinstance(value, np.ndarray) and value.dtype == object:
        return StringTensor(tuple(value.shape), [bytes(v) for v in value.reshape(-1)])
    return value


def _decode_leaf(value: Any) -> Any:
    if (
        isinstance(value, tuple)
        and type(value).__name__ == "StringTensor"
        and hasattr(value, "values")
    ):
        values = list(value.values)
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out.reshape(tuple(value.shape))  # type: ignore[attr-defined]
    return value


def to_codec(element: Any) -> Any:
    """``element`` with string tensors replaced by ``StringTensor`` (cheap when none).

    What a data-service worker sends: ``tensorwire.codec`` refuses object arrays.

    Args:
      element: an element (a nested structure of NumPy values).

    Returns:
      The element with every object array swapped for a ``StringTensor``; the
      element itself when it has none.

    Examples:
        >>> element = {"tags": np.array([b"x", b"y"], dtype=object)}
        >>> tw.data.to_codec(element)
        {'tags': StringTensor(shape=(2,), values=[b'x', b'y'])}
    """
    if not _has_object_arrays(element):
        return element
    return _swap(element, _encode_leaf)


def _has_string_tensors(value: Any) -> bool:
    if isinstance(value, tuple):
        if type(value).__name__ == "StringTensor" and hasattr(value, "values"):
            return True
        return any(_has_string_tensors(v) for v in value)
    if isinstance(value, dict):
        return any(_has_string_tensors(v) for v in value.values())
    return False


def from_codec(element: Any) -> Any:
    """Undo ``to_codec`` (also when the codec rebuilt ``StringTensor`` by name only).

    Args:
      element: what ``to_codec`` returned, possibly after a trip through the codec.

    Returns:
      The element with every ``StringTensor`` swapped back for an object array.

    Examples:
        >>> wire = tw.data.to_codec((np.array([[b"a"], [b"b"]], dtype=object),))
        >>> tw.data.from_codec(wire)
        (array([[b'a'],
               [b'b']], dtype=object),)
    """
    if not _has_string_tensors(element):
        return element
    return _swap_decoded(element)


def _swap_decoded(value: Any) -> Any:
    if isinstance(value, tuple):
        if type(value).__name__ == "StringTensor" and hasattr(value, "values"):
            return _decode_leaf(value)
        items = [_swap_decoded(v) for v in value]
        return type(value)(*items) if _is_namedtuple(value) else tuple(items)
    if isinstance(value, dict):
        return type(value)((k, _swap_decoded(v)) for k, v in value.items())
    return value
