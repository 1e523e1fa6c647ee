"""Find gRPC C-core log lines in a process's output, and run processes as a user would.

tensorwire keeps gRPC's C core silent unless the user sets ``GRPC_VERBOSITY`` or
``GRPC_TRACE`` (``tensorwire_grpc.core_logging``). Tests of that run real processes and look
for these lines in what they print.
"""

from __future__ import annotations

import os
import re

__all__ = ["GRPC_LOG_VARIABLES", "core_log_lines", "user_environment"]

# absl's prefix, as gRPC writes it: severity letter, MMDD (0000 before absl is initialised),
# time, thread id, then source file and line: "I0000 00:00:1733.1   123 chttp2_transport.cc:1403]".
_CORE_LINE = re.compile(r"\b[IWEF]\d{4} [\d:.]+\s+\d+ [\w./-]+\.(?:cc|c|h):\d+\]")
# absl's own notice, printed once before the first of those lines.
_ABSL_NOTICE = "All log messages before absl::InitializeLog()"

#: The variables by which a user asks gRPC for its log lines.
GRPC_LOG_VARIABLES = ("GRPC_VERBOSITY", "GRPC_TRACE")


def core_log_lines(output: str) -> list[str]:
    """The lines of ``output`` that gRPC's C core (or absl, on its behalf) wrote."""
    return [line for line in output.splitlines() if _CORE_LINE.search(line) or _ABSL_NOTICE in line]


def user_environment(**overrides: str) -> dict[str, str]:
    """This process's environment without the gRPC log variables, plus ``overrides``.

    A test process that imported ``tensorwire_grpc`` has ``GRPC_VERBOSITY`` set to its
    default; a child given that environment would be quiet whatever the child does. This is
    the environment of a user who set nothing (or only ``overrides``).
    """
    clean = {k: v for k, v in os.environ.items() if k not in GRPC_LOG_VARIABLES}
    clean.update(overrides)
    return clean
