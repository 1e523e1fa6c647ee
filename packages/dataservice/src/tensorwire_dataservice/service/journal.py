"""The dispatcher's write-ahead journal, its snapshots and compaction.

Files in ``work_dir`` (frames and headers: ``journal_format``)::

    snapshot-<g>.tws   the whole state at generation g (there is none for g = 0, the empty state)
    journal-<g>.log    the records applied after snapshot g, in order
    *.tmp              a file being written; never read, removed on open
    journal.log        version 1, from before snapshots: read once, then compacted into g = 1

The state is the newest snapshot (generation g) followed by the records of ``journal-<g>.log``.
A record is written and fsynced before the dispatcher replies to the RPC that caused it, so a
reply the caller saw is never forgotten. On open, a torn tail of the journal (the last write,
cut short by a crash) is cut off; corruption anywhere else, or in a snapshot, refuses to start
with a ``DataLossError`` naming the file and offset, because dropping records would hand out
their ids again. A record of more than ``MAX_RECORD_BYTES`` (2 GiB) is refused before anything
is written.

Compaction (``Journal.compact``), from generation g to g + 1:

1. write ``snapshot-<g+1>.tws.tmp``, fsync it;
2. create ``journal-<g+1>.log`` holding only its file header (written as ``.tmp``, fsynced,
   renamed), fsync the directory;
3. rename the snapshot to ``snapshot-<g+1>.tws`` and fsync the directory: the commit point;
4. append new records to ``journal-<g+1>.log``; delete generation g's files.

Killed before step 3, the directory still says generation g (the leftovers of g + 1 hold no
records and are deleted); killed after it, it says g + 1, whose snapshot already contains every
record of ``journal-<g>.log``, which is never read again. So a restart sees the state exactly
before or exactly after a compaction, and no record is applied twice. A failure before the
commit point removes the new files and leaves the journal as it was (compaction is retried
later); a failure after it closes the journal, since which generation is durable is unknown.

Compaction is due after ``COMPACT_RECORDS`` records or ``COMPACT_BYTES`` bytes, whichever comes
first, but not before the journal is a quarter of the last snapshot's size, so that a large
state (many registered dataset definitions) is not rewritten for every few thousand records.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
from collections.abc import Iterator
from typing import Any

from tensorwire import codec, errors

from . import journal_format as fmt

__all__ = ["Journal", "JournalEntry", "Recovery", "recover", "COMPACT_RECORDS", "COMPACT_BYTES"]

log = logging.getLogger(__name__)

COMPACT_RECORDS = 10_000
COMPACT_BYTES = 64 << 20
LEGACY_JOURNAL_FILE = "journal.log"
# Snapshot items are framed in chunks of at most this many items and (about) bytes.
_CHUNK_ITEMS = 4096
_CHUNK_BYTES = 64 << 20
_FILE_NAME = re.compile(r"(journal|snapshot)-(\d{10})\.(?:log|tws)")


def journal_file(generation: int) -> str:
    return f"journal-{generation:010d}.log"


def snapshot_file(generation: int) -> str:
    return f"snapshot-{generation:010d}.tws"


@dataclasses.dataclass(frozen=True)
class JournalEntry:
    """One record read back: where it is and its decoded value (``None`` with ``error`` set
    when its payload passed the checksum but does not decode)."""

    path: str
    offset: int
    record: Any
    error: str = ""


@dataclasses.dataclass(frozen=True)
class Recovery:
    """What ``recover`` found in a ``work_dir``."""

    generation: int
    snapshot: dict[str, Any] | None
    snapshot_bytes: int
    entries: list[JournalEntry]
    journal_end: int | None  # valid length of journal-<generation>; None: the file is absent
    legacy_bytes: int | None  # size of the version-1 journal.log the entries came from


def recover(work_dir: str) -> Recovery:
    """Read the state's files in ``work_dir`` without changing anything."""
    names = os.listdir(work_dir) if os.path.isdir(work_dir) else []
    generations: dict[str, set[int]] = {"journal": set(), "snapshot": set()}
    for name in names:
        match = _FILE_NAME.fullmatch(name)
        if match:
            generations[match.group(1)].add(int(match.group(2)))
    generation = max(generations["snapshot"], default=0)
    legacy = os.path.join(work_dir, LEGACY_JOURNAL_FILE)
    for newer in sorted(g for g in generations["journal"] if g > generation):
        # A compaction killed before its commit point: the new journal must be empty.
        path = os.path.join(work_dir, journal_file(newer))
        if os.path.getsize(path) > fmt.FILE_HEADER_SIZE:
            raise errors.DataLossError(
                f"{path} holds records but {snapshot_file(newer)} is missing; the work_dir "
                "is damaged"
            )
    snapshot = None
    snapshot_bytes = 0
    if generation:
        path = os.path.join(work_dir, snapshot_file(generation))
        snapshot, meta = _read_snapshot(path, generation)
        snapshot_bytes = os.path.getsize(path)
        if os.path.exists(legacy) and meta.get("legacy_journal_bytes") != os.path.getsize(legacy):
            raise errors.DataLossError(
                f"{work_dir} holds both a version-1 {LEGACY_JOURNAL_FILE} and {path}, which "
                "was not made from it; move one of them away"
            )
    elif os.path.exists(legacy):
        with open(legacy, "rb") as f:
            data = f.read()
        found = fmt.scan_v1(data, legacy)
        if found.torn:
            log.warning("journal %s: torn tail ignored (%s)", legacy, found.torn)
        return Recovery(0, None, 0, _decode(legacy, found), None, len(data))
    path = os.path.join(work_dir, journal_file(generation))
    if not os.path.exists(path):
        if generation:
            raise errors.DataLossError(
                f"{path} is missing although {snapshot_file(generation)} exists; the "
                "work_dir is damaged"
            )
        return Recovery(0, None, 0, [], None, None)
    with open(path, "rb") as f:
        data = f.read()
    if fmt.read_file_header(data, path, fmt.JOURNAL_MAGIC) != generation:
        raise errors.DataLossError(f"{path}: its header names another generation")
    found = fmt.scan(data, path)
    if found.torn:
        log.warning("journal %s: torn tail cut off (%s)", path, found.torn)
    return Recovery(generation, snapshot, snapshot_bytes, _decode(path, found), found.end, None)


def _decode(path: str, found: fmt.Scan) -> list[JournalEntry]:
    entries = []
    for frame in found.frames:
        try:
            entries.append(JournalEntry(path, frame.offset, codec.loads(frame.payload)))
        except Exception as exc:  # noqa: BLE001 - a record that passed its CRC but not decode
            entries.append(JournalEntry(path, frame.offset, None, f"does not decode: {exc}"))
    return entries


def _read_snapshot(path: str, generation: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The snapshot's state dict and the journal's own metadata stored with it."""
    with open(path, "rb") as f:
        data = f.read()
    if fmt.read_file_header(data, path, fmt.SNAPSHOT_MAGIC) != generation:
        raise errors.DataLossError(f"{path}: its header names another generation")
    found = fmt.scan(data, path)
    if found.torn:  # renamed into place only once complete: a short snapshot is damage
        raise errors.DataLossError(f"{path} is incomplete: {found.torn}")
    try:
        parts = [codec.loads(frame.payload) for frame in found.frames]
        head, items, end = parts[0], parts[1:-1], parts[-1]
        if head["kind"] != "head" or end != {"kind": "end", "frames": len(parts)}:
            raise ValueError("missing head or end frame")
        state = dict(head["state"])
        for key in head["lists"]:
            state[key] = []
        for part in items:
            state[part["key"]].extend(part["items"])
    except Exception as exc:  # noqa: BLE001 - any inconsistency is damage
        raise errors.DataLossError(f"{path} is not a whole snapshot: {exc!r}") from exc
    return state, head["journal"]


class Journal:
    """Appends records durably and compacts them into snapshots. Thread safe.

    ``recovery`` is what ``recover`` read (read again when omitted); opening cuts off
    the torn tail it found and deletes leftovers of earlier generations and unfinished
    compactions. A version-1 journal is never appended to: ``compaction_due`` is true
    until ``compact`` has turned it into generation 1.
    """

    def __init__(self, work_dir: str, recovery: Recovery | None = None) -> None:
        os.makedirs(work_dir, exist_ok=True)
        if recovery is None:
            recovery = recover(work_dir)
        self.work_dir = work_dir
        self.generation = recovery.generation
        self._lock = threading.Lock()
        self._closed = False
        self._legacy_bytes = recovery.legacy_bytes
        self._snapshot_bytes = recovery.snapshot_bytes
        self._records = len(recovery.entries)
        self._fd: int | None = None
        self._end = fmt.FILE_HEADER_SIZE
        self._retry_at = 0  # records count before which a failed compaction is not retried
        if self._legacy_bytes is None:
            path = self._path(journal_file(self.generation))
            if recovery.journal_end is None:
                self._create_journal(self.generation)
            else:
                self._end = recovery.journal_end
            self._fd = os.open(path, os.O_WRONLY)
            if os.fstat(self._fd).st_size > self._end:
                os.ftruncate(self._fd, self._end)  # the torn tail
                os.fsync(self._fd)
        self._remove_leftovers()

    @property
    def path(self) -> str:
        """The file records are appended to."""
        return self._path(journal_file(self.generation))

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def legacy(self) -> bool:
        """True while the records came from a version-1 ``journal.log`` (never appended to:
        ``compact`` converts it)."""
        return self._legacy_bytes is not None

    @property
    def records(self) -> int:
        """Records in the current generation's journal (what a restart would replay)."""
        return self._records

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` and fsync; refuse it, writing nothing, if it is too large."""
        payload = codec.dumps(record)
        fmt.check_record_size(len(payload))
        data = fmt.frame(payload)
        with self._lock:
            if self._closed or self._fd is None:
                raise errors.UnavailableError("the dispatcher's journal is closed")
            try:
                _write_at(self._fd, data, self._end)
                os.fsync(self._fd)
            except Exception:
                self._undo_append()
                raise
            self._end += len(data)
            self._records += 1

    def _undo_append(self) -> None:
        # A failed append must not stay in the middle of the journal, where it would read
        # as corruption once later records follow it.
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._end)
        except OSError:
            log.exception("journal %s: cannot undo a failed append; closing it", self.path)
            self._close_locked()

    def compaction_due(self) -> bool:
        if self._legacy_bytes is not None:
            return True
        journal_bytes = self._end - fmt.FILE_HEADER_SIZE
        full = self._records >= COMPACT_RECORDS or journal_bytes >= COMPACT_BYTES
        return (
            full and self._records >= self._retry_at and journal_bytes * 4 >= self._snapshot_bytes
        )

    def postpone_compaction(self) -> None:
        """After a failed compaction: not due again for another ``COMPACT_RECORDS`` records."""
        self._retry_at = self._records + COMPACT_RECORDS

    def compact(self, snapshot: dict[str, Any]) -> None:
        """Make ``snapshot`` (the state now) generation g + 1 and start its empty journal.

        Raises if that fails; the journal is then either unchanged (failure before the
        commit point: records still go to generation g) or closed (failure after it)."""
        with self._lock:
            if self._closed:
                raise errors.UnavailableError("the dispatcher's journal is closed")
            old = self.generation
            new = old + 1
            final = self._path(snapshot_file(new))
            tmp = final + ".tmp"
            meta: dict[str, Any] = {"generation": new}
            if self._legacy_bytes is not None:
                meta["legacy_journal_bytes"] = self._legacy_bytes
            try:
                snapshot_bytes = _write_snapshot(tmp, new, snapshot, meta)
                self._create_journal(new)
            except Exception:
                _remove_quietly(tmp)
                _remove_quietly(self._path(journal_file(new)))
                raise
            try:
                os.replace(tmp, final)  # the commit point
                _fsync_dir(self.work_dir)
                fd = os.open(self._path(journal_file(new)), os.O_WRONLY)
            except Exception:
                log.exception("journal %s: compaction failed at its commit point", self.work_dir)
                self._close_locked()
                raise
            previous_fd, self._fd = self._fd, fd
            self.generation = new
            self._end = fmt.FILE_HEADER_SIZE
            self._records = 0
            self._retry_at = 0
            self._snapshot_bytes = snapshot_bytes
            legacy, self._legacy_bytes = self._legacy_bytes is not None, None
            if previous_fd is not None:
                os.close(previous_fd)
            stale = [snapshot_file(old), journal_file(old)]
            if legacy:
                stale.append(LEGACY_JOURNAL_FILE)
            for name in stale:
                _remove_quietly(self._path(name))
            try:
                _fsync_dir(self.work_dir)
            except OSError:
                log.warning(
                    "journal %s: fsync after removing generation %d failed",
                    self.work_dir,
                    old,
                    exc_info=True,
                )
        log.info(
            "journal %s: compacted into generation %d (%d byte snapshot)",
            self.work_dir,
            new,
            snapshot_bytes,
        )

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        self._closed = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _path(self, name: str) -> str:
        return os.path.join(self.work_dir, name)

    def _create_journal(self, generation: int) -> None:
        """Create ``journal-<generation>.log`` holding only its header, durably."""
        final = self._path(journal_file(generation))
        tmp = final + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_at(fd, fmt.file_header(fmt.JOURNAL_MAGIC, generation), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        _fsync_dir(self.work_dir)

    def _remove_leftovers(self) -> None:
        keep = {journal_file(self.generation), snapshot_file(self.generation)}
        if self._legacy_bytes is not None:
            keep.add(LEGACY_JOURNAL_FILE)
        removed = False
        for name in os.listdir(self.work_dir):
            ours = name.endswith(".tmp") or name == LEGACY_JOURNAL_FILE
            ours = ours or _FILE_NAME.fullmatch(name) is not None
            if ours and name not in keep:
                log.info("journal %s: removing leftover %s", self.work_dir, name)
                _remove_quietly(self._path(name))
                removed = True
        if removed:
            _fsync_dir(self.work_dir)

    def __iter__(self) -> Iterator[Any]:  # pragma: no cover - convenience
        return iter(entry.record for entry in recover(self.work_dir).entries)


def _write_snapshot(
    path: str, generation: int, snapshot: dict[str, Any], meta: dict[str, Any]
) -> int:
    """Write ``snapshot`` to ``path`` as frames (a head, chunks of each list, an end) and
    fsync it; returns the file's size."""
    lists = [key for key, value in snapshot.items() if isinstance(value, list)]
    head = {
        "kind": "head",
        "journal": meta,
        "lists": lists,
        "state": {key: value for key, value in snapshot.items() if key not in lists},
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        offset = _write_at(fd, fmt.file_header(fmt.SNAPSHOT_MAGIC, generation), 0)
        frames = 1
        offset += _write_at(fd, _snapshot_frame(head), offset)
        for key in lists:
            for payload in _chunks(key, snapshot[key]):
                offset += _write_at(fd, fmt.frame(payload), offset)
                frames += 1
        offset += _write_at(fd, _snapshot_frame({"kind": "end", "frames": frames + 1}), offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    return offset


def _snapshot_frame(value: Any) -> bytes:
    payload = codec.dumps(value)
    fmt.check_record_size(len(payload), fmt.MAX_FRAME_BYTES)
    return fmt.frame(payload)


def _chunks(key: str, items: list[Any]) -> Iterator[bytes]:
    """Encoded ``{"kind": "items", ...}`` payloads holding ``items`` in order, each at most
    ``_CHUNK_BYTES`` unless a single item is larger."""
    for start in range(0, len(items), _CHUNK_ITEMS):
        pending = [items[start : start + _CHUNK_ITEMS]]
        while pending:
            part = pending.pop(0)
            payload = codec.dumps({"kind": "items", "key": key, "items": part})
            if len(payload) > _CHUNK_BYTES and len(part) > 1:
                half = len(part) // 2
                pending[:0] = [part[:half], part[half:]]
                continue
            fmt.check_record_size(len(payload), fmt.MAX_FRAME_BYTES)
            yield payload


def _write_at(fd: int, data: bytes, offset: int) -> int:
    view = memoryview(data)
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)
    return done


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        log.warning("journal: cannot remove %s", path, exc_info=True)
