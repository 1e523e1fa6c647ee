"""Registered pipelines: a data service that runs no code from the network.

``register_pipeline(name, factory)`` in every process, ``registered_pipeline(name, **params)``
on the reader: only the name and the parameters cross the wire. With
``registered_pipelines_only`` dispatchers and workers refuse datasets sent as code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter

import pytest
import tensorwire as tw
from tensorwire import errors
from tensorwire_dataservice.service import pipeline
from tensorwire_testing.waiting import scaled

Dataset = tw.data.Dataset
service = tw.data.service


def _squares(n: int, offset: int = 0) -> Dataset:
    return Dataset.range(n).map(lambda x: x * x + offset)


service.register_pipeline("squares", _squares)


def _only_registered(service_factory, num_workers=1, **fields):
    return service_factory(
        num_workers,
        registered_pipelines_only=True,
        worker_config={"registered_pipelines_only": True},
        **fields,
    )


@pytest.mark.parametrize("mode", ["parallel_epochs", "distributed_epoch"])
def test_a_registered_pipeline_crosses_the_wire_as_data_only(service_factory, mode):
    dispatcher, _ = _only_registered(service_factory, num_workers=2)
    ds = service.registered_pipeline("squares", n=50, offset=1)
    definition = pipeline.serialize(ds)
    assert definition.startswith(pipeline.REFERENCE_MAGIC)
    assert b"cloudpickle" not in definition and b"\x80" not in definition[:2]
    got = Counter(int(x) for x in ds.apply(service.distribute(mode, dispatcher.target)))
    expected = Counter(x * x + 1 for x in range(50))
    if mode == "parallel_epochs":  # each of the two workers produces the whole dataset
        expected = expected + expected
    assert got == expected


def test_a_dataset_sent_as_code_is_refused_with_the_reason(service_factory, tmp_path):
    dispatcher, _ = _only_registered(
        service_factory, work_dir=str(tmp_path), fault_tolerant_mode=True
    )
    with pytest.raises(errors.PermissionDeniedError, match="registered pipelines only"):
        service.register_dataset(dispatcher.target, Dataset.range(3).map(lambda x: x + 1))
    # A transformed registered pipeline is code again (the transformation is).
    with pytest.raises(errors.PermissionDeniedError):
        service.register_dataset(
            dispatcher.target, service.registered_pipeline("squares", n=3).map(lambda x: x)
        )
    # Nothing of the refused registrations was journaled: a restart recovers nothing of them.
    assert service.register_dataset(dispatcher.target, service.registered_pipeline("squares", n=3))


def test_a_worker_that_runs_registered_pipelines_only_refuses_code(service_factory):
    """Even behind a dispatcher that accepts code, the worker never unpickles a pipeline."""
    dispatcher, (worker,) = service_factory(1, worker_config={"registered_pipelines_only": True})
    ds = (
        Dataset.range(5)
        .map(lambda x: x + 1)
        .apply(service.distribute("parallel_epochs", dispatcher.target))
    )
    with pytest.raises(errors.PermissionDeniedError, match="registered pipelines only"):
        list(ds)


def test_from_dataset_id_rebuilds_the_spec_from_its_own_registry(service_factory):
    dispatcher, _ = _only_registered(service_factory)
    ds = service.registered_pipeline("squares", n=10)
    dataset_id = service.register_dataset(dispatcher.target, ds)
    reader = service.from_dataset_id("parallel_epochs", dispatcher.target, dataset_id)
    assert reader.element_spec == ds.element_spec
    assert sorted(int(x) for x in reader) == [x * x for x in range(10)]


def test_names_and_parameters_are_checked_where_the_mistake_is():
    with pytest.raises(errors.NotFoundError, match="register_pipeline"):
        service.registered_pipeline("no such pipeline")
    with pytest.raises(ValueError, match="plain data"):
        service.registered_pipeline("squares", n=object())
    with pytest.raises(ValueError, match="already registered"):
        service.register_pipeline("squares", lambda: Dataset.range(1))
    service.register_pipeline("squares", _squares)  # the same factory again: fine
    with pytest.raises(errors.InvalidArgumentError, match="failed to build"):
        service.registered_pipeline("squares", wrong_argument=1)
    with pytest.raises(errors.InvalidArgumentError, match="malformed"):
        pipeline.deserialize(pipeline.REFERENCE_MAGIC + b"\x00garbage")


def test_cli_servers_import_pipelines_and_run_no_code(tmp_path, cross_process_protocol):
    """A dispatcher and a worker as real processes, told which module registers the
    pipelines (``--import``) and to run nothing else (``--registered_pipelines_only``)."""
    from tensorwire_testing.data_service import DataServiceProcess

    module = tmp_path / "tw_test_pipelines.py"
    module.write_text(
        textwrap.dedent("""
        import numpy as np
        import tensorwire as tw

        def tiles(n, size):
            return tw.data.Dataset.range(n).map(lambda i: np.full((size,), i, np.int32))

        tw.data.service.register_pipeline("tiles", tiles)
    """)
    )
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    common = [
        "--protocol",
        cross_process_protocol,
        "--import",
        "tw_test_pipelines",
        "--registered_pipelines_only",
    ]
    made = []
    try:
        d = DataServiceProcess("dispatcher", common, env=env).start(timeout=scaled(30))
        made.append(d)
        w = DataServiceProcess(
            "worker", [*common, "--dispatcher_address", d.address], env=env
        ).start(timeout=scaled(30))
        made.append(w)
        sys.path.insert(0, str(tmp_path))
        import tw_test_pipelines  # noqa: F401 - registers "tiles" here too

        target = f"{cross_process_protocol}://{d.address}"
        ds = service.registered_pipeline("tiles", n=6, size=3).apply(
            service.distribute("distributed_epoch", target)
        )
        got = sorted(int(x[0]) for x in ds)
        assert got == list(range(6))
        with pytest.raises(errors.PermissionDeniedError):
            service.register_dataset(target, Dataset.range(2).map(lambda x: x))
    finally:
        if str(tmp_path) in sys.path:
            sys.path.remove(str(tmp_path))
        sys.modules.pop("tw_test_pipelines", None)
        for p in made:
            p.kill()


def test_bad_import_is_a_clear_cli_error():
    done = subprocess.run(
        [sys.executable, "-m", "tensorwire", "dispatcher", "--import", "no_such_module_xyz"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--import no_such_module_xyz" in done.stderr and "Traceback" not in done.stderr
