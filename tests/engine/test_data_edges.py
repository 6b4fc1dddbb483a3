"""Edge cases of file data where extents are shared, freed and reused, and where several tasks
use one file at once."""

from __future__ import annotations

import os

import trio
from conftest import BS, ROOT, fragment_files, read_file, write_file

from dynamicfs.engine.types import ROOT_CTX, SetAttr
from dynamicfs.meta import extents as mext


async def reopen_read(engine, name: bytes) -> bytes:
    attr = await engine.lookup(ROOT, name)
    try:
        return await read_file(engine, attr.ino)
    finally:
        await engine.forget([(attr.ino, 1)])


def test_content_freed_then_written_again_keeps_its_fragments(run_engine):
    block = os.urandom(BS)

    async def body(engine):
        await write_file(engine, b"a", block)
        await engine.unlink(ROOT, b"a")  # the extent is freed; its fragments are doomed
        await write_file(engine, b"b", block)  # the same content again, before deletion ran
        await engine.commit_all()
        assert len(fragment_files(engine.pool.path)) == 2

    path = run_engine(body)

    async def after(engine):
        assert await reopen_read(engine, b"b") == block

    run_engine(after, pool_path=path)


def test_truncating_one_sharer_leaves_the_other(run_engine):
    block = os.urandom(BS)

    async def body(engine):
        a = await write_file(engine, b"a", block * 2)
        await write_file(engine, b"b", block * 2)
        await engine.setattr(a.ino, SetAttr(size=10))
        fh, _ = await engine.open(a.ino, os.O_RDWR)
        await engine.fsync(fh, False)
        await engine.release(fh)
        assert await reopen_read(engine, b"b") == block * 2
        assert await reopen_read(engine, b"a") == block[:10]

    run_engine(body)


def test_rename_over_an_open_file_keeps_it_readable(run_engine):
    old = os.urandom(BS + 5)

    async def body(engine):
        fh, attr = await engine.create(ROOT, b"target", 0o644, os.O_RDWR, ROOT_CTX)
        await engine.write(fh, 0, old)
        await engine.fsync(fh, False)
        await write_file(engine, b"new", b"replacement")
        await engine.rename(ROOT, b"new", ROOT, b"target", 0)
        assert await engine.read(fh, 0, len(old)) == old
        await engine.release(fh)
        await engine.forget([(attr.ino, 1)])
        assert await reopen_read(engine, b"target") == b"replacement"
        await engine.commit_all()
        assert mext.totals(engine.db)["extents"] == 1

    run_engine(body)


def test_truncate_of_an_unlinked_open_file(run_engine):
    async def body(engine):
        fh, attr = await engine.create(ROOT, b"f", 0o644, os.O_RDWR, ROOT_CTX)
        await engine.write(fh, 0, os.urandom(3 * BS))
        await engine.unlink(ROOT, b"f")
        await engine.setattr(attr.ino, SetAttr(size=BS // 2))
        await engine.fsync(fh, False)
        assert len(await engine.read(fh, 0, 3 * BS)) == BS // 2
        await engine.release(fh)
        await engine.forget([(attr.ino, 1)])

    run_engine(body)


def test_concurrent_writers_to_disjoint_ranges(run_engine):
    parts = [os.urandom(BS + 100 * i) for i in range(6)]
    stride = 2 * BS

    async def body(engine):
        fh, attr = await engine.create(ROOT, b"f", 0o644, os.O_RDWR, ROOT_CTX)

        async def writer(i: int) -> None:
            data = parts[i]
            for off in range(0, len(data), 4000):  # unaligned pieces race with seals
                await engine.write(fh, i * stride + off, data[off:off + 4000])
                await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            for i in range(len(parts)):
                nursery.start_soon(writer, i)
            nursery.start_soon(engine.fsync, fh, False)
        await engine.fsync(fh, False)
        for i, data in enumerate(parts):
            assert await engine.read(fh, i * stride, len(data)) == data
        await engine.release(fh)
        await engine.forget([(attr.ino, 1)])

    path = run_engine(body)

    async def after(engine):
        got = await reopen_read(engine, b"f")
        for i, data in enumerate(parts):
            assert got[i * stride:i * stride + len(data)] == data

    run_engine(after, pool_path=path)


def test_reads_while_a_writer_seals(run_engine):
    async def body(engine):
        fh, attr = await engine.create(ROOT, b"f", 0o644, os.O_RDWR, ROOT_CTX)
        model = bytearray()
        for round_ in range(8):
            data = os.urandom(BS)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(engine.write, fh, round_ * BS, data)
                nursery.start_soon(engine.read, fh, 0, (round_ + 1) * BS)
            model += data
            assert await engine.read(fh, 0, len(model)) == bytes(model)
        await engine.release(fh)
        await engine.forget([(attr.ino, 1)])

    run_engine(body)


def test_small_cache_many_files(run_engine):
    files = {b"f%d" % i: os.urandom(BS * 2 + i) for i in range(12)}

    async def body(engine):
        handles = []
        for name in files:
            fh, attr = await engine.create(ROOT, name, 0o644, os.O_RDWR, ROOT_CTX)
            handles.append((fh, attr.ino))
        for (fh, _), data in zip(handles, files.values(), strict=True):
            await engine.write(fh, 0, data)
        for fh, ino in handles:
            await engine.release(fh)
            await engine.forget([(ino, 1)])
        for name, data in files.items():
            assert await reopen_read(engine, name) == data

    path = run_engine(body, cache_size=8 * BS)

    async def after(engine):
        for name, data in files.items():
            assert await reopen_read(engine, name) == data

    run_engine(after, pool_path=path, cache_size=8 * BS)


def test_file_of_64_gib_is_sparse_and_reads_back(run_engine):
    end = 64 << 30

    async def body(engine):
        fh, attr = await engine.create(ROOT, b"huge", 0o644, os.O_RDWR, ROOT_CTX)
        await engine.write(fh, end - 5, b"last!")
        await engine.write(fh, 0, b"first")
        await engine.fsync(fh, False)
        a = await engine.getattr(attr.ino)
        assert a.size == end and a.blocks * 512 < 4 * BS
        assert await engine.read(fh, end - 10, 100) == bytes(5) + b"last!"
        assert await engine.read(fh, end // 2, 10) == bytes(10)
        await engine.setattr(attr.ino, SetAttr(size=end // 2))
        await engine.fsync(fh, False)
        assert mext.block_range(engine.db, attr.ino, 0, end // BS).keys() == {0}
        await engine.release(fh)
        await engine.forget([(attr.ino, 1)])

    run_engine(body)


def test_sequential_read_then_truncate_and_extend(run_engine):
    data = os.urandom(4 * BS)

    async def body(engine):
        a = await write_file(engine, b"f", data)
        fh, _ = await engine.open(a.ino, os.O_RDWR)
        assert await engine.read(fh, 0, BS) == data[:BS]  # starts a readahead of block 1
        await engine.setattr(a.ino, SetAttr(size=BS // 2))
        await engine.setattr(a.ino, SetAttr(size=4 * BS))
        want = data[:BS // 2] + bytes(4 * BS - BS // 2)
        assert await engine.read(fh, 0, 4 * BS) == want
        await engine.fsync(fh, False)
        await engine.release(fh)
        assert await read_file(engine, a.ino) == want

    run_engine(body)


def test_a_file_deleted_while_its_commit_syncs_is_not_committed(run_engine):
    """unlink + close while a commit of the file waits for its fragments to sync: the commit
    must drop the cut (the daemon died of a KeyError here, in the benchmark's rm -rf)."""

    async def body(engine):
        cache = engine.data
        fh, attr = await engine.create(ROOT, b"f", 0o644, os.O_RDWR, ROOT_CTX)
        await engine.write(fh, 0, os.urandom(3 * BS + 100))
        real = cache._make_durable
        syncing, deleted = trio.Event(), trio.Event()

        async def slow_sync(fs, blocks):
            syncing.set()
            await deleted.wait()
            await real(fs, blocks)

        cache._make_durable = slow_sync
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cache.flush_all)
            await syncing.wait()
            await engine.unlink(ROOT, b"f")
            await engine.release(fh)  # last handle: the data is freed at once
            deleted.set()
        cache._make_durable = real
        await engine.forget([(attr.ino, 1)])
        await engine.sync_metadata()
        assert mext.block_range(engine.db, attr.ino, 0, 10) == {}

    run_engine(body)  # fsck: no orphan fragments, no extents without blocks


def test_deleting_a_file_while_its_blocks_seal_leaves_no_orphans(run_engine):
    async def body(engine):
        for _ in range(5):
            fh, attr = await engine.create(ROOT, b"f", 0o644, os.O_RDWR, ROOT_CTX)
            await engine.write(fh, 0, os.urandom(8 * 4096))  # 8 full blocks: 8 seals start
            await engine.unlink(ROOT, b"f")
            await engine.release(fh)
            await engine.forget([(attr.ino, 1)])

    run_engine(body, block_size=4096)  # fsck: "[orphan_files] ... is not in the metadata"
