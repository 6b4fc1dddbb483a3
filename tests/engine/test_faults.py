"""Disk faults injected into a running engine never corrupt what is stored: writes go around a
failing disk or fail cleanly to the caller, reads go around bad fragments, and the metadata
stays consistent (fsck after every test)."""

from __future__ import annotations

import errno
import os
from collections import Counter

from conftest import BS, ROOT, fragment_files, read_file, write_file

from dynamicfs.disks.faults import Fault
from dynamicfs.errors import FsError
from dynamicfs.meta import extents as mext


def disk_ids(engine) -> list[int]:
    return sorted(engine.store.disks())


async def ino_of(engine, name: bytes) -> int:
    attr = await engine.lookup(ROOT, name)
    await engine.forget([(attr.ino, 1)])
    return attr.ino


def test_failing_fsync_on_one_disk_goes_elsewhere(run_engine):
    data = os.urandom(3 * BS)

    async def body(engine):
        engine.inject_fault(disk_ids(engine)[0], Fault("fsync", "error", errno=errno.EIO))
        await write_file(engine, b"f", data)
        engine.clear_faults()
        assert await read_file(engine, await ino_of(engine, b"f")) == data

    run_engine(body, policy="rep:2", ndisks=3)


def fail_all_writes(errors: list[int], old: bytes):
    """A body: overwrite part of a file while every disk fails writes with EIO, then let the
    disks recover. The engine keeps the unsaved block and stores it once it can."""

    async def body(engine):
        a = await write_file(engine, b"f", old)
        first_extent = mext.block_extent(engine.db, a.ino, 0)
        for d in disk_ids(engine):
            engine.inject_fault(d, Fault("write", "error", errno=errno.EIO))
        fh, _ = await engine.open(a.ino, os.O_RDWR)
        patch = os.urandom(BS // 2)
        await engine.write(fh, 0, patch)
        try:
            await engine.fsync(fh, False)
        except FsError as exc:
            errors.append(exc.errno)
        assert mext.block_extent(engine.db, a.ino, 0) == first_extent
        engine.clear_faults()
        await engine.fsync(fh, False)
        await engine.release(fh)
        assert await read_file(engine, a.ino) == patch + old[len(patch):]

    return body


def test_all_disks_failing_fails_the_write_cleanly(run_engine):
    seen: list[int] = []
    path = run_engine(fail_all_writes(seen, os.urandom(BS)))
    assert len(seen) == 1
    assert not [p for p in fragment_files(path) if p.name.startswith(".tmp.")]


def test_all_disks_failing_reports_eio_not_enospc(run_engine):
    seen: list[int] = []
    run_engine(fail_all_writes(seen, os.urandom(BS)))
    assert seen == [errno.EIO]


def test_corrupting_reads_of_one_disk_are_read_around(run_engine):
    data = os.urandom(4 * BS)

    async def first(engine):
        await write_file(engine, b"f", data)

    path = run_engine(first, policy="ec:2+1", ndisks=3)
    stats: list[Counter] = []

    async def second(engine):
        engine.inject_fault(disk_ids(engine)[0], Fault("read", "corrupt"))
        assert await read_file(engine, await ino_of(engine, b"f")) == data
        engine.clear_faults()
        stats.append(Counter(engine.stats.snapshot()))

    run_engine(second, pool_path=path)
    assert stats[0]["checksum_errors"] >= 1


def test_hanging_disk_delays_but_does_not_break_reads(run_engine):
    data = os.urandom(BS)

    async def first(engine):
        await write_file(engine, b"f", data)

    path = run_engine(first)

    async def second(engine):
        for d in disk_ids(engine):
            engine.inject_fault(d, Fault("read", "hang", seconds=0.05, count=1))
        assert await read_file(engine, await ino_of(engine, b"f")) == data
        engine.clear_faults()

    run_engine(second, pool_path=path)


def test_failed_deletes_leave_only_orphans(run_engine):
    async def body(engine):
        await write_file(engine, b"f", os.urandom(BS))
        for d in disk_ids(engine):
            engine.inject_fault(d, Fault("delete", "error", errno=errno.EIO))
        await engine.unlink(ROOT, b"f")
        await engine.commit_all()
        engine.clear_faults()

    # The metadata is consistent; the fragments it no longer names are GC's to reclaim.
    path = run_engine(body, expect_problems={"orphan_files"})
    assert len(fragment_files(path)) == 2
