"""The dispatcher's side of ``distributed_save``: which split each worker writes next.

What survives a crash, and where:

- the dispatcher journal holds one ``start_snapshot`` record per save (path, dataset id,
  compression) and a ``finish_snapshot`` once it is done: a restarted dispatcher knows
  which saves to continue;
- the snapshot directory holds everything else (``dataset/snapshot_format.py``): chunk
  ``n`` is the output of the source's split ``n`` and exists once a worker renamed it into
  place. The splits are numbered by the (deterministic) split provider of the dataset, so
  a restarted dispatcher draws them again in the same order and hands out the ones without
  a chunk.

Hand-outs are kept in memory only: a split handed to a worker that dies (dropped for
missed heartbeats, or back as a new process) is handed out again; one handed out by a
dispatcher that died is handed out again by its successor. A writer (one stream per save
on each worker) holds one split at a time: when it asks again without committing it (the
reply was lost and the call retried) it gets the same split, and a new stream on the same
worker (the old writer ended on an error) takes over the old one's. Two workers writing the same
split write the same elements to the same chunk name, and the rename is atomic: the
snapshot has each split once whatever happens. The save is done when the provider is
exhausted and every split has its chunk: the dispatcher writes ``DONE`` (the one file
``load`` trusts) and journals ``finish_snapshot``.

Each worker writes the splits it gets in one stream (``snapshot_writer.py``); the dispatcher
counts the streams for its log and status.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from tensorwire import errors

from ..dataset import snapshot_format as fmt
from . import pipeline
from .protocol import as_bytes

if TYPE_CHECKING:
    from .dispatcher import _Dispatcher

__all__ = ["SnapshotManager"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Save:
    """What the dispatcher knows of one save in progress (in memory; rebuilt on restart)."""

    path: str
    dataset_id: str
    provider: Any = None
    splits: list[bytes] = dataclasses.field(default_factory=list)  # by split number
    exhausted: bool = False
    committed: set[int] = dataclasses.field(default_factory=set)
    # Drawn, neither committed nor handed out: splits taken back from lost workers.
    returned: set[int] = dataclasses.field(default_factory=set)
    # split number -> the writer it was handed to: (worker address, worker incarnation,
    # writer stream). A stream writes one split at a time.
    assigned: dict[int, tuple[str, str, str]] = dataclasses.field(default_factory=dict)
    streams: set[str] = dataclasses.field(default_factory=set)
    started: float = dataclasses.field(default_factory=time.monotonic)


class SnapshotManager:
    """The saves of one dispatcher. Every method is called with the dispatcher's lock."""

    def __init__(self, dispatcher: _Dispatcher) -> None:
        self._d = dispatcher
        self._saves: dict[str, _Save] = {}

    # -- starting ------------------------------------------------------------------------------
    def start(self, req: dict[str, Any]) -> dict[str, Any]:
        """``Snapshot``: begin writing a registered dataset to ``path``."""
        path = os.path.normpath(str(req["path"]))
        dataset_id = str(req["dataset_id"])
        metadata = as_bytes(req["metadata"])
        if not os.path.isabs(path):
            raise errors.InvalidArgumentError(
                f"distributed_save needs an absolute path (workers resolve it), got {path!r}"
            )
        fmt.check_metadata(metadata)
        state = self._d.state
        self._d._dataset(dataset_id)
        request = str(req.get("request") or "")
        known = state.snapshots.get(path)
        if known is not None and request and known.get("request") == request:
            return {}  # accepted already: the reply was lost (a dispatcher restart)
        if known is not None and not known["done"]:
            raise errors.AlreadyExistsError(
                f"a distributed_save to {path} is in progress (dataset {known['dataset_id']})"
            )
        if fmt.is_finished(path):
            raise errors.AlreadyExistsError(
                f"{path} holds a finished snapshot; save to another path"
            )
        if (
            os.path.exists(path)
            and (not os.path.isdir(path) or os.listdir(path))
            and not (known is None and fmt.is_unstarted(path, metadata))
        ):
            raise errors.AlreadyExistsError(
                f"{path} exists and is not an empty directory; distributed_save writes a "
                "new snapshot directory"
            )
        try:
            fmt.write_metadata(path, metadata)
        except OSError as exc:
            raise errors.PermissionDeniedError(
                f"the dispatcher cannot write the snapshot at {path}: {exc}"
            ) from exc
        self._d._commit(
            {"op": "start_snapshot", "path": path, "dataset_id": dataset_id, "request": request}
        )
        # Workers start writing now rather than at their next heartbeat (which also tells them).
        for address in self._d.state.workers:
            self._d._send(address, {"snapshots": self.active()})
        log.info("distributed_save of dataset %s to %s started", dataset_id, path)
        return {}

    # -- hand-outs -----------------------------------------------------------------------------
    def active(self) -> list[dict[str, Any]]:
        """The saves in progress, for worker heartbeat replies."""
        datasets = self._d.state.datasets
        return [
            {
                "path": path,
                "dataset_id": s["dataset_id"],
                "fingerprint": datasets[s["dataset_id"]].fingerprint,
            }
            for path, s in self._d.state.snapshots.items()
            if not s["done"]
        ]

    def next_split(self, req: dict[str, Any]) -> dict[str, Any]:
        """``GetSnapshotSplit``: record the chunk a worker committed (if any), then give it
        the next split to write: ``{"number", "split"}``, ``{"wait": True}`` (every split
        left is being written elsewhere) or ``{"end": True}``."""
        path = str(req["path"])
        address = str(req["worker_address"])
        writer = (address, str(req.get("worker") or ""), str(req.get("stream") or ""))
        record = self._d.state.snapshots.get(path)
        if record is None:
            raise errors.NotFoundError(f"no distributed_save to {path} is known")
        if record["done"]:
            return {"end": True}
        save = self._save(path, record["dataset_id"])
        if "error" in req:
            return self._fail(save, address, str(req["error"]))
        committed = req.get("committed")
        if committed is not None:
            done = int(committed)
            # The file is the truth: a report whose chunk is not in place is not trusted.
            if os.path.exists(fmt.chunk_path(path, done)):
                save.committed.add(done)
            save.assigned.pop(done, None)
        save.streams.add(address)
        self._release_lost(save, writer)
        for held, holder in save.assigned.items():
            if holder == writer:
                # The stream asks again without committing what it holds: the reply that
                # handed it out was lost (the call was retried). The same split, again.
                return {"number": held, "split": save.splits[held]}
        number = self._free_split(save)
        if number is not None:
            save.assigned[number] = writer
            return {"number": number, "split": save.splits[number]}
        if save.exhausted and len(save.committed) == len(save.splits):
            self._finish(save)
            return {"end": True}
        return {"wait": True}

    def _save(self, path: str, dataset_id: str) -> _Save:
        save = self._saves.get(path)
        if save is None:
            # First use, also after a restart: what is on disk is what was written.
            save = self._saves[path] = _Save(path, dataset_id)
            save.committed = fmt.chunk_numbers(path)
            dataset = pipeline.deserialize(
                self._d.state.datasets[dataset_id].dataset_def,
                code_allowed=not self._d.config.registered_pipelines_only,
            )
            save.provider = pipeline.make_split_provider(dataset)
        return save

    def _release_lost(self, save: _Save, writer: tuple[str, str, str]) -> None:
        """Take back the splits of writers that are gone: of workers dropped by the
        dispatcher, and of the worker ``writer`` runs on when they are not ``writer``: a
        worker runs one writer per save, so another one there (a new process after the
        old one died mid-write, or a new stream after the old one ended on an error)
        means the old one writes no more."""
        workers = self._d.state.workers
        for number, holder in list(save.assigned.items()):
            if holder[0] not in workers or (holder[0] == writer[0] and holder != writer):
                del save.assigned[number]
                if number not in save.committed:
                    save.returned.add(number)

    def _free_split(self, save: _Save) -> int | None:
        """The lowest split taken back, else the next one drawn without a chunk yet."""
        while save.returned:
            number = min(save.returned)
            save.returned.discard(number)
            if number not in save.committed and number not in save.assigned:
                return number
        while not save.exhausted:
            split, end = pipeline.split_provider_next(save.provider)
            if end:
                save.exhausted = True
                break
            save.splits.append(pipeline.encode_split(split))
            number = len(save.splits) - 1
            if number not in save.committed:
                return number
        return None

    def _finish(self, save: _Save) -> None:
        fmt.remove_partial_chunks(save.path)  # left by writers that died mid-chunk
        fmt.write_done(save.path, len(save.splits), None)
        self._d._commit({"op": "finish_snapshot", "path": save.path})
        log.info(
            "distributed_save to %s done: %d chunks from %d streams in %.1fs",
            save.path,
            len(save.splits),
            len(save.streams),
            time.monotonic() - save.started,
        )
        del self._saves[save.path]

    def _fail(self, save: _Save, address: str, error: str) -> dict[str, Any]:
        """A worker could not write a split (the pipeline or the file system failed): the
        save stops, with the reason in an ``ERROR`` file and the journal."""
        message = f"worker {address}: {error}"
        log.error("distributed_save to %s failed: %s", save.path, message)
        try:
            fmt.write_error(save.path, message)
        except OSError:
            log.exception("cannot write the ERROR file of %s", save.path)
        self._d._commit({"op": "finish_snapshot", "path": save.path, "error": message})
        del self._saves[save.path]
        return {"end": True}
