"""What the engine stores survives closing and reopening the pool, and what a crash leaves
half-done is finished at the next start."""

from __future__ import annotations

import os
import stat
import time

from conftest import BS, ROOT, corrupt_db, db_rows, fragment_files, read_file, write_file

from dynamicfs.engine.types import ROOT_CTX, Ctx, SetAttr
from dynamicfs.meta import extents as mext
from dynamicfs.meta import inodes as mino


async def snapshot(engine, ino: int = ROOT, path: bytes = b"") -> dict[bytes, tuple]:
    """Everything observable below a directory except atime (reads move it)."""
    out: dict[bytes, tuple] = {}
    offset = 0
    while entries := await engine.readdir(ino, offset):
        offset = entries[-1].next_offset
        for e in entries:
            if e.name in (b".", b".."):
                continue
            a = e.attr
            sub = path + b"/" + e.name
            content: bytes | None = None
            if stat.S_ISREG(a.mode):
                content = await read_file(engine, a.ino, a.size)
            elif stat.S_ISLNK(a.mode):
                content = await engine.readlink(a.ino)
            xattrs = {n: await engine.getxattr(a.ino, n) for n in await engine.listxattr(a.ino)}
            out[sub] = (a.ino, a.mode, a.nlink, a.uid, a.gid, a.rdev, a.size, a.blocks,
                        a.mtime_ns, a.ctime_ns, content, sorted(xattrs.items()))
            if stat.S_ISDIR(a.mode):
                out.update(await snapshot(engine, a.ino, sub))
    return out


async def build_tree(engine) -> None:
    d = await engine.mkdir(ROOT, b"dir", 0o750, Ctx(uid=5, gid=6))
    sub = await engine.mkdir(d.ino, b"sub", 0o700, ROOT_CTX)
    big = await write_file(engine, b"big", os.urandom(3 * BS + 77), parent=d.ino)
    await write_file(engine, b"small", b"hello", parent=sub.ino)
    await write_file(engine, b"empty", b"")
    fh, sparse = await engine.create(ROOT, b"sparse", 0o600, os.O_RDWR, ROOT_CTX)
    await engine.write(fh, 5 * BS + 3, b"end")
    await engine.release(fh)  # not fsynced: a clean stop must still keep it
    await engine.link(big.ino, ROOT, b"hardlink", ROOT_CTX)
    s = await engine.symlink(sub.ino, b"link", b"../big", ROOT_CTX)
    p = await engine.mknod(ROOT, b"fifo", stat.S_IFIFO | 0o644, 0, ROOT_CTX)
    await engine.setxattr(big.ino, b"user.note", b"\x00\x01value")
    await engine.setxattr(d.ino, b"user.dir", b"")
    await engine.setattr(sub.ino, SetAttr(atime_ns=1, mtime_ns=1_234_567_890_123_456_789))
    await engine.forget([(i, 1) for i in (d.ino, sub.ino, sparse.ino, big.ino, s.ino, p.ino)])


def test_tree_survives_restart(run_engine):
    saved: dict = {}

    async def first(engine):
        await build_tree(engine)
        await engine.commit_all()
        saved.update(await snapshot(engine))

    path = run_engine(first)

    async def second(engine):
        assert await snapshot(engine) == saved

    run_engine(second, pool_path=path)
    assert len(saved) == 9 and saved[b"/dir/sub"][8] == 1_234_567_890_123_456_789


def test_unsynced_writes_are_kept_by_a_clean_stop(run_engine):
    data = os.urandom(2 * BS + 5)

    async def first(engine):
        fh, attr = await engine.create(ROOT, b"f", 0o644, os.O_RDWR, ROOT_CTX)
        await engine.write(fh, 0, data)
        await engine.write(fh, BS // 2, b"overwritten")  # dirty, never sealed
        await engine.release(fh)
        await engine.forget([(attr.ino, 1)])

    path = run_engine(first)
    want = data[:BS // 2] + b"overwritten" + data[BS // 2 + 11:]

    async def second(engine):
        ino = (await engine.lookup(ROOT, b"f")).ino
        assert await read_file(engine, ino) == want
        await engine.forget([(ino, 1)])

    run_engine(second, pool_path=path)


def test_policy_restart_round_trip(run_engine):
    data = os.urandom(4 * BS + 1)

    async def first(engine):
        await write_file(engine, b"f", data)

    path = run_engine(first, policy="ec:2+1")
    for _ in range(2):
        async def again(engine):
            ino = (await engine.lookup(ROOT, b"f")).ino
            assert await read_file(engine, ino) == data
            await engine.forget([(ino, 1)])

        run_engine(again, pool_path=path)


def test_start_frees_inodes_a_crash_left_unlinked(run_engine):
    async def first(engine):
        await write_file(engine, b"doomed", os.urandom(2 * BS))
        await write_file(engine, b"kept", b"kept")

    path = run_engine(first)
    # What a crash leaves when an open file was unlinked: a row with nlink 0 and its blocks.
    corrupt_db(path, "DELETE FROM dentries WHERE name = CAST('doomed' AS BLOB)",
               "UPDATE inodes SET nlink = 0 WHERE id = 2")
    assert len(fragment_files(path)) == 2 * 2 + 2

    async def second(engine):
        assert mext.totals(engine.db)["extents"] == 1
        ino = (await engine.lookup(ROOT, b"kept")).ino
        assert await read_file(engine, ino) == b"kept"
        await engine.forget([(ino, 1)])

    run_engine(second, pool_path=path)
    assert len(fragment_files(path)) == 2
    assert db_rows(path, "SELECT id FROM inodes ORDER BY id") == [(1,), (3,)]


def test_start_frees_extents_a_crash_left_unreferenced(run_engine):
    async def first(engine):
        await write_file(engine, b"f", os.urandom(BS))

    path = run_engine(first)
    # A crash between the commit that dropped the last reference and the freeing.
    corrupt_db(path, "DELETE FROM blocks", "UPDATE inodes SET size = 0, alloc = 0 WHERE id = 2",
               "UPDATE extents SET refcount = 0")

    async def second(engine):
        assert mext.totals(engine.db)["extents"] == 0

    run_engine(second, pool_path=path)
    assert fragment_files(path) == []


def test_times_of_a_file_with_uncommitted_data_commit_with_it(run_engine):
    """The kernel sends the times it stamped on a written file at close: they are kept with
    the file's uncommitted data and stored in its commit, not in a transaction of their own.
    Any other change (atime, mode, owner), or a file with nothing uncommitted, commits at once."""
    # Later than now, as the kernel's stamps are (a ctime never goes back).
    t1, t2, t3 = (time.time_ns() + n * 10**9 + n for n in (1, 2, 3))

    async def body(engine):
        fh, attr = await engine.create(ROOT, b"f", 0o644, os.O_RDWR, ROOT_CTX)
        ino = attr.ino
        stored = mino.get_inode(engine.db, ino)
        await engine.write(fh, 0, b"data")
        a = await engine.setattr(ino, SetAttr(mtime_ns=t1, ctime_ns=t1))
        assert (a.mtime_ns, a.ctime_ns, a.size) == (t1, t1, 4)
        row = mino.get_inode(engine.db, ino)
        assert (row.mtime_ns, row.ctime_ns, row.size) == (stored.mtime_ns, stored.ctime_ns, 0)
        await engine.fsync(fh, False)
        row = mino.get_inode(engine.db, ino)
        assert (row.mtime_ns, row.ctime_ns, row.size) == (t1, t1, 4)

        await engine.setattr(ino, SetAttr(mtime_ns=t2))  # nothing uncommitted: at once
        assert mino.get_inode(engine.db, ino).mtime_ns == t2
        await engine.write(fh, 4, b"more")
        await engine.setattr(ino, SetAttr(atime_ns=t3, mtime_ns=t3))  # with atime: at once
        row = mino.get_inode(engine.db, ino)
        assert (row.atime_ns, row.mtime_ns, row.size) == (t3, t3, 4)
        await engine.release(fh)
        await engine.forget([(ino, 1)])

    path = run_engine(body)

    async def after(engine):
        attr = await engine.lookup(ROOT, b"f", ROOT_CTX)
        assert (attr.mtime_ns, attr.size) == (t3, 8)
        await engine.forget([(attr.ino, 1)])

    run_engine(after, pool_path=path)
