"""pjdfstest tests/link: hard links, nlink, times, and link(2)'s errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pjdlib import TYPES, create_file, expect, nap, remove, stat_

NOBODY = 65534
LINKABLE = ("regular", "fifo", "block", "char", "socket")


@pytest.mark.parametrize("kind", LINKABLE)
def test_link_00_creates_hardlinks(d: Path, kind: str) -> None:
    # link/00.t: nlink goes 1, 2, 3 and back down; a chmod/chown through one name shows through
    # all: "expect ${type},0201,3,65534,65533 lstat ${n0} type,mode,nlink,uid,gid".
    n0, n1, n2 = d / "n0", d / "n1", d / "n2"
    fields = "type,mode,nlink,uid,gid"
    create_file(kind, n0)
    expect((kind, 1), "lstat", n0, "type,nlink")
    expect("0", "link", n0, n1)
    expect((kind, 2), "lstat", n0, "type,nlink")
    expect((kind, 2), "lstat", n1, "type,nlink")
    expect("0", "link", n1, n2)
    for n in (n0, n1, n2):
        expect((kind, 3), "lstat", n, "type,nlink")
    expect("0", "chmod", n1, 0o201)
    expect("0", "chown", n1, NOBODY, 65533)
    for n in (n0, n1, n2):
        expect((kind, 0o201, 3, NOBODY, 65533), "lstat", n, fields)
    expect("0", "unlink", n0)
    expect("ENOENT", "lstat", n0, fields)
    expect((kind, 0o201, 2, NOBODY, 65533), "lstat", n1, fields)
    expect((kind, 0o201, 2, NOBODY, 65533), "lstat", n2, fields)
    expect("0", "unlink", n2)
    expect((kind, 0o201, 1, NOBODY, 65533), "lstat", n1, fields)
    expect("ENOENT", "lstat", n2, fields)
    expect("0", "unlink", n1)
    expect("ENOENT", "lstat", n1, fields)


@pytest.mark.parametrize("kind", LINKABLE)
def test_link_00_success_updates_ctimes(d: Path, kind: str) -> None:
    # link/00.t: "successful link(2) updates ctime": the file's ctime and the directory's
    # ctime and mtime.
    n0, n1 = d / "n0", d / "n1"
    create_file(kind, n0)
    ctime1 = stat_(n0, "ctime")
    dctime1 = stat_(d, "ctime")
    nap()
    expect("0", "link", n0, n1)
    assert ctime1 < stat_(n0, "ctime"), "link/00.t: the file's ctime was not updated"
    assert dctime1 < stat_(d, "ctime"), "link/00.t: the directory's ctime was not updated"
    assert dctime1 < stat_(d, "mtime"), "link/00.t: the directory's mtime was not updated"


@pytest.mark.parametrize("kind", LINKABLE)
def test_link_00_failure_keeps_ctimes(d: Path, kind: str) -> None:
    # link/00.t: "expect EACCES -u 65534 link ${n0} ${n1}" changes no time stamp.
    n0, n1 = d / "n0", d / "n1"
    create_file(kind, n0)
    expect("0", "lchown", n0, NOBODY, -1)
    before = (stat_(n0, "ctime"), stat_(d, "ctime"), stat_(d, "mtime"))
    nap()
    expect("EACCES", "link", n0, n1, u=NOBODY)
    after = (stat_(n0, "ctime"), stat_(d, "ctime"), stat_(d, "mtime"))
    assert before == after, "link/00.t: a refused link changed a time stamp"


def test_link_01_enotdir(d: Path) -> None:
    # link/01.t: ENOTDIR when a component of either path prefix is a regular file.
    n0, n1 = d / "n0", d / "n1"
    expect("0", "create", n0, 0o644)
    expect("0", "create", n1, 0o644)
    expect("ENOTDIR", "link", n0 / "test", d / "n2")
    expect("ENOTDIR", "link", n1, n0 / "test")


def test_link_02_enametoolong(d: Path) -> None:
    # link/02.t: a NAME_MAX name links; NAME_MAX + 1 is ENAMETOOLONG on either side.
    n0 = d / "n0"
    nx, nxx = d / ("x" * 255), d / ("x" * 256)
    expect("0", "create", n0, 0o644)
    expect("0", "link", n0, nx)
    expect("0", "unlink", nx)
    expect("ENAMETOOLONG", "link", n0, nxx)
    expect("ENAMETOOLONG", "link", nxx, n0)


def test_link_04_enoent_missing_prefix(d: Path) -> None:
    # link/04.t: ENOENT when a component of either path prefix does not exist.
    n0, n2 = d / "n0", d / "n2"
    expect("0", "create", n2, 0o644)
    expect("ENOENT", "link", n0 / "n1" / "test", d / "n3")
    expect("ENOENT", "link", n2, n0 / "n1" / "test")


def test_link_06_eacces_search(d: Path) -> None:
    # link/06.t: "expect 0 chmod ${n1} 0644" /
    # "expect EACCES -u 65534 -g 65534 link ${n1}/${n3} ${n2}/${n4}", then the same for ${n2}.
    n1, n2 = d / "n1", d / "n2"
    for n in (n1, n2):
        expect("0", "mkdir", n, 0o755)
        expect("0", "chown", n, NOBODY, NOBODY)
    src, dst = n1 / "n3", n2 / "n4"
    expect("0", "create", src, 0o644, u=NOBODY, g=NOBODY)
    expect("0", "link", src, dst, u=NOBODY, g=NOBODY)
    expect("0", "unlink", dst, u=NOBODY, g=NOBODY)
    expect("0", "chmod", n1, 0o644)
    expect("EACCES", "link", src, n1 / "n4", u=NOBODY, g=NOBODY)
    expect("EACCES", "link", src, dst, u=NOBODY, g=NOBODY)
    expect("0", "chmod", n1, 0o755)
    expect("0", "chmod", n2, 0o644)
    expect("EACCES", "link", src, dst, u=NOBODY, g=NOBODY)


def test_link_07_eacces_write(d: Path) -> None:
    # link/07.t: "expect 0 chmod ${n2} 0555" /
    # "expect EACCES -u 65534 -g 65534 link ${n1}/${n3} ${n2}/${n4}"
    n1, n2 = d / "n1", d / "n2"
    for n in (n1, n2):
        expect("0", "mkdir", n, 0o755)
        expect("0", "chown", n, NOBODY, NOBODY)
    expect("0", "create", n1 / "n3", 0o644, u=NOBODY, g=NOBODY)
    expect("0", "link", n1 / "n3", n2 / "n4", u=NOBODY, g=NOBODY)
    expect("0", "unlink", n2 / "n4", u=NOBODY, g=NOBODY)
    expect("0", "chmod", n2, 0o555)
    expect("EACCES", "link", n1 / "n3", n2 / "n4", u=NOBODY, g=NOBODY)
    expect("0", "chmod", n1, 0o555)
    expect("EACCES", "link", n1 / "n3", n1 / "n4", u=NOBODY, g=NOBODY)


def test_link_08_eloop(d: Path) -> None:
    # link/08.t: "expect ELOOP link ${n0}/test ${n2}" with n0 -> n1 -> n0.
    n0, n1, n2 = d / "n0", d / "n1", d / "n2"
    expect("0", "symlink", "n0", n1)
    expect("0", "symlink", "n1", n0)
    expect("ELOOP", "link", n0 / "test", n2)
    expect("ELOOP", "link", n1 / "test", n2)
    expect("0", "create", n2, 0o644)
    expect("ELOOP", "link", n2, n0 / "test")
    expect("ELOOP", "link", n2, n1 / "test")


def test_link_09_enoent_source(d: Path) -> None:
    # link/09.t: ENOENT when the source does not exist.
    expect("ENOENT", "link", d / "n0", d / "n1")


@pytest.mark.parametrize("kind", TYPES)
def test_link_10_eexist(d: Path, kind: str) -> None:
    # link/10.t: "expect EEXIST link ${n0} ${n1}" whatever type ${n1} is.
    n0, n1 = d / "n0", d / "n1"
    expect("0", "create", n0, 0o644)
    create_file(kind, n1)
    expect("EEXIST", "link", n0, n1)
    remove(kind, n1)


def test_link_11_eperm_directory(d: Path) -> None:
    # link/11.t: "expect EPERM link ${n0} ${n1}" for a directory, as root and as its owner.
    n0, n1, n2 = d / "n0", d / "n1", d / "n2"
    expect("0", "mkdir", n0, 0o755)
    expect("EPERM", "link", n0, n1)
    expect("0", "rmdir", n0)
    expect("0", "mkdir", n0, 0o755)
    expect("0", "chown", n0, NOBODY, NOBODY)
    expect("0", "mkdir", n0 / "n1", 0o755, u=NOBODY, g=NOBODY)
    expect("EPERM", "link", n0 / "n1", n0 / "n2", u=NOBODY, g=NOBODY)
    expect("0", "rmdir", n0 / "n1", u=NOBODY, g=NOBODY)
    expect("ENOENT", "lstat", n2, "type")
