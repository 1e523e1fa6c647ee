"""Type stub of the compiled copy kernel (``_copy_c.pyx``)."""

from typing import Any

__all__ = ["STREAMING", "stream_copy"]

STREAMING: bool

def stream_copy(target: Any, source: Any) -> None: ...
