"""The worker's side of ``distributed_save``: one stream of chunks per save in progress.

The dispatcher lists the saves in progress in its heartbeat replies; the worker runs one
writer thread per save, which asks the dispatcher for a split (``GetSnapshotSplit``),
writes the dataset's elements from that split as the chunk of that number (temporary
file, then rename: see ``dataset/snapshot_format.py``), and reports it with its next
request. A writer whose dispatcher is unreachable for longer than the worker's
``dispatcher_timeout`` ends; the next heartbeat that lists the save starts it again. The
dispatcher decides when the save is done (``snapshot_manager.py``).
"""

from __future__ import annotations

import logging
import secrets
import threading
from typing import TYPE_CHECKING, Any

from tensorwire import errors

from ..dataset import snapshot_format as fmt
from . import pipeline
from .protocol import as_bytes

if TYPE_CHECKING:
    from .worker import _Worker

__all__ = ["SnapshotWriters"]

log = logging.getLogger(__name__)

#: Between two GetSnapshotSplit calls while every split left is being written elsewhere.
_WAIT_POLL_S = 0.2


class _OneSplit:  # implements dataset.sharding.SplitProvider
    """The split provider of one chunk: its split, then the end."""

    def __init__(self, split: Any) -> None:
        self._split = split
        self._given = False

    def get_next(self) -> Any:
        if self._given:
            return None
        self._given = True
        return self._split

    def reset(self) -> None:
        self._given = False

    def num_splits(self) -> int:
        return 1


class _ChunkStopped(Exception):
    """The worker stopped while a chunk was being written (the chunk is left out)."""


class SnapshotWriters:
    """The writer threads of one worker, one per save in progress."""

    def __init__(self, worker: _Worker) -> None:
        self._worker = worker
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}

    def update(self, saves: list[dict[str, Any]]) -> None:
        """Start a writer for each save in ``saves`` (a heartbeat reply's) without one."""
        with self._lock:
            for path in [p for p, t in self._threads.items() if not t.is_alive()]:
                del self._threads[path]
            for save in saves:
                path = str(save["path"])
                thread = self._threads.get(path)
                if (thread is not None and thread.is_alive()) or self._worker.stopped.is_set():
                    continue
                thread = threading.Thread(
                    target=self._run,
                    args=(path, str(save["dataset_id"]), str(save.get("fingerprint", ""))),
                    name=f"tw-data-snapshot-{len(self._threads)}",
                    daemon=True,
                )
                self._threads[path] = thread
                thread.start()

    def threads(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._threads.values())

    def _run(self, path: str, dataset_id: str, fingerprint: str) -> None:
        worker = self._worker
        request: dict[str, Any] = {
            "path": path,
            "worker_address": worker.address,
            "worker": worker.incarnation,
            # This writer: the dispatcher hands a retried request the split it handed out
            # before, and takes back what an earlier writer here held.
            "stream": secrets.token_hex(8),
        }
        try:
            definition = worker.dataset_def(dataset_id, fingerprint, worker.stopped)
            try:
                meta = fmt.read_metadata(path)
                dataset = pipeline.deserialize(
                    definition, code_allowed=not worker.config.registered_pipelines_only
                )
            except Exception as exc:  # noqa: BLE001 - e.g. the path is not shared: say so
                request["error"] = f"cannot start writing: {type(exc).__name__}: {exc}"
                worker.dispatcher_call("GetSnapshotSplit", request)
                return
            while not worker.stopped.is_set():
                reply = worker.dispatcher_call("GetSnapshotSplit", request)
                request.pop("committed", None)
                if reply.get("end"):
                    return
                if reply.get("wait"):
                    worker.stopped.wait(_WAIT_POLL_S)
                    continue
                number = int(reply["number"])
                split = pipeline.decode_split(as_bytes(reply["split"]))
                try:
                    self._write(path, number, dataset, split, meta)
                except _ChunkStopped:
                    return
                except Exception as exc:  # noqa: BLE001 - the save fails, with the reason
                    log.warning("snapshot %s: writing chunk %d failed: %s", path, number, exc)
                    request["error"] = f"chunk {number}: {type(exc).__name__}: {exc}"
                    worker.dispatcher_call("GetSnapshotSplit", request)
                    return
                request["committed"] = number
        except errors.CancelledError:
            return  # the worker stopped
        except Exception as exc:  # noqa: BLE001 - the next heartbeat starts a writer again
            if not worker.stopped.is_set():
                log.warning("snapshot %s: the writer stops for now: %s", path, exc)

    def _write(
        self, path: str, number: int, dataset: Any, split: Any, meta: dict[str, Any]
    ) -> None:
        stopped = self._worker.stopped

        def elements() -> Any:
            for element in pipeline.iterate_splits(dataset, _OneSplit(split)):
                if stopped.is_set():
                    raise _ChunkStopped
                yield element

        fmt.write_chunk(
            path,
            number,
            elements(),
            meta.get("compression") or "",
            meta.get("compression_level"),
        )
