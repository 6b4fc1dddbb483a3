"""Garbage collection: orphans go, referenced fragments never do, even racing with writes."""

from __future__ import annotations

import os
import shutil

import trio
from conftest import BS, ROOT, fsck_problems

from dynamicfs.engine.types import ROOT_CTX
from dynamicfs.maint import gc


def fragment_files(engine) -> list:
    """Fragment and temporary files on the engine's disks, as the disk layer lists them."""
    return [p for d in engine.store.disks().values() for p in d.iter_fragment_files()]


def plant_orphans(engine) -> tuple[list, int]:
    """Copies of real fragment files under names no metadata knows, plus stale temp files."""
    planted = []
    size = 0
    for i, src in enumerate(fragment_files(engine)[:3]):
        fake = f"{i:02x}" * 32
        dest = src.parent / f"{fake}.0"
        shutil.copy(src, dest)
        planted.append(dest)
        size += dest.stat().st_size
        tmp = src.parent / f".tmp.{fake}.1.999999.1"  # a crashed process's interrupted write
        tmp.write_bytes(b"x" * 100)
        planted.append(tmp)
        size += 100
    return planted, size


def test_gc_removes_orphans_and_keeps_referenced(run_engine):
    async def body(engine):
        fh, attr = await engine.create(ROOT, b"f", 0o644, os.O_RDWR, ROOT_CTX)
        data = os.urandom(5 * BS)
        await engine.write(fh, 0, data)
        await engine.fsync(fh, False)
        real = set(fragment_files(engine))
        planted, size = plant_orphans(engine)

        dry = await gc.collect_online(engine, dry_run=True)
        assert (dry.orphan_fragments, dry.temp_files) == (3, 3)
        assert all(p.exists() for p in planted)

        report = await gc.collect_online(engine)
        assert (report.orphan_fragments, report.temp_files) == (3, 3)
        assert report.bytes_reclaimed == size
        assert not any(p.exists() for p in planted)
        assert set(fragment_files(engine)) == real
        engine.data.clean.__init__(engine.data.clean.limit)  # force reads from the disks
        assert await engine.read(fh, 0, len(data)) == data
        await engine.release(fh)

    run_engine(body)


def test_gc_racing_with_writes_never_removes_referenced(run_engine):
    async def body(engine):
        contents: dict[bytes, bytes] = {}

        async def writer(n: int) -> None:
            for i in range(25):
                name = b"w%d-%d" % (n, i)
                fh, _ = await engine.create(ROOT, name, 0o644, os.O_RDWR, ROOT_CTX)
                data = os.urandom(BS + 1000 * i)
                await engine.write(fh, 0, data)
                if i % 3 == 0:
                    await engine.fsync(fh, False)
                await engine.release(fh)
                contents[name] = data
                await trio.sleep(0)

        async def collector() -> None:
            for _ in range(10):
                report = await gc.collect_online(engine)
                assert report.orphan_fragments == 0, report
                await trio.sleep(0.01)

        async with trio.open_nursery() as n:
            n.start_soon(writer, 1)
            n.start_soon(writer, 2)
            n.start_soon(collector)
        await engine.commit_all()
        assert (await gc.collect_online(engine)).orphan_fragments == 0
        engine.data.clean.__init__(engine.data.clean.limit)
        for name, data in contents.items():
            attr = await engine.lookup(ROOT, name)
            fh, _ = await engine.open(attr.ino, os.O_RDONLY)
            assert await engine.read(fh, 0, len(data) + 10) == data, name
            await engine.release(fh)

    run_engine(body)  # and fsck afterwards finds every fragment present


def test_offline_gc_removes_what_a_crash_left(run_engine, tmp_path):
    async def body(engine):
        fh, _ = await engine.create(ROOT, b"f", 0o644, os.O_RDWR, ROOT_CTX)
        await engine.write(fh, 0, os.urandom(3 * BS))
        await engine.fsync(fh, False)
        await engine.release(fh)
        plant_orphans(engine)

    path = run_engine(body, expect_problems={"orphan_files"})
    from dynamicfs.engine.pool import Pool
    from dynamicfs.meta import extents as mext

    pool = Pool.open(path)
    pool.lock("gc test")
    disks = {row.id: pool.open_disk(row) for row in pool.disk_rows()}
    report = gc.collect_offline(
        disks, lambda d, i, k: mext.fragment_recorded(pool.db, d, i, k))
    assert (report.orphan_fragments, report.temp_files) == (3, 3)
    again = gc.collect_offline(
        disks, lambda d, i, k: mext.fragment_recorded(pool.db, d, i, k))
    assert (again.orphan_fragments, again.temp_files) == (0, 0)
    pool.close()
    assert fsck_problems(path) == []


def test_parse_fragment_name():
    assert gc.parse_fragment_name("ab" * 32 + ".3") == (bytes.fromhex("ab" * 32), 3)
    for bad in ("ab" * 32, "ab" * 31 + ".1", "zz" * 32 + ".1", "ab" * 32 + ".x"):
        assert gc.parse_fragment_name(bad) is None
