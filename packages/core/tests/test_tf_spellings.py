"""TensorFlow's spellings work: a TensorFlow program ports by changing its import.

``tw.train.*`` / ``tw.distribute.*`` are the very objects of ``tw``; ``tensorwire.data`` (a
separate distribution) imports in every form a TensorFlow user would write; ``dir(tw)``
lists every public name, lazily loaded ones included. The import forms run in a fresh
interpreter each, so that modules cached by other tests cannot hide a failure.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest
import tensorwire as tw

HAS_DATASERVICE = importlib.util.find_spec("tensorwire_dataservice") is not None
needs_dataservice = pytest.mark.skipif(not HAS_DATASERVICE, reason="needs tensorwire-dataservice")

# TensorFlow's name -> tensorwire's own name for the same object.
SPELLINGS = {
    "train.Server": "Server",
    "train.ClusterSpec": "ClusterSpec",
    "train.ServerDef": "ServerDef",
    "train.ClusterDef": "ClusterDef",
    "train.JobDef": "JobDef",
    "distribute.Server": "Server",
    "distribute.cluster_resolver.TFConfigClusterResolver": "cluster.TFConfigClusterResolver",
    "distribute.cluster_resolver.SlurmClusterResolver": "cluster.SlurmClusterResolver",
}


def _resolve(dotted: str) -> object:
    value: object = tw
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize(("tf_name", "ours"), SPELLINGS.items(), ids=list(SPELLINGS))
def test_tensorflow_spelling_is_the_same_object(tf_name, ours):
    assert _resolve(tf_name) is _resolve(ours)


def test_the_namespaces_export_only_what_they_list():
    for namespace in (tw.train, tw.distribute, tw.distribute.cluster_resolver):
        public = {n for n in vars(namespace) if not n.startswith("_")} - {"annotations"}
        assert public == set(namespace.__all__), namespace.__name__


def test_dir_lists_every_public_name_including_lazy_ones():
    names = dir(tw)
    for name in (
        "register_function",
        "Server",
        "Session",
        "ClusterSpec",
        "ServerDef",
        "train",
        "distribute",
        "data",
        "test",
        "__version__",
    ):
        assert name in names
    assert set(tw.__all__) <= set(names)
    # Only the package's own names: not the helpers its module imports for itself.
    assert not {"Any", "annotations", "importlib"} & set(names)


@pytest.mark.parametrize("name", [n for n in tw.__all__ if n not in ("data", "test")])
def test_every_listed_name_resolves(name):
    assert getattr(tw, name) is not None


def run_fresh(code: str) -> str:
    """Run ``code`` in a new interpreter; its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def test_train_and_distribute_import_in_every_form():
    out = run_fresh("""
        import tensorwire.train
        import tensorwire.distribute.cluster_resolver as resolvers
        from tensorwire.train import ClusterDef, ClusterSpec, JobDef, Server, ServerDef
        from tensorwire.distribute import Server as DistributeServer
        from tensorwire.distribute.cluster_resolver import TFConfigClusterResolver
        import tensorwire as tw
        assert Server is DistributeServer is tw.Server is tensorwire.train.Server
        assert (ClusterSpec, ServerDef, ClusterDef, JobDef) == (
            tw.ClusterSpec, tw.ServerDef, tw.ClusterDef, tw.JobDef)
        assert TFConfigClusterResolver is resolvers.TFConfigClusterResolver
        assert TFConfigClusterResolver is tw.cluster.TFConfigClusterResolver
        print("ok")
    """)
    assert out == "ok\n"


@needs_dataservice
@pytest.mark.parametrize(
    "statement",
    [
        "import tensorwire.data.service",
        "from tensorwire.data.service import distribute",
        "from tensorwire.data import service",
        "from tensorwire.data.experimental import service",
        "import tensorwire.data.experimental.service",
        "from tensorwire.data.experimental.service import distribute",
        "from tensorwire.data import Dataset",
    ],
)
def test_data_service_imports_as_tensorflow_users_write_them(statement):
    # Each form, alone in a fresh interpreter, gives the modules of tensorwire_dataservice
    # themselves (not copies), and tw.data is the same module.
    out = run_fresh(f"""
        {statement}
        import sys
        import tensorwire as tw
        import tensorwire_dataservice
        from tensorwire_dataservice import service
        assert sys.modules["tensorwire.data"] is tensorwire_dataservice is tw.data
        assert sys.modules.get("tensorwire.data.service", service) is service
        assert tw.data.service.distribute is service.distribute
        assert tw.data.experimental.service is service
        print("ok")
    """)
    assert out == "ok\n"


@needs_dataservice
def test_a_module_the_data_service_does_not_have_is_not_found():
    out = run_fresh("""
        try:
            import tensorwire.data.no_such_module
        except ModuleNotFoundError as exc:
            print(exc.name)
    """)
    assert out == "tensorwire.data.no_such_module\n"


@pytest.mark.parametrize(("name", "extra"), [("data", "data"), ("test", "testing")])
def test_a_missing_distribution_says_what_to_install(name, extra):
    # The distribution made unimportable (as if not installed), both spellings.
    module = {"data": "tensorwire_dataservice", "test": "tensorwire_testing"}[name]
    out = run_fresh(f"""
        import sys
        sys.modules[{module!r}] = None
        import tensorwire as tw
        for attempt in (lambda: tw.{name}, lambda: __import__("tensorwire.{name}")):
            try:
                attempt()
            except ModuleNotFoundError as exc:
                print(exc)
    """)
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0] == lines[1], out
    assert f"pip install 'tensorwire[{extra}]'" in lines[0]
