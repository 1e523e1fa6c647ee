"""The kit is plain Python and NumPy: importing all of it imports no transport library."""

from __future__ import annotations

import subprocess
import sys


def test_the_kit_imports_neither_grpc_nor_pyverbs() -> None:
    code = (
        "import sys\n"
        "from tensorwire.transport.kit import address, copying, framing, handshake, pool, routes\n"
        "from tensorwire.transport.kit import spinning, tickets\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'pyverbs')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
