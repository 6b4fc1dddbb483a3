"""The cache's one memory budget: dirty data, clean data, and what seals and fetches hold
outside both, within the cache size; and the clean part giving way when the daemon's memory
runs over the cache plus its overhead."""

from __future__ import annotations

import os
import threading

import trio
from conftest import BS, ROOT, write_file

from dynamicfs.engine.blockcache import MEMORY_OVERHEAD
from dynamicfs.engine.filestate import CleanCache
from dynamicfs.engine.types import ROOT_CTX


async def cache_blocks(engine, ino: int, data: bytes) -> None:
    """Read every block of a file into the clean cache (backwards: no readahead, so every
    block is the reader's own and stays)."""
    fh, _ = await engine.open(ino, os.O_RDONLY)
    for i in reversed(range(len(data) // BS)):
        assert await engine.read(fh, i * BS, BS) == data[i * BS:(i + 1) * BS]
    await engine.release(fh)


def test_blocks_being_stored_or_fetched_shrink_the_clean_cache(run_engine):
    """A block being coded and written, with its parity, is memory outside both the dirty and
    the clean budget: while it is stored, clean data gets that much less (with 4 MiB ec:4+2
    blocks such bytes took the daemon past its memory target)."""
    old = os.urandom(6 * BS)

    async def body(engine):
        cache = engine.data
        attr = await write_file(engine, b"old", old)
        await cache_blocks(engine, attr.ino, old)
        full = cache.cache_size - cache.dirty_bytes
        held = BS + BS // 4 * 2  # a block and its two parity shards
        assert cache.clean.limit == full and cache.clean.used == 6 * BS > full - held
        real = cache._write_deferred
        storing, go = threading.Event(), threading.Event()

        def held_write(data, policy, digest):
            storing.set()
            go.wait(10)
            return real(data, policy, digest)

        cache._write_deferred = held_write
        fh, _ = await engine.create(ROOT, b"new", 0o644, os.O_RDWR, ROOT_CTX)
        await engine.write(fh, 0, os.urandom(BS))  # a whole block: its seal starts at once
        await trio.to_thread.run_sync(storing.wait, 10)
        full = cache.cache_size - cache.dirty_bytes
        assert cache.clean.limit == full - held and cache.clean.used <= full - held
        go.set()
        await cache.wait_idle()
        cache._write_deferred = real
        assert cache.clean.limit == cache.cache_size - cache.dirty_bytes
        await engine.fsync(fh, False)
        await engine.release(fh)

        # A fetch holds the fragments it reads until they are decoded into the cache.
        real_read = cache.store.read
        fetching, go = threading.Event(), threading.Event()

        def held_read(*args, **kwargs):
            fetching.set()
            go.wait(10)
            return real_read(*args, **kwargs)

        cache.clean = CleanCache(cache.clean.limit)  # forget everything: the read must fetch
        cache.store.read = held_read
        fh, _ = await engine.open(attr.ino, os.O_RDONLY)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(engine.read, fh, 0, 100)
            await trio.to_thread.run_sync(fetching.wait, 10)
            assert cache.clean.limit == cache.cache_size - cache.dirty_bytes - BS
            go.set()
        cache.store.read = real_read
        assert cache.clean.limit == cache.cache_size - cache.dirty_bytes
        await engine.release(fh)
        await engine.forget([(attr.ino, 1)])

    run_engine(body, policy="ec:4+2", ndisks=6, cache_size=7 * BS)


def test_the_clean_cache_gives_way_while_the_daemon_holds_too_much(run_engine):
    old = os.urandom(6 * BS)

    async def body(engine):
        cache = engine.data
        attr = await write_file(engine, b"old", old)
        await cache_blocks(engine, attr.ino, old)
        size, room = cache.cache_size, cache.cache_size - cache.dirty_limit
        assert cache.clean.limit == size and cache.clean.used == 6 * BS
        cache.memory_check(size + MEMORY_OVERHEAD)  # at the line: nothing changes
        assert cache.clean.limit == size
        cache.memory_check(size + MEMORY_OVERHEAD + 3 * BS)
        assert cache.clean.limit == size - 3 * BS and cache.clean.used <= size - 3 * BS
        cache.memory_check(size + MEMORY_OVERHEAD + 3 * BS)  # still over: more, up to `room`
        assert cache.clean.limit == size - room and cache.clean.used <= size - room
        cache.memory_check(size + MEMORY_OVERHEAD - BS)  # under: it grows back by the room
        assert cache.clean.limit == size - room + BS
        cache.memory_check(64 << 20)
        assert cache.clean.limit == size
        await cache_blocks(engine, attr.ino, old)  # what was dropped reads back
        assert cache.clean.used == 6 * BS
        await engine.forget([(attr.ino, 1)])

    run_engine(body, cache_size=8 * BS)


def test_a_cache_smaller_than_the_dirty_floor_is_never_squeezed_past_its_size(run_engine):
    # Dirty data may always take four blocks: with a cache that small there is no clean
    # share to give up, and the memory check must not hand the cache more than its size.
    async def body(engine):
        cache = engine.data
        assert cache.dirty_limit > cache.cache_size
        cache.memory_check(cache.cache_size + MEMORY_OVERHEAD + 8 * BS)
        cache.memory_check(0)
        assert cache.clean.limit == cache.cache_size - cache.dirty_bytes

    run_engine(body, cache_size=2 * BS)
