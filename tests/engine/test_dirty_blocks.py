"""Dirty blocks in the engine: small writes over committed data, and commit cuts that hold
dirty blocks by reference while writes go on (copy on write)."""

from __future__ import annotations

import os
import random

import trio
from conftest import BS, ROOT, read_file, write_file

from dynamicfs.engine.types import ROOT_CTX


def test_small_writes_over_committed_data_charge_only_their_bytes(run_engine):
    old = os.urandom(8 * BS)

    async def body(engine):
        attr = await write_file(engine, b"f", old)
        fh, _ = await engine.open(attr.ino, os.O_RDWR)
        model = bytearray(old)
        rng = random.Random(7)
        for _ in range(64):
            off = rng.randrange(0, len(old) - 4096)
            data = rng.randbytes(4096)
            await engine.write(fh, off, data)
            model[off:off + 4096] = data
        # 64 writes of 4 KiB over 8 blocks: the budget holds the bytes written (overlaps
        # merge, so at most 256 KiB), not 8 whole blocks loaded from the disks.
        assert 0 < engine.data.dirty_bytes <= 64 * 4096 < 8 * BS
        assert await engine.read(fh, 0, len(model)) == model  # base and runs merged for reads
        await engine.fsync(fh, False)
        assert engine.data.dirty_bytes == 0
        assert await engine.read(fh, 0, len(model)) == model
        await engine.release(fh)
        await engine.forget([(attr.ino, 1)])

    path = run_engine(body)

    async def after(engine):
        attr = await engine.lookup(ROOT, b"f")
        data = await read_file(engine, attr.ino)
        await engine.forget([(attr.ino, 1)])
        assert data == bytes(model_after(old))

    def model_after(base: bytes) -> bytearray:
        model = bytearray(base)
        rng = random.Random(7)
        for _ in range(64):
            off = rng.randrange(0, len(base) - 4096)
            model[off:off + 4096] = rng.randbytes(4096)
        return model

    run_engine(after, pool_path=path)


def test_writes_during_a_commit_cut_land_in_the_next_commit(run_engine):
    """The cut freezes the dirty blocks; writes meanwhile go to copies. The first commit holds
    exactly the cut, the second the later writes, and the budget returns to zero."""

    async def body(engine):
        fh, attr = await engine.create(ROOT, b"f", 0o644, os.O_RDWR, ROOT_CTX)
        first = bytes([1]) * (4 * BS)
        await engine.write(fh, 0, first[:BS // 2])  # partial blocks stay dirty
        await engine.write(fh, BS, first[BS:BS + BS // 2])
        fs = engine.data.files[attr.ino]
        frozen = dict(fs.dirty)
        cut_seen = trio.Event()

        async def commit():
            await engine.data.flush_file(attr.ino)

        async def writer():
            # Runs once the commit has frozen the blocks and is sealing them.
            while not any(db.frozen for db in frozen.values()):
                await trio.sleep(0)
            cut_seen.set()
            await engine.write(fh, 100, b"later")
            await engine.write(fh, BS + 100, b"later too")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(commit)
            nursery.start_soon(writer)
        assert cut_seen.is_set()
        # The frozen blocks were copied, not changed: the cut held the first content.
        assert all(not db.frozen for db in frozen.values())
        assert bytes(frozen[0].runs[0]) == first[:BS // 2]
        expect = bytearray(first[:BS // 2] + bytes(BS // 2) + first[BS:BS + BS // 2])
        expect[100:105] = b"later"
        expect[BS + 100:BS + 109] = b"later too"
        assert await engine.read(fh, 0, len(expect)) == expect
        await engine.fsync(fh, False)
        assert engine.data.dirty_bytes == 0
        assert await engine.read(fh, 0, len(expect)) == expect
        await engine.release(fh)
        await engine.forget([(attr.ino, 1)])

    run_engine(body)


def test_only_blocks_written_in_pieces_stay_in_the_clean_cache(run_engine):
    """Whole blocks written sequentially are not kept after sealing (the kernel's page cache
    has them; keeping them doubled the daemon's memory during large writes); a block written
    in pieces is, since its next partial write needs it as the base."""
    from dynamicfs.codec import blake3_digest

    whole = os.urandom(4 * BS)

    async def body(engine):
        attr = await write_file(engine, b"seq", whole)
        cache = engine.data.clean
        assert all(cache.get(blake3_digest(whole[i * BS:(i + 1) * BS])) is None
                   for i in range(4))
        fh, _ = await engine.open(attr.ino, os.O_RDWR)
        await engine.write(fh, 100, b"patch")
        await engine.fsync(fh, False)
        patched = bytearray(whole[:BS])
        patched[100:105] = b"patch"
        assert cache.get(blake3_digest(bytes(patched))) == bytes(patched)
        await engine.release(fh)
        await engine.forget([(attr.ino, 1)])

    run_engine(body)

