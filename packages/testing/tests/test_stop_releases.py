"""After ``stop()`` a server holds nothing: its port binds again at once, and the file
descriptors and threads of the process are back where they were before it was made.

For task servers (``tw.Server``), dispatchers and workers, started or never started, on the
protocol of the run. The counts are taken in a fresh child process (``/proc/self``), so that
servers of earlier tests, still closing connections, cannot hide a leak or fake one.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import tensorwire as tw
from tensorwire_testing.waiting import scaled

KINDS = ["server", "dispatcher", "worker"]

# The child makes and stops one server (and uses it, when started) as a warm-up, then
# measures a second cycle. The warm-up is needed: the first server of a process creates
# process-wide things that stay for good by design (gRPC's core threads and its event
# engine's pollers, the data service's channel cache, the background call pool, the
# codec's buffers, the movers' idle-connection reaper), and would read as a leak of the
# first server if measured.
_CHILD = r"""
import json, sys, threading, time
import tensorwire as tw
from tensorwire_testing.resources import open_files, resources, wait_for_release

kind, protocol, start = sys.argv[1], sys.argv[2], sys.argv[3] == "1"

def read_through(target):
    dataset = tw.data.Dataset.range(5).apply(tw.data.service.distribute(
        processing_mode="parallel_epochs", service=target))
    assert [int(x) for x in dataset.as_numpy_iterator()] == list(range(5))

def cycle():
    if kind == "server":
        server = tw.Server({"w": ["localhost:0"]}, job_name="w", task_index=0,
                           protocol=protocol, start=start)
        if start:
            with tw.Session(server.target) as sess:
                assert sess.run(abs, -3) == 3
        server.stop()
    elif kind == "dispatcher":
        d = tw.data.service.DispatchServer(
            tw.data.service.DispatcherConfig(protocol=protocol), start=start)
        if start:
            dataset = tw.data.Dataset.range(3)
            tw.data.service.register_dataset(d.target, dataset)
        d.stop()
    else:
        # With its own dispatcher: a stopped worker stays registered with its dispatcher
        # until it misses heartbeats, and the next cycle's reader would wait for it.
        d = tw.data.service.DispatchServer(
            tw.data.service.DispatcherConfig(protocol=protocol), start=start)
        w = tw.data.service.WorkerServer(tw.data.service.WorkerConfig(
            dispatcher_address=d.target.split("://")[1], protocol=protocol), start=start)
        if start:
            read_through(d.target)
        w.stop()
        d.stop()

def python_threads():
    return sorted(t.name for t in threading.enumerate())

cycle()
before, files_before, threads_before = resources(), open_files(), python_threads()
cycle()
# The servers' own threads: named by tensorwire, or gRPC's server threads. Not a reader's
# release call (tw-data-release-*): the reader's, not a server's; it ends within its call
# deadline and is polled for below with the other threads. Nor the readers' close watch
# (tw-data-reader-watch): a client's thread, which ends about a second after the last
# reader it watches has closed (CI once saw it still there when the stops returned
# quickly); it too is polled for below. Nor the process-wide pool of
# call_async (tensorwire-call-*, ``transport.threads.background``): the warm-up made it,
# and a cycle whose client calls overlap more may start a further thread of it, which
# idles out after ``threads.IDLE_SECONDS`` like the pool's first (CI: tensorwire-call-2
# under load). (The grpc channels' idle-connection housekeeper, tensorwire-idle-reaper,
# is one thread per process started with its first channel: the warm-up has it, so it
# is not excused here.)
CLIENT_SIDE = ("tw-data-release-", "tw-data-reader-watch", "tensorwire-call-")
own_left = [n for n in set(python_threads()) - set(threads_before)
            if n.startswith(("tw-", "tensorwire-", "inproc server"))
            and not n.startswith(CLIENT_SIDE)
            or n.endswith(("(_serve)", "(cancel_all_calls_after_grace)"))]

def threads_not_pooled():
    return [n for n in python_threads() if not n.startswith("tensorwire-call-")]

# Others (the channel threads gRPC runs while client calls such as a dispatcher's nudges
# finish) end a moment later.
end = time.monotonic() + 20
baseline = [n for n in threads_before if not n.startswith("tensorwire-call-")]
while len(threads_not_pooled()) > len(baseline) and time.monotonic() < end:
    time.sleep(0.02)
pooled_before = len(threads_before) - len(baseline)

def resources_not_pooled():
    # OS threads less the call_async pool's beyond the warm-up's (see CLIENT_SIDE).
    now = resources()
    extra = len(python_threads()) - len(threads_not_pooled()) - pooled_before
    return type(now)(fds=now.fds, threads=now.threads - max(0, extra))

try:
    after = wait_for_release(resources_not_pooled, before, timeout=20, what=kind)
    error = None
except AssertionError as exc:
    after, error = resources_not_pooled(), str(exc)
files_after = open_files()
print(json.dumps({
    "before": before.to_json(), "after": after.to_json(), "error": error,
    "own_threads_left": sorted(own_left),
    "threads_left": sorted(set(threads_not_pooled()) - set(threads_before)),
    "files_left": sorted(v for k, v in files_after.items() if files_before.get(k) != v),
}))
"""


def _cycle_in_child(kind: str, protocol: str, start: bool) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, kind, protocol, "1" if start else "0"],
        capture_output=True,
        text=True,
        timeout=scaled(120),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("start", [True, False], ids=["started", "never-started"])
@pytest.mark.parametrize("kind", KINDS)
def test_stop_gives_back_every_thread_and_file_descriptor(kind, start, tensorwire_protocol):
    result = _cycle_in_child(kind, tensorwire_protocol, start)
    # The server's own threads must be gone when stop() returns, not a moment later.
    assert result["own_threads_left"] == [], result
    # Other threads, OS threads and descriptors (gRPC's too) may take a moment: the child
    # polled for them.
    assert result["threads_left"] == [], result
    assert result["error"] is None, result


def _make(kind: str, protocol: str, port: int, start: bool):
    if kind == "server":
        return tw.Server(
            {"w": [f"localhost:{port}"]}, job_name="w", task_index=0, protocol=protocol, start=start
        )
    if kind == "dispatcher":
        return tw.data.service.DispatchServer(
            tw.data.service.DispatcherConfig(port=port, protocol=protocol), start=start
        )
    # A worker never started needs no dispatcher; a started one registers with this one.
    return tw.data.service.WorkerServer(
        tw.data.service.WorkerConfig(
            dispatcher_address="localhost:1", port=port, protocol=protocol
        ),
        start=False,
    )


def _port(server) -> int:
    return int(server.port if isinstance(server, tw.Server) else server._port)


@pytest.mark.parametrize("start", [True, False], ids=["started", "never-started"])
@pytest.mark.parametrize("kind", KINDS)
def test_the_port_binds_again_as_soon_as_stop_returns(kind, start, tensorwire_protocol):
    if kind == "worker" and start:
        dispatcher = tw.data.service.DispatchServer(
            tw.data.service.DispatcherConfig(protocol=tensorwire_protocol)
        )
        try:
            config = tw.data.service.WorkerConfig(
                dispatcher_address=dispatcher._address, protocol=tensorwire_protocol
            )
            first = tw.data.service.WorkerServer(config)
            port = first._port
            first.stop()
            again = tw.data.service.WorkerServer(
                tw.data.service.WorkerConfig(
                    dispatcher_address=dispatcher._address, port=port, protocol=tensorwire_protocol
                )
            )
            assert again._port == port
            again.stop()
        finally:
            dispatcher.stop()
        return
    first = _make(kind, tensorwire_protocol, 0, start)
    port = _port(first)
    first.stop()
    again = _make(kind, tensorwire_protocol, port, start)  # raised "already in use" before
    try:
        assert _port(again) == port
    finally:
        again.stop()


def test_the_port_of_a_stopped_server_is_free_for_anyone(tensorwire_protocol):
    if tensorwire_protocol == "inproc":
        pytest.skip("inproc ports are not OS ports")
    server = tw.Server(
        {"w": ["localhost:0"]},
        job_name="w",
        task_index=0,
        protocol=tensorwire_protocol,
        start=False,
    )
    port = server.port
    server.stop()
    with socket.socket() as sock:  # a plain socket, without SO_REUSEPORT
        sock.bind(("127.0.0.1", port))
