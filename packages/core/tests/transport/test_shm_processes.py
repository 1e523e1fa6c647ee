"""The shared-memory medium between two real processes: round trips, zero copy, kill -9.

The other process is shm_peer.py (it listens; this process connects). Leak checks count
this process's segment mappings (/proc/self/maps) and descriptors (/proc/self/fd), waiting
on the counts with a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from tensorwire import codec, errors
from tensorwire.transport.shm import ShmConnection, connect, memfd_mappings
from tensorwire_testing import eventually, netns

from .shm_counts import counts, inside_a_segment, wait_counts

PEER = Path(__file__).with_name("shm_peer.py")
TOKEN = "shm-t0ken"
DEADLINE_SECONDS = 60.0


def _deadline() -> float:
    return time.monotonic() + DEADLINE_SECONDS


class Peer:
    """shm_peer.py as a child process, connected.

    Args:
      wrap: makes the child's command line run elsewhere (``VirtualHost.wrap``); then the
        peer is not connected (``connection`` is None), only its ``address`` is known.
    """

    def __init__(self, wrap: Callable[[list[str]], list[str]] | None = None) -> None:
        env = dict(os.environ, TENSORWIRE_TEST_SHM_TOKEN=TOKEN)
        argv = [sys.executable, str(PEER)]
        self.process = subprocess.Popen(
            wrap(argv) if wrap else argv, stdout=subprocess.PIPE, env=env, text=True
        )
        assert self.process.stdout is not None
        self.address = self.process.stdout.readline().strip()  # the child prints it first
        if not self.address:
            self.process.kill()
            raise RuntimeError(f"shm_peer.py exited ({self.process.wait()}) before listening")
        if wrap is None:
            self.connection: ShmConnection = connect(self.address, TOKEN, deadline=_deadline())

    def ask(self, tag: str, frames: list | None = None):
        self.connection.send(frames or [], tag=tag.encode(), deadline=_deadline())
        return self.connection.receive(_deadline())

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(DEADLINE_SECONDS)

    def close(self) -> None:
        if hasattr(self, "connection"):
            self.connection.close()
        try:
            self.process.wait(DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()


def _run_peer() -> Iterator[Peer]:
    child = Peer()
    try:
        yield child
    finally:
        if child.process.poll() is None:
            child.kill()
        child.close()


@pytest.fixture
def peer() -> Iterator[Peer]:
    """A peer of its own, for a test that kills it."""
    yield from _run_peer()


@pytest.fixture(scope="module")
def shared_peer() -> Iterator[Peer]:
    """One peer for the tests that leave it as they found it (spawning one costs seconds
    on a loaded machine)."""
    yield from _run_peer()


SIZES = [0, 1, 63, 64, 4097, 1 << 20, (16 << 20) + 3, 64 << 20]


def test_round_trips_of_every_size(shared_peer):
    for size in SIZES:
        sent = {"data": np.arange(size, dtype=np.uint8), "size": size}
        reply = shared_peer.ask("echo", codec.encode(sent))
        got = codec.decode(reply.frames)
        assert got["size"] == size
        np.testing.assert_array_equal(got["data"], sent["data"])
        # Zero copy on both sides: the peer found its arrays in its mapping, we in ours.
        assert reply.tag == b"zero-copy"
        assert size == 0 or inside_a_segment(got["data"])
        del reply, got


def test_float_structures_round_trip(shared_peer):
    sent = [np.random.default_rng(0).standard_normal((256, 1024)).astype(np.float32), (1.5, "s")]
    got = codec.decode(shared_peer.ask("echo", codec.encode(sent)).frames)
    np.testing.assert_array_equal(got[0], sent[0])
    assert got[1] == (1.5, "s")


def test_segments_are_recycled_across_processes(shared_peer):
    _wait_all_free(shared_peer.connection)
    created = shared_peer.connection.pool.created
    for _ in range(5):
        reply = shared_peer.ask("echo", codec.encode(np.ones(4 << 20, np.float32)))
        assert codec.decode(reply.frames).sum() == 4 << 20
        del reply
        # The peer releases our segment once its decoded copy of the request is gone,
        # which is after it sent the reply.
        _wait_all_free(shared_peer.connection)
    # The first echo made at most one segment each way; the later ones reused it.
    assert shared_peer.connection.pool.created <= created + 1


def test_kill_9_of_the_receiver_frees_the_senders_segments(peer):
    before = counts()
    for _ in range(3):  # the peer holds them: three lent segments
        assert peer.ask("hold", codec.encode(np.ones(1 << 20, np.uint8))).tag == b"held"
    assert peer.connection.pool.created == 3 and counts() != before
    peer.kill()
    start = time.monotonic()
    with pytest.raises(errors.UnavailableError, match="peer closed"):
        peer.connection.receive(_deadline())
    assert time.monotonic() - start < DEADLINE_SECONDS
    wait_counts(before)
    with pytest.raises(errors.UnavailableError):
        peer.connection.send([b"x"], deadline=_deadline())


def test_kill_9_of_the_sender_leaves_the_receivers_arrays_readable_then_frees_them(peer):
    before = counts()
    got = codec.decode(peer.ask("send 3000000").frames)
    assert inside_a_segment(got)
    peer.kill()
    with pytest.raises(errors.UnavailableError, match="peer closed"):
        peer.connection.receive(_deadline())
    # The dead sender's segment lives on while an array over it does...
    np.testing.assert_array_equal(got[:1000], np.arange(1000) % 251)
    assert counts()[0] > before[0]
    del got
    wait_counts(before)  # ...and not a byte longer


def test_kill_9_mid_transfer_fails_the_waiting_receiver_within_its_deadline(peer):
    before = counts()
    # The peer passes a 32 MiB segment, then never sends the message that would use it.
    peer.connection.send([], tag=b"stall 33554432", deadline=_deadline())

    def segment_arrived() -> None:
        peer.connection.poll()  # nobody waits on the connection: poll reads what came
        assert memfd_mappings() == before[0] + 1

    eventually(segment_arrived, timeout=DEADLINE_SECONDS, retry_on=(AssertionError,))
    peer.kill()
    start = time.monotonic()
    with pytest.raises(errors.UnavailableError, match="peer closed"):
        peer.connection.receive(time.monotonic() + DEADLINE_SECONDS)
    assert time.monotonic() - start < DEADLINE_SECONDS
    wait_counts(before)


def test_segments_come_back_when_the_peer_drops_its_arrays(shared_peer):
    _wait_all_free(shared_peer.connection)
    for _ in range(3):
        assert shared_peer.ask("hold", codec.encode(np.ones(1 << 20, np.uint8))).tag == b"held"
    assert len(shared_peer.connection.pool._lent) == 3
    assert shared_peer.ask("drop").tag == b"dropped"
    _wait_all_free(shared_peer.connection)
    created = shared_peer.connection.pool.created
    shared_peer.ask("hold", codec.encode(np.ones(1 << 20, np.uint8)))
    assert shared_peer.connection.pool.created == created  # a released one was reused
    assert shared_peer.ask("drop").tag == b"dropped"


def _wait_all_free(connection: ShmConnection) -> None:
    def check() -> None:
        connection.poll()  # nobody waits on the connection: poll reads the releases
        assert not connection.pool._lent

    eventually(check, timeout=DEADLINE_SECONDS, retry_on=(AssertionError,))


def test_kill_9_is_seen_even_when_the_dead_process_had_forked(peer):
    # A forked child inherits the connection's socket; unless it lets go of it at the
    # fork, it keeps the connection open after its parent's death and we would wait.
    before = counts()
    peer.ask("hold", codec.encode(np.ones(1 << 20, np.uint8)))
    child = int(peer.ask("fork").tag)
    try:
        peer.kill()
        with pytest.raises(errors.UnavailableError, match="peer closed"):
            peer.connection.receive(time.monotonic() + 20)
        wait_counts(before)
    finally:
        os.kill(child, signal.SIGKILL)


@pytest.mark.skipif(
    netns.unavailable_reason() is not None,
    reason=f"{netns.unavailable_reason()}; runs wherever the suite runs as root (CI does)",
)
def test_a_listener_in_another_network_namespace_cannot_be_reached():
    # The same-host proof: another network namespace is another host as far as abstract
    # Unix sockets go, even on this kernel, so the name is simply not there.
    with netns.VirtualNetwork() as network:
        elsewhere = Peer(wrap=network.add_host("elsewhere").wrap)
        try:
            with pytest.raises(errors.UnavailableError, match="network namespace"):
                connect(elsewhere.address, TOKEN, deadline=_deadline())
        finally:
            elsewhere.kill()
            elsewhere.close()
