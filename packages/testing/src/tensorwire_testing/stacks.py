"""What this process's threads are doing, grouped by where they are: for the message of a
test that waited for progress and saw none, so that a stall met once in CI says where it
was stuck (500 threads in one place read as one line, not 500 tracebacks)."""

from __future__ import annotations

import sys
import threading
import traceback

__all__ = ["thread_stacks"]


def _where(frame: traceback.FrameSummary) -> str:
    parts = frame.filename.replace("\\", "/").rsplit("/", 2)
    return f"{'/'.join(parts[-2:])}:{frame.lineno} {frame.name}"


def thread_stacks(depth: int = 8, groups: int = 12, first: tuple[str, ...] = ()) -> str:
    """Every thread's innermost ``depth`` frames, threads at the same place counted once.

    Args:
      depth: frames shown per place, innermost first.
      groups: places shown, the most crowded first (the rest are counted).
      first: prefixes of thread names whose places come before all others (and are not
        counted in ``groups``): the threads a test waited for, which a log that keeps only
        the start of a long message must not cut off.

    Returns:
      A multi-line text: a header, then per place how many threads are there (with a few
      of their names) and its frames.

    Examples:
        >>> from tensorwire_testing.stacks import thread_stacks
        >>> thread_stacks().splitlines()[0].endswith("places (innermost frame first):")
        True
    """
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    places: dict[tuple[str, ...], list[str]] = {}
    for ident, frame in sys._current_frames().items():
        stack = traceback.extract_stack(frame)[-depth:]
        place = tuple(_where(f) for f in reversed(stack))
        places.setdefault(place, []).append(names.get(ident, f"thread {ident}"))
    crowded = sorted(places.items(), key=lambda item: -len(item[1]))
    total = sum(len(threads) for threads in places.values())
    lines = [f"{total} threads in {len(places)} places (innermost frame first):"]
    if first:
        named = [item for item in crowded if any(t.startswith(first) for t in item[1])]
        crowded = [item for item in crowded if item not in named]
        crowded[:0] = named
        groups += len(named)
    for place, threads in crowded[:groups]:
        sample = ", ".join(sorted(threads)[:3]) + (", ..." if len(threads) > 3 else "")
        lines.append(f"- {len(threads)} thread(s) ({sample})")
        lines.extend(f"    {where}" for where in place)
    if len(crowded) > groups:
        rest = sum(len(threads) for _, threads in crowded[groups:])
        lines.append(f"- and {rest} thread(s) in {len(crowded) - groups} other places")
    return "\n".join(lines)
