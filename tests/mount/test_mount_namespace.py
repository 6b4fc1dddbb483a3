"""POSIX namespace checks on a mounted pool: directories, names, links, renames, readdir."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from pathlib import Path

import pytest

pytestmark = pytest.mark.mount

AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
RENAME_WHITEOUT = 4

_libc = ctypes.CDLL(None, use_errno=True)


def renameat2(old: Path, new: Path, flags: int) -> None:
    res = _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new),
                          ctypes.c_uint(flags))
    if res != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(old))


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def errno_of(fn, *args, **kwargs) -> int:
    with pytest.raises(OSError) as info:
        fn(*args, **kwargs)
    return info.value.errno


def touch(path: Path, data: bytes = b"") -> Path:
    path.write_bytes(data)
    return path


def test_mkdir_rmdir(workdir: Path) -> None:
    d = workdir / "dir"
    d.mkdir(mode=0o750)
    st = os.stat(d)
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o750 & ~current_umask()
    assert st.st_nlink == 2
    assert os.stat(workdir).st_nlink == 3
    assert "dir" in os.listdir(workdir)
    d.rmdir()
    assert not d.exists()
    assert os.stat(workdir).st_nlink == 2
    assert "dir" not in os.listdir(workdir)


def test_mkdir_errors(workdir: Path) -> None:
    d = workdir / "dir"
    d.mkdir()
    assert errno_of(os.mkdir, d) == errno.EEXIST
    touch(d / "f")
    assert errno_of(os.rmdir, d) == errno.ENOTEMPTY
    assert errno_of(os.rmdir, d / "f") == errno.ENOTDIR
    assert errno_of(os.mkdir, d / "f" / "sub") == errno.ENOTDIR
    assert errno_of(os.rmdir, workdir / "absent") == errno.ENOENT
    assert errno_of(os.unlink, d) == errno.EISDIR
    (d / "f").unlink()
    d.rmdir()


def test_name_length(workdir: Path) -> None:
    ok = workdir / ("a" * 255)
    touch(ok, b"x")
    assert ok.read_bytes() == b"x"
    assert ("a" * 255) in os.listdir(workdir)
    too_long = workdir / ("b" * 256)
    assert errno_of(os.open, too_long, os.O_CREAT | os.O_WRONLY, 0o644) == errno.ENAMETOOLONG
    assert errno_of(os.mkdir, too_long) == errno.ENAMETOOLONG
    assert errno_of(os.stat, too_long) == errno.ENAMETOOLONG


def test_unlink(workdir: Path) -> None:
    f = touch(workdir / "f", b"data")
    f.unlink()
    assert not f.exists()
    assert errno_of(os.unlink, f) == errno.ENOENT
    assert os.listdir(workdir) == []


def test_unlink_open_file(workdir: Path) -> None:
    f = workdir / "f"
    fd = os.open(f, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"still here" * 1000)
        os.fsync(fd)
        f.unlink()
        assert not f.exists()
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, 10, 0) == b"still here"
        os.pwrite(fd, b"more", 10000)
        assert os.pread(fd, 4, 10000) == b"more"
        assert os.fstat(fd).st_size == 10004
    finally:
        os.close(fd)
    assert os.listdir(workdir) == []


def test_rename_file(workdir: Path) -> None:
    a = touch(workdir / "a", b"A")
    a.rename(workdir / "b")
    assert not a.exists()
    assert (workdir / "b").read_bytes() == b"A"
    # Over an existing file: the target's old content is gone, its inode replaced.
    touch(workdir / "c", b"C")
    ino_b = os.stat(workdir / "b").st_ino
    os.rename(workdir / "b", workdir / "c")
    assert sorted(os.listdir(workdir)) == ["c"]
    assert (workdir / "c").read_bytes() == b"A"
    assert os.stat(workdir / "c").st_ino == ino_b


def test_rename_across_directories(workdir: Path) -> None:
    (workdir / "d1").mkdir()
    (workdir / "d2").mkdir()
    touch(workdir / "d1" / "f", b"F")
    os.rename(workdir / "d1" / "f", workdir / "d2" / "g")
    assert os.listdir(workdir / "d1") == []
    assert (workdir / "d2" / "g").read_bytes() == b"F"
    # A directory moved to another parent moves its ".." link count with it.
    (workdir / "d1" / "sub").mkdir()
    os.rename(workdir / "d1" / "sub", workdir / "d2" / "sub")
    assert os.stat(workdir / "d1").st_nlink == 2
    assert os.stat(workdir / "d2").st_nlink == 3
    assert os.stat(workdir / "d2" / "sub" / "..").st_ino == os.stat(workdir / "d2").st_ino


def test_rename_directories(workdir: Path) -> None:
    src, empty, full = workdir / "src", workdir / "empty", workdir / "full"
    for d in (src, empty, full):
        d.mkdir()
    touch(src / "inside", b"1")
    touch(full / "x")
    file_ = touch(workdir / "file")
    assert errno_of(os.rename, src, full) in (errno.ENOTEMPTY, errno.EEXIST)
    assert errno_of(os.rename, src, file_) == errno.ENOTDIR
    assert errno_of(os.rename, file_, empty) == errno.EISDIR
    assert errno_of(os.rename, src, src / "below") == errno.EINVAL
    os.rename(src, empty)
    assert not src.exists()
    assert (empty / "inside").read_bytes() == b"1"
    assert sorted(os.listdir(workdir)) == ["empty", "file", "full"]


def test_rename_noreplace(workdir: Path) -> None:
    a, b = touch(workdir / "a", b"A"), touch(workdir / "b", b"B")
    assert errno_of(renameat2, a, b, RENAME_NOREPLACE) == errno.EEXIST
    assert a.read_bytes() == b"A" and b.read_bytes() == b"B"
    renameat2(a, workdir / "c", RENAME_NOREPLACE)
    assert sorted(os.listdir(workdir)) == ["b", "c"]


def test_rename_exchange(workdir: Path) -> None:
    a = touch(workdir / "a", b"A")
    (workdir / "d").mkdir()
    touch(workdir / "d" / "in", b"IN")
    ino_a, ino_d = os.stat(a).st_ino, os.stat(workdir / "d").st_ino
    renameat2(a, workdir / "d", RENAME_EXCHANGE)
    assert (workdir / "d").read_bytes() == b"A"
    assert (workdir / "a" / "in").read_bytes() == b"IN"
    assert os.stat(workdir / "d").st_ino == ino_a
    assert os.stat(workdir / "a").st_ino == ino_d
    assert errno_of(renameat2, workdir / "a", workdir / "absent", RENAME_EXCHANGE) == errno.ENOENT
    both = RENAME_EXCHANGE | RENAME_NOREPLACE
    assert errno_of(renameat2, workdir / "a", workdir / "d", both) == errno.EINVAL
    # Whiteouts are an overlayfs feature the engine does not offer.
    assert errno_of(renameat2, workdir / "a", workdir / "w", RENAME_WHITEOUT) == errno.EINVAL


def test_hard_links(workdir: Path) -> None:
    a = touch(workdir / "a", b"shared")
    os.link(a, workdir / "b")
    sa, sb = os.stat(a), os.stat(workdir / "b")
    assert sa.st_ino == sb.st_ino
    assert sa.st_nlink == sb.st_nlink == 2
    with open(workdir / "b", "r+b") as f:
        f.write(b"SHARED")
    assert a.read_bytes() == b"SHARED"
    (workdir / "sub").mkdir()
    os.link(a, workdir / "sub" / "c")
    assert os.stat(a).st_nlink == 3
    a.unlink()
    assert os.stat(workdir / "b").st_nlink == 2
    assert (workdir / "sub" / "c").read_bytes() == b"SHARED"
    assert errno_of(os.link, workdir / "sub", workdir / "dirlink") == errno.EPERM
    assert errno_of(os.link, workdir / "b", workdir / "sub" / "c") == errno.EEXIST


def test_symlinks(workdir: Path) -> None:
    target = touch(workdir / "target", b"T")
    os.symlink("target", workdir / "rel")
    os.symlink(str(target), workdir / "abs")
    os.symlink("nowhere/at/all", workdir / "dangling")
    st = os.lstat(workdir / "rel")
    assert stat.S_ISLNK(st.st_mode)
    assert st.st_size == len("target")
    assert os.readlink(workdir / "rel") == "target"
    assert os.readlink(workdir / "abs") == str(target)
    assert (workdir / "rel").read_bytes() == b"T"
    assert (workdir / "abs").read_bytes() == b"T"
    assert errno_of(os.stat, workdir / "dangling") == errno.ENOENT
    assert os.readlink(workdir / "dangling") == "nowhere/at/all"
    assert errno_of(os.readlink, target) == errno.EINVAL
    long_target = "x" * 4000
    os.symlink(long_target, workdir / "long")
    assert os.readlink(workdir / "long") == long_target
    (workdir / "rel").unlink()
    assert target.exists()


def test_mkfifo(workdir: Path) -> None:
    fifo = workdir / "fifo"
    os.mkfifo(fifo, 0o600)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    # FIFO I/O happens in the kernel; only the inode lives in the pool.
    r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        w = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(w, b"through the pipe")
            assert os.read(r, 100) == b"through the pipe"
        finally:
            os.close(w)
    finally:
        os.close(r)
    os.unlink(fifo)


def test_readdir_many(workdir: Path) -> None:
    names = {f"entry-{i:05d}-{'x' * (i % 40)}" for i in range(2000)}
    for name in names:
        os.close(os.open(workdir / name, os.O_CREAT | os.O_WRONLY, 0o644))
    listed = os.listdir(workdir)
    assert len(listed) == len(names)
    assert set(listed) == names
    with os.scandir(workdir) as it:
        seen = [(e.name, e.inode()) for e in it]
    assert len({ino for _, ino in seen}) == 2000
    for name in list(names)[:10]:
        assert os.stat(workdir / name).st_ino in {ino for _, ino in seen}


def test_readdir_while_changing(workdir: Path) -> None:
    stable = {f"stable-{i:04d}" for i in range(600)}
    doomed = {f"doomed-{i:04d}" for i in range(300)}
    for name in stable | doomed:
        os.close(os.open(workdir / name, os.O_CREAT | os.O_WRONLY, 0o644))
    seen: list[str] = []
    with os.scandir(workdir) as it:
        for i, entry in enumerate(it):
            seen.append(entry.name)
            if i == 100:
                for name in doomed:
                    os.unlink(workdir / name)
                for j in range(300):
                    os.close(os.open(workdir / f"new-{j:04d}", os.O_CREAT | os.O_WRONLY, 0o644))
    # Added or removed entries may or may not show up, but nothing is skipped or repeated.
    assert len(seen) == len(set(seen))
    assert stable <= set(seen)
    assert set(seen) <= stable | doomed | {f"new-{j:04d}" for j in range(300)}
    assert set(os.listdir(workdir)) == stable | {f"new-{j:04d}" for j in range(300)}
