"""Namespace operations of the engine: names, directories, links, renames, xattrs, readdir.

Every test drops the kernel references it takes (forget), as the kernel would, so the pool
fsck sees after the run has nothing left half-deleted.
"""

from __future__ import annotations

import errno
import os
import stat
import time

import pytest
import trio
from conftest import ROOT, read_file, write_file

from dynamicfs.engine import namespace
from dynamicfs.engine.types import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    ROOT_CTX,
    XATTR_CREATE,
    XATTR_REPLACE,
    Ctx,
    DirEntry,
    SetAttr,
)
from dynamicfs.errors import FsError
from dynamicfs.meta import inodes as mino


async def fails(code: int, coro) -> None:
    """Await `coro` and require it to fail with errno `code`."""
    with pytest.raises(FsError) as info:
        await coro
    assert info.value.errno == code, (errno.errorcode.get(info.value.errno), os.strerror(code))


async def mkfile(engine, parent: int, name: bytes, mode: int = 0o644) -> int:
    attr = await engine.mknod(parent, name, stat.S_IFREG | mode, 0, ROOT_CTX)
    await engine.forget([(attr.ino, 1)])
    return attr.ino


async def mkdir(engine, parent: int, name: bytes, mode: int = 0o755, ctx: Ctx = ROOT_CTX) -> int:
    attr = await engine.mkdir(parent, name, mode, ctx)
    await engine.forget([(attr.ino, 1)])
    return attr.ino


async def ino_of(engine, parent: int, name: bytes) -> int:
    attr = await engine.lookup(parent, name)
    await engine.forget([(attr.ino, 1)])
    return attr.ino


async def names(engine, ino: int) -> list[bytes]:
    return [e.name for e in await engine.readdir(ino, 0) if e.name not in (b".", b"..")]


async def nlink(engine, ino: int) -> int:
    return (await engine.getattr(ino)).nlink


# -- creating and looking up ---------------------------------------------------------------

def test_new_files_are_stamped_with_the_kernels_coarse_clock(run_engine):
    """The kernel stamps a written file with its coarse clock and sends the times back only if
    they changed: a file created and written within one tick must need no SETATTR."""
    coarse = 5  # CLOCK_REALTIME_COARSE

    async def body(engine):
        for i in range(50):
            before = time.clock_gettime_ns(coarse)
            fh, attr = await engine.create(ROOT, b"f%d" % i, 0o644, os.O_RDWR, ROOT_CTX)
            after = time.clock_gettime_ns(coarse)
            await engine.release(fh)
            await engine.forget([(attr.ino, 1)])
            if before == after:  # all in one tick: the stamp must be that tick, to the ns
                assert attr.mtime_ns == attr.ctime_ns == attr.atime_ns == before
                return
        pytest.fail("50 creates never fitted in one clock tick")

    run_engine(body)


def test_create_and_lookup(run_engine):
    async def body(engine):
        fh, attr = await engine.create(ROOT, b"f", 0o640, os.O_RDWR, Ctx(uid=7, gid=8))
        await engine.release(fh)
        found = await engine.lookup(ROOT, b"f")
        assert found.ino == attr.ino
        assert stat.S_ISREG(found.mode) and stat.S_IMODE(found.mode) == 0o640
        assert (found.uid, found.gid, found.nlink, found.size) == (7, 8, 1, 0)
        await engine.forget([(attr.ino, 2)])

    run_engine(body)


def test_lookup_errors(run_engine):
    async def body(engine):
        f = await mkfile(engine, ROOT, b"f")
        await fails(errno.ENOENT, engine.lookup(ROOT, b"absent"))
        await fails(errno.ENOTDIR, engine.lookup(f, b"x"))
        await fails(errno.ENAMETOOLONG, engine.lookup(ROOT, b"n" * 256))
        assert (await engine.lookup(ROOT, b".")).ino == ROOT
        assert (await engine.lookup(ROOT, b"..")).ino == ROOT

    run_engine(body)


def test_name_length_limit(run_engine):
    async def body(engine):
        await mkfile(engine, ROOT, b"n" * 255)
        await fails(errno.ENAMETOOLONG, engine.mknod(ROOT, b"n" * 256, stat.S_IFREG, 0,
                                                     ROOT_CTX))
        await fails(errno.ENAMETOOLONG, engine.mkdir(ROOT, b"d" * 256, 0o755, ROOT_CTX))
        assert await names(engine, ROOT) == [b"n" * 255]

    run_engine(body)


def test_create_existing_name(run_engine):
    async def body(engine):
        await mkfile(engine, ROOT, b"f")
        await mkdir(engine, ROOT, b"d")
        await fails(errno.EEXIST, engine.mkdir(ROOT, b"f", 0o755, ROOT_CTX))
        await fails(errno.EEXIST, engine.create(ROOT, b"d", 0o644, os.O_RDWR, ROOT_CTX))
        await fails(errno.EEXIST, engine.symlink(ROOT, b"d", b"t", ROOT_CTX))

    run_engine(body)


def test_create_under_a_file(run_engine):
    async def body(engine):
        f = await mkfile(engine, ROOT, b"f")
        await fails(errno.ENOTDIR, engine.mkdir(f, b"sub", 0o755, ROOT_CTX))
        await fails(errno.ENOTDIR, engine.create(f, b"sub", 0o644, os.O_RDWR, ROOT_CTX))

    run_engine(body)


# -- directories ---------------------------------------------------------------------------

def test_mkdir_counts_links(run_engine):
    async def body(engine):
        d = await mkdir(engine, ROOT, b"d")
        assert await nlink(engine, d) == 2
        assert await nlink(engine, ROOT) == 3
        await mkdir(engine, d, b"sub")
        await mkfile(engine, d, b"file")
        assert await nlink(engine, d) == 3

    run_engine(body)


def test_rmdir(run_engine):
    async def body(engine):
        d = await mkdir(engine, ROOT, b"d")
        await mkfile(engine, d, b"f")
        await fails(errno.ENOTEMPTY, engine.rmdir(ROOT, b"d"))
        await fails(errno.ENOTDIR, engine.rmdir(d, b"f"))
        await fails(errno.EISDIR, engine.unlink(ROOT, b"d"))
        await fails(errno.ENOENT, engine.rmdir(ROOT, b"absent"))
        await fails(errno.EINVAL, engine.rmdir(d, b"."))
        await engine.unlink(d, b"f")
        await engine.rmdir(ROOT, b"d")
        assert await names(engine, ROOT) == []
        assert await nlink(engine, ROOT) == 2
        await fails(errno.ENOENT, engine.getattr(d))

    run_engine(body)


def test_create_in_removed_directory(run_engine):
    async def body(engine):
        d = await engine.mkdir(ROOT, b"d", 0o755, ROOT_CTX)  # the kernel keeps it looked up
        await engine.rmdir(ROOT, b"d")
        await fails(errno.ENOENT, engine.mknod(d.ino, b"f", stat.S_IFREG, 0, ROOT_CTX))
        await engine.forget([(d.ino, 1)])
        await fails(errno.ENOENT, engine.getattr(d.ino))

    run_engine(body)


def test_unlink(run_engine):
    async def body(engine):
        a = await write_file(engine, b"f", b"data" * 1000)
        await engine.unlink(ROOT, b"f")
        await fails(errno.ENOENT, engine.lookup(ROOT, b"f"))
        await fails(errno.ENOENT, engine.getattr(a.ino))
        await fails(errno.ENOENT, engine.unlink(ROOT, b"f"))

    run_engine(body)


def test_setgid_directory_inheritance(run_engine):
    async def body(engine):
        d = await mkdir(engine, ROOT, b"shared")
        await engine.setattr(d, SetAttr(mode=0o2775, gid=50))
        user = Ctx(uid=1000, gid=100)
        f = await engine.mknod(d, b"f", stat.S_IFREG | 0o644, 0, user)
        sub = await engine.mkdir(d, b"sub", 0o755, user)
        assert f.gid == 50 and f.uid == 1000
        assert sub.gid == 50 and sub.mode & stat.S_ISGID
        plain = await engine.mkdir(ROOT, b"plain", 0o755, user)
        assert plain.gid == 100 and not plain.mode & stat.S_ISGID
        await engine.forget([(f.ino, 1), (sub.ino, 1), (plain.ino, 1)])

    run_engine(body)


# -- rename --------------------------------------------------------------------------------

def test_rename_within_directory(run_engine):
    async def body(engine):
        f = await mkfile(engine, ROOT, b"a")
        await engine.rename(ROOT, b"a", ROOT, b"b", 0)
        assert await names(engine, ROOT) == [b"b"]
        assert await ino_of(engine, ROOT, b"b") == f
        await fails(errno.ENOENT, engine.rename(ROOT, b"a", ROOT, b"c", 0))

    run_engine(body)


def test_rename_over_file_frees_it(run_engine):
    async def body(engine):
        await write_file(engine, b"a", b"A" * 70_000)
        old = await write_file(engine, b"b", b"B" * 70_000)
        await engine.rename(ROOT, b"a", ROOT, b"b", 0)
        await fails(errno.ENOENT, engine.getattr(old.ino))
        assert await read_file(engine, await ino_of(engine, ROOT, b"b")) == b"A" * 70_000
        assert engine.stats.snapshot().get("inodes_freed") == 1

    run_engine(body)


def test_rename_directory_over_empty_directory(run_engine):
    async def body(engine):
        a = await mkdir(engine, ROOT, b"a")
        await mkdir(engine, ROOT, b"b")
        await mkfile(engine, a, b"inside")
        await engine.rename(ROOT, b"a", ROOT, b"b", 0)
        assert await names(engine, ROOT) == [b"b"]
        assert await names(engine, a) == [b"inside"]
        assert await nlink(engine, ROOT) == 3

    run_engine(body)


def test_rename_type_conflicts(run_engine):
    async def body(engine):
        await mkdir(engine, ROOT, b"d")
        full = await mkdir(engine, ROOT, b"full")
        await mkfile(engine, full, b"x")
        await mkfile(engine, ROOT, b"f")
        await fails(errno.ENOTDIR, engine.rename(ROOT, b"d", ROOT, b"f", 0))
        await fails(errno.EISDIR, engine.rename(ROOT, b"f", ROOT, b"d", 0))
        await fails(errno.ENOTEMPTY, engine.rename(ROOT, b"d", ROOT, b"full", 0))
        assert sorted(await names(engine, ROOT)) == [b"d", b"f", b"full"]

    run_engine(body)


def test_rename_across_directories(run_engine):
    async def body(engine):
        src = await mkdir(engine, ROOT, b"src")
        dst = await mkdir(engine, ROOT, b"dst")
        moved = await mkdir(engine, src, b"moved")
        await mkfile(engine, src, b"file")
        await engine.rename(src, b"moved", dst, b"moved", 0)
        await engine.rename(src, b"file", dst, b"renamed", 0)
        assert await names(engine, src) == []
        assert sorted(await names(engine, dst)) == [b"moved", b"renamed"]
        assert (await nlink(engine, src), await nlink(engine, dst)) == (2, 3)
        assert (await engine.lookup(moved, b"..")).ino == dst

    run_engine(body)


def test_rename_into_own_subtree(run_engine):
    async def body(engine):
        a = await mkdir(engine, ROOT, b"a")
        b = await mkdir(engine, a, b"b")
        await fails(errno.EINVAL, engine.rename(ROOT, b"a", b, b"a", 0))
        await fails(errno.EINVAL, engine.rename(ROOT, b"a", a, b"self", 0))
        assert await names(engine, ROOT) == [b"a"]

    run_engine(body)


def test_rename_noreplace(run_engine):
    async def body(engine):
        await mkfile(engine, ROOT, b"a")
        await mkfile(engine, ROOT, b"b")
        await fails(errno.EEXIST, engine.rename(ROOT, b"a", ROOT, b"b", RENAME_NOREPLACE))
        await engine.rename(ROOT, b"a", ROOT, b"c", RENAME_NOREPLACE)
        assert sorted(await names(engine, ROOT)) == [b"b", b"c"]
        await fails(errno.EINVAL, engine.rename(ROOT, b"b", ROOT, b"d",
                                                RENAME_NOREPLACE | RENAME_EXCHANGE))

    run_engine(body)


def test_rename_exchange_file_and_directory(run_engine):
    async def body(engine):
        left = await mkdir(engine, ROOT, b"left")
        right = await mkdir(engine, ROOT, b"right")
        f = await mkfile(engine, left, b"x")
        d = await mkdir(engine, right, b"y")
        await engine.rename(left, b"x", right, b"y", RENAME_EXCHANGE)
        assert await ino_of(engine, left, b"x") == d
        assert await ino_of(engine, right, b"y") == f
        # The subdirectory moved from right to left, and its ".." with it.
        assert (await nlink(engine, left), await nlink(engine, right)) == (3, 2)
        assert (await engine.lookup(d, b"..")).ino == left
        await fails(errno.ENOENT, engine.rename(left, b"x", right, b"absent", RENAME_EXCHANGE))

    run_engine(body)


def test_rename_exchange_into_own_subtree(run_engine):
    async def body(engine):
        a = await mkdir(engine, ROOT, b"a")
        b = await mkdir(engine, a, b"b")
        await mkfile(engine, b, b"f")
        await fails(errno.EINVAL, engine.rename(ROOT, b"a", b, b"f", RENAME_EXCHANGE))
        await fails(errno.EINVAL, engine.rename(b, b"f", ROOT, b"a", RENAME_EXCHANGE))

    run_engine(body)


def test_rename_hard_link_onto_itself(run_engine):
    async def body(engine):
        f = await mkfile(engine, ROOT, b"a")
        attr = await engine.link(f, ROOT, b"b", ROOT_CTX)
        await engine.forget([(f, 1)])
        await engine.rename(ROOT, b"a", ROOT, b"b", 0)
        assert sorted(await names(engine, ROOT)) == [b"a", b"b"]
        assert attr.nlink == 2 and await nlink(engine, f) == 2

    run_engine(body)


# -- links ---------------------------------------------------------------------------------

def test_hard_links_count_and_keep_data(run_engine):
    async def body(engine):
        data = os.urandom(100_000)
        a = await write_file(engine, b"a", data)
        d = await mkdir(engine, ROOT, b"d")
        for parent, name in ((ROOT, b"b"), (d, b"c")):
            await engine.link(a.ino, parent, name, ROOT_CTX)
            await engine.forget([(a.ino, 1)])
        assert await nlink(engine, a.ino) == 3
        await engine.unlink(ROOT, b"a")
        await engine.unlink(ROOT, b"b")
        assert await nlink(engine, a.ino) == 1
        assert await read_file(engine, await ino_of(engine, d, b"c")) == data
        await fails(errno.EEXIST, engine.link(a.ino, d, b"c", ROOT_CTX))

    run_engine(body)


def test_hard_link_to_directory_refused(run_engine):
    async def body(engine):
        d = await mkdir(engine, ROOT, b"d")
        await fails(errno.EPERM, engine.link(d, ROOT, b"e", ROOT_CTX))

    run_engine(body)


def test_symlink(run_engine):
    async def body(engine):
        target = b"../some/where/else"
        s = await engine.symlink(ROOT, b"s", target, ROOT_CTX)
        assert stat.S_ISLNK(s.mode) and s.size == len(target)
        assert await engine.readlink(s.ino) == target
        f = await mkfile(engine, ROOT, b"f")
        await fails(errno.EINVAL, engine.readlink(f))
        await fails(errno.ENAMETOOLONG, engine.symlink(ROOT, b"long", b"x" * 4096, ROOT_CTX))
        await engine.forget([(s.ino, 1)])

    run_engine(body)


def test_mknod_fifo(run_engine):
    async def body(engine):
        p = await engine.mknod(ROOT, b"pipe", stat.S_IFIFO | 0o600, 0, ROOT_CTX)
        assert stat.S_ISFIFO(p.mode) and stat.S_IMODE(p.mode) == 0o600
        assert stat.S_ISFIFO((await engine.getattr(p.ino)).mode)
        await fails(errno.EINVAL, engine.mknod(ROOT, b"d", stat.S_IFDIR | 0o755, 0, ROOT_CTX))
        await engine.forget([(p.ino, 1)])

    run_engine(body)


# -- xattrs --------------------------------------------------------------------------------

def test_xattrs(run_engine):
    async def body(engine):
        f = await mkfile(engine, ROOT, b"f")
        await engine.setxattr(f, b"user.a", b"1")
        await engine.setxattr(f, b"user.b", b"\0binary\xff")
        assert await engine.getxattr(f, b"user.b") == b"\0binary\xff"
        assert sorted(await engine.listxattr(f)) == [b"user.a", b"user.b"]
        await engine.setxattr(f, b"user.a", b"2")
        assert await engine.getxattr(f, b"user.a") == b"2"
        await engine.removexattr(f, b"user.a")
        assert await engine.listxattr(f) == [b"user.b"]
        await fails(errno.ENODATA, engine.getxattr(f, b"user.a"))
        await fails(errno.ENODATA, engine.removexattr(f, b"user.a"))

    run_engine(body)


def test_xattr_create_and_replace_flags(run_engine):
    async def body(engine):
        f = await mkfile(engine, ROOT, b"f")
        await fails(errno.ENODATA, engine.setxattr(f, b"user.a", b"1", flags=XATTR_REPLACE))
        await engine.setxattr(f, b"user.a", b"1", flags=XATTR_CREATE)
        await fails(errno.EEXIST, engine.setxattr(f, b"user.a", b"2", flags=XATTR_CREATE))
        await engine.setxattr(f, b"user.a", b"3", flags=XATTR_REPLACE)
        assert await engine.getxattr(f, b"user.a") == b"3"

    run_engine(body)


def test_xattr_limits_and_acls(run_engine):
    async def body(engine):
        f = await mkfile(engine, ROOT, b"f")
        await fails(errno.ERANGE, engine.setxattr(f, b"user." + b"n" * 251, b""))
        await fails(errno.E2BIG, engine.setxattr(f, b"user.big", b"x" * 65537))
        await fails(errno.EOPNOTSUPP, engine.setxattr(f, b"system.posix_acl_access", b"x"))
        await fails(errno.EOPNOTSUPP, engine.getxattr(f, b"system.posix_acl_access"))
        await fails(errno.EOPNOTSUPP, engine.removexattr(f, b"system.posix_acl_default"))
        await fails(errno.ENODATA, engine.getxattr(f, b"security.capability"))
        await engine.setxattr(f, b"security.capability", b"cap")
        assert await engine.getxattr(f, b"security.capability") == b"cap"
        await engine.removexattr(f, b"security.capability")
        await fails(errno.ENODATA, engine.getxattr(f, b"security.capability"))

    run_engine(body)


def test_xattrs_go_with_the_inode(run_engine):
    async def body(engine):
        f = await mkfile(engine, ROOT, b"f")
        await engine.setxattr(f, b"user.a", b"1")
        await engine.unlink(ROOT, b"f")
        await fails(errno.ENOENT, engine.getxattr(f, b"user.a"))

    run_engine(body)  # fsck's xattrs check fails if rows of the freed inode stayed behind


# -- readdir -------------------------------------------------------------------------------

def test_readdir_lists_dot_entries_and_attrs(run_engine):
    async def body(engine):
        d = await mkdir(engine, ROOT, b"d")
        await write_file(engine, b"f", b"12345", parent=d)
        entries = await engine.readdir(d, 0)
        assert [e.name for e in entries] == [b".", b"..", b"f"]
        assert entries[0].attr.ino == d and entries[1].attr.ino == ROOT
        assert entries[2].attr.size == 5
        offsets = [e.next_offset for e in entries]
        assert offsets == sorted(offsets) and len(set(offsets)) == 3
        assert await engine.readdir(d, offsets[-1]) == []

    run_engine(body)


def test_readdir_offsets_stable_while_entries_change(run_engine):
    async def body(engine):
        d = await mkdir(engine, ROOT, b"d")
        for i in range(60):
            await mkfile(engine, d, b"f%02d" % i)
        seen: list[bytes] = []
        offset, page, step = 0, 7, 0
        while entries := (await engine.readdir(d, offset))[:page]:
            seen += [e.name for e in entries if e.name not in (b".", b"..")]
            offset = entries[-1].next_offset
            step += 1
            if step <= 5:
                # Between pages: drop one entry already listed and one not reached yet (at
                # the end), and add a new one.
                await engine.unlink(d, b"f%02d" % step)
                await engine.unlink(d, b"f%02d" % (60 - step))
                await mkfile(engine, d, b"new%d" % step)
        assert len(seen) == len(set(seen)), "an entry was listed twice"
        expected = ({b"f%02d" % i for i in range(55)} | {b"new%d" % s for s in range(1, 6)})
        assert set(seen) == expected

    run_engine(body)


async def list_all(engine, d: int) -> list[DirEntry]:
    """A whole listing, page by page, as the kernel asks for it."""
    out: list[DirEntry] = []
    offset = 0
    while entries := await engine.readdir(d, offset):
        out += entries
        offset = entries[-1].next_offset
    return out


def by_name(entries: list[DirEntry]) -> dict[bytes, DirEntry]:
    return {e.name: e for e in entries}


def test_readdir_reads_sqlite_once_and_shows_every_change(run_engine, monkeypatch):
    reads: list[int] = []
    real = mino.list_dir_plus

    def counted(db, parent, after, limit):
        reads.append(parent)
        return real(db, parent, after, limit)

    monkeypatch.setattr(mino, "list_dir_plus", counted)

    async def body(engine):
        d = await mkdir(engine, ROOT, b"d")
        other = await mkdir(engine, ROOT, b"other")
        for i in range(2500):  # more than one batch read from SQLite
            await engine.mknod(d, b"f%04d" % i, stat.S_IFREG | 0o644, 0, ROOT_CTX)
        engine.lookups.clear()  # the kernel would forget them; nothing here is unlinked
        first = await list_all(engine, d)
        assert len(first) == 2502
        read = len(reads)
        assert await list_all(engine, d) == first
        assert await list_all(engine, d) == first
        assert len(reads) == read, "a listing read SQLite again with nothing changed"

        names = by_name(first)
        ino = {n: names[n].attr.ino for n in (b"f0001", b"f0002", b"f0003", b"f0005")}

        async def relisted() -> dict[bytes, DirEntry]:
            listed = by_name(await list_all(engine, d))
            assert set(listed) == set(names), "the names differ from the model's"
            return listed

        # Each change on its own, the listing checked after it.
        await engine.setattr(ino[b"f0001"], SetAttr(mode=0o600, mtime_ns=123))
        listed = await relisted()
        assert stat.S_IMODE(listed[b"f0001"].attr.mode) == 0o600
        assert listed[b"f0001"].attr.mtime_ns == 123
        linked = await engine.link(ino[b"f0002"], other, b"second", ROOT_CTX)
        await engine.forget([(linked.ino, 1)])
        assert (await relisted())[b"f0002"].attr.nlink == 2, "a name elsewhere changed nlink"
        await engine.unlink(other, b"second")
        assert (await relisted())[b"f0002"].attr.nlink == 1
        await engine.unlink(d, b"f0004")
        del names[b"f0004"]
        await relisted()
        await engine.rename(d, b"f0005", d, b"renamed", 0)
        names[b"renamed"] = names.pop(b"f0005")
        assert (await relisted())[b"renamed"].attr.ino == ino[b"f0005"]
        await write_file(engine, b"new", b"x" * 7, parent=d)
        names[b"new"] = names[b"f0001"]
        assert (await relisted())[b"new"].attr.size == 7
        await engine.rename(d, b"new", other, b"moved", 0)
        del names[b"new"]
        await relisted()

        # Data still in the write-back cache changes no row: the listing read before it
        # shows the file's live size all the same.
        read = len(reads)
        fh, _ = await engine.open(ino[b"f0003"], os.O_WRONLY)
        await engine.write(fh, 0, b"y" * 5000)
        assert by_name(await list_all(engine, d))[b"f0003"].attr.size == 5000
        assert len(reads) == read
        await engine.release(fh)
        engine.lookups.clear()

    run_engine(body)


def test_listings_kept_stay_within_their_bound(run_engine, monkeypatch):
    monkeypatch.setattr(namespace, "_LISTING_BATCH", 300)
    monkeypatch.setattr(namespace, "_LISTING_PAGE", 64)
    monkeypatch.setattr(namespace, "_LISTED_MAX", 1000)

    async def body(engine):
        dirs = {}
        for name, count in ((b"big", 2300), (b"small", 250), (b"mid", 700)):
            dirs[name] = await mkdir(engine, ROOT, name)
            for i in range(count):
                await engine.mknod(dirs[name], b"e%05d" % i, stat.S_IFREG | 0o644, 0,
                                   ROOT_CTX)
        engine.lookups.clear()
        ns = engine.ns
        expected = {name: [b".", b".."] + [b"e%05d" % i for i in range(count)]
                    for name, count in ((b"big", 2300), (b"small", 250), (b"mid", 700))}
        for name in (b"big", b"small", b"big", b"mid", b"small", b"mid", b"big"):
            assert [e.name for e in await list_all(engine, dirs[name])] == expected[name]
            held = sum(len(listing.entries) for listing in ns._listings.values())
            assert ns._listed == held <= 1000

    run_engine(body)


def test_readdir_large_directory_is_fast(run_engine):
    count = 20_000

    async def body(engine):
        d = await mkdir(engine, ROOT, b"big")
        for i in range(count):
            await engine.mknod(d, b"entry-%06d" % i, stat.S_IFREG | 0o644, 0, ROOT_CTX)
        engine.lookups.clear()  # the kernel would forget them; nothing here is unlinked
        start = time.monotonic()
        listed = sum(1 for e in await list_all(engine, d) if e.name not in (b".", b".."))
        elapsed = time.monotonic() - start
        assert listed == count
        assert elapsed < 3.0, f"listing {count} entries took {elapsed:.2f}s"
        start = time.monotonic()
        for i in range(0, count, 97):
            await engine.lookup(d, b"entry-%06d" % i)
        assert time.monotonic() - start < 1.0
        engine.lookups.clear()

    run_engine(body)


def test_replaced_directory_lives_while_looked_up(run_engine):
    async def body(engine):
        await mkdir(engine, ROOT, b"a")
        b = await engine.mkdir(ROOT, b"b", 0o755, ROOT_CTX)  # kept looked up
        await engine.setxattr(b.ino, b"user.x", b"1")
        await engine.rename(ROOT, b"a", ROOT, b"b", 0)
        assert (await engine.getattr(b.ino)).nlink == 0
        await fails(errno.ENOENT, engine.mkdir(b.ino, b"new", 0o755, ROOT_CTX))
        await engine.forget([(b.ino, 1)])
        await fails(errno.ENOENT, engine.getattr(b.ino))

    run_engine(body)


def test_times_in_nanoseconds_and_relatime(run_engine):
    async def body(engine):
        a = await write_file(engine, b"f", b"data")
        t = 1_700_000_000_123_456_789
        attr = await engine.setattr(a.ino, SetAttr(atime_ns=t - 1, mtime_ns=t))
        assert (attr.atime_ns, attr.mtime_ns) == (t - 1, t)
        assert attr.ctime_ns > t
        # Times have the kernel's clock tick (a few ms): a tick later the new atime is newer
        # than this ctime, not equal to it (equal still moves it, as in Linux's relatime).
        await trio.sleep(0.02)
        fh, _ = await engine.open(a.ino, os.O_RDONLY)
        await engine.read(fh, 0, 4)  # atime older than mtime: relatime moves it
        await engine.release(fh)
        moved = (await engine.getattr(a.ino)).atime_ns
        assert moved > t
        fh, _ = await engine.open(a.ino, os.O_RDONLY)
        await engine.read(fh, 0, 4)  # now newer than mtime and ctime: left alone
        await engine.release(fh)
        assert (await engine.getattr(a.ino)).atime_ns == moved

    run_engine(body)


def test_chmod_keeps_file_type(run_engine):
    async def body(engine):
        d = await mkdir(engine, ROOT, b"d")
        attr = await engine.setattr(d, SetAttr(mode=0o100700))
        assert stat.S_ISDIR(attr.mode) and stat.S_IMODE(attr.mode) == 0o700
        await fails(errno.EISDIR, engine.setattr(d, SetAttr(size=0)))

    run_engine(body)


def test_link_into_removed_directory(run_engine):
    async def body(engine):
        f = await mkfile(engine, ROOT, b"f")
        d = await engine.mkdir(ROOT, b"d", 0o755, ROOT_CTX)  # kept looked up
        await engine.rmdir(ROOT, b"d")
        await fails(errno.ENOENT, engine.link(f, d.ino, b"x", ROOT_CTX))
        await engine.forget([(d.ino, 1)])

    run_engine(body)


def test_rename_into_removed_directory(run_engine):
    async def body(engine):
        await mkfile(engine, ROOT, b"f")
        d = await engine.mkdir(ROOT, b"d", 0o755, ROOT_CTX)  # kept looked up
        await engine.rmdir(ROOT, b"d")
        await fails(errno.ENOENT, engine.rename(ROOT, b"f", d.ino, b"x", 0))
        await engine.forget([(d.ino, 1)])

    run_engine(body)


def test_readdir_of_a_removed_directory_is_empty(run_engine):
    async def body(engine):
        d = await engine.mkdir(ROOT, b"d", 0o755, ROOT_CTX)  # a process has it open (cwd)
        await engine.opendir(d.ino)
        await engine.rmdir(ROOT, b"d")
        entries = await engine.readdir(d.ino, 0)
        assert [e.name for e in entries if e.name not in (b".", b"..")] == []
        await engine.forget([(d.ino, 1)])

    run_engine(body)
