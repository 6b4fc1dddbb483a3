"""pjdfstest tests/chmod: mode changes, their ctime, and the S_ISGID/S_ISVTX/S_ISUID rules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pjdlib import NONDIR, TYPES, create_file, expect, lstat, nap, remove, stat_

NOBODY = 65534


@pytest.mark.parametrize("kind", [t for t in TYPES if t != "symlink"])
def test_chmod_00_changes_mode_directly_and_through_symlink(d: Path, kind: str) -> None:
    # chmod/00.t: "expect 0 chmod ${n0} 0111" / "expect 0111 stat ${n0} mode", then the same
    # through a symlink: "expect 0 chmod ${n1} 0222" leaves the link's own mode alone.
    n0, n1 = d / "n0", d / "n1"
    create_file(kind, n0)
    expect("0", "chmod", n0, 0o111)
    expect(0o111, "stat", n0, "mode")
    expect("0", "symlink", "n0", n1)
    link_mode = lstat(n1, "mode")
    expect("0", "chmod", n1, 0o222)
    expect(0o222, "stat", n1, "mode")
    expect(0o222, "stat", n0, "mode")
    expect(link_mode, "lstat", n1, "mode")
    expect("0", "unlink", n1)
    remove(kind, n0)


@pytest.mark.parametrize("kind", [t for t in TYPES if t != "symlink"])
def test_chmod_00_success_updates_ctime(d: Path, kind: str) -> None:
    # chmod/00.t: "successful chmod(2) updates ctime."
    n0 = d / "n0"
    create_file(kind, n0)
    ctime1 = stat_(n0, "ctime")
    nap()
    expect("0", "chmod", n0, 0o111)
    ctime2 = stat_(n0, "ctime")
    assert ctime1 < ctime2, "chmod/00.t: ctime not updated by a successful chmod"
    remove(kind, n0)


@pytest.mark.parametrize("kind", [t for t in TYPES if t != "symlink"])
def test_chmod_00_failure_keeps_ctime(d: Path, kind: str) -> None:
    # chmod/00.t: "expect EPERM -u 65534 chmod ${n0} 0111" and ctime unchanged.
    n0 = d / "n0"
    create_file(kind, n0)
    ctime1 = stat_(n0, "ctime")
    nap()
    expect("EPERM", "chmod", n0, 0o111, u=NOBODY)
    assert stat_(n0, "ctime") == ctime1, "chmod/00.t: a refused chmod changed ctime"
    remove(kind, n0)


def test_chmod_00_sgid_cleared_for_non_member(d: Path) -> None:
    # chmod/00.t: the owner may set S_ISGID only with the file's group among its groups;
    # "expect 0 -u 65534 -g 65533 chmod ${n0} 02755" / "expect 0755 stat ${n0} mode".
    n0 = d / "n0"
    expect("0", "create", n0, 0o755)
    expect("0", "chown", n0, NOBODY, NOBODY)
    expect("0", "chmod", n0, 0o2755, u=NOBODY, g=NOBODY)
    expect(0o2755, "stat", n0, "mode")
    expect("0", "chmod", n0, 0o755, u=NOBODY, g=NOBODY)
    expect(0o755, "stat", n0, "mode")
    expect("0", "chmod", n0, 0o2755, u=NOBODY, g=65533)
    expect(0o755, "stat", n0, "mode")
    expect("0", "unlink", n0)


def test_chmod_07_eperm_for_non_owner(d: Path) -> None:
    # chmod/07.t: "chmod returns EPERM if the operation would change the ownership, but the
    # effective user ID is not the super-user", directly and through a symlink.
    n1, n2, n3 = d / "n1", d / "n1" / "n2", d / "n1" / "n3"
    expect("0", "mkdir", n1, 0o755)
    expect("0", "chown", n1, NOBODY, NOBODY)
    expect("0", "create", n2, 0o644, u=NOBODY, g=NOBODY)
    expect("0", "chmod", n2, 0o642, u=NOBODY, g=NOBODY)
    expect(0o642, "stat", n2, "mode")
    expect("EPERM", "chmod", n2, 0o641, u=65533, g=65533)
    expect(0o642, "stat", n2, "mode")
    expect("0", "chown", n2, 0, 0)
    expect("EPERM", "chmod", n2, 0o641, u=NOBODY, g=NOBODY)
    expect(0o642, "stat", n2, "mode")
    expect("0", "unlink", n2)

    expect("0", "create", n2, 0o644, u=NOBODY, g=NOBODY)
    expect("0", "symlink", "n2", n3, u=NOBODY, g=NOBODY)
    expect("0", "chmod", n3, 0o642, u=NOBODY, g=NOBODY)
    expect((0o642, NOBODY, NOBODY), "stat", n2, "mode,uid,gid")
    expect("EPERM", "chmod", n3, 0o641, u=65533, g=65533)
    expect("0", "chown", n3, 0, 0)
    expect("EPERM", "chmod", n3, 0o641, u=NOBODY, g=NOBODY)
    expect((0o642, 0, 0), "stat", n2, "mode,uid,gid")


@pytest.mark.parametrize("kind", [t for t in TYPES if t != "symlink"])
def test_chmod_11_sticky_as_root(d: Path, kind: str) -> None:
    # chmod/11.t: "expect 0 chmod ${n1} 01621" / "expect 01621 stat ${n1} mode", and through
    # a symlink "expect 0 chmod ${n2} 01700" / "expect 01700 stat ${n1} mode".
    n1, n2 = d / "n1", d / "n2"
    create_file(kind, n1)
    expect("0", "chmod", n1, 0o1621)
    expect(0o1621, "stat", n1, "mode")
    expect("0", "symlink", "n1", n2)
    expect("0", "chmod", n2, 0o1700)
    expect(0o1700, "stat", n1, "mode")
    expect("0", "unlink", n2)
    remove(kind, n1)


def test_chmod_11_sticky_dir_as_owner(d: Path) -> None:
    # chmod/11.t: "expect 0 -u 65534 -g 65534 chmod ${n1} 01755" on the user's own directory.
    n1, n2 = d / "n1", d / "n2"
    expect("0", "mkdir", n1, 0o755)
    expect("0", "chown", n1, NOBODY, NOBODY)
    expect("0", "chmod", n1, 0o1755, u=NOBODY, g=NOBODY)
    expect(0o1755, "stat", n1, "mode")
    expect("0", "symlink", "n1", n2)
    expect("0", "chmod", n2, 0o1700)
    expect(0o1700, "stat", n1, "mode")


@pytest.mark.parametrize("kind", [t for t in NONDIR if t != "symlink"])
def test_chmod_11_sticky_on_file_as_owner_linux(d: Path, kind: str) -> None:
    # chmod/11.t, the Linux branch: a non-root owner may set S_ISVTX on a non-directory:
    # "expect 0 -u 65534 -g 65534 chmod ${n1} 01644" / "expect 01644 stat ${n1} mode".
    n1, n2 = d / "n1", d / "n2"
    create_file(kind, n1, NOBODY, NOBODY, mode=0o640)
    expect("0", "symlink", "n1", n2)
    expect("0", "chmod", n1, 0o1644, u=NOBODY, g=NOBODY)
    expect(0o1644, "stat", n1, "mode")
    expect("0", "chmod", n2, 0o1640, u=NOBODY, g=NOBODY)
    expect(0o1640, "stat", n1, "mode")


@pytest.mark.parametrize(("mode", "flags"), [(0o4777, "O_WRONLY"), (0o2777, "O_RDWR"),
                                             (0o6777, "O_RDWR")])
def test_chmod_12_write_by_non_owner_clears_suid_sgid(d: Path, mode: int, flags: str) -> None:
    # chmod/12.t: "expect 0 create ${n0} 04777" /
    # "expect 0777 -u 65534 -g 65534 open ${n0} O_WRONLY : write 0 x : fstat 0 mode" /
    # "expect 0777 stat ${n0} mode"
    n0 = d / "n0"
    expect("0", "create", n0, mode)
    expect(0o777, "seq", n0, getattr(os, flags), ("write", b"x"), ("fstat", "mode"),
           u=NOBODY, g=NOBODY)
    expect(0o777, "stat", n0, "mode")
    expect("0", "unlink", n0)
