"""PyTorch's DataLoader over the tf.data service (``tw.data.service.to_torch``).

Real DataLoaders with worker processes ("fork" and "spawn"), a real dispatcher and workers
on loopback. Where DataLoader workers run, the service runs in processes of its own, as in
training: gRPC cannot be used in a child forked from a process that serves gRPC (a test
below checks that such children fail clearly). Every wait is bounded: the DataLoader's
``timeout`` and pytest-timeout end a hang with an error.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import warnings
from collections import Counter

import numpy as np
import pytest
import tensorwire as tw
from tensorwire import errors
from tensorwire_dataservice.service import protocol as service_protocol
from tensorwire_testing.data_service import DataServiceProcess
from tensorwire_testing.devices import needs_cuda
from tensorwire_testing.waiting import scaled

torch = pytest.importorskip(
    "torch",
    reason="needs torch (pip install 'tensorwire-dataservice[torch]'); CI installs the CPU build",
)

pytestmark = pytest.mark.timeout(scaled(300))

NUM_ELEMENTS = 48
#: Bound on waiting for one element from a DataLoader worker: a hang fails, never blocks.
#: Generous: a spawned worker imports torch first, slow on a loaded machine.
LOADER_TIMEOUT = scaled(150)


def _pipeline():
    # No user functions: the service's worker processes need not import this module.
    return tw.data.Dataset.from_tensor_slices(
        {
            "i": np.arange(NUM_ELEMENTS, dtype=np.int64),
            "x": np.arange(NUM_ELEMENTS * 4, dtype=np.float32).reshape(NUM_ELEMENTS, 4),
        }
    )


def _loader(dataset, num_workers, context=None, **kwargs):
    if num_workers:
        kwargs.setdefault("timeout", LOADER_TIMEOUT)
        kwargs["multiprocessing_context"] = context
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=num_workers, **kwargs)


def _epoch(loader):
    return Counter(int(element["i"]) for element in loader)


EACH_ONCE = Counter(range(NUM_ELEMENTS))


@pytest.fixture(scope="module")
def remote_service(tensorwire_protocol):
    """A dispatcher and two workers, each in its own process: ``grpc://localhost:port``."""
    if tensorwire_protocol == "inproc":
        pytest.skip(
            "needs a network transport (grpc) to reach servers in other processes; "
            "runs wherever tensorwire-grpc is installed"
        )
    made = []
    try:
        dispatcher = DataServiceProcess("dispatcher", ["--protocol", tensorwire_protocol])
        made.append(dispatcher)
        dispatcher.start(timeout=scaled(30))
        for _ in range(2):
            worker = DataServiceProcess(
                "worker",
                ["--protocol", tensorwire_protocol, "--dispatcher_address", dispatcher.address],
            )
            made.append(worker)
            worker.start(timeout=scaled(30))
        yield f"{tensorwire_protocol}://{dispatcher.address}"
    finally:
        for process in made:
            process.kill()


def _distributed(service, **kwargs):
    return _pipeline().apply(tw.data.service.distribute("distributed_epoch", service, **kwargs))


# -- the adapter in DataLoader workers ---------------------------------------------------------


# Spawned workers each import torch (seconds of CPU per worker and epoch), hence the slow
# mark, and spawn runs with two workers only: four are covered by fork, and what spawn adds
# (a fresh interpreter unpickling the adapter) does not depend on how many there are.
@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 4 workers on 2 cores
@pytest.mark.parametrize(
    "context,num_workers",
    [("fork", 2), ("fork", 4), pytest.param("spawn", 2, marks=pytest.mark.slow)],
)
def test_workers_read_each_element_once_per_epoch(remote_service, context, num_workers):
    loader = _loader(tw.data.service.to_torch(_distributed(remote_service)), num_workers, context)
    assert _epoch(loader) == EACH_ONCE
    assert _epoch(loader) == EACH_ONCE  # a second epoch: a new job, read whole again


@pytest.mark.parametrize("context", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])
def test_persistent_workers_read_each_element_once_per_epoch(remote_service, context):
    loader = _loader(
        tw.data.service.to_torch(_distributed(remote_service)), 2, context, persistent_workers=True
    )
    for _ in range(3):
        assert _epoch(loader) == EACH_ONCE


@pytest.mark.slow
def test_workers_of_a_process_serving_grpc_can_be_spawned(service_factory, cross_process_protocol):
    dispatcher, _ = service_factory(2)
    loader = _loader(tw.data.service.to_torch(_distributed(dispatcher.target)), 2, "spawn")
    assert _epoch(loader) == EACH_ONCE


def test_workers_forked_from_a_process_serving_grpc_fail_clearly(
    service_factory, cross_process_protocol
):
    # gRPC cannot run in a child forked while the parent's server threads are inside it:
    # instead of a crash or hang, the worker says what to do.
    dispatcher, _ = service_factory(1)
    loader = _loader(tw.data.service.to_torch(_distributed(dispatcher.target)), 2, "fork")
    with pytest.raises(Exception, match="forked .* serving gRPC.*'spawn'"):
        _epoch(loader)


# -- without workers -------------------------------------------------------------------------


def test_without_workers_the_adapter_reads_the_whole_dataset(service_factory):
    dispatcher, _ = service_factory(2)
    loader = _loader(tw.data.service.to_torch(_distributed(dispatcher.target)), 0)
    assert _epoch(loader) == EACH_ONCE
    assert _epoch(loader) == EACH_ONCE


def test_elements_are_tensors_without_read_only_warnings(service_factory):
    dispatcher, _ = service_factory(1)
    big = np.arange(1 << 18, dtype=np.float32)  # large enough to arrive as a read-only view
    dataset = tw.data.Dataset.from_tensors({"big": big, "n": np.int64(3)}).apply(
        tw.data.service.distribute("parallel_epochs", dispatcher.target)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (element,) = list(tw.data.service.to_torch(dataset))
    assert isinstance(element["big"], torch.Tensor) and element["big"].dtype == torch.float32
    assert torch.equal(element["big"], torch.from_numpy(big))
    assert element["n"].dtype == torch.int64 and element["n"].item() == 3


def test_tensors_share_the_received_buffer():
    from tensorwire_dataservice.service.torch_dataset import _to_tensor

    received = np.frombuffer(bytes(64), dtype=np.float32)  # read-only, as received
    tensor = _to_tensor(received)
    assert tensor.data_ptr() == received.ctypes.data


def test_to_torch_needs_a_data_service_dataset():
    with pytest.raises(TypeError, match="distribute"):
        tw.data.service.to_torch(tw.data.Dataset.range(3))


def test_import_tensorwire_does_not_import_torch():
    code = (
        "import sys, tensorwire as tw; tw.data.service.DispatchServer; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=scaled(60)
    )
    assert result.returncode == 0, result.stderr


# -- a plain data-service dataset in DataLoader workers ----------------------------------------


def test_plain_dataset_in_workers_warns_that_every_worker_reads_everything(
    remote_service, tmp_path
):
    logs = tmp_path / "worker-logs"
    logs.mkdir()

    def log_to_file(worker_id):
        handler = logging.FileHandler(logs / f"{worker_id}.log")
        logging.getLogger("tensorwire_dataservice").addHandler(handler)

    class Plain(torch.utils.data.IterableDataset):
        def __init__(self, dataset):
            self.dataset = dataset

        def __iter__(self):
            return iter(self.dataset.as_numpy_iterator())

    loader = _loader(Plain(_distributed(remote_service)), 2, "fork", worker_init_fn=log_to_file)
    assert _epoch(loader) == EACH_ONCE + EACH_ONCE  # each worker read everything...
    text = "".join(p.read_text() for p in logs.iterdir())
    assert "every DataLoader worker reads the whole dataset" in text  # ...and said so
    assert "to_torch" in text


# -- fork ------------------------------------------------------------------------------------


def _wait_child(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError(f"the forked child {pid} did not finish in {timeout:.0f}s (hung)")


def _in_forked_child(report) -> str:
    """Run ``report()`` (-> str) in a forked child and return what it said; the child
    never returns into pytest, and a hung child fails the test."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read)
            os.write(write, report().encode()[:1000])
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    try:
        assert _wait_child(pid, scaled(60)) == 0
        return os.read(read, 1000).decode()
    finally:
        os.close(read)


def test_a_forked_child_connects_anew_and_reads(remote_service):
    service_name, address = service_protocol.parse_service(remote_service)
    dataset = _distributed(remote_service)
    assert _epoch(dataset.as_numpy_iterator()) == EACH_ONCE  # the parent has talked to all
    parent_channel = service_protocol.channel_to(service_name, address)

    def report() -> str:
        fresh = service_protocol.channel_to(service_name, address) is not parent_channel
        counts = _epoch(dataset.as_numpy_iterator())
        return f"{fresh} {counts == EACH_ONCE}"

    # A new channel in the child, and the whole dataset through it.
    assert _in_forked_child(report) == "True True"
    assert service_protocol.channel_to(service_name, address) is parent_channel
    assert _epoch(dataset.as_numpy_iterator()) == EACH_ONCE  # the parent's still work


def test_inproc_servers_are_unreachable_from_a_forked_child_not_hung(protocol):
    if protocol != "inproc":
        pytest.skip("about the inproc transport; runs with --tensorwire-protocol=inproc")
    dispatcher = tw.data.service.DispatchServer(tw.data.service.DispatcherConfig(protocol="inproc"))
    try:

        def report() -> str:
            name, address = service_protocol.parse_service(dispatcher.target)
            try:
                service_protocol.call(
                    name, address, service_protocol.DISPATCHER_SERVICE, "GetWorkers", {}
                )
            except errors.FailedPreconditionError as exc:
                return str(exc)
            return ""

        message = _in_forked_child(report)
        assert "forked" in message and "cannot cross processes" in message
    finally:
        dispatcher.stop()


# -- torch tensors as elements -----------------------------------------------------------------


def test_pipeline_of_torch_tensors_reaches_the_trainer_as_torch(service_factory):
    dispatcher, _ = service_factory(1)
    weights = torch.arange(12, dtype=torch.float32).reshape(4, 3).to(torch.bfloat16)
    labels = torch.tensor([True, False, True, True])
    dataset = tw.data.Dataset.from_tensor_slices({"w": weights, "y": labels}).apply(
        tw.data.service.distribute("parallel_epochs", dispatcher.target)
    )
    # Inside the service elements are NumPy (their specs are NumPy dtypes; bfloat16 is ml_dtypes).
    assert dataset.element_spec["w"].dtype.name == "bfloat16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        elements = list(tw.data.service.to_torch(dataset))
    assert [type(e["w"]) for e in elements] == [torch.Tensor] * 4
    assert all(e["w"].dtype == torch.bfloat16 and e["y"].dtype == torch.bool for e in elements)
    assert torch.equal(torch.stack([e["w"] for e in elements]), weights)
    assert [bool(e["y"]) for e in elements] == labels.tolist()


@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3fn", "uint16", "bool", "complex64"])
def test_received_arrays_become_tensors_without_a_copy(dtype):
    from tensorwire import codec
    from tensorwire_dataservice.service.torch_dataset import _to_tensor

    t = torch.ones(8, dtype=getattr(torch, dtype))
    received = codec.loads(codec.dumps({"t": t}), numpy=True)["t"]  # as the service reads it
    tensor = _to_tensor(received)
    assert tensor.dtype == t.dtype and tensor.data_ptr() == received.ctypes.data


# -- the receiver's device (to_torch(dataset, device=...)) ------------------------------------


def test_cpu_device_gives_the_same_cpu_tensors_over_the_received_buffers(service_factory):
    dispatcher, _ = service_factory(1)
    adapter = tw.data.service.to_torch(_distributed(dispatcher.target), device="cpu")
    assert adapter.device is None  # nothing to move: received tensors are CPU tensors
    elements = list(_loader(adapter, 0))
    assert sorted(int(e["i"]) for e in elements) == list(range(NUM_ELEMENTS))
    assert all(e["x"].device.type == "cpu" and e["x"].dtype == torch.float32 for e in elements)


def test_received_array_with_the_cpu_device_is_not_copied():
    from tensorwire_dataservice.service.torch_dataset import _to_tensor

    received = np.frombuffer(bytes(64), dtype=np.float32)
    assert _to_tensor(received, torch.device("cpu")).data_ptr() == received.ctypes.data


@pytest.mark.skipif(torch.cuda.is_available(), reason="cuda:0 is present on this machine")
def test_absent_device_is_refused_when_the_adapter_is_made(service_factory):
    dispatcher, _ = service_factory(1)
    dataset = _distributed(dispatcher.target)
    with pytest.raises(errors.InvalidArgumentError, match=r"'cuda:0' is not available.*: cpu"):
        tw.data.service.to_torch(dataset, device="cuda:0")
    with pytest.raises(errors.InvalidArgumentError, match="'tpu' is not a torch device"):
        tw.data.service.TorchDataset(dataset, device="tpu")


def test_dataloader_workers_refuse_a_device_other_than_the_cpu(remote_service):
    # No GPU here to resolve one: the adapter is given a resolved non-CPU device directly,
    # so that the refusal in the worker runs (test_dataloader_workers_refuse_a_gpu_device
    # makes it through device= on a GPU machine).
    adapter = tw.data.service.to_torch(_distributed(remote_service))
    adapter.device = torch.device("meta")
    with pytest.raises(ValueError, match="num_workers=0.*pin_memory=True"):
        list(_loader(adapter, 1, "fork"))


@needs_cuda()
def test_elements_land_on_the_cuda_device(service_factory):
    dispatcher, _ = service_factory(1)
    adapter = tw.data.service.to_torch(_distributed(dispatcher.target), device="cuda:0")
    elements = list(_loader(adapter, 0))
    assert len(elements) == NUM_ELEMENTS
    assert all(e["x"].device == torch.device("cuda", 0) for e in elements)
    assert sorted(int(e["i"]) for e in elements) == list(range(NUM_ELEMENTS))


@needs_cuda()
def test_dataloader_workers_refuse_a_gpu_device(remote_service):
    adapter = tw.data.service.to_torch(_distributed(remote_service), device="cuda:0")
    with pytest.raises(ValueError, match="num_workers=0.*pin_memory=True"):
        list(_loader(adapter, 1, "spawn"))
