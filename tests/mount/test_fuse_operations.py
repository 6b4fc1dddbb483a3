"""The FUSE translation layer without a mount: Operations against a scripted fake engine.

These need no /dev/fuse; they pin down what the real-mount tests cannot provoke on demand
(unexpected engine exceptions, a full readdir buffer, lookup counting for dot entries).
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from types import SimpleNamespace

import pyfuse3
import pytest
import trio

from dynamicfs.engine.types import Attr, Ctx, DirEntry, SetAttr, StatFs
from dynamicfs.errors import DynamicFSError, FsError
from dynamicfs.fuse import Operations, build_options
from dynamicfs.fuse.mount import is_mounted

CTX = SimpleNamespace(uid=1000, gid=100, pid=42, umask=0o022)


def attr(ino: int, size: int = 0) -> Attr:
    return Attr(ino, 0o100644, 1, 0, 0, 0, size, 0, 4096, 1, 2, 3)


class FakeEngine:
    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.remembered: list[int] = []
        self.batches: dict[int, list[DirEntry]] = {}
        self.fail: BaseException | None = None

    def __getattr__(self, name: str):
        async def op(*args):
            self.calls.append((name, *args))
            if self.fail is not None:
                raise self.fail
            if name in ("lookup", "getattr", "setattr", "mkdir", "mknod", "symlink", "link"):
                return attr(7)
            if name == "readdir":
                return self.batches.get(args[1], [])
            return None
        return op

    def remember(self, ino: int) -> None:
        self.remembered.append(ino)


def run(fn, *args):
    return trio.run(fn, *args)


def test_errors_become_errnos(caplog: pytest.LogCaptureFixture) -> None:
    eng = FakeEngine()
    ops = Operations(eng)
    eng.fail = FsError(errno.ENOTEMPTY)
    with pytest.raises(pyfuse3.FUSEError) as info:
        run(ops.rmdir, 1, b"d", CTX)
    assert info.value.errno == errno.ENOTEMPTY
    eng.fail = KeyError("engine bug")
    with caplog.at_level(logging.ERROR), pytest.raises(pyfuse3.FUSEError) as info:
        run(ops.getattr, 5, CTX)
    assert info.value.errno == errno.EIO
    assert "engine bug" in caplog.text and "Traceback" in caplog.text
    # forget answers no request: it must swallow everything.
    run(ops.forget, [(5, 1)])


def test_lookup_and_context() -> None:
    eng = FakeEngine()
    ops = Operations(eng)
    entry = run(ops.lookup, 1, b"name", CTX)
    assert entry.st_ino == 7 and entry.st_mode == 0o100644
    assert entry.entry_timeout > 0 and entry.attr_timeout > 0
    assert (entry.st_atime_ns, entry.st_mtime_ns, entry.st_ctime_ns) == (1, 2, 3)
    assert eng.calls[-1] == ("lookup", 1, b"name", Ctx(1000, 100, 42, 0o022))
    eng.fail = FsError(errno.ENOENT)
    miss = run(ops.lookup, 1, b"absent", CTX)
    assert miss.st_ino == 0  # a cached negative entry, no lookup reference taken


def test_setattr_fields() -> None:
    eng = FakeEngine()
    ops = Operations(eng)
    new = pyfuse3.EntryAttributes()
    new.st_mode, new.st_size, new.st_mtime_ns, new.st_uid = 0o100600, 99, 5_000_000_001, 3
    fields = SimpleNamespace(update_mode=True, update_uid=False, update_gid=False,
                             update_size=True, update_atime=False, update_mtime=True,
                             update_ctime=False)
    run(ops.setattr, 7, new, fields, None, CTX)
    assert eng.calls[-1][:3] == ("setattr", 7, SetAttr(mode=0o100600, size=99,
                                                        mtime_ns=5_000_000_001))


def test_readdir_counts_lookups_except_dots(monkeypatch: pytest.MonkeyPatch) -> None:
    eng = FakeEngine()
    ops = Operations(eng)
    eng.batches = {
        0: [DirEntry(b".", attr(1), 1), DirEntry(b"..", attr(1), 2), DirEntry(b"a", attr(10), 3)],
        3: [DirEntry(b"b", attr(11), 4), DirEntry(b"c", attr(12), 5)],
    }
    replies: list[tuple[bytes, int]] = []
    room = 4

    def reply(token, name, entry, next_id):
        if len(replies) >= room:
            return False
        replies.append((name, next_id))
        return True

    monkeypatch.setattr(pyfuse3, "readdir_reply", reply)
    fh = run(ops.opendir, 1, CTX)
    run(ops.readdir, fh, 0, None)
    # The buffer filled after b: c was refused, so no reference for it.
    assert replies == [(b".", 1), (b"..", 2), (b"a", 3), (b"b", 4)]
    assert eng.remembered == [10, 11]
    replies.clear()
    run(ops.readdir, fh, 4, None)
    assert replies == [] and ("readdir", 1, 4) in eng.calls
    run(ops.fsyncdir, fh, True)
    assert eng.calls[-1] == ("fsyncdir", 1, True)
    run(ops.releasedir, fh)
    with pytest.raises(pyfuse3.FUSEError) as info:
        run(ops.readdir, fh, 0, None)
    assert info.value.errno == errno.EBADF


def test_open_keep_cache_and_statfs() -> None:
    eng = FakeEngine()
    ops = Operations(eng)

    async def open_(ino, flags, ctx):
        return 9, False

    async def statfs():
        return StatFs(4096, 4096, 100, 50, 40, 1000, 900, 900, 255)

    eng.open, eng.statfs = open_, statfs
    fi = run(ops.open, 7, 0, CTX)
    assert (fi.fh, fi.keep_cache) == (9, False)
    st = run(ops.statfs, CTX)
    assert (st.f_blocks, st.f_bavail, st.f_namemax) == (100, 40, 255)


def test_build_options() -> None:
    opts = build_options(["allow_other,noatime", "fsname=mypool"])
    assert {"default_permissions", "nosuid", "nodev", "subtype=dynamicfs"} <= opts
    assert {"allow_other", "noatime", "fsname=mypool"} <= opts
    assert "fsname=dynamicfs" not in opts
    assert "allow_other" not in build_options([])
    for bad in (["suid"], ["ro,dev"], ["max_write=1048576"], ["ro", "rw"]):
        with pytest.raises(DynamicFSError):
            build_options(bad)


def test_cache_size_is_dynamicfs_own_option() -> None:
    from dynamicfs.fuse.mount import engine_options

    opts = build_options(["noatime,cache_size=512M"])
    fuse, own = engine_options(opts)
    assert own == {"cache_size": 512 << 20}
    assert "noatime" in fuse and not any(o.startswith("cache_size") for o in fuse)
    assert engine_options(build_options([]))[1] == {}
    for bad in (["cache_size"], ["cache_size=1M"], ["cache_size=lots"]):
        with pytest.raises(DynamicFSError, match="cache_size|invalid size"):
            build_options(bad)


def test_is_mounted() -> None:
    assert is_mounted(Path("/"))
    assert not is_mounted(Path("/surely/not/a/mountpoint"))


def test_readdir_error_after_entries_replies_short(monkeypatch: pytest.MonkeyPatch) -> None:
    eng = FakeEngine()
    ops = Operations(eng)
    first = [DirEntry(b"a", attr(10), 3)]

    async def readdir(ino, offset):
        if offset == 0:
            return first
        raise FsError(errno.EIO)

    eng.readdir = readdir
    replies: list[bytes] = []
    monkeypatch.setattr(pyfuse3, "readdir_reply",
                        lambda token, name, entry, next_id: replies.append(name) or True)
    fh = run(ops.opendir, 1, CTX)
    # "a" is in the buffer and counted: failing now would leak its reference.
    run(ops.readdir, fh, 0, None)
    assert replies == [b"a"] and eng.remembered == [10]
    with pytest.raises(pyfuse3.FUSEError) as info:
        run(ops.readdir, fh, 3, None)
    assert info.value.errno == errno.EIO
