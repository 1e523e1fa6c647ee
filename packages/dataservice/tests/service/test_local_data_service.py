"""tw.test.create_local_data_service and the fixture functions in tensorwire_testing."""

from __future__ import annotations

import pytest
import tensorwire as tw
from tensorwire_testing import data_service as helpers

from .helpers import values


def test_create_local_data_service(protocol):
    with tw.test.create_local_data_service(2, protocol=protocol) as local:
        assert local.dispatcher._num_workers() == 2
        assert local.target.startswith(f"{protocol}://")
        ds = tw.data.Dataset.range(5).apply(
            tw.data.service.distribute("parallel_epochs", local.target)
        )
        assert sorted(values(ds)) == sorted(list(range(5)) * 2)
        local.add_worker()
        assert local.dispatcher._num_workers() == 3
    with pytest.raises(RuntimeError, match="cannot be started"):
        local.dispatcher.start()


def test_create_local_data_service_fault_tolerant(protocol, tmp_path):
    with tw.test.create_local_data_service(
        1, protocol=protocol, work_dir=str(tmp_path), fault_tolerant_mode=True
    ) as local:
        tw.data.service.register_dataset(local.target, tw.data.Dataset.range(3))
    assert (tmp_path / "journal-0000000000.log").stat().st_size > 20


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_workers"):
        tw.test.create_local_data_service(-1)
    with pytest.raises(ValueError, match="not both"):
        tw.test.create_local_data_service(
            1, dispatcher_config=tw.data.service.DispatcherConfig(), port=0
        )


def test_fixture_functions_stop_what_they_made(protocol):
    gen = helpers.local_data_service_factory(protocol)
    factory = next(gen)
    local = helpers.local_data_service(factory)
    assert values(
        tw.data.Dataset.range(3).apply(tw.data.service.distribute("parallel_epochs", local.target))
    ) == [0, 1, 2]
    with pytest.raises(StopIteration):
        next(gen)
    with pytest.raises(RuntimeError):
        local.dispatcher.start()


def test_process_fixture_kills_its_processes(cross_process_protocol):
    gen = helpers.data_service_process_factory()
    factory = next(gen)
    dispatcher = factory("dispatcher", ["--protocol", cross_process_protocol])
    assert dispatcher.process.poll() is None and dispatcher.port > 0
    with pytest.raises(StopIteration):
        next(gen)
    assert dispatcher.process.poll() is not None
