"""The engine serves inode attributes from a cache of committed rows (meta/inodes.py) and frees
unlinked inodes inside the transaction that unlinked them. These tests hold both to what SQLite
says: after every kind of change, and after changes that fail half way.
"""

from __future__ import annotations

import errno
import os
import stat

from conftest import ROOT, write_file
from test_namespace import fails, mkdir, mkfile

from dynamicfs.engine.filesystem import _PURGE_BATCH
from dynamicfs.engine.types import RENAME_EXCHANGE, ROOT_CTX, SetAttr
from dynamicfs.meta import extents as mext
from dynamicfs.meta import inodes as mino


def stored(engine, ino: int) -> mino.InodeRow | None:
    """The row as SQLite has it, past the cache."""
    row = engine.db.get_row(f"SELECT {mino._COLS} FROM inodes WHERE id=?", (ino,))
    return None if row is None else mino.InodeRow(*row)


def assert_cache_true(engine) -> None:
    for (ino,) in engine.db.query("SELECT id FROM inodes"):
        assert mino.get_inode(engine.db, ino) == stored(engine, ino), ino


async def attr_matches_db(engine, ino: int) -> None:
    attr = await engine.getattr(ino)
    row = stored(engine, ino)
    assert (attr.nlink, attr.mode, attr.size, attr.mtime_ns, attr.ctime_ns) == (
        row.nlink, row.mode, row.size, row.mtime_ns, row.ctime_ns)


def test_attributes_follow_links_renames_and_setattr(run_engine):
    async def body(engine):
        a = await mkdir(engine, ROOT, b"a")
        b = await mkdir(engine, ROOT, b"b")
        f = await mkfile(engine, a, b"f")
        await engine.getattr(f)  # cached now
        await engine.link(f, b, b"g", ROOT_CTX)
        await engine.forget([(f, 1)])
        assert (await engine.getattr(f)).nlink == 2
        await engine.unlink(a, b"f")
        assert (await engine.getattr(f)).nlink == 1
        sub = await mkdir(engine, a, b"sub")
        assert (await engine.getattr(a)).nlink == 3
        await engine.rename(a, b"sub", b, b"sub", 0)
        assert (await engine.getattr(a)).nlink == 2
        assert (await engine.getattr(b)).nlink == 3
        await engine.rename(b, b"g", b, b"sub", RENAME_EXCHANGE)
        assert stat.S_ISREG((await engine.lookup(b, b"sub")).mode)
        await engine.forget([(f, 1)])
        await engine.setattr(f, SetAttr(mode=0o600, mtime_ns=12345))
        attr = await engine.getattr(f)
        assert (attr.mode, attr.mtime_ns) == (stat.S_IFREG | 0o600, 12345)
        await engine.rmdir(b, b"g")  # the directory now named g
        assert (await engine.getattr(b)).nlink == 2
        await fails(errno.ENOENT, engine.getattr(sub))
        for ino in (ROOT, a, b, f):
            await attr_matches_db(engine, ino)
        assert_cache_true(engine)

    run_engine(body)


def test_failed_operations_leave_no_trace_in_the_cache(run_engine):
    async def body(engine):
        d = await mkdir(engine, ROOT, b"d")
        full = await mkdir(engine, ROOT, b"full")
        await mkfile(engine, full, b"x")
        before = {ino: await engine.getattr(ino) for ino in (ROOT, d, full)}
        await fails(errno.ENOTEMPTY, engine.rename(ROOT, b"d", ROOT, b"full", 0))
        await fails(errno.EEXIST, engine.mkdir(ROOT, b"d", 0o755, ROOT_CTX))
        await fails(errno.ENOTEMPTY, engine.rmdir(ROOT, b"full"))
        await fails(errno.EISDIR, engine.unlink(ROOT, b"d"))
        assert {ino: await engine.getattr(ino) for ino in (ROOT, d, full)} == before
        assert_cache_true(engine)

    run_engine(body)


def test_unlink_frees_the_data_with_the_name(run_engine):
    async def body(engine):
        a = await write_file(engine, b"f", os.urandom(3 * 65536))
        engine.remember(a.ino)  # the kernel still holds the inode, as after any lookup
        assert mext.totals(engine.db)["extents"] == 3
        await engine.unlink(ROOT, b"f")
        # Freed in the unlink's own transaction: nothing is left referenced.
        assert mext.totals(engine.db)["extents"] == 0
        row = stored(engine, a.ino)
        assert (row.nlink, row.size, row.alloc) == (0, 0, 0)
        assert (await engine.getattr(a.ino)).nlink == 0
        await engine.forget([(a.ino, 1)])
        await fails(errno.ENOENT, engine.getattr(a.ino))
        assert_cache_true(engine)

    run_engine(body)


def test_open_unlinked_file_keeps_its_data_until_release(run_engine):
    async def body(engine):
        fh, attr = await engine.create(ROOT, b"f", 0o644, os.O_RDWR, ROOT_CTX)
        await engine.write(fh, 0, b"x" * 70_000)
        await engine.fsync(fh, False)
        await engine.unlink(ROOT, b"f")
        await engine.forget([(attr.ino, 1)])  # FORGET may come before RELEASE
        assert await engine.read(fh, 0, 10) == b"x" * 10
        assert mext.totals(engine.db)["extents"] > 0
        await engine.release(fh)
        assert stored(engine, attr.ino) is None
        assert mext.totals(engine.db)["extents"] == 0
        assert engine.stats.snapshot().get("inodes_freed") == 1

    run_engine(body)


def test_forgotten_unlinked_inodes_are_purged_in_batches(run_engine):
    async def body(engine):
        d = await mkdir(engine, ROOT, b"d")
        n = _PURGE_BATCH + 10
        inos = []
        for i in range(n):
            fh, attr = await engine.create(d, b"f%d" % i, 0o644, os.O_RDWR, ROOT_CTX)
            await engine.release(fh)
            inos.append(attr.ino)
        for i in range(n):
            await engine.unlink(d, b"f%d" % i)
            await engine.forget([(inos[i], 1)])
        left = [ino for ino in inos if stored(engine, ino) is not None]
        assert len(left) == 10  # one batch went, the rest waits
        for ino in left:
            await fails(errno.ENOENT, engine.getattr(ino))  # gone for everyone meanwhile
            assert stored(engine, ino).nlink == 0
        assert engine.stats.snapshot().get("inodes_freed") == _PURGE_BATCH
        engine._purge_inodes()  # what the commit timer does
        assert all(stored(engine, ino) is None for ino in inos)
        assert engine.stats.snapshot().get("inodes_freed") == n
        assert_cache_true(engine)

    run_engine(body)  # fsck: no inode left unlinked


def test_inode_rows_left_at_stop_are_purged(run_engine):
    async def first(engine):
        for i in range(3):
            a = await write_file(engine, b"f%d" % i, b"")
            engine.remember(a.ino)
            await engine.unlink(ROOT, b"f%d" % i)
            await engine.forget([(a.ino, 1)])
        assert engine._purge

    run_engine(first)  # fsck after the stop: "no links left but was not freed" would fire


def test_setattr_of_an_unlinked_open_file_is_kept(run_engine):
    async def body(engine):
        fh, attr = await engine.create(ROOT, b"f", 0o644, os.O_RDWR, ROOT_CTX)
        await engine.unlink(ROOT, b"f")
        await engine.setattr(attr.ino, SetAttr(mode=0o600, mtime_ns=777))
        got = await engine.getattr(attr.ino)  # fstat(2) on the open descriptor
        assert (got.mode & 0o7777, got.mtime_ns, got.nlink) == (0o600, 777, 0)
        assert stored(engine, attr.ino).mtime_ns == 777
        await engine.release(fh)
        await engine.forget([(attr.ino, 1)])

    run_engine(body)


def test_setattr_of_an_unreachable_inode_is_answered_not_stored(run_engine):
    # After every unlink the kernel writes the ctime it set back with a SETATTR (FUSE
    # writeback cache). Without a name or a handle nobody can see it: it costs no commit.
    async def body(engine):
        a = await write_file(engine, b"f", b"data")
        engine.remember(a.ino)
        await engine.unlink(ROOT, b"f")
        row = stored(engine, a.ino)
        got = await engine.setattr(a.ino, SetAttr(mtime_ns=5, ctime_ns=6))
        assert (got.ino, got.nlink, got.mtime_ns, got.ctime_ns) == (a.ino, 0, 5, 6)
        assert stored(engine, a.ino) == row
        await engine.forget([(a.ino, 1)])

    run_engine(body)
