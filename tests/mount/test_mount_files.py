"""POSIX file checks on a mounted pool: data at offsets, holes, sizes, attributes, xattrs,
sync, mmap and locks."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fusemount import drop_cache

pytestmark = pytest.mark.mount

MiB = 1 << 20


def errno_of(fn, *args, **kwargs) -> int:
    with pytest.raises(OSError) as info:
        fn(*args, **kwargs)
    return info.value.errno


def test_create_read_write(workdir: Path) -> None:
    f = workdir / "f"
    fd = os.open(f, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o640)
    try:
        assert os.write(fd, b"hello world") == 11
        assert os.pread(fd, 5, 6) == b"world"
        os.pwrite(fd, b"W", 6)
        os.pwrite(fd, b"!", 11)
        assert os.pread(fd, 100, 0) == b"hello World!"
        assert os.pread(fd, 10, 100) == b""
    finally:
        os.close(fd)
    assert errno_of(os.open, f, os.O_CREAT | os.O_EXCL | os.O_WRONLY) == errno.EEXIST
    st = os.stat(f)
    assert stat.S_ISREG(st.st_mode) and st.st_size == 12 and st.st_nlink == 1
    drop_cache(f)
    assert f.read_bytes() == b"hello World!"
    with open(f, "ab") as a:
        a.write(b" appended")
    assert f.read_bytes() == b"hello World! appended"
    with open(f, "wb") as w:  # O_TRUNC
        w.write(b"new")
    drop_cache(f)
    assert f.read_bytes() == b"new"


def test_write_across_blocks(workdir: Path) -> None:
    # Writes straddling the pool's 1 MiB blocks, in pieces smaller than a page.
    f = workdir / "f"
    expected = bytearray(3 * MiB + 5)
    with open(f, "wb") as w:
        w.truncate(len(expected))
        for off in (0, MiB - 3, 2 * MiB - 1, 3 * MiB, 1234567):
            chunk = bytes((off + i) % 251 for i in range(5))
            w.seek(off)
            w.write(chunk)
            expected[off:off + 5] = chunk
    drop_cache(f)
    assert f.read_bytes() == bytes(expected)


def test_sparse_file(workdir: Path) -> None:
    f = workdir / "sparse"
    fd = os.open(f, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, b"start", 0)
        os.pwrite(fd, b"end", 20 * MiB)
        os.fsync(fd)
    finally:
        os.close(fd)
    drop_cache(f)
    st = os.stat(f)
    assert st.st_size == 20 * MiB + 3
    assert st.st_blocks * 512 < st.st_size // 4, "holes must not be allocated"
    with open(f, "rb") as r:
        assert r.read(5) == b"start"
        r.seek(7 * MiB)
        assert r.read(MiB) == bytes(MiB)
        r.seek(20 * MiB - 2)
        assert r.read() == b"\0\0end"


def test_truncate(workdir: Path) -> None:
    f = workdir / "f"
    data = os.urandom(3 * MiB + 100)
    f.write_bytes(data)
    os.truncate(f, MiB + 10)
    assert os.stat(f).st_size == MiB + 10
    drop_cache(f)
    assert f.read_bytes() == data[:MiB + 10]
    os.truncate(f, 4 * MiB)  # extending reads back zeros, not the old bytes
    drop_cache(f)
    got = f.read_bytes()
    assert got[:MiB + 10] == data[:MiB + 10]
    assert got[MiB + 10:] == bytes(4 * MiB - MiB - 10)
    with open(f, "r+b") as fh:
        fh.truncate(0)
    assert os.stat(f).st_size == 0
    assert f.read_bytes() == b""


def test_chmod_chown(workdir: Path) -> None:
    f = workdir / "f"
    f.write_bytes(b"x")
    os.chmod(f, 0o4751)
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o4751
    os.chmod(f, 0o600)
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    os.chown(f, 1234, 5678)
    st = os.stat(f)
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    os.chown(f, -1, 42)
    st = os.stat(f)
    assert (st.st_uid, st.st_gid) == (1234, 42)
    (workdir / "d").mkdir()
    os.chmod(workdir / "d", 0o1777)
    assert stat.S_IMODE(os.stat(workdir / "d").st_mode) == 0o1777


def test_utimens_nanoseconds(workdir: Path) -> None:
    f = workdir / "f"
    f.write_bytes(b"x")
    atime, mtime = 1_234_567_890_123_456_789, 1_500_000_000_987_654_321
    before = os.stat(f).st_ctime_ns
    os.utime(f, ns=(atime, mtime))
    st = os.stat(f)
    assert st.st_atime_ns == atime
    assert st.st_mtime_ns == mtime
    assert st.st_ctime_ns >= before
    os.utime(f)  # UTIME_NOW for both
    st = os.stat(f)
    assert abs(st.st_mtime_ns - time.time_ns()) < 10 * 10**9
    os.symlink("f", workdir / "l")
    os.utime(workdir / "l", ns=(atime, mtime), follow_symlinks=False)
    assert os.lstat(workdir / "l").st_mtime_ns == mtime


def test_mtime_follows_writes(workdir: Path) -> None:
    f = workdir / "f"
    f.write_bytes(b"x")
    os.utime(f, ns=(10**18, 10**18))
    with open(f, "ab") as a:
        a.write(b"y")
    assert abs(os.stat(f).st_mtime_ns - time.time_ns()) < 10 * 10**9
    d_before = os.stat(workdir).st_mtime_ns
    time.sleep(0.01)
    (workdir / "g").write_bytes(b"")
    assert os.stat(workdir).st_mtime_ns > d_before


def test_xattrs(workdir: Path) -> None:
    f = workdir / "f"
    f.write_bytes(b"x")
    assert os.listxattr(f) == []
    assert errno_of(os.getxattr, f, "user.absent") == errno.ENODATA
    os.setxattr(f, "user.a", b"1")
    os.setxattr(f, "user.big", os.urandom(4000))
    os.setxattr(f, "user.empty", b"")
    assert os.getxattr(f, "user.a") == b"1"
    assert os.getxattr(f, "user.empty") == b""
    assert len(os.getxattr(f, "user.big")) == 4000
    assert sorted(os.listxattr(f)) == ["user.a", "user.big", "user.empty"]
    os.setxattr(f, "user.a", b"2")
    assert os.getxattr(f, "user.a") == b"2"
    assert errno_of(os.setxattr, f, "user.a", b"3", os.XATTR_CREATE) == errno.EEXIST
    assert errno_of(os.setxattr, f, "user.new", b"3", os.XATTR_REPLACE) == errno.ENODATA
    os.setxattr(f, "user.a", b"3", os.XATTR_REPLACE)
    os.removexattr(f, "user.a")
    assert errno_of(os.getxattr, f, "user.a") == errno.ENODATA
    assert errno_of(os.removexattr, f, "user.a") == errno.ENODATA
    assert sorted(os.listxattr(f)) == ["user.big", "user.empty"]
    (workdir / "d").mkdir()
    os.setxattr(workdir / "d", "user.dir", b"on a directory")
    assert os.getxattr(workdir / "d", "user.dir") == b"on a directory"
    # Without negotiated ACL support, ACL xattrs are refused so tools fall back to chmod.
    acl = bytes.fromhex("02000000" "01000600ffffffff" "04000400ffffffff" "20000400ffffffff")
    assert errno_of(os.setxattr, f, "system.posix_acl_access", acl) == errno.EOPNOTSUPP
    # Writing keeps the file's attributes (the security.capability probe must not hurt).
    with open(f, "ab") as a:
        a.write(b"more")
    assert os.getxattr(f, "user.empty") == b""


def test_statfs(workdir: Path) -> None:
    st = os.statvfs(workdir)
    assert st.f_bsize > 0 and st.f_frsize > 0
    assert st.f_blocks > 0
    assert 0 <= st.f_bfree <= st.f_blocks
    assert 0 <= st.f_bavail <= st.f_blocks
    assert st.f_namemax == 255


def test_fsync_fdatasync(workdir: Path) -> None:
    f = workdir / "f"
    fd = os.open(f, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"a" * 100000)
        os.fsync(fd)
        os.pwrite(fd, b"b" * 10, 50)
        os.fdatasync(fd)
        assert os.pread(fd, 12, 49) == b"a" + b"b" * 10 + b"a"
    finally:
        os.close(fd)
    dfd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    fd = os.open(f, os.O_RDONLY | os.O_SYNC)
    os.close(fd)


def test_mmap(workdir: Path) -> None:
    f = workdir / "mapped"
    data = bytearray(os.urandom(3 * MiB))
    f.write_bytes(data)
    drop_cache(f)
    with open(f, "r+b") as fh, mmap.mmap(fh.fileno(), 0) as m:
        assert m[:] == data
        m[100:200] = b"m" * 100
        m[2 * MiB:2 * MiB + 4] = b"MMAP"
        m.flush()
    data[100:200] = b"m" * 100
    data[2 * MiB:2 * MiB + 4] = b"MMAP"
    assert f.read_bytes() == data
    drop_cache(f)
    assert hashlib.sha256(f.read_bytes()).digest() == hashlib.sha256(data).digest()


_LOCKER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    if sys.argv[2] == "flock":
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)
except OSError as e:
    print("busy", e.errno)
else:
    print("locked")
"""


def _try_lock(path: Path, kind: str) -> str:
    out = subprocess.run([sys.executable, "-c", _LOCKER, str(path), kind],
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def test_flock_between_processes(workdir: Path) -> None:
    f = workdir / "lock"
    f.write_bytes(b"x")
    fd = os.open(f, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert _try_lock(f, "flock").startswith("busy")
        fcntl.flock(fd, fcntl.LOCK_UN)
        assert _try_lock(f, "flock") == "locked"
    finally:
        os.close(fd)


def test_fcntl_lock_between_processes(workdir: Path) -> None:
    f = workdir / "lock"
    f.write_bytes(b"x" * 100)
    fd = os.open(f, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX, 5, 0)
        assert _try_lock(f, "lockf").startswith("busy")
        fcntl.lockf(fd, fcntl.LOCK_UN, 5, 0)
        assert _try_lock(f, "lockf") == "locked"
    finally:
        os.close(fd)


def test_large_file(workdir: Path) -> None:
    f = workdir / "large"
    h = hashlib.sha256()
    with open(f, "wb") as w:
        for _ in range(50):
            chunk = os.urandom(MiB)
            h.update(chunk)
            w.write(chunk)
    assert os.stat(f).st_size == 50 * MiB
    drop_cache(f)
    r = hashlib.sha256()
    with open(f, "rb") as fh:
        while chunk := fh.read(4 * MiB):
            r.update(chunk)
    assert r.hexdigest() == h.hexdigest()
