"""pjdfstest tests/symlink (and readlink): creation, times, path-length limits, errors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pjdlib import TYPES, create_file, expect, nap, remove, stat_

NOBODY = 65534


def test_symlink_00_creates(d: Path) -> None:
    # symlink/00.t: "expect symlink lstat ${n1} type" / "expect regular,0644 stat ${n1}
    # type,mode"; once the target is gone "expect ENOENT stat ${n1} type,mode".
    n0, n1 = d / "n0", d / "n1"
    expect("0", "create", n0, 0o644)
    expect(("regular", 0o644), "lstat", n0, "type,mode")
    expect("0", "symlink", "n0", n1)
    expect("symlink", "lstat", n1, "type")
    expect(("regular", 0o644), "stat", n1, "type,mode")
    expect("n0", "readlink", n1)
    expect("0", "unlink", n0)
    expect("ENOENT", "stat", n1, "type,mode")
    expect("0", "unlink", n1)


def test_symlink_00_updates_parent_times(d: Path) -> None:
    # symlink/00.t: "expect 0 symlink test ${n0}/${n1}" moves ${n0}'s mtime and ctime.
    n0 = d / "n0"
    expect("0", "mkdir", n0, 0o755)
    time0 = stat_(n0, "ctime")
    nap()
    expect("0", "symlink", "test", n0 / "n1")
    assert time0 < stat_(n0, "mtime"), "symlink/00.t: parent's mtime not updated"
    assert time0 < stat_(n0, "ctime"), "symlink/00.t: parent's ctime not updated"


def test_symlink_owner_size_and_odd_targets(d: Path) -> None:
    # POSIX symlink(): owned by the creator; lstat's st_size is the target's length; the
    # target is stored verbatim (any bytes but NUL, absolute or dangling).
    n0 = d / "n0"
    expect("0", "chmod", d, 0o777)
    target = "../" + "é" * 10 + "/a b//c/"
    expect("0", "symlink", target, n0, u=NOBODY, g=65533)
    expect(("symlink", NOBODY, 65533), "lstat", n0, "type,uid,gid")
    expect(len(os.fsencode(target)), "lstat", n0, "size")
    expect(target, "readlink", n0)
    expect("0", "symlink", "/nonexistent/abs", d / "n1")
    expect("/nonexistent/abs", "readlink", d / "n1")


def test_readlink_einval_on_non_symlink(d: Path) -> None:
    # readlink(2): EINVAL when the path is not a symbolic link.
    expect("0", "create", d / "n0", 0o644)
    expect("EINVAL", "readlink", d / "n0")
    expect("EINVAL", "readlink", d)


def test_symlink_02_enametoolong_name(d: Path) -> None:
    # symlink/02.t: a NAME_MAX link name works; NAME_MAX + 1 is ENAMETOOLONG.
    expect("0", "symlink", "test", d / ("x" * 255))
    expect("0", "unlink", d / ("x" * 255))
    expect("ENAMETOOLONG", "symlink", "test", d / ("x" * 256))


@pytest.fixture
def inside(d: Path) -> Iterator[Path]:
    """Run with the working directory in `d`: the PATH_MAX cases use relative paths."""
    here = os.getcwd()
    os.chdir(d)
    try:
        yield d
    finally:
        os.chdir(here)


def _dirgen_max(path_max: int = 4096, name_max: int = 255) -> str:
    # misc.sh dirgen_max: components of NAME_MAX/2 bytes up to PATH_MAX - 1 bytes, "x" last.
    comp = name_max // 2
    name = ""
    i = 0
    while len(name) < path_max - 1:
        name += f"{i:0{comp}d}"[:comp] + "/"
        i += 1
    name = name[:path_max - 1]
    return name[:-1] + "x" if name.endswith("/") else name


def test_symlink_03_enametoolong_path(inside: Path) -> None:
    # symlink/03.t: "expect 0 symlink ${nx} ${n0}", "expect 0 symlink ${n0} ${nx}" and
    # "expect ENAMETOOLONG symlink ${n0} ${nxx}", "expect ENAMETOOLONG symlink ${nxx} ${n0}"
    # with ${nx} a relative path of PATH_MAX - 1 bytes.
    nx = _dirgen_max()
    assert len(nx) == 4095
    parent = nx.rsplit("/", 1)[0]
    # mkdir -p "${nx%/*}", one level at a time through a directory fd.
    fd = os.open(".", os.O_RDONLY)
    try:
        for comp in parent.split("/"):
            os.mkdir(comp, 0o755, dir_fd=fd)
            nfd = os.open(comp, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
    finally:
        os.close(fd)
    expect("0", "symlink", nx, "n0")
    expect(nx, "readlink", "n0")
    expect("0", "unlink", "n0")
    expect("0", "symlink", "n0", nx)
    expect("0", "unlink", nx)
    expect("ENAMETOOLONG", "symlink", "n0", nx + "x")
    expect("ENAMETOOLONG", "symlink", nx + "x", "n0")


@pytest.mark.parametrize("kind", TYPES)
def test_symlink_08_eexist(d: Path, kind: str) -> None:
    # symlink/08.t: "expect EEXIST symlink test ${n0}" over every type.
    n0 = d / "n0"
    create_file(kind, n0)
    expect("EEXIST", "symlink", "test", n0)
    remove(kind, n0)


def test_symlink_05_06_eacces(d: Path) -> None:
    # symlink/05.t (no search) and symlink/06.t (no write) permission on the parent: EACCES.
    n1 = d / "n1"
    expect("0", "mkdir", n1, 0o755)
    expect("0", "chown", n1, NOBODY, NOBODY)
    expect("0", "symlink", "test", n1 / "n2", u=NOBODY, g=NOBODY)
    expect("0", "unlink", n1 / "n2", u=NOBODY, g=NOBODY)
    expect("0", "chmod", n1, 0o644)
    expect("EACCES", "symlink", "test", n1 / "n2", u=NOBODY, g=NOBODY)
    expect("0", "chmod", n1, 0o555)
    expect("EACCES", "symlink", "test", n1 / "n2", u=NOBODY, g=NOBODY)


def test_symlink_01_enotdir_07_eloop(d: Path) -> None:
    # symlink/01.t: ENOTDIR through a file; symlink/07.t: ELOOP through a symlink loop.
    expect("0", "create", d / "f", 0o644)
    expect("ENOTDIR", "symlink", "test", d / "f" / "n0")
    expect("0", "symlink", "n0", d / "n1")
    expect("0", "symlink", "n1", d / "n0")
    expect("ELOOP", "symlink", "test", d / "n0" / "test")


def test_symlink_target_arbitrary_bytes(d: Path) -> None:
    # A symlink stores its target verbatim: any bytes but NUL, up to PATH_MAX - 1.
    root = os.fsencode(d)
    for i, target in enumerate([b"\xff\xfe/x", bytes(range(1, 256)), b"x" * 4095, b"/"]):
        link = root + b"/l%d" % i
        os.symlink(target, link)
        assert os.readlink(link) == target
        assert os.lstat(link).st_size == len(target)
