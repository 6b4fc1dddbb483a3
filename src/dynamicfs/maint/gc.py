"""Garbage collection of orphans: fragment files no metadata references, and temporary files
left by interrupted writes.

A crash between writing a fragment and committing the metadata that uses it (or between
committing a free and deleting the files) leaves orphans; they hold space but no data anyone
can reach (invariants 1 and 2 of DESIGN.md make them the only kind of leftover).

The walk over the disks runs in a worker thread and only lists candidates. The verdict and
the unlink happen together, in one step with no await in between, on the thread that owns
the metadata (the trio thread when mounted): a fragment is deleted only if, at that moment,
the database does not record it and no write in flight or pending commit uses its extent. A
fragment that is referenced is therefore never removed, even while GC races with writes.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from ..disks import LocalDisk
from ..disks.local import TMP_PREFIX

if TYPE_CHECKING:
    from ..engine.filesystem import Engine

log = logging.getLogger(__name__)

# A temporary file of this very process younger than this may be a write still under way.
TMP_MIN_AGE = 3600.0


def _tmp_is_live(c: Candidate, writer_pid: int | None, started: float) -> bool:
    """Whether a temporary file may belong to a write in flight.

    Their names end in .<pid>.<thread> of the process writing them: one of another process
    (a daemon that crashed, or any process while the pool is unmounted) is an orphan.
    """
    parts = c.path.name.split(".")
    pid = int(parts[-2]) if len(parts) >= 2 and parts[-2].isdigit() else None
    return pid == writer_pid and c.mtime > started - TMP_MIN_AGE


@dataclass(frozen=True)
class Candidate:
    disk: int
    path: Path
    size: int
    mtime: float
    digest: bytes | None  # None: a temporary file
    index: int


@dataclass
class GcReport:
    dry_run: bool
    files_scanned: int = 0
    orphan_fragments: int = 0
    temp_files: int = 0
    bytes_reclaimed: int = 0
    errors: int = 0
    seconds: float = 0.0
    per_disk: dict[int, int] = field(default_factory=dict)  # disk -> files removed

    def as_dict(self) -> dict:
        return asdict(self)


def parse_fragment_name(name: str) -> tuple[bytes, int] | None:
    """(extent id, fragment index) from '<64 hex>.<index>', or None for anything else."""
    stem, dot, idx = name.rpartition(".")
    if not dot or len(stem) != 64 or not idx.isdigit():
        return None
    try:
        return bytes.fromhex(stem), int(idx)
    except ValueError:
        return None


def scan(disks: dict[int, LocalDisk], stats: GcReport) -> Iterator[Candidate]:
    """Every fragment and temporary file on the disks (run in a worker thread)."""
    for disk_id, disk in disks.items():
        try:
            for path in disk.iter_fragment_files():
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                stats.files_scanned += 1
                if path.name.startswith(TMP_PREFIX):
                    yield Candidate(disk_id, path, st.st_size, st.st_mtime, None, -1)
                    continue
                parsed = parse_fragment_name(path.name)
                if parsed is None:
                    log.warning("gc: leaving unknown file %s alone", path)
                    continue
                yield Candidate(disk_id, path, st.st_size, st.st_mtime, *parsed)
        except OSError as exc:
            stats.errors += 1
            log.error("gc: cannot walk disk %d (%s): %s", disk_id, disk.root, exc)


def judge(
    batch: list[Candidate], report: GcReport, *, disks: dict[int, LocalDisk],
    recorded: Callable[[bytes, int, int], bool], in_use: Callable[[bytes], bool],
    started: float, writer_pid: int | None,
) -> None:
    """Delete the orphans among `batch`. Must run without yielding to the engine."""
    for c in batch:
        if c.digest is None:
            if _tmp_is_live(c, writer_pid, started):
                continue
        elif in_use(c.digest) or recorded(c.digest, c.index, c.disk):
            continue
        if not report.dry_run:
            try:
                disks[c.disk].remove_orphan(c.path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                report.errors += 1
                log.error("gc: cannot remove %s: %s", c.path, exc)
                continue
        if c.digest is None:
            report.temp_files += 1
        else:
            report.orphan_fragments += 1
        report.bytes_reclaimed += c.size
        report.per_disk[c.disk] = report.per_disk.get(c.disk, 0) + 1
    if batch:
        log.debug("gc: judged %d files", len(batch))


def collect_offline(
    disks: dict[int, LocalDisk], recorded: Callable[[bytes, int, int], bool],
    dry_run: bool = False,
) -> GcReport:
    """GC of an unmounted pool (the caller holds the pool lock: nothing else writes)."""
    report = GcReport(dry_run=dry_run)
    started = time.time()
    batch: list[Candidate] = []
    for cand in scan(disks, report):
        batch.append(cand)
        if len(batch) >= 1000:
            judge(batch, report, disks=disks, recorded=recorded, in_use=lambda d: False,
                  started=started, writer_pid=None)
            batch = []
    judge(batch, report, disks=disks, recorded=recorded, in_use=lambda d: False,
          started=started, writer_pid=None)
    report.seconds = time.time() - started
    return report


async def collect_online(engine: Engine, dry_run: bool = False) -> GcReport:
    """GC of a mounted pool, racing safely with its writes (see the module docstring)."""
    async with engine.gc_lock:
        report = GcReport(dry_run=dry_run)
        started = time.time()
        disks = engine.store.disks()
        candidates = scan(disks, report)
        while True:
            batch = await trio.to_thread.run_sync(
                lambda: list(itertools.islice(candidates, 500)))
            if not batch:
                break
            # No await between the verdict and the unlink: no seal or commit can slip
            # between "not referenced" and the deletion.
            judge(batch, report, disks=disks, recorded=engine.fragment_recorded,
                  in_use=engine.in_use, started=started, writer_pid=os.getpid())
        report.seconds = time.time() - started
        if not dry_run and report.per_disk:
            engine.refresh_disk_usage()
        engine.stats.incr("gc_runs")
        engine.stats.incr("gc_files_removed", report.orphan_fragments + report.temp_files)
        if report.orphan_fragments or report.temp_files:
            log.info("gc: %s %d orphan fragments and %d temporary files (%d bytes)",
                     "would remove" if dry_run else "removed", report.orphan_fragments,
                     report.temp_files, report.bytes_reclaimed)
        return report
