"""Leak counters the shared-memory tests share: this process's segment mappings and
descriptors, and waiting for them to come back to a level."""

from __future__ import annotations

import gc

import numpy as np
from tensorwire.transport.shm import mapped_ranges, memfd_descriptors, memfd_mappings
from tensorwire_testing import eventually

#: Every wait of these tests: generous, so a loaded machine passes.
DEADLINE_SECONDS = 60.0


def counts() -> tuple[int, int]:
    """(mappings, descriptors) of segments in this process, after a collection (arrays
    decoded from a segment hold its mapping until they are gone)."""
    gc.collect()
    return memfd_mappings(), memfd_descriptors()


def wait_counts(expected: tuple[int, int]) -> None:
    """Wait until ``counts()`` is ``expected`` (within ``DEADLINE_SECONDS``)."""

    def check() -> None:
        assert counts() == expected

    eventually(check, timeout=DEADLINE_SECONDS, retry_on=(AssertionError,))


def inside_a_segment(array: np.ndarray) -> bool:
    """Whether ``array``'s memory lies inside a segment this process maps (zero copy)."""
    start = int(array.__array_interface__["data"][0])
    return any(lo <= start and start + array.nbytes <= hi for lo, hi in mapped_ranges())
