"""pjdfstest tests/rename: names, inodes and nlink across renames, times, the type and
emptiness errors, EINVAL for a directory into itself, and sticky-directory rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from pjdlib import NONDIR, TYPES, create_file, expect, lstat, nap, remove, stat_

NOBODY = 65534
LINKABLE = ("regular", "fifo", "block", "char", "socket")


@pytest.mark.parametrize("kind", LINKABLE)
def test_rename_00_keeps_inode_and_links(d: Path, kind: str) -> None:
    # rename/00.t: "expect 0 rename ${n0} ${n1}" / "expect ${type},${inode},0644,1 lstat ${n1}
    # type,inode,mode,nlink", then with a second hard link nlink stays 2 across a rename.
    n0, n1, n2 = d / "n0", d / "n1", d / "n2"
    create_file(kind, n0, mode=0o644)
    expect((kind, 0o644, 1), "lstat", n0, "type,mode,nlink")
    inode = lstat(n0, "inode")
    expect("0", "rename", n0, n1)
    expect("ENOENT", "lstat", n0, "type")
    expect((kind, inode, 0o644, 1), "lstat", n1, "type,inode,mode,nlink")
    expect("0", "link", n1, n0)
    expect((kind, inode, 0o644, 2), "lstat", n0, "type,inode,mode,nlink")
    expect("0", "rename", n1, n2)
    expect((kind, inode, 0o644, 2), "lstat", n0, "type,inode,mode,nlink")
    expect("ENOENT", "lstat", n1, "type")
    expect((kind, inode, 0o644, 2), "lstat", n2, "type,inode,mode,nlink")


def test_rename_00_directory_and_symlink(d: Path) -> None:
    # rename/00.t: a directory keeps its inode; renaming a symlink moves the link, not its
    # target ("expect symlink,${sinode} lstat ${n2} type,inode").
    n0, n1, n2 = d / "n0", d / "n1", d / "n2"
    expect("0", "mkdir", n0, 0o755)
    inode = lstat(n0, "inode")
    expect("0", "rename", n0, n1)
    expect("ENOENT", "lstat", n0, "type")
    expect(("dir", inode, 0o755), "lstat", n1, "type,inode,mode")
    expect("0", "rmdir", n1)
    expect("0", "create", n0, 0o644)
    rinode = lstat(n0, "inode")
    expect("0", "symlink", "n0", n1)
    sinode = lstat(n1, "inode")
    expect(("regular", rinode, 0o644), "stat", n1, "type,inode,mode")
    expect("0", "rename", n1, n2)
    expect(("regular", rinode, 0o644), "stat", n0, "type,inode,mode")
    expect("ENOENT", "lstat", n1, "type")
    expect(("symlink", sinode), "lstat", n2, "type,inode")


@pytest.mark.parametrize("kind", TYPES)
def test_rename_00_failure_keeps_ctime(d: Path, kind: str) -> None:
    # rename/00.t: "expect EACCES -u 65534 rename ${n0} ${n1}" and ctime unchanged.
    n0 = d / "n0"
    create_file(kind, n0)
    ctime1 = lstat(n0, "ctime")
    nap()
    expect("EACCES", "rename", n0, d / "n1", u=NOBODY)
    assert lstat(n0, "ctime") == ctime1, "rename/00.t: a refused rename changed ctime"


@pytest.mark.parametrize("kind", TYPES)
def test_rename_22_updates_ctime_of_renamed(d: Path, kind: str) -> None:
    # rename/22.t (rename_ctime, true on Linux): "expect 0 rename ${src} ${dst}" /
    # "test_check $ctime1 -lt $ctime2".
    src, dst = d / "src", d / "dst"
    create_file(kind, src)
    ctime1 = lstat(src, "ctime")
    nap()
    expect("0", "rename", src, dst)
    assert ctime1 < lstat(dst, "ctime"), "rename/22.t: the renamed inode's ctime not updated"


def test_rename_parent_times(d: Path) -> None:
    # POSIX rename(): both parents' mtime and ctime are marked for update.
    a, b = d / "a", d / "b"
    expect("0", "mkdir", a, 0o755)
    expect("0", "mkdir", b, 0o755)
    expect("0", "create", a / "f", 0o644)
    before = [stat_(p, f) for p in (a, b) for f in ("mtime", "ctime")]
    nap()
    expect("0", "rename", a / "f", b / "f")
    after = [stat_(p, f) for p in (a, b) for f in ("mtime", "ctime")]
    assert all(x < y for x, y in zip(before, after, strict=True)), \
        "rename did not update both parents' mtime and ctime"


@pytest.mark.parametrize("kind", LINKABLE)
def test_rename_23_over_multiply_linked(d: Path, kind: str) -> None:
    # rename/23.t: renaming over a name whose inode has another link: "expect ${type},1 lstat
    # ${dstlnk} type,nlink" and the victim's ctime moves forward.
    src, dst, dstlnk = d / "src", d / "dst", d / "dstlnk"
    create_file(kind, src)
    create_file(kind, dst)
    expect("0", "link", dst, dstlnk)
    ctime1 = lstat(dstlnk, "ctime")
    nap()
    expect("0", "rename", src, dst)
    expect((kind, 1), "lstat", dstlnk, "type,nlink")
    assert ctime1 < lstat(dstlnk, "ctime"), "rename/23.t: the replaced inode's ctime"


@pytest.mark.parametrize("kind", NONDIR)
def test_rename_over_existing_file_and_dir_nlink(d: Path, kind: str) -> None:
    # POSIX rename(): a file replaces an existing file; a directory moving between parents
    # moves its ".." link (parent nlink -1 / +1); an empty directory replaces an empty one.
    n0, n1 = d / "n0", d / "n1"
    create_file(kind, n0)
    expect("0", "create", n1, 0o644)
    inode = lstat(n0, "inode")
    expect("0", "rename", n0, n1)
    expect((kind, inode), "lstat", n1, "type,inode")
    expect("ENOENT", "lstat", n0, "type")

    a, b = d / "a", d / "b"
    expect("0", "mkdir", a, 0o755)
    expect("0", "mkdir", b, 0o755)
    expect("0", "mkdir", a / "sub", 0o755)
    expect(3, "lstat", a, "nlink")
    expect(2, "lstat", b, "nlink")
    expect("0", "rename", a / "sub", b / "sub")
    expect(2, "lstat", a, "nlink")
    expect(3, "lstat", b, "nlink")
    expect("0", "mkdir", a / "empty", 0o755)
    expect("0", "rename", b / "sub", a / "empty")
    expect(3, "lstat", a, "nlink")
    expect(2, "lstat", b, "nlink")


def test_rename_12_enotdir(d: Path) -> None:
    # rename/12.t: a regular file in either path prefix is ENOTDIR.
    n0 = d / "n0"
    expect("0", "create", n0, 0o644)
    expect("0", "create", d / "n1", 0o644)
    expect("ENOTDIR", "rename", n0 / "test", d / "n2")
    expect("ENOTDIR", "rename", d / "n1", n0 / "test")


@pytest.mark.parametrize("kind", NONDIR)
def test_rename_14_eisdir(d: Path, kind: str) -> None:
    # rename/14.t: "rename returns EISDIR when the 'to' argument is a directory, but 'from'
    # is not a directory".
    n0, n1 = d / "n0", d / "n1"
    create_file(kind, n0)
    expect("0", "mkdir", n1, 0o755)
    expect("EISDIR", "rename", n0, n1)
    expect("dir", "lstat", n1, "type")
    expect(kind, "lstat", n0, "type")


@pytest.mark.parametrize("kind", NONDIR)
def test_rename_13_enotdir_dir_over_file(d: Path, kind: str) -> None:
    # rename/13.t: "rename returns ENOTDIR when the 'from' argument is a directory, but 'to'
    # is not a directory".
    n0, n1 = d / "n0", d / "n1"
    expect("0", "mkdir", n0, 0o755)
    create_file(kind, n1)
    expect("ENOTDIR", "rename", n0, n1)
    expect("dir", "lstat", n0, "type")
    expect(kind, "lstat", n1, "type")


def test_rename_18_einval_into_own_subdirectory(d: Path) -> None:
    # rename/18.t: "rename returns EINVAL when the 'from' argument is a parent directory of
    # 'to'".
    n0 = d / "n0"
    expect("0", "mkdir", n0, 0o755)
    expect("0", "mkdir", n0 / "n1", 0o755)
    expect("EINVAL", "rename", n0, n0 / "n1")
    expect("EINVAL", "rename", n0, n0 / "n1" / "n2")
    expect("0", "mkdir", n0 / "n1" / "n2", 0o755)
    expect("EINVAL", "rename", n0, n0 / "n1" / "n2" / "n3")


def test_rename_19_dot_and_dotdot(d: Path) -> None:
    # rename/19.t: "." or ".." as the last component is EINVAL or EBUSY.
    n0 = d / "n0"
    expect("0", "mkdir", n0, 0o755)
    expect("0", "mkdir", n0 / "n1", 0o755)
    # (strings: pathlib would drop the trailing ".")
    expect("EINVAL|EBUSY", "rename", f"{n0}/n1/.", f"{d}/n2")
    expect("EINVAL|EBUSY", "rename", f"{n0}/n1/..", f"{d}/n2")


@pytest.mark.parametrize("kind", TYPES)
def test_rename_20_enotempty(d: Path, kind: str) -> None:
    # rename/20.t: "rename returns EEXIST or ENOTEMPTY if the 'to' argument is a directory and
    # is not empty".
    n0, n1 = d / "n0", d / "n1"
    expect("0", "mkdir", n0, 0o755)
    expect("0", "mkdir", n1, 0o755)
    create_file(kind, n1 / "n2")
    expect("EEXIST|ENOTEMPTY", "rename", n0, n1)
    expect(kind, "lstat", n1 / "n2", "type")


def test_rename_same_inode_is_a_no_op(d: Path) -> None:
    # POSIX rename(): two links to the same file: rename succeeds and does nothing.
    n0, n1 = d / "n0", d / "n1"
    expect("0", "create", n0, 0o644)
    expect("0", "link", n0, n1)
    expect("0", "rename", n0, n1)
    expect(2, "lstat", n0, "nlink")
    expect(2, "lstat", n1, "nlink")


def test_rename_21_directory_write_access(d: Path) -> None:
    # rename/21.t: write permission on the containing directories is enough to move a file;
    # moving a 0700 directory owned by root to another parent is "0|EACCES" (Linux: EACCES,
    # its ".." entry must be rewritten).
    n2, n3 = d / "n2", d / "n3"
    expect("0", "mkdir", n2, 0o777)
    expect("0", "mkdir", n3, 0o777)
    expect("0", "mkdir", n2 / "n0", 0o700)
    expect("0|EACCES", "rename", n2 / "n0", n2 / "n1", u=NOBODY, g=NOBODY)
    expect("0|EACCES", "rename", n2 / "n1", n2 / "n0", u=NOBODY, g=NOBODY)
    expect("0|EACCES", "rename", n2 / "n0", n3 / "n1", u=NOBODY, g=NOBODY)
    expect("0", "create", d / "n2" / "f", 0o644)
    expect("0", "rename", n2 / "f", n3 / "f", u=NOBODY, g=NOBODY)
    expect("ENOENT", "lstat", n2 / "f", "type")


def test_rename_eacces_unwritable_parent(d: Path) -> None:
    # rename/07.t-style: no write permission on the source or target directory is EACCES.
    a, b = d / "a", d / "b"
    for p in (a, b):
        expect("0", "mkdir", p, 0o755)
        expect("0", "chown", p, NOBODY, NOBODY)
    expect("0", "create", a / "f", 0o644, u=NOBODY, g=NOBODY)
    expect("0", "chmod", b, 0o555)
    expect("EACCES", "rename", a / "f", b / "f", u=NOBODY, g=NOBODY)
    expect("0", "chmod", b, 0o755)
    expect("0", "chmod", a, 0o555)
    expect("EACCES", "rename", a / "f", b / "f", u=NOBODY, g=NOBODY)
    expect("0", "chmod", a, 0o755)
    expect("0", "rename", a / "f", b / "f", u=NOBODY, g=NOBODY)


# -- sticky directories ------------------------------------------------------------------------

# rename/09.t: (owner of the sticky source dir, owner of the source) -> allowed?
_STICKY_SRC = [
    ("user_owns_both", NOBODY, NOBODY, "0"),
    ("user_owns_dir_root_file", NOBODY, 0, "0"),
    ("user_owns_dir_other_file", NOBODY, 65533, "0"),
    ("user_owns_file_root_dir", 0, NOBODY, "0"),
    ("user_owns_file_other_dir", 65533, NOBODY, "0"),
    ("user_owns_neither_root", 0, 0, "EACCES|EPERM"),
    ("user_owns_neither_other", 65533, 65533, "EACCES|EPERM"),
]


@pytest.mark.parametrize(("dir_owner", "file_owner", "want"),
                         [c[1:] for c in _STICKY_SRC], ids=[c[0] for c in _STICKY_SRC])
@pytest.mark.parametrize("kind", ["regular", "fifo", "socket", "symlink"])
def test_rename_09_sticky_source(d: Path, kind: str, dir_owner: int, file_owner: int,
                                 want: str) -> None:
    # rename/09.t: "rename returns EACCES or EPERM if the directory containing 'from' is
    # marked sticky, and neither the containing directory nor 'from' are owned by the
    # effective user ID"; targets: none, and an existing file of the user's.
    n0, n1 = d / "n0", d / "n1"
    expect("0", "mkdir", n0, 0o755)
    expect("0", "chmod", n0, 0o1777)
    expect("0", "chown", n0, dir_owner, dir_owner)
    expect("0", "mkdir", n1, 0o755)
    expect("0", "chown", n1, NOBODY, NOBODY)
    src, dst = n0 / "n2", n1 / "n3"
    create_file(kind, src, file_owner, file_owner)
    inode = lstat(src, "inode")
    for target in ("none", "regular"):
        create_file(target, dst, NOBODY, NOBODY)
        got = expect(want, "rename", src, dst, u=NOBODY, g=NOBODY)
        if got == 0:
            expect("ENOENT", "lstat", src, "inode")
            expect((inode, file_owner, file_owner), "lstat", dst, "inode,uid,gid")
            expect("0", "rename", dst, src, u=NOBODY, g=NOBODY)
            expect(inode, "lstat", src, "inode")
        else:
            expect((inode, file_owner, file_owner), "lstat", src, "inode,uid,gid")
            remove(target, dst)


@pytest.mark.parametrize(("dir_owner", "subdir_owner", "want"), [
    (NOBODY, NOBODY, "0"), (0, NOBODY, "0"), (65533, NOBODY, "0"),
    (0, 0, "EACCES|EPERM"), (65533, 65533, "EACCES|EPERM")],
    ids=["owns_both", "owns_subdir", "owns_subdir_2", "owns_neither", "owns_neither_2"])
def test_rename_09_sticky_source_directory(d: Path, dir_owner: int, subdir_owner: int,
                                           want: str) -> None:
    # rename/09.t, the directory part: moving a directory out of a sticky directory.
    n0, n1 = d / "n0", d / "n1"
    expect("0", "mkdir", n0, 0o755)
    expect("0", "chmod", n0, 0o1777)
    expect("0", "chown", n0, dir_owner, dir_owner)
    expect("0", "mkdir", n1, 0o755)
    expect("0", "chown", n1, NOBODY, NOBODY)
    src = n0 / "n2"
    create_file("dir", src, subdir_owner, subdir_owner)
    inode = lstat(src, "inode")
    got = expect(want, "rename", src, n1 / "n3", u=NOBODY, g=NOBODY)
    if got == 0:
        expect((inode, subdir_owner, subdir_owner), "lstat", n1 / "n3", "inode,uid,gid")
    else:
        expect((inode, subdir_owner, subdir_owner), "lstat", src, "inode,uid,gid")
        expect("ENOENT", "lstat", n1 / "n3", "type")


def test_rename_09_sticky_owner_renames_others_dir_in_place(d: Path) -> None:
    # rename/09.t: "User owns the source sticky directory, but doesn't own the source
    # directory": moving it to another parent fails (its ".." would change), renaming it
    # within the sticky directory works: "expect 0 -u 65534 -g 65534 rename ${n0}/${n2}
    # ${n0}/${n3}".
    n0, n1 = d / "n0", d / "n1"
    expect("0", "mkdir", n0, 0o755)
    expect("0", "chmod", n0, 0o1777)
    expect("0", "chown", n0, NOBODY, NOBODY)
    expect("0", "mkdir", n1, 0o755)
    expect("0", "chown", n1, NOBODY, NOBODY)
    create_file("dir", n0 / "n2", 65533, 65533)
    expect("EACCES|EPERM", "rename", n0 / "n2", n1 / "n3", u=NOBODY, g=NOBODY)
    expect("0", "rename", n0 / "n2", n0 / "n3", u=NOBODY, g=NOBODY)
    expect((65533, 65533), "lstat", n0 / "n3", "uid,gid")


# rename/10.t: (owner of the sticky target dir, owner of the existing target) -> allowed?
_STICKY_DST = [
    ("user_owns_both", NOBODY, NOBODY, "0"),
    ("user_owns_dir_root_file", NOBODY, 0, "0"),
    ("user_owns_dir_other_file", NOBODY, 65533, "0"),
    ("user_owns_file_root_dir", 0, NOBODY, "0"),
    ("user_owns_file_other_dir", 65533, NOBODY, "0"),
    ("user_owns_neither_root", 0, 0, "EACCES|EPERM"),
    ("user_owns_neither_other", 65533, 65533, "EACCES|EPERM"),
]


@pytest.mark.parametrize(("dir_owner", "victim_owner", "want"),
                         [c[1:] for c in _STICKY_DST], ids=[c[0] for c in _STICKY_DST])
@pytest.mark.parametrize("kind", ["regular", "fifo", "symlink", "dir"])
def test_rename_10_sticky_target(d: Path, kind: str, dir_owner: int, victim_owner: int,
                                 want: str) -> None:
    # rename/10.t: "rename returns EACCES or EPERM if the file pointed at by the 'to' argument
    # exists, the directory containing 'to' is marked sticky, and neither the containing
    # directory nor 'to' are owned by the effective user ID".
    n0, n1 = d / "n0", d / "n1"
    expect("0", "mkdir", n0, 0o755)
    expect("0", "chown", n0, NOBODY, NOBODY)
    expect("0", "mkdir", n1, 0o755)
    expect("0", "chmod", n1, 0o1777)
    expect("0", "chown", n1, dir_owner, dir_owner)
    src, dst = n0 / "n2", n1 / "n3"
    if kind == "dir":
        expect("0", "mkdir", src, 0o755, u=NOBODY, g=NOBODY)
        expect("0", "mkdir", dst, 0o755, u=victim_owner, g=victim_owner)
    else:
        create_file(kind, src, NOBODY, NOBODY)
        create_file(kind, dst, victim_owner, victim_owner)
    inode = lstat(src, "inode")
    got = expect(want, "rename", src, dst, u=NOBODY, g=NOBODY)
    if got == 0:
        expect("ENOENT", "lstat", src, "inode")
        expect(inode, "lstat", dst, "inode")
    else:
        expect(inode, "lstat", src, "inode")
        expect((victim_owner, victim_owner), "lstat", dst, "uid,gid")
