"""File data through the engine: offsets, blocks, holes, truncation, overwrites, dedup and the
freeing of data when its last user goes."""

from __future__ import annotations

import os

import pytest
import trio
from conftest import BS, ROOT, fragment_files, read_file, write_file

from dynamicfs.codec import blake3_digest
from dynamicfs.engine.types import ROOT_CTX, SetAttr
from dynamicfs.errors import FsError
from dynamicfs.meta import extents as mext


def totals(engine) -> dict[str, int]:
    return mext.totals(engine.db)


async def open_new(engine, name: bytes):
    fh, attr = await engine.create(ROOT, name, 0o644, os.O_RDWR, ROOT_CTX)
    return fh, attr.ino


async def close(engine, fh: int, ino: int) -> None:
    await engine.release(fh)
    await engine.forget([(ino, 1)])


def test_write_read_across_block_boundaries(run_engine):
    async def body(engine):
        fh, ino = await open_new(engine, b"f")
        data = os.urandom(3 * BS + 123)
        await engine.write(fh, 0, data)
        # Reads that start and end inside different blocks, before and after committing.
        for _ in range(2):
            assert await engine.read(fh, BS - 7, 20) == data[BS - 7:BS + 13]
            assert await engine.read(fh, 5, 2 * BS + 9) == data[5:2 * BS + 14]
            assert await engine.read(fh, 3 * BS, 1000) == data[3 * BS:]
            await engine.fsync(fh, False)
        assert await engine.read(fh, len(data), 10) == b""
        assert await engine.read(fh, len(data) + BS, 10) == b""
        await close(engine, fh, ino)

    run_engine(body)


def test_write_spanning_blocks_at_odd_offset(run_engine):
    async def body(engine):
        fh, ino = await open_new(engine, b"f")
        base = bytearray(os.urandom(4 * BS))
        await engine.write(fh, 0, bytes(base))
        await engine.fsync(fh, False)
        patch = os.urandom(2 * BS + 5)
        await engine.write(fh, BS - 3, patch)
        base[BS - 3:BS - 3 + len(patch)] = patch
        assert await engine.read(fh, 0, 4 * BS) == bytes(base)
        await engine.fsync(fh, False)
        assert await engine.read(fh, 0, 4 * BS) == bytes(base)
        await close(engine, fh, ino)

    run_engine(body)


def test_sparse_file_stores_only_written_blocks(run_engine):
    async def body(engine):
        fh, ino = await open_new(engine, b"sparse")
        await engine.write(fh, 10 * BS + 100, b"tail")
        await engine.write(fh, 0, b"head")
        await engine.fsync(fh, False)
        attr = await engine.getattr(ino)
        assert attr.size == 10 * BS + 104
        assert attr.blocks * 512 < attr.size // 4
        assert mext.block_range(engine.db, ino, 0, 100).keys() == {0, 10}
        assert await engine.read(fh, 0, 4) == b"head"
        assert await engine.read(fh, 4, 3 * BS) == bytes(3 * BS)
        assert await engine.read(fh, 10 * BS, 104) == bytes(100) + b"tail"
        await close(engine, fh, ino)

    run_engine(body)


def test_zero_blocks_are_holes(run_engine):
    async def body(engine):
        fh, ino = await open_new(engine, b"zeros")
        await engine.write(fh, 0, bytes(3 * BS))
        await engine.fsync(fh, False)
        assert mext.block_range(engine.db, ino, 0, 10) == {}
        assert (await engine.getattr(ino)).blocks == 0
        assert await engine.read(fh, 0, 3 * BS) == bytes(3 * BS)
        await close(engine, fh, ino)

    run_engine(body)


def test_size_and_blocks_visible_before_commit(run_engine):
    async def body(engine):
        fh, ino = await open_new(engine, b"f")
        await engine.write(fh, 0, b"x" * 1000)
        attr = await engine.getattr(ino)
        assert attr.size == 1000 and attr.blocks > 0
        await close(engine, fh, ino)

    run_engine(body)


@pytest.mark.parametrize("commit_before_shrink", [False, True])
def test_truncate_shrink_then_extend_shows_zeros(run_engine, commit_before_shrink):
    async def body(engine):
        fh, ino = await open_new(engine, b"f")
        data = os.urandom(3 * BS)
        await engine.write(fh, 0, data)
        if commit_before_shrink:
            await engine.fsync(fh, False)
        await engine.setattr(ino, SetAttr(size=BS + 10))
        assert await engine.read(fh, 0, 3 * BS) == data[:BS + 10]
        await engine.setattr(ino, SetAttr(size=3 * BS))
        want = data[:BS + 10] + bytes(2 * BS - 10)
        assert await engine.read(fh, 0, 3 * BS) == want
        await engine.fsync(fh, False)
        assert await engine.read(fh, 0, 3 * BS) == want
        assert (await engine.getattr(ino)).size == 3 * BS
        await close(engine, fh, ino)

    run_engine(body)


def test_truncate_then_write_past_old_end(run_engine):
    async def body(engine):
        fh, ino = await open_new(engine, b"f")
        data = os.urandom(2 * BS)
        await engine.write(fh, 0, data)
        await engine.fsync(fh, False)
        await engine.setattr(ino, SetAttr(size=100))
        # Writing into the block that held stale bytes must not bring them back.
        await engine.write(fh, BS + 50, b"new")
        want = data[:100] + bytes(BS - 50) + b"new"
        assert await engine.read(fh, 0, 2 * BS) == want
        await engine.fsync(fh, False)
        assert await engine.read(fh, 0, 2 * BS) == want
        await close(engine, fh, ino)

    run_engine(body)


def test_truncate_to_zero_frees_extents(run_engine):
    async def body(engine):
        a = await write_file(engine, b"f", os.urandom(3 * BS))
        assert totals(engine)["extents"] == 3
        await engine.setattr(a.ino, SetAttr(size=0))
        fh, _ = await engine.open(a.ino, os.O_RDWR)
        await engine.fsync(fh, False)
        await engine.release(fh)
        assert totals(engine)["extents"] == 0
        assert (await engine.getattr(a.ino)).blocks == 0

    run_engine(body)


def test_open_with_o_trunc(run_engine):
    async def body(engine):
        a = await write_file(engine, b"f", os.urandom(BS))
        fh, _ = await engine.open(a.ino, os.O_RDWR | os.O_TRUNC)
        assert (await engine.getattr(a.ino)).size == 0
        await engine.write(fh, 0, b"short")
        await engine.release(fh)
        assert await read_file(engine, a.ino) == b"short"

    run_engine(body)


def test_partial_overwrite_keeps_rest_of_block(run_engine):
    async def body(engine):
        data = bytearray(os.urandom(BS))
        a = await write_file(engine, b"f", bytes(data))
        old = mext.block_extent(engine.db, a.ino, 0)
        fh, _ = await engine.open(a.ino, os.O_RDWR)
        await engine.write(fh, 1000, b"PATCH")
        data[1000:1005] = b"PATCH"
        await engine.fsync(fh, False)
        await engine.release(fh)
        assert await read_file(engine, a.ino) == bytes(data)
        # Copy-on-write: the block points at a new extent and the old one is gone.
        assert mext.block_extent(engine.db, a.ino, 0) != old
        assert mext.get_extent(engine.db, old) is None

    run_engine(body)


def test_unlinked_open_file_lives_until_release_and_forget(run_engine):
    async def body(engine):
        data = os.urandom(2 * BS + 1)
        fh, ino = await open_new(engine, b"f")
        await engine.write(fh, 0, data)
        await engine.fsync(fh, False)
        await engine.commit_all()
        frags = len(fragment_files(engine.pool.path))
        assert frags == 3 * 2  # three extents, two replicas each
        await engine.unlink(ROOT, b"f")
        assert await engine.read(fh, 0, len(data)) == data
        await engine.write(fh, 0, b"still writable")
        assert totals(engine)["extents"] == 3, "freed while still open"
        await engine.release(fh)
        await engine.commit_all()
        # No name and no open handle: nobody can read it any more, so its space comes back
        # at once; the inode itself waits for the kernel's forget.
        assert totals(engine)["extents"] == 0
        assert fragment_files(engine.pool.path) == []
        assert (await engine.getattr(ino)).nlink == 0
        await engine.forget([(ino, 1)])
        with pytest.raises(FsError):
            await engine.getattr(ino)

    run_engine(body)


def test_dedup_identical_blocks(run_engine):
    async def body(engine):
        block = os.urandom(BS)
        a = await write_file(engine, b"a", block)
        b = await write_file(engine, b"b", block + block)
        t = totals(engine)
        assert t["extents"] == 1 and t["referenced_bytes"] == 3 * BS
        eid = mext.block_extent(engine.db, a.ino, 0)
        assert mext.get_extent(engine.db, eid).refcount == 3
        assert mext.block_extent(engine.db, b.ino, 1) == eid
        await engine.commit_all()
        assert len(fragment_files(engine.pool.path)) == 2
        await engine.unlink(ROOT, b"a")
        assert mext.get_extent(engine.db, eid).refcount == 2
        assert await read_file(engine, b.ino) == block + block
        await engine.unlink(ROOT, b"b")
        await engine.commit_all()
        assert totals(engine)["extents"] == 0
        assert fragment_files(engine.pool.path) == []

    run_engine(body)


def test_dedup_within_uncommitted_writes(run_engine):
    async def body(engine):
        block = os.urandom(BS)
        fa, ia = await open_new(engine, b"a")
        fb, ib = await open_new(engine, b"b")
        await engine.write(fa, 0, block)
        await engine.write(fb, 0, block)
        await engine.fsync(fa, False)
        await engine.fsync(fb, False)
        assert totals(engine)["extents"] == 1
        assert mext.block_extent(engine.db, ia, 0) == mext.block_extent(engine.db, ib, 0)
        await close(engine, fa, ia)
        await close(engine, fb, ib)

    run_engine(body)


def test_unmount_frees_unlinked_inodes_still_looked_up(run_engine):
    async def first(engine):
        a = await write_file(engine, b"f", os.urandom(BS))
        engine.remember(a.ino)  # the kernel still holds it when the pool stops
        await engine.unlink(ROOT, b"f")

    path = run_engine(first)  # fsck after the stop finds no unlinked inode

    async def second(engine):
        assert totals(engine)["extents"] == 0

    run_engine(second, pool_path=path)


def test_unmount_frees_unlinked_inodes(run_engine):
    async def body(engine):
        fh, ino = await open_new(engine, b"f")
        await engine.write(fh, 0, os.urandom(BS))
        await engine.unlink(ROOT, b"f")
        await engine.release(fh)  # no forget: the kernel is not obliged to send it at unmount

    run_engine(body)  # fsck: "inode 2 has no links left but was not freed"


def test_statfs_tracks_usage(run_engine):
    cap = 32 * (BS + 128)

    async def body(engine):
        before = await engine.statfs()
        assert before.namemax == 255 and before.bavail <= before.blocks
        assert before.ffree == before.files - 1  # the root
        await write_file(engine, b"f", os.urandom(4 * BS))
        after = await engine.statfs()
        assert after.ffree == before.ffree - 1
        # rep:2: four blocks cost eight fragments, i.e. four blocks of usable space.
        used = (before.bavail - after.bavail) * after.frsize
        assert 4 * BS <= used <= 4 * (BS + 128) + after.frsize, used

    run_engine(body, caps=[cap] * 4)


def test_a_sequential_reader_gets_several_blocks_fetched_ahead(run_engine):
    """Finishing a block starts fetching the next ones in parallel (not just the next)."""
    data = os.urandom(24 * BS)

    async def body(engine):
        attr = await write_file(engine, b"f", data)
        cache = engine.data
        cache.clean = type(cache.clean)(cache.clean.limit)  # forget what the writes cached
        ahead = cache.readahead_blocks
        assert ahead >= 4
        fh, _ = await engine.open(attr.ino, os.O_RDONLY)
        assert await engine.read(fh, 0, BS) == data[:BS]
        await trio.sleep(0.5)
        cached = [i for i in range(24) if cache.clean.get(blake3_digest(
            data[i * BS:(i + 1) * BS])) is not None]
        assert cached == list(range(min(24, 1 + ahead)))
        assert await engine.read(fh, BS, 23 * BS) == data[BS:]
        await engine.release(fh)

    run_engine(body)


def test_readahead_tops_up_its_window_half_a_window_at_a_time(run_engine, monkeypatch):
    """A sequential reader's window is looked up one query per quarter window, not one per
    block read, and still covers every block ahead of it; a reader that jumps back starts a
    new window where it landed."""
    n = 40
    data = os.urandom(n * BS)
    asked: list[tuple[int, int]] = []
    real = mext.committed_range

    def recording(db, ino, first, last):
        asked.append((first, last))
        return real(db, ino, first, last)

    monkeypatch.setattr(mext, "committed_range", recording)

    async def body(engine):
        attr = await write_file(engine, b"f", data)
        cache = engine.data
        cache.clean = type(cache.clean)(cache.clean.limit)  # forget what the writes cached
        ahead = cache.readahead_blocks
        batch = ahead // 4
        assert batch >= 2
        fh, _ = await engine.open(attr.ino, os.O_RDONLY)
        for i in range(n):
            assert await engine.read(fh, i * BS, BS) == data[i * BS:(i + 1) * BS]
            await trio.sleep(0.01)
        # Blocks 1..ahead at block 0, then a quarter window each time the reader has read a
        # quarter of the window asked for, up to the file's last block.
        expected = [(1, ahead)] + [(i + ahead - batch + 1, min(i + ahead, n - 1))
                                   for i in range(batch, n - ahead + batch, batch)]
        assert asked == expected
        assert len(asked) <= n // batch
        # Back to block 5: its window starts at 6 again, the blocks ahead of it asked anew.
        asked.clear()
        assert await engine.read(fh, 5 * BS, BS) == data[5 * BS:6 * BS]
        assert asked[-1] == (6, 5 + ahead)
        await engine.release(fh)

    run_engine(body)


@pytest.mark.parametrize(("block", "seals"), [(4096, 8), (1 << 20, 8), (4 << 20, 2)])
def test_seals_in_flight_are_bounded_in_bytes(run_engine, block, seals):
    """Each seal holds a block and its fragments: 4 MiB blocks (ec pools' default) get fewer
    at once, so memory stays within the cache size plus a fixed overhead."""
    peak = 0

    async def body(engine):
        nonlocal peak
        limiter = engine.data.seal_limiter
        assert limiter.total_tokens == seals

        async def watch():
            nonlocal peak
            while True:
                peak = max(peak, limiter.borrowed_tokens)
                await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await write_file(engine, b"f", os.urandom(12 * block))
            nursery.cancel_scope.cancel()
        assert 1 <= peak <= seals

    run_engine(body, block_size=block, cache_size=max(64 << 20, 32 * block))


def test_blocks_read_ahead_leave_the_cache_once_read_to_the_end(run_engine):
    """A prefetched block is dropped when a reader reaches its end (the kernel caches it now);
    a block the reader fetched itself, and one read only in part, stay cached."""
    data = os.urandom(24 * BS)
    digest = [blake3_digest(data[i * BS:(i + 1) * BS]) for i in range(24)]

    async def body(engine):
        attr = await write_file(engine, b"f", data)
        cache = engine.data
        cache.clean = type(cache.clean)(cache.clean.limit)  # forget what the writes cached
        fh, _ = await engine.open(attr.ino, os.O_RDONLY)
        assert await engine.read(fh, 0, BS) == data[:BS]  # fetched for the reader itself
        await trio.sleep(0.5)  # blocks 1.. are read ahead
        assert cache.clean.get(digest[1]) is not None and cache.clean.get(digest[2]) is not None
        assert await engine.read(fh, BS, BS // 2) == data[BS:BS + BS // 2]
        assert cache.clean.get(digest[1]) is not None  # half read: still needed
        assert await engine.read(fh, BS + BS // 2, BS // 2) == data[BS + BS // 2:2 * BS]
        assert cache.clean.get(digest[1]) is None
        assert cache.clean.get(digest[2]) is not None
        assert cache.clean.get(digest[0]) is not None
        used = cache.clean.used
        assert await engine.read(fh, 2 * BS, BS) == data[2 * BS:3 * BS]
        assert cache.clean.get(digest[2]) is None
        assert cache.clean.used <= used  # block 2 left, at most one more block came in
        # Dropped blocks are read again from the disks when asked for.
        assert await engine.read(fh, BS, 2 * BS) == data[BS:3 * BS]
        await engine.release(fh)

    run_engine(body)


def test_reads_after_the_block_map_changes_see_the_new_content(run_engine):
    """Reads remember block -> digest to skip queries; every change of the map forgets it."""
    one, two, three = os.urandom(2 * BS), os.urandom(2 * BS), os.urandom(BS)

    async def body(engine):
        attr = await write_file(engine, b"f", one)
        assert await read_file(engine, attr.ino) == one  # remembers both blocks
        fh, _ = await engine.open(attr.ino, os.O_RDWR)
        await engine.write(fh, 0, two)
        await engine.fsync(fh, False)  # commit: the map changes
        assert await engine.read(fh, 0, 2 * BS) == two
        await engine.setattr(attr.ino, SetAttr(size=BS), ROOT_CTX)  # truncate
        await engine.fsync(fh, False)
        await engine.write(fh, BS, three)
        await engine.fsync(fh, False)
        assert await engine.read(fh, 0, 2 * BS) == two[:BS] + three
        await engine.release(fh)
        other = await write_file(engine, b"g", one)  # dedups against nothing stale
        assert await read_file(engine, other.ino) == one

    run_engine(body)


def test_reads_lend_stored_blocks_and_copy_dirty_ones(run_engine):
    """A read inside one stored block is a view of it (no megabyte copy per FUSE read); bytes
    still being written are lent only while immutable (a block written whole keeps the
    caller's bytes), so a later write cannot change a reply already handed out, and a view
    keeps its block's old bytes when the block is rewritten."""
    stored, fresh = os.urandom(2 * BS), os.urandom(BS)

    async def body(engine):
        attr = await write_file(engine, b"f", stored)
        fh, _ = await engine.open(attr.ino, os.O_RDWR)
        lent = await engine.read(fh, 10, 100)
        assert isinstance(lent, memoryview) and lent.readonly
        assert lent == stored[10:110]
        # Across a block boundary the parts are joined into one new object.
        assert await engine.read(fh, BS - 5, 10) == stored[BS - 5:BS + 5]
        await engine.write(fh, 0, fresh)  # block 0 is dirty now
        copied = await engine.read(fh, 0, BS)
        assert bytes(copied) == fresh
        await engine.write(fh, 0, bytes(reversed(fresh)))
        await engine.write(fh, 7, b"edit")  # merged into the run in place
        half = await engine.read(fh, 0, 64)
        assert type(half) is bytes  # a bytearray run is copied out
        await engine.write(fh, 0, b"more")
        assert copied == fresh and half[7:11] == b"edit"
        await engine.fsync(fh, False)  # block 0 is a new extent; the old one is freed
        assert await engine.read(fh, 0, BS) == b"more" + bytes(reversed(fresh))[4:7] + b"edit" \
            + bytes(reversed(fresh))[11:]
        assert lent == stored[10:110]
        await engine.release(fh)

    run_engine(body)


def test_small_blocks_are_hashed_without_a_thread_hop(run_engine, monkeypatch):
    """Hashing 64 KiB takes less than handing it to a worker thread and back, which every
    small file paid; larger blocks still hash in a worker."""
    handed: list[int] = []
    real = trio.to_thread.run_sync

    async def spy(fn, *args, **kw):
        if fn is blake3_digest:
            handed.append(len(args[0]))
        return await real(fn, *args, **kw)

    monkeypatch.setattr(trio.to_thread, "run_sync", spy)
    small, large = os.urandom(16 << 10), os.urandom(200 << 10)

    async def body(engine):
        for name, data in ((b"small", small), (b"large", large)):
            attr = await write_file(engine, name, data)
            assert await read_file(engine, attr.ino) == data

    run_engine(body, block_size=256 << 10)
    assert handed == [200 << 10]
