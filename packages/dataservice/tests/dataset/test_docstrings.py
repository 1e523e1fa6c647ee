"""The API reference of the ``tw.data`` pipeline: every public name is documented, and the
examples of its docstrings run and print what they show.

The reference (``docs/reference/data.md``) is generated from these docstrings, so a name
without them has no reference. What is checked, per name:

- every name of ``tensorwire_dataservice.dataset.__all__`` (classes and functions), the
  option groups of ``Options``, the public methods and properties of ``Dataset`` (inherited
  ones included) and of ``DatasetIterator``: a one-line summary, ``Args:`` naming every
  argument, ``Returns:`` when something is returned, ``Raises:`` (unless the name is in
  :data:`RAISES_NOTHING`, with the reason) and ``Examples:`` with ``>>>`` lines;
- the public methods of the other exported classes (``TFRecordWriter.write``,
  ``SplitProvider.get_next``, ...): a summary, ``Args:`` and ``Returns:`` as above;
- the constants of ``__all__`` (ints, a dtype, a type alias, which hold no docstring):
  a row of the constants table of ``docs/reference/data.md``.

Examples run as doctests with ``tw`` (``import tensorwire as tw``) and ``np`` defined, in a
temporary working directory; ``ELLIPSIS`` and ``NORMALIZE_WHITESPACE`` are on.
"""

from __future__ import annotations

import doctest
import enum
import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorwire as tw
from tensorwire_dataservice.dataset import options as options_module
from tensorwire_dataservice.dataset.base import DatasetBase, DatasetIterator
from tensorwire_dataservice.dataset.dataset import Dataset

# By name: the package's attribute ``dataset`` is its submodule dataset.py once imported.
pipeline = importlib.import_module("tensorwire_dataservice.dataset")

#: The reference page that lists the constants (found from this file: tests run from a
#: checkout, also when nox installs the distributions into a virtualenv).
REFERENCE_PAGE = Path(__file__).resolve().parents[4] / "docs" / "reference" / "data.md"

#: Names whose docstring needs no ``Raises:`` section, and why.
RAISES_NOTHING = {
    "Dataset": "made by its sources, whose docstrings say what they raise",
    "DatasetBase": "a base class; subclasses say what they raise",
    "Dataset.element_spec": "a property; computing it raises what the transforms document",
    "Dataset.cardinality": "computed from the definition, never fails",
    "Dataset.options": "merges Options that with_options checked",
    "Dataset.as_numpy_iterator": "next() raises what the transforms document",
    "DatasetIterator.element_spec": "a property of the dataset",
    "DatasetIterator.close": "idempotent; closing never raises over the real error",
    "DistributeOptions": "takes no arguments",
    "ThreadingOptions": "takes no arguments",
    "OptimizationOptions": "takes no arguments",
    "AutotuneOptions": "takes no arguments",
    "AutoShardPolicy": "a namespace of constants",
    "ShardingPolicy": "an enum",
    "StringTensor": "a plain NamedTuple",
    "DatasetSpec": "stores the spec it is given",
    "IterationContext": "stores what it is given",
    "FileSplitProvider": "takes any list of file names",
    "SplitProvider": "an abstract interface; implementations say what they raise",
    "default_split_size": "total over integers",
    "to_codec": "total over elements",
    "from_codec": "total over elements",
    "masked_crc32c": "total over bytes",
}


def _option_groups() -> list[type]:
    return [
        options_module.DistributeOptions,
        options_module.ThreadingOptions,
        options_module.OptimizationOptions,
        options_module.AutotuneOptions,
    ]


def _torch_adapter() -> type | None:
    """``TorchIterableDataset``, or None where torch and torchdata are not installed (the
    test environment has them: requirements-test.txt)."""
    try:
        import torchdata.stateful_dataloader  # noqa: F401 - its example needs it
        from tensorwire_dataservice.dataset.torch_stateful import TorchIterableDataset
    except ImportError:
        return None
    return TorchIterableDataset


def _members(cls: type) -> list[tuple[str, Any]]:
    """Public methods and properties of ``cls`` and its bases (not ``object``'s)."""
    found = []
    for name in sorted(dir(cls)):
        if name.startswith("_"):
            continue
        owner = next(k for k in cls.__mro__ if name in k.__dict__)
        if owner is object:
            continue
        member = inspect.getattr_static(cls, name)
        if not isinstance(member, (property, staticmethod, classmethod)) and not callable(member):
            continue  # a class attribute (constants such as AutoShardPolicy.DATA)
        found.append((f"{cls.__name__}.{name}", member))
    return found


def documented_names() -> list[tuple[str, Any]]:
    """``(name, object)`` of every name that needs the full docstring (examples too)."""
    names: list[tuple[str, Any]] = []
    for name in pipeline.__all__:
        obj = getattr(pipeline, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            names.append((name, obj))
    names.extend((cls.__name__, cls) for cls in _option_groups())
    torch_adapter = _torch_adapter()
    if torch_adapter is not None:
        names.append(("TorchIterableDataset", torch_adapter))
    names.extend(_members(Dataset))
    names.extend(_members(DatasetIterator))
    return names


def method_names() -> list[tuple[str, Any]]:
    """Public methods of the other exported classes: summary, Args and Returns."""
    names = []
    for name in pipeline.__all__:
        cls = getattr(pipeline, name)
        if not inspect.isclass(cls) or cls in (Dataset, DatasetIterator):
            continue
        if issubclass(cls, (enum.Enum, tuple)):
            continue  # enum members and NamedTuple fields are not methods
        for member, obj in _members(cls):
            if issubclass(cls, DatasetBase) and hasattr(Dataset, member.split(".", 1)[1]):
                continue  # the Dataset API, checked (in full) on Dataset
            names.append((member, obj))
    return names


def constant_names() -> list[str]:
    """Names of ``__all__`` that are values (no docstring of their own)."""
    return [
        name
        for name in pipeline.__all__
        if not (
            inspect.isclass(getattr(pipeline, name)) or inspect.isfunction(getattr(pipeline, name))
        )
    ]


def _function(obj: Any) -> Any:
    """The function behind a staticmethod, classmethod or property (None for a property)."""
    if isinstance(obj, (staticmethod, classmethod)):
        return obj.__func__
    if isinstance(obj, property):
        return None
    return obj


def _sections(doc: str) -> dict[str, str]:
    """Google-style sections of ``doc``: heading -> body."""
    sections: dict[str, str] = {}
    current = None
    for line in inspect.cleandoc(doc).splitlines():
        heading = re.fullmatch(r"(Args|Returns|Yields|Raises|Examples):", line)
        if heading:
            current = heading.group(1)
            sections[current] = ""
        elif current is not None:
            if line and not line[0].isspace():
                current = None
            else:
                sections[current] += line + "\n"
    return sections


def _parameters(obj: Any) -> list[str]:
    """Argument names as the docstring must spell them (``*args``, ``**kwargs``)."""
    if inspect.isclass(obj):
        if issubclass(obj, (enum.Enum, tuple)) or obj.__init__ is object.__init__:
            return []
        fn = obj.__init__
    else:
        fn = _function(obj)
        if fn is None:
            return []
    params = []
    for p in inspect.signature(fn).parameters.values():
        if p.name in ("self", "cls"):
            continue
        if p.name.startswith("_"):
            continue  # private keyword arguments (e.g. IterationContext's _shared)
        prefix = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        params.append(prefix + p.name)
    return params


def _returns_something(obj: Any) -> bool:
    fn = _function(obj)
    if fn is None or inspect.isclass(obj):
        return False
    annotation = inspect.signature(fn).return_annotation
    return annotation not in ("None", None, inspect.Signature.empty)


def _docstring(obj: Any) -> str | None:
    """The docstring of a class, function or property; an override without one inherits
    its base's (as ``help()`` shows it), through ``inspect.getdoc``."""
    if inspect.isclass(obj):
        return obj.__doc__
    return inspect.getdoc(obj.fget if isinstance(obj, property) else _function(obj))


def _problems(name: str, obj: Any, *, full: bool) -> list[str]:
    doc = _docstring(obj)
    if not doc or not doc.strip():
        return ["no docstring"]
    problems = []
    summary = inspect.cleandoc(doc).splitlines()[0]
    if not summary.strip():
        problems.append("no one-line summary")
    sections = _sections(doc)
    params = _parameters(obj)
    if params:
        args = sections.get("Args")
        if args is None:
            problems.append(f"no Args: section for {params}")
        else:
            for param in params:
                if not re.search(rf"^\s+{re.escape(param)}( \(.*\))?:", args, re.MULTILINE):
                    problems.append(f"Args: does not name {param}")
    if _returns_something(obj) and not ({"Returns", "Yields"} & sections.keys()):
        problems.append("no Returns: section")
    if full:
        if "Raises" not in sections and name not in RAISES_NOTHING:
            problems.append("no Raises: section (or a RAISES_NOTHING entry saying why)")
        if ">>>" not in sections.get("Examples", ""):
            problems.append("no Examples: section with >>> lines")
    return problems


def test_every_public_name_has_a_complete_docstring() -> None:
    problems = [
        f"{name}: {problem}"
        for name, obj in documented_names()
        for problem in _problems(name, obj, full=True)
    ]
    assert not problems, "\n".join(problems)


def test_methods_of_exported_classes_have_docstrings() -> None:
    problems = [
        f"{name}: {problem}"
        for name, obj in method_names()
        for problem in _problems(name, obj, full=False)
    ]
    assert not problems, "\n".join(problems)


def test_the_raises_nothing_list_names_only_public_names() -> None:
    known = {name for name, _ in documented_names()}
    assert not set(RAISES_NOTHING) - known


def test_every_constant_is_in_the_reference_table() -> None:
    page = REFERENCE_PAGE.read_text(encoding="utf-8")
    missing = [name for name in constant_names() if f"`tw.data.{name}`" not in page]
    assert not missing, f"not in the constants table of {REFERENCE_PAGE}: {missing}"


def _examples() -> list[tuple[str, str]]:
    found = []
    for name, obj in documented_names() + method_names():
        doc = _docstring(obj)
        if doc and ">>>" in doc:
            found.append((name, doc))
    return found


@pytest.mark.parametrize(("name", "doc"), _examples(), ids=[name for name, _ in _examples()])
def test_docstring_examples_run(
    name: str, doc: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    parser = doctest.DocTestParser()
    test = parser.get_doctest(inspect.cleandoc(doc), {"tw": tw, "np": np}, name, name, 0)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    report: list[str] = []
    runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
    assert runner.tries > 0
