"""pjdfstest tests/mkdir, tests/mkfifo, tests/mknod (and open/00.t's O_CREAT part): the mode
(with umask), owner and group of new nodes, setgid-directory inheritance, and parent times."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pjdlib import expect, nap, stat_

NOBODY = 65534

# The op and argument list creating each kind with a given mode (pjdfstest's syntax).
# Device nodes need CAP_MKNOD, so the cases acting as other users leave them out.
MAKERS = {
    "mkdir": ("dir", lambda p, mode: ("mkdir", p, mode)),
    "mkfifo": ("fifo", lambda p, mode: ("mkfifo", p, mode)),
    "mknod_b": ("block", lambda p, mode: ("mknod", p, "b", mode, 1, 2)),
    "mknod_c": ("char", lambda p, mode: ("mknod", p, "c", mode, 1, 2)),
    "open": ("regular", lambda p, mode: ("open", p, os.O_CREAT | os.O_WRONLY, mode)),
}


USER_MAKERS = [m for m in MAKERS if not m.startswith("mknod")]


def _remove(kind: str, path: Path) -> None:
    expect("0", "rmdir" if kind == "dir" else "unlink", path)


@pytest.mark.parametrize("maker", MAKERS)
@pytest.mark.parametrize(("umask", "mode", "want"), [
    (0, 0o755, 0o755), (0, 0o151, 0o151), (0o77, 0o151, 0o100), (0o70, 0o345, 0o305),
    (0o501, 0o345, 0o244)])
def test_00_mode_and_umask(d: Path, maker: str, umask: int, mode: int, want: int) -> None:
    # mkdir/00.t, mkfifo/00.t, open/00.t: "expect 0 -U 077 mkdir ${n0} 0151" /
    # "expect dir,0100 lstat ${n0} type,mode" and the same table for the other kinds.
    kind, make = MAKERS[maker]
    n0 = d / "n0"
    expect("0", *make(n0, mode), U=umask)
    expect((kind, want), "lstat", n0, "type,mode")
    _remove(kind, n0)


@pytest.mark.parametrize("maker", USER_MAKERS)
def test_00_owner_and_group_of_new_node(d: Path, maker: str) -> None:
    # mkdir/00.t, mkfifo/00.t, open/00.t: "expect 0 chown . 65535 65535" /
    # "expect 0 -u 65535 -g 65535 mkdir ${n0} 0755" / "expect 65535,65535 lstat ...", then
    # "-u 65535 -g 65534" gives gid 6553[45], and in a 0777 dir "-u 65534 -g 65533" 6553[35].
    kind, make = MAKERS[maker]
    n0 = d / "n0"
    expect("0", "chown", d, 65535, 65535)
    expect("0", *make(n0, 0o755), u=65535, g=65535)
    expect((65535, 65535), "lstat", n0, "uid,gid")
    _remove(kind, n0)
    expect("0", *make(n0, 0o755), u=65535, g=NOBODY)
    expect("65535|65534", "lstat", n0, "gid")
    expect(65535, "lstat", n0, "uid")
    _remove(kind, n0)
    expect("0", "chmod", d, 0o777)
    expect("0", *make(n0, 0o755), u=NOBODY, g=65533)
    expect(NOBODY, "lstat", n0, "uid")
    expect("65533|65535", "lstat", n0, "gid")
    _remove(kind, n0)


@pytest.mark.parametrize("maker", MAKERS)
def test_00_times_of_new_node_and_parent(d: Path, maker: str) -> None:
    # mkdir/00.t, mkfifo/00.t, mknod/11.t, open/00.t: the new node's atime, mtime, ctime and
    # the parent's mtime, ctime all come after the parent's ctime taken before.
    kind, make = MAKERS[maker]
    n0 = d / "n0"
    before = stat_(d, "ctime")
    nap()
    expect("0", *make(n0, 0o755))
    for field in ("atime", "mtime", "ctime"):
        assert before < stat_(n0, field), f"new {kind}'s {field} not after the parent's ctime"
    for field in ("mtime", "ctime"):
        assert before < stat_(d, field), f"parent's {field} not updated by creating a {kind}"


@pytest.mark.parametrize("maker", MAKERS)
def test_eexist(d: Path, maker: str) -> None:
    # mkdir/10.t, mkfifo/09.t, mknod/08.t, open/22.t (O_EXCL): EEXIST over every existing type.
    kind, make = MAKERS[maker]
    for existing in ("regular", "dir", "fifo", "symlink"):
        n0 = d / f"e_{existing}"
        {"regular": lambda p: expect("0", "create", p, 0o644),
         "dir": lambda p: expect("0", "mkdir", p, 0o755),
         "fifo": lambda p: expect("0", "mkfifo", p, 0o644),
         "symlink": lambda p: expect("0", "symlink", "test", p)}[existing](n0)
        op, *args = make(n0, 0o644)
        if op == "open":
            args[1] |= os.O_EXCL
        expect("EEXIST", op, *args)


def test_mknod_11_device_numbers(d: Path) -> None:
    # mknod/11.t: "expect 0 mknod ${n0} ${type} 0755 1 2" / "expect 1,2 lstat ${n0} major,minor"
    # / "expect EEXIST mknod ${n0} ${type} 0777 3 4"
    for kind, letter in (("char", "c"), ("block", "b")):
        n0 = d / "n0"
        expect("0", "mknod", n0, letter, 0o755, 1, 2)
        expect((kind, 0o755), "lstat", n0, "type,mode")
        expect((1, 2), "lstat", n0, "major,minor")
        expect("EEXIST", "mknod", n0, letter, 0o777, 3, 4)
        expect("0", "unlink", n0)
        expect("0", "mknod", n0, letter, 0o755, 4095, 1048575)
        expect((4095, 1048575), "lstat", n0, "major,minor")
        expect("0", "unlink", n0)


def test_open_26_create_with_mode_0000(d: Path) -> None:
    # open/26.t: "expect 0 open ${n0} O_CREAT,O_WRONLY 0000" / "expect regular,00 lstat ..."
    # for O_WRONLY, O_RDWR and O_RDONLY.
    n0 = d / "n0"
    for acc in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY):
        expect("0", "open", n0, os.O_CREAT | acc, 0)
        expect(("regular", 0), "lstat", n0, "type,mode")
        expect("0", "unlink", n0)


@pytest.mark.parametrize("maker", USER_MAKERS)
def test_setgid_directory_inheritance(d: Path, maker: str) -> None:
    # Not a pjdfstest file (its mkdir/00.t allows either group): Linux's rule for a directory
    # with S_ISGID, which ext4/xfs/tmpfs follow. New nodes take the directory's group; a new
    # subdirectory also inherits S_ISGID; a non-member creating a setgid file loses S_ISGID.
    kind, make = MAKERS[maker]
    sg = d / "sg"
    expect("0", "mkdir", sg, 0o777)
    expect("0", "chown", sg, 0, 65533)
    expect("0", "chmod", sg, 0o2777)
    n0 = sg / "n0"
    expect("0", *make(n0, 0o755), u=NOBODY, g=NOBODY)
    want_mode = 0o2755 if kind == "dir" else 0o755
    expect((NOBODY, 65533, want_mode), "lstat", n0, "uid,gid,mode")
    _remove(kind, n0)
    if kind in ("regular", "dir"):
        # S_ISGID asked for by a non-member of the directory's group: cleared on files.
        expect("0", *make(n0, 0o2755), u=NOBODY, g=NOBODY)
        expect((65533, 0o2755 if kind == "dir" else 0o755), "lstat", n0, "gid,mode")
        _remove(kind, n0)
        # ...kept for a member.
        expect("0", *make(n0, 0o2755), u=NOBODY, g=(NOBODY, 65533))
        expect((65533, 0o2755), "lstat", n0, "gid,mode")
        _remove(kind, n0)
