"""Which accelerators this machine has, for tests that need one: skip marks that say why.

A GPU test is skipped, never failed, where no GPU is present, and its reason says where it
runs. The frameworks are imported only when a mark is made (by a test module that uses
them); ``import tensorwire_testing`` imports neither.
"""

from __future__ import annotations

import pytest

__all__ = [
    "NO_CUDA",
    "NO_JAX_GPU",
    "cuda_available",
    "jax_gpu_available",
    "needs_cuda",
    "needs_jax_gpu",
]

#: The skip reason of a test that needs CUDA torch.
NO_CUDA = "needs a CUDA GPU (torch.cuda.is_available() is False here); runs on a GPU machine"
#: The skip reason of a test that needs JAX with a GPU backend.
NO_JAX_GPU = "needs JAX with a GPU backend (jax.devices('gpu') fails here); runs on a GPU machine"


def cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def jax_gpu_available() -> bool:
    """Whether JAX is installed and has a GPU backend with a device."""
    try:
        import jax

        return bool(jax.devices("gpu"))
    except Exception:  # noqa: BLE001 - no jax, or no GPU backend (RuntimeError)
        return False


def needs_cuda() -> pytest.MarkDecorator:
    """A mark that skips a test, with ``NO_CUDA``, where torch sees no CUDA device.

    Returns:
      A ``pytest.mark.skipif``.

    Examples:
        >>> @needs_cuda()
        ... def test_lands_on_the_gpu(): ...
    """
    return pytest.mark.skipif(not cuda_available(), reason=NO_CUDA)


def needs_jax_gpu() -> pytest.MarkDecorator:
    """A mark that skips a test, with ``NO_JAX_GPU``, where JAX has no GPU backend.

    Returns:
      A ``pytest.mark.skipif``.

    Examples:
        >>> @needs_jax_gpu()
        ... def test_lands_on_the_gpu(): ...
    """
    return pytest.mark.skipif(not jax_gpu_available(), reason=NO_JAX_GPU)
