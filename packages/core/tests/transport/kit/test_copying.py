"""Large copies shared with the process's copy helpers: every byte lands, whoever copies
it, and the caller never depends on a helper getting to the copy."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorwire.transport.kit import copying
from tensorwire.transport.kit.copying import CHUNK_BYTES, PARALLEL_BYTES, copy_pairs


def _pairs(sizes: list[int], seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(np.zeros(n, np.uint8), rng.integers(0, 256, n, dtype=np.uint8)) for n in sizes]


@settings(deadline=None, max_examples=25)
@given(
    st.lists(
        st.sampled_from([0, 1, 4095, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 7, 3 << 20]),
        min_size=1,
        max_size=5,
    )
)
def test_every_byte_lands(sizes: list[int]) -> None:
    pairs = _pairs(sizes)
    copy_pairs(pairs)
    for target, source in pairs:
        assert np.array_equal(target, source)


def test_a_copy_into_views_of_one_buffer_leaves_the_gaps_alone() -> None:
    # As the shared-memory medium uses it: frames at offsets in one segment.
    segment = np.full(PARALLEL_BYTES * 2 + 300, 7, np.uint8)
    sources = [s for _, s in _pairs([PARALLEL_BYTES + 5, PARALLEL_BYTES // 3])]
    offsets = [100, PARALLEL_BYTES + 200]
    copy_pairs([(segment[o : o + len(s)], s) for o, s in zip(offsets, sources, strict=True)])
    for o, s in zip(offsets, sources, strict=True):
        assert np.array_equal(segment[o : o + len(s)], s)
    assert (segment[:100] == 7).all()
    assert (segment[100 + len(sources[0]) : offsets[1]] == 7).all()
    assert (segment[offsets[1] + len(sources[1]) :] == 7).all()


def test_the_caller_copies_everything_when_no_helper_comes(monkeypatch) -> None:
    # Helpers busy or starved of CPU: the job is offered to nobody, and the copy still
    # completes on the calling thread (it never waits for a helper to start).
    monkeypatch.setattr(copying._helpers, "offer", lambda job, helpers: None)
    pairs = _pairs([PARALLEL_BYTES * 2])
    copy_pairs(pairs)
    assert np.array_equal(pairs[0][0], pairs[0][1])


def test_helpers_and_the_caller_share_the_chunks() -> None:
    if copying._helpers.available() == 0:
        pytest.skip("one CPU: no copy helpers (they run on any machine with two or more)")
    # Hold the caller back until a helper has claimed a chunk: the helper's work is real.
    pairs = _pairs([PARALLEL_BYTES * 2])
    chunks = [
        (t[i : i + CHUNK_BYTES], s[i : i + CHUNK_BYTES])
        for t, s in pairs
        for i in range(0, t.nbytes, CHUNK_BYTES)
    ]
    helper_claimed = threading.Event()

    def copy(target, source):
        if threading.current_thread().name == "tensorwire-copy":
            helper_claimed.set()
        np.copyto(target, source)

    job = copying._Job(chunks, copy)
    copying._helpers.offer(job, 1)
    assert helper_claimed.wait(30), "no helper took part in 30 s"
    job.work()
    job.wait()
    assert np.array_equal(pairs[0][0], pairs[0][1])


def test_a_failed_chunk_is_raised_to_the_caller() -> None:
    target = np.zeros(PARALLEL_BYTES, np.uint8)
    # Neither NumPy nor the streaming kernel copies float64 into uint8, in whichever
    # thread copies.
    with pytest.raises((TypeError, ValueError)):
        copy_pairs([(target, np.zeros(PARALLEL_BYTES, np.float64))])


# -- the streaming kernel -------------------------------------------------------------------
needs_kernel = pytest.mark.skipif(
    copying.KERNEL != "streaming",
    reason="the compiled copy kernel is not built here (pure build) or cannot stream (not "
    "x86); it is built and streams on every x86-64 CI runner",
)


@needs_kernel
@pytest.mark.parametrize("target_offset", [0, 1, 7, 15, 16, 63])
@pytest.mark.parametrize("source_offset", [0, 3])
@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 63, 64, 65, 1000, 4096 + 50])
def test_the_streaming_kernel_copies_every_byte_and_nothing_else(
    target_offset: int, source_offset: int, n: int
) -> None:
    # Every alignment of the destination (the kernel streams from a 16-byte boundary, with
    # plain copies before and after) and of the source (read unaligned).
    from tensorwire.transport.kit import _copy_c

    rng = np.random.default_rng(n + 131 * target_offset + 7 * source_offset)
    buffer = np.full(n + 200, 0xA5, np.uint8)
    source = rng.integers(0, 256, n + source_offset, dtype=np.uint8)[source_offset:]
    _copy_c.stream_copy(buffer[target_offset : target_offset + n], source)
    assert np.array_equal(buffer[target_offset : target_offset + n], source)
    assert (buffer[:target_offset] == 0xA5).all()
    assert (buffer[target_offset + n :] == 0xA5).all()


@needs_kernel
def test_the_streaming_kernel_refuses_what_it_cannot_copy() -> None:
    from tensorwire.transport.kit import _copy_c

    with pytest.raises(ValueError, match="stream_copy of 5 bytes into a target of 4"):
        _copy_c.stream_copy(np.zeros(4, np.uint8), np.zeros(5, np.uint8))
    with pytest.raises((TypeError, ValueError)):  # read-only target
        _copy_c.stream_copy(np.frombuffer(bytes(4), np.uint8), np.zeros(4, np.uint8))
    # A read-only source is fine (frames are often bytes).
    target = np.zeros(4, np.uint8)
    _copy_c.stream_copy(target, np.frombuffer(b"abcd", np.uint8))
    assert bytes(target) == b"abcd"


@needs_kernel
def test_large_copies_stream_and_small_ones_do_not(monkeypatch) -> None:
    from tensorwire.transport.kit import _copy_c

    streamed: list[int] = []

    def recording(target, source):
        streamed.append(target.nbytes)
        _copy_c.stream_copy(target, source)

    monkeypatch.setattr(copying, "_stream_copy", recording)
    small = _pairs([copying.STREAM_BYTES // 2 - 1, copying.STREAM_BYTES // 2])
    copy_pairs(small, share=False)
    assert streamed == []
    large = _pairs([copying.STREAM_BYTES // 2, copying.STREAM_BYTES // 2])
    copy_pairs(large)  # shared with the helpers when there are any: they stream too
    assert sum(streamed) == copying.STREAM_BYTES
    for target, source in small + large:
        assert np.array_equal(target, source)


def test_a_forked_child_copies_with_helpers_of_its_own() -> None:
    code = (
        "import os, numpy as np\n"
        "from tensorwire.transport.kit.copying import PARALLEL_BYTES, copy_pairs\n"
        "def big():\n"
        "    t = np.zeros(2 * PARALLEL_BYTES, np.uint8); s = np.ones_like(t)\n"
        "    copy_pairs([(t, s)]); assert (t == 1).all()\n"
        "big()\n"  # the parent's helpers start
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    big(); os._exit(0)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "assert os.waitstatus_to_exitcode(status) == 0, status\n"
        "big()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("value", "ok"), [("0", True), ("2", True), ("-1", False), ("x", False)])
def test_the_helper_count_is_read_from_the_environment(value, ok) -> None:
    code = (
        "import numpy as np, threading\n"
        "from tensorwire.transport.kit.copying import PARALLEL_BYTES, copy_pairs\n"
        "t = np.zeros(2 * PARALLEL_BYTES, np.uint8); s = np.ones_like(t)\n"
        "copy_pairs([(t, s)]); assert (t == 1).all()\n"
        "print(sum(th.name == 'tensorwire-copy' for th in threading.enumerate()))\n"
    )
    env = {**os.environ, "TENSORWIRE_COPY_HELPERS": value}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    if not ok:
        assert done.returncode != 0
        assert "TENSORWIRE_COPY_HELPERS must be a whole number" in done.stderr
        return
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == min(int(value), (os.cpu_count() or 1) - 1)


def test_an_unshared_copy_stays_on_the_calling_thread(monkeypatch) -> None:
    offered: list[int] = []
    monkeypatch.setattr(copying._helpers, "offer", lambda job, helpers: offered.append(helpers))
    pairs = _pairs([PARALLEL_BYTES * 2])
    copy_pairs(pairs, share=False)
    assert offered == [] and np.array_equal(pairs[0][0], pairs[0][1])
    if copying._helpers.available():
        copy_pairs(pairs)  # shared: offered to the helpers
        assert offered and offered[0] >= 1
