"""Malformed requests against real server processes: a task server, a dispatcher and a
worker, each on its gRPC port and its side-channel (bulk) port.

At least :data:`REQUESTS_PER_PORT` malformed requests per port: random bytes on raw TCP
connections, garbage HTTP/2 frames after a valid preface, gRPC calls to every real method
with random, truncated or mutated bodies (raw, and framed by the transport's own Channel),
unknown methods, and on the side channel random bytes, then requests of every op with
random fields after a valid handshake. Afterwards each process must still run, serve a
correct call, and hold no more file descriptors and threads than before the fuzz (within
:data:`TOLERANCE`, polled with a deadline: connections close asynchronously).

The randomness is seeded; the seed is printed on failure. ``TENSORWIRE_FUZZ_SEED`` replays
one. Every loop is bounded in count and in time.
"""

from __future__ import annotations

import dataclasses
import os
import random
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
import tensorwire as tw
from tensorwire import codec, errors
from tensorwire.runtime import messages
from tensorwire.transport import TransportOptions, get_transport
from tensorwire.transport.kit import framing
from tensorwire_grpc import bulk
from tensorwire_grpc.server import (
    CHUNKED_SUFFIX,
    FETCH_PATH,
    HELLO_PATH,
    STREAM_SUFFIX,
)
from tensorwire_testing import TaskProcess
from tensorwire_testing.data_service import DataServiceProcess
from tensorwire_testing.resources import resources, wait_for_release
from tensorwire_testing.waiting import scaled

pytestmark = pytest.mark.slow

REQUESTS_PER_PORT = 2000
#: Longest the fuzz of one port may take (scaled); a server that hangs fails it.
PORT_SECONDS = 60.0
#: Timeout of one call or socket operation of the fuzz.
CALL_SECONDS = 2.0
#: Longest a server may keep a connection after its client closed its end (scaled).
CLOSE_SECONDS = 15.0
#: Descriptors and threads a process may hold beyond its level before the fuzz.
TOLERANCE = 3
SEED_ENV = "TENSORWIRE_FUZZ_SEED"


@dataclasses.dataclass(frozen=True)
class Surface:
    """What a server serves: its service, its methods (those that stream), and how its
    requests are encoded (the valid requests the fuzz mutates)."""

    service: str
    methods: tuple[str, ...]
    streaming: frozenset[str]
    pack: Callable[[Any], list[Any]]

    def paths(self) -> list[str]:
        return [f"/{self.service}/{name}" for name in self.methods]


TASK_SERVER = Surface(
    "tensorwire.WorkerService",
    ("GetStatus", "VarGetOrCreate", "VarRead", "VarUpdate", "Run", "Send", "Recv"),
    frozenset(),
    messages.pack,
)
DISPATCHER = Surface(
    "tensorwire.data.Dispatcher",
    (
        "WorkerHeartbeat",
        "GetOrRegisterDataset",
        "GetDatasetDef",
        "GetDataServiceMetadata",
        "GetOrCreateJob",
        "AcquireClient",
        "ReleaseClient",
        "ClientHeartbeat",
        "GetSplits",
        "GetWorkers",
    ),
    frozenset(),
    codec.encode,
)
WORKER = Surface(
    "tensorwire.data.Worker",
    ("GetElements", "TakeElements", "GetRoundElement", "Nudge"),
    frozenset({"GetElements"}),
    codec.encode,
)
#: Valid requests to mutate. None of them names a worker, a task or a tensor to wait for,
#: so that a mutation that still decodes neither registers a phantom worker (which the
#: correct read afterwards would wait for) nor blocks a handler for long.
BASE_MESSAGES: list[dict[str, Any]] = [
    {},
    {"dataset_id": "1"},
    {"job_id": 1},
    {"name": "v"},
    {"consumer_index": 0},
]


@pytest.fixture(scope="module")
def seed() -> int:
    return int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(2**32))


@pytest.fixture
def protocol(tensorwire_protocol: str) -> str:
    if tensorwire_protocol != "grpc":
        pytest.skip("the fuzz targets grpc ports; runs with --tensorwire-protocol=grpc")
    return tensorwire_protocol


# -- what is sent ------------------------------------------------------------------------------


def _random_bytes(rng: random.Random, most: int) -> bytes:
    return rng.randbytes(rng.randint(0, most))


def _mutated(rng: random.Random, data: bytes) -> bytes:
    """``data`` truncated, extended, or with random bytes changed."""
    out = bytearray(data)
    choice = rng.randrange(4)
    if choice == 0 and out:
        del out[rng.randrange(len(out)) :]
    elif choice == 1:
        out += _random_bytes(rng, 64)
    else:
        for _ in range(rng.randint(1, 8)):
            if out:
                out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def _valid_frames(rng: random.Random, surface: Surface) -> list[bytes]:
    frames = surface.pack(rng.choice(BASE_MESSAGES))
    return [bytes(memoryview(f).cast("B")) for f in frames]


def _random_frames(rng: random.Random, surface: Surface) -> list[bytes]:
    """Random frames, or a valid request's frames mutated."""
    if rng.random() < 0.3:
        return [_random_bytes(rng, 256) for _ in range(rng.randint(0, 4))]
    frames = _valid_frames(rng, surface)
    index = rng.randrange(len(frames))
    frames[index] = _mutated(rng, frames[index])
    return frames


def _manifest(rng: random.Random, surface: Surface) -> bytes:
    """A gRPC message as a tensorwire caller sends one: valid, mutated or random."""
    choice = rng.randrange(3)
    if choice == 0:
        return _random_bytes(rng, 128)
    views = [memoryview(f) for f in _random_frames(rng, surface)]
    message = framing.encode_inline(views, rng.choice([0, framing.FLAG_BULK_OK]))
    if views and rng.random() < 0.1:  # a frame announced far longer than it is
        message = message[:8] + struct.pack("<Q", _length(rng)) + message[16:]
    return message if choice == 1 else _mutated(rng, message)


_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _h2_frames(rng: random.Random) -> bytes:
    """A valid client preface, then HTTP/2 frames with random types, flags, streams and
    payloads (sometimes lying about their length)."""
    out = bytearray(_H2_PREFACE)
    for _ in range(rng.randint(1, 6)):
        payload = _random_bytes(rng, 64)
        length = len(payload) if rng.random() < 0.8 else rng.randrange(1 << 24)
        out += (
            struct.pack(">I", length)[1:]
            + bytes([rng.randrange(11), rng.randrange(256)])
            + struct.pack(">I", rng.randrange(1 << 31))
            + payload
        )
    return bytes(out)


# -- how it is sent ----------------------------------------------------------------------------


def _send_and_close(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=CALL_SECONDS) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the server may close first


def _raw_tcp(rng: random.Random, port: int) -> Iterator[None]:
    while True:
        kind = rng.randrange(3)
        if kind == 0:
            data = _random_bytes(rng, 512)
        elif kind == 1:
            data = _mutated(rng, _H2_PREFACE) + _random_bytes(rng, 64)
        else:
            data = _h2_frames(rng)
        _send_and_close(port, data)
        yield


def _grpc_calls(rng: random.Random, port: int, surface: Surface) -> Iterator[None]:
    """Raw-bytes gRPC calls with malformed messages, mostly to the paths of the methods
    that take them (a method's arity is checked before its request is read), also to the
    other paths, the transport's own and unknown ones."""
    right = []
    for name, path in zip(surface.methods, surface.paths(), strict=True):
        right += [path + STREAM_SUFFIX] if name in surface.streaming else [path]
        right += [path + CHUNKED_SUFFIX]
    other = [FETCH_PATH, HELLO_PATH, "/tensorwire.Nope/Nope", "/x", "/" + "a" * 300]
    for path in surface.paths():
        other += [path, path + STREAM_SUFFIX, path + ":nope"]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        while True:
            path = rng.choice(right if rng.random() < 0.8 else other)
            message = _manifest(rng, surface)
            try:
                if path.endswith(CHUNKED_SUFFIX):
                    chunks = [message] + [_random_bytes(rng, 64) for _ in range(rng.randrange(3))]
                    call = channel.stream_stream(path, None, None)
                    for _ in call(iter(chunks), timeout=CALL_SECONDS):
                        pass
                elif path.endswith(STREAM_SUFFIX) or path == FETCH_PATH:
                    for _ in channel.unary_stream(path, None, None)(message, timeout=CALL_SECONDS):
                        pass
                else:
                    channel.unary_unary(path, None, None)(message, timeout=CALL_SECONDS)
            except grpc.RpcError:
                pass
            yield


def _channel_calls(rng: random.Random, port: int, surface: Surface) -> Iterator[None]:
    """Calls through the transport's Channel (correct framing, malformed contents), some
    large enough to go over the side channel, some to unknown methods."""
    channel = get_transport("grpc").connect(f"localhost:{port}", TransportOptions())
    targets = [(surface.service, name) for name in surface.methods]
    targets += [("tensorwire.Nope", "Nope"), (surface.service, "Nope")]
    try:
        while True:
            service, name = rng.choice(targets)
            frames: list[Any] = list(_random_frames(rng, surface))
            if rng.random() < 0.02:
                frames.append(rng.randbytes(300 * 1024))  # over the bulk threshold
            streaming = name in surface.streaming
            try:
                if streaming if rng.random() < 0.9 else not streaming:
                    channel.call(service, name, frames, timeout=CALL_SECONDS)
                else:
                    for _ in channel.stream(service, name, frames, timeout=CALL_SECONDS):
                        pass
            except errors.OpError:
                pass
            yield
    finally:
        channel.close()


def _bulk_port(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = channel.unary_unary(HELLO_PATH, None, None)(b"", timeout=30)
    side_port, _features = struct.unpack("<II", answer)
    assert side_port, f"the server at port {port} has no side channel"
    return int(side_port)


def _length(rng: random.Random) -> int:
    """A frame length to announce: mostly small, sometimes far more than will be sent."""
    return rng.randrange(64) if rng.random() < 0.9 else rng.choice([3 << 30, 1 << 40, 2**64 - 1])


def _bulk_op(rng: random.Random, surface: Surface, names: list[str]) -> bytes:
    """One side-channel request with random fields (an op the server knows, mostly)."""
    op = rng.choice(
        [bulk.protocol.OP_PUSH, bulk.protocol.OP_FETCH, bulk.protocol.OP_CALL, rng.randrange(256)]
    )
    n = rng.choice([0, 1, 2, rng.randrange(1 << 32)])
    announced = [_length(rng) for _ in range(min(n, 4))]
    lengths = struct.pack(f"<{len(announced)}Q", *announced)
    if op == bulk.protocol.OP_PUSH:
        head = struct.pack("<16sII", rng.randbytes(16), rng.randrange(3000), n)
        return bytes([op]) + head + lengths + _random_bytes(rng, 64)
    if op == bulk.protocol.OP_FETCH:
        return bytes([op]) + _random_bytes(rng, 20)
    if op == bulk.protocol.OP_CALL:
        name = rng.choice(names).encode() if rng.random() < 0.7 else _random_bytes(rng, 40)
        metadata = rng.choice([b"", b"k\0v\0", _random_bytes(rng, 20)])
        head = struct.pack(
            "<HII",
            len(name) if rng.random() < 0.9 else rng.randrange(1 << 16),
            len(metadata),
            rng.randrange(3000),
        )
        body = b"".join(_random_frames(rng, surface))
        return bytes([op]) + head + name + metadata + struct.pack("<I", n) + lengths + body
    return bytes([op]) + _random_bytes(rng, 64)


def _bulk_requests(rng: random.Random, side_port: int, surface: Surface) -> Iterator[None]:
    """Random bytes instead of the handshake, or a valid handshake (no token) and then a
    few requests with random fields at once. Then the connection is half-closed: the server
    must read to the end (or give up on what makes no sense) and close it."""
    names = surface.paths() + ["/nope/Nope"]
    while True:
        if rng.random() < 0.15:
            _send_and_close(side_port, _random_bytes(rng, 256))
            yield
            continue
        with socket.create_connection(("127.0.0.1", side_port), timeout=CALL_SECONDS) as sock:
            hello = _read_exactly(sock, len(bulk.protocol.MAGIC) + bulk.protocol.NONCE_BYTES)
            sock.sendall(bulk.protocol.MAGIC + bytes(bulk.protocol.MAC_BYTES))
            if hello is None or _read_exactly(sock, 1) != b"\x00":
                yield
                continue
            ops = [_bulk_op(rng, surface, names) for _ in range(rng.randint(1, 6))]
            try:
                sock.sendall(b"".join(ops))
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server closed first: it refused an earlier request
            _drain_until_closed(sock, f"side port {side_port}")
        for _ in ops:
            yield


def _drain_until_closed(sock: socket.socket, what: str) -> None:
    """Read until the server closes ``sock``, which it must do soon (a generous, scaled
    deadline) after the client's end of the connection was closed."""
    deadline = time.monotonic() + scaled(CLOSE_SECONDS)
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{what} kept a connection open after its client was done"
        sock.settimeout(remaining)
        try:
            if not sock.recv(65536):
                return
        except TimeoutError:
            continue
        except OSError:
            return  # reset: closed too


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    try:
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            if not chunk:
                return None
            data += chunk
    except OSError:
        return None
    return data


def _fuzz_port(what: str, pid: int, generators: list[tuple[Iterator[None], int]]) -> int:
    """Run each generator for its number of requests, within :data:`PORT_SECONDS`; the
    requests sent. Checks every 100 requests that the process still runs."""
    deadline = time.monotonic() + scaled(PORT_SECONDS)
    sent = 0
    for requests, count in generators:
        for i in range(count):
            next(requests)
            sent += 1
            if i % 100 == 0:
                assert _running(pid), f"{what} died after {sent} malformed requests"
            assert time.monotonic() < deadline, (
                f"{what}: only {sent} malformed requests in {scaled(PORT_SECONDS):.0f}s; "
                "is it hanging?"
            )
        requests.close()
    return sent


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def _fuzz_server(
    what: str,
    pid: int,
    port: int,
    surface: Surface,
    rng: random.Random,
    correct_call: Callable[[], None],
) -> None:
    correct_call()  # warm up: what a first call creates for good is in the baseline
    side_port = _bulk_port(port)
    before = resources(pid)
    grpc_sent = _fuzz_port(
        f"{what} (gRPC port {port})",
        pid,
        [
            (_raw_tcp(rng, port), 500),
            (_grpc_calls(rng, port, surface), 800),
            (_channel_calls(rng, port, surface), REQUESTS_PER_PORT - 1300),
        ],
    )
    bulk_sent = _fuzz_port(
        f"{what} (side port {side_port})",
        pid,
        [
            (_bulk_requests(rng, side_port, surface), REQUESTS_PER_PORT),
        ],
    )
    assert min(grpc_sent, bulk_sent) >= REQUESTS_PER_PORT
    assert _running(pid), f"{what} died during the fuzz"
    correct_call()
    wait_for_release(
        lambda: resources(pid),
        before,
        tolerance=TOLERANCE,
        timeout=30,
        what=f"{what} (pid {pid}) after the fuzz",
    )


def _assert_no_traceback(process: Any, seed: int) -> None:
    """A malformed request is refused, or ends its connection: never a server failure
    logged with a traceback (which also lets anyone fill the log)."""
    lines = process.output.splitlines()
    failures = [i for i, line in enumerate(lines) if line.startswith("Traceback")]
    assert not failures, (
        f"{process.name} logged {len(failures)} traceback(s) under the fuzz (seed {seed}), "
        "the first:\n" + "\n".join(lines[max(0, failures[0] - 1) : failures[0] + 15])
    )


def _with_seed(seed: int, test: Callable[..., None], *args: Any) -> None:
    try:
        test(*args)
    except Exception as exc:
        raise AssertionError(
            f"fuzz failed with seed {seed} (replay with {SEED_ENV}={seed}): {exc}"
        ) from exc


def test_task_server_survives_malformed_requests(protocol: str, seed: int) -> None:
    task = TaskProcess({"w": ["localhost:0"]}, "w", 0, protocol=protocol)
    try:
        task.start(timeout=60)
        assert task.target is not None and task.pid is not None
        target, pid = task.target, task.pid
        port = int(target.rsplit(":", 1)[1])

        def correct_call() -> None:
            with tw.Session(target) as sess:
                assert sess.run(abs, -3, device="/job:w/task:0") == 3

        _with_seed(
            seed,
            _fuzz_server,
            "the task server",
            pid,
            port,
            TASK_SERVER,
            random.Random(seed),
            correct_call,
        )
        assert task.process is not None and task.process.poll() is None
        _assert_no_traceback(task, seed)
    finally:
        task.kill()


def test_dispatcher_and_worker_survive_malformed_requests(protocol: str, seed: int) -> None:
    dispatcher = DataServiceProcess("dispatcher", ["--protocol", protocol])
    worker: DataServiceProcess | None = None
    try:
        dispatcher.start(timeout=60)
        worker = DataServiceProcess(
            "worker", ["--protocol", protocol, "--dispatcher_address", dispatcher.address]
        ).start(timeout=60)
        service = f"{protocol}://{dispatcher.address}"

        def correct_call() -> None:
            dataset = tw.data.Dataset.range(20).apply(
                tw.data.service.distribute(processing_mode="parallel_epochs", service=service)
            )
            assert [int(x) for x in dataset.as_numpy_iterator()] == list(range(20))

        rng = random.Random(seed)
        assert dispatcher.pid is not None and worker.pid is not None
        for what, process, surface in (
            ("the dispatcher", dispatcher, DISPATCHER),
            ("the worker", worker, WORKER),
        ):
            assert process.pid is not None
            _with_seed(
                seed, _fuzz_server, what, process.pid, process.port, surface, rng, correct_call
            )
        for process in (dispatcher, worker):
            assert process.process is not None and process.process.poll() is None
            _assert_no_traceback(process, seed)
    finally:
        dispatcher.kill()
        if worker is not None:
            worker.kill()
