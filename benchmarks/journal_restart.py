"""How long a fault-tolerant dispatcher takes to restart after many jobs, and how big its
work_dir is then.

    python benchmarks/journal_restart.py [--jobs 100000] [--dir DIR] [--quick]

The dispatcher core runs in this process (no transport): each job is created, read by one
client and released, as a reader of ``distribute(...)`` does, so it is garbage collected at
once (4 journal records). A few more jobs then fill the journal up to just before the next
compaction (the slowest moment to restart). Then the dispatcher is restarted from its
work_dir three times and the best time is reported, beside the same run with compaction
switched off (what every restart cost before compaction existed). ``--dir`` defaults to a
directory on /dev/shm when there is one: fsync is free there, which measures the dispatcher
rather than the disk; pass a directory on a real disk to include it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import tensorwire as tw
from tensorwire_dataservice.service import journal, pipeline
from tensorwire_dataservice.service.dispatcher import _Dispatcher
from tensorwire_dataservice.service.journal import recover


def config(work_dir: Path) -> tw.data.service.DispatcherConfig:
    return tw.data.service.DispatcherConfig(
        protocol="inproc", work_dir=str(work_dir), fault_tolerant_mode=True
    )


def run_jobs(work_dir: Path, jobs: int) -> float:
    core = _Dispatcher(config(work_dir))
    dataset_id = core.get_or_register_dataset(
        {"dataset_def": pipeline.serialize(tw.data.Dataset.range(10))}
    )["dataset_id"]
    start = time.perf_counter()
    for _ in range(jobs):
        reply = core.get_or_create_job({"dataset_id": dataset_id, "policy": 0, "acquire": True})
        core.release_client({"client_id": reply["client_id"]})
    seconds = time.perf_counter() - start
    assert core.journal is not None
    while core.journal.generation and core.journal.records < journal.COMPACT_RECORDS - 4:
        reply = core.get_or_create_job({"dataset_id": dataset_id, "policy": 0, "acquire": True})
        core.release_client({"client_id": reply["client_id"]})
    core.journal.close()
    return seconds


def restart_seconds(work_dir: Path, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        core = _Dispatcher(config(work_dir))
        best = min(best, time.perf_counter() - start)
        assert core.journal is not None
        core.journal.close()
    return best


def work_dir_bytes(work_dir: Path) -> int:
    return sum(p.stat().st_size for p in work_dir.iterdir())


def measure(base: Path, name: str, jobs: int) -> None:
    work_dir = base / name
    work_dir.mkdir()
    try:
        create = run_jobs(work_dir, jobs)
        size = work_dir_bytes(work_dir)
        found = recover(str(work_dir))
        restart = restart_seconds(work_dir)
        print(
            f"{name:>13}: {jobs} jobs in {create:.1f} s ({jobs / create:,.0f} jobs/s); "
            f"work_dir {size / 1e3:,.0f} kB; restart (snapshot of generation "
            f"{found.generation} + {len(found.entries)} records) in {restart:.3f} s"
        )
    finally:
        shutil.rmtree(work_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--dir", default=None, help="where the work_dirs go")
    parser.add_argument("--quick", action="store_true", help="20,000 jobs, no comparison")
    args, _ = parser.parse_known_args()  # nox -s bench passes every benchmark's options
    jobs = 20_000 if args.quick else args.jobs
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    base = Path(tempfile.mkdtemp(prefix="tw-journal-bench-", dir=args.dir or shm))
    print(f"journal restart benchmark in {base}")
    try:
        measure(base, "compaction", jobs)
        if not args.quick:
            journal.COMPACT_RECORDS = journal.COMPACT_BYTES = 1 << 62
            measure(base, "no compaction", jobs)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
