"""pjdfstest tests/rmdir and tests/unlink: removal, times, sticky directories, open files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pjdlib import NONDIR, TYPES, create_file, expect, lstat, nap, remove, stat_

NOBODY = 65534
LINKABLE = ("regular", "fifo", "block", "char", "socket")


def test_rmdir_00_removes_and_updates_parent(d: Path) -> None:
    # rmdir/00.t: "expect 0 rmdir ${n0}/${n1}" moves the parent's mtime and ctime forward;
    # the parent's nlink drops back (POSIX: ".." of the removed directory is gone).
    n0 = d / "n0"
    expect("0", "mkdir", n0, 0o755)
    expect("dir", "lstat", n0, "type")
    expect("0", "rmdir", n0)
    expect("ENOENT", "lstat", n0, "type")
    expect("0", "mkdir", n0, 0o755)
    expect("0", "mkdir", n0 / "n1", 0o755)
    expect(3, "lstat", n0, "nlink")
    time0 = stat_(n0, "ctime")
    nap()
    expect("0", "rmdir", n0 / "n1")
    assert time0 < stat_(n0, "mtime"), "rmdir/00.t: parent's mtime not updated"
    assert time0 < stat_(n0, "ctime"), "rmdir/00.t: parent's ctime not updated"
    expect(2, "lstat", n0, "nlink")


@pytest.mark.parametrize("kind", NONDIR)
def test_rmdir_01_enotdir(d: Path, kind: str) -> None:
    # rmdir/01.t: rmdir of a non-directory, or through one, is ENOTDIR.
    n0 = d / "n0"
    create_file(kind, n0)
    expect("ENOTDIR", "rmdir", n0)
    if kind != "symlink":
        expect("ENOTDIR", "rmdir", n0 / "test")


def test_rmdir_02_enametoolong_and_04_enoent(d: Path) -> None:
    # rmdir/02.t: NAME_MAX works, NAME_MAX + 1 is ENAMETOOLONG; rmdir/04.t: ENOENT.
    expect("0", "mkdir", d / ("x" * 255), 0o755)
    expect("0", "rmdir", d / ("x" * 255))
    expect("ENAMETOOLONG", "rmdir", d / ("x" * 256))
    expect("ENOENT", "rmdir", d / "n0")
    expect("ENOENT", "rmdir", d / "n0" / "n1")


def test_rmdir_05_eloop(d: Path) -> None:
    # rmdir/05.t: a symlink loop in the path prefix is ELOOP.
    expect("0", "symlink", "n0", d / "n1")
    expect("0", "symlink", "n1", d / "n0")
    expect("ELOOP", "rmdir", d / "n0" / "test")
    expect("ELOOP", "rmdir", d / "n1" / "test")


@pytest.mark.parametrize("kind", TYPES)
def test_rmdir_06_enotempty(d: Path, kind: str) -> None:
    # rmdir/06.t: "expect "EEXIST|ENOTEMPTY" rmdir ${n0}" with one entry of any type in it.
    n0 = d / "n0"
    expect("0", "mkdir", n0, 0o755)
    create_file(kind, n0 / "n1")
    expect("EEXIST|ENOTEMPTY", "rmdir", n0)
    remove(kind, n0 / "n1")
    expect("0", "rmdir", n0)


def test_rmdir_07_eacces_search_and_08_write(d: Path) -> None:
    # rmdir/07.t: "expect 0 chmod ${n1} 0644" / "expect EACCES -u 65534 -g 65534 rmdir
    # ${n1}/${n2}"; rmdir/08.t: the same with "chmod ${n1} 0555".
    n1, n2 = d / "n1", d / "n1" / "n2"
    expect("0", "mkdir", n1, 0o755)
    expect("0", "chown", n1, NOBODY, NOBODY)
    expect("0", "mkdir", n2, 0o755, u=NOBODY, g=NOBODY)
    expect("0", "chmod", n1, 0o644)
    expect("EACCES", "rmdir", n2, u=NOBODY, g=NOBODY)
    expect("0", "chmod", n1, 0o555)
    expect("EACCES", "rmdir", n2, u=NOBODY, g=NOBODY)
    expect("0", "chmod", n1, 0o755)
    expect("0", "rmdir", n2, u=NOBODY, g=NOBODY)


@pytest.mark.parametrize(("dir_owner", "subdir_owner", "want"), [
    (NOBODY, NOBODY, "0"), (0, NOBODY, "0"), (65533, NOBODY, "0"), (NOBODY, 0, "0"),
    (NOBODY, 65533, "0"), (0, 0, "EACCES|EPERM"), (65533, 65533, "EACCES|EPERM")],
    ids=["owns_both", "owns_subdir", "owns_subdir_2", "owns_dir", "owns_dir_2",
         "owns_neither", "owns_neither_2"])
def test_rmdir_11_sticky(d: Path, dir_owner: int, subdir_owner: int, want: str) -> None:
    # rmdir/11.t: in a 01777 directory, removing a directory needs owning it or the parent.
    n0, n1 = d / "n0", d / "n0" / "n1"
    expect("0", "mkdir", n0, 0o755)
    expect("0", "chown", n0, dir_owner, dir_owner)
    expect("0", "chmod", n0, 0o1777)
    create_file("dir", n1, subdir_owner, subdir_owner)
    expect(want, "rmdir", n1, u=NOBODY, g=NOBODY)
    if want != "0":
        expect(("dir", subdir_owner, subdir_owner), "lstat", n1, "type,uid,gid")
        expect("0", "rmdir", n1)


def test_rmdir_12_dot_and_dotdot(d: Path) -> None:
    # rmdir/12.t: "expect EINVAL rmdir ${n0}/${n1}/." /
    # "expect "ENOTEMPTY|EEXIST" rmdir ${n0}/${n1}/.." (strings: pathlib drops a final ".").
    n0 = d / "n0"
    expect("0", "mkdir", n0, 0o755)
    expect("0", "mkdir", n0 / "n1", 0o755)
    expect("EINVAL", "rmdir", f"{n0}/n1/.")
    expect("ENOTEMPTY|EEXIST", "rmdir", f"{n0}/n1/..")
    expect("0", "rmdir", n0 / "n1")
    expect("0", "rmdir", n0)


@pytest.mark.parametrize("kind", NONDIR)
def test_unlink_00_removes(d: Path, kind: str) -> None:
    # unlink/00.t: "unlink removes regular files, symbolic links, fifos and sockets".
    n0 = d / "n0"
    create_file(kind, n0)
    expect(kind, "lstat", n0, "type")
    expect("0", "unlink", n0)
    expect("ENOENT", "lstat", n0, "type")


@pytest.mark.parametrize("kind", LINKABLE)
def test_unlink_00_updates_ctime_of_remaining_link(d: Path, kind: str) -> None:
    # unlink/00.t: "successful unlink(2) updates ctime": "expect 0 link ${n0} ${n1}" /
    # "expect 0 unlink ${n1}" / "test_check $ctime1 -lt $ctime2" on ${n0}.
    n0, n1 = d / "n0", d / "n1"
    create_file(kind, n0)
    expect("0", "link", n0, n1)
    ctime1 = lstat(n0, "ctime")
    nap()
    expect("0", "unlink", n1)
    assert ctime1 < lstat(n0, "ctime"), "unlink/00.t: ctime of the remaining link"
    expect(1, "lstat", n0, "nlink")


@pytest.mark.parametrize("kind", NONDIR)
def test_unlink_00_updates_parent_times(d: Path, kind: str) -> None:
    # unlink/00.t: "expect 0 unlink ${n0}/${n1}" moves ${n0}'s mtime and ctime forward.
    n0 = d / "n0"
    expect("0", "mkdir", n0, 0o755)
    create_file(kind, n0 / "n1")
    time0 = stat_(n0, "ctime")
    nap()
    expect("0", "unlink", n0 / "n1")
    assert time0 < stat_(n0, "mtime"), "unlink/00.t: parent's mtime not updated"
    assert time0 < stat_(n0, "ctime"), "unlink/00.t: parent's ctime not updated"


@pytest.mark.parametrize("kind", LINKABLE)
def test_unlink_00_failure_keeps_ctime(d: Path, kind: str) -> None:
    # unlink/00.t: "expect EACCES -u 65534 unlink ${n0}" and ctime unchanged.
    n0 = d / "n0"
    create_file(kind, n0)
    ctime1 = lstat(n0, "ctime")
    nap()
    expect("EACCES", "unlink", n0, u=NOBODY)
    assert lstat(n0, "ctime") == ctime1, "unlink/00.t: a refused unlink changed ctime"


def test_unlink_08_directory(d: Path) -> None:
    # unlink/08.t: POSIX allows EPERM; Linux says EISDIR (the file's "todo Linux").
    n0 = d / "n0"
    expect("0", "mkdir", n0, 0o755)
    expect("EISDIR", "unlink", n0)
    expect("dir", "lstat", n0, "type")


def test_unlink_05_06_eacces_07_eloop(d: Path) -> None:
    # unlink/05.t EACCES without search permission, unlink/06.t EACCES without write
    # permission on the directory, unlink/07.t ELOOP in the prefix.
    expect("0", "symlink", "n0", d / "n1")
    expect("0", "symlink", "n1", d / "n0")
    expect("ELOOP", "unlink", d / "n0" / "test")
    n2 = d / "n2"
    expect("0", "mkdir", n2, 0o755)
    expect("0", "chown", n2, NOBODY, NOBODY)
    expect("0", "create", n2 / "f", 0o644, u=NOBODY, g=NOBODY)
    expect("0", "chmod", n2, 0o644)
    expect("EACCES", "unlink", n2 / "f", u=NOBODY, g=NOBODY)
    expect("0", "chmod", n2, 0o555)
    expect("EACCES", "unlink", n2 / "f", u=NOBODY, g=NOBODY)
    expect("0", "chmod", n2, 0o755)
    expect("0", "unlink", n2 / "f", u=NOBODY, g=NOBODY)


@pytest.mark.parametrize(("dir_owner", "file_owner", "want"), [
    (NOBODY, NOBODY, "0"), (NOBODY, 0, "0"), (NOBODY, 65533, "0"), (0, NOBODY, "0"),
    (65533, NOBODY, "0"), (0, 0, "EACCES|EPERM"), (65533, 65533, "EACCES|EPERM")],
    ids=["owns_both", "owns_dir", "owns_dir_2", "owns_file", "owns_file_2", "owns_neither",
         "owns_neither_2"])
@pytest.mark.parametrize("kind", NONDIR)
def test_unlink_11_sticky(d: Path, kind: str, dir_owner: int, file_owner: int,
                          want: str) -> None:
    # unlink/11.t: "unlink returns EACCES or EPERM if the directory containing the file is
    # marked sticky, and neither the containing directory nor the file to be removed are
    # owned by the effective user ID".
    n0, n1 = d / "n0", d / "n0" / "n1"
    expect("0", "mkdir", n0, 0o755)
    expect("0", "chmod", n0, 0o1777)
    expect("0", "chown", n0, dir_owner, dir_owner)
    create_file(kind, n1, file_owner, file_owner)
    expect((kind, file_owner, file_owner), "lstat", n1, "type,uid,gid")
    expect(want, "unlink", n1, u=NOBODY, g=NOBODY)
    if want == "0":
        expect("ENOENT", "lstat", n1, "type")
    else:
        expect((kind, file_owner, file_owner), "lstat", n1, "type,uid,gid")


def test_unlink_14_open_file_survives(d: Path) -> None:
    # unlink/14.t: "expect 0 open ${n0} O_RDONLY : unlink ${n0} : fstat 0 nlink" and
    # "expect "Hello,_World!" open ${n0} O_RDWR : write 0 ... : unlink ${n0} : pread 0 0".
    n0 = d / "n0"
    expect("0", "create", n0, 0o644)
    expect("0", "seq", n0, os.O_WRONLY, ("write", b"Hello, World!"))
    expect(0, "seq", n0, os.O_RDONLY, ("unlink", n0), ("fstat", "nlink"))
    expect("0", "create", n0, 0o644)
    data = b"Hello,_World!"
    expect(data, "seq", n0, os.O_RDWR, ("write", data), ("unlink", n0), ("pread", 13, 0))
    expect("ENOENT", "lstat", n0, "type")


def test_rename_over_open_file_keeps_its_data(d: Path) -> None:
    # As unlink/14.t for a name replaced by rename(2): the replaced inode lives on for its
    # open descriptor (nlink 0, old bytes), and the name shows the new file.
    src, dst = d / "src", d / "dst"
    src.write_bytes(b"new contents")
    dst.write_bytes(b"old contents, longer")
    fd = os.open(dst, os.O_RDWR)
    try:
        expect("0", "rename", src, dst)
        st = os.fstat(fd)
        assert (st.st_nlink, st.st_size) == (0, 20)
        assert os.pread(fd, 100, 0) == b"old contents, longer"
        os.pwrite(fd, b"OLD", 0)
        assert os.pread(fd, 3, 0) == b"OLD"
    finally:
        os.close(fd)
    assert dst.read_bytes() == b"new contents"
    expect(1, "lstat", dst, "nlink")
