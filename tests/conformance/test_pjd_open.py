"""pjdfstest tests/open: O_CREAT/O_EXCL/O_TRUNC semantics and times, permission checks for
other users, and open(2)'s errors (EISDIR, ENOTDIR, ELOOP, O_NOFOLLOW, ENXIO...)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pjdlib import drop_kernel_caches, expect, nap, stat_

NOBODY = 65534
RD, WR, RW = os.O_RDONLY, os.O_WRONLY, os.O_RDWR


def test_open_00_existing_file_keeps_parent_times(d: Path) -> None:
    # open/00.t: "Don't update parent directory ctime/mtime if file existed":
    # "expect 0 open ${n0} O_CREAT,O_RDONLY 0644" leaves "." alone.
    n0 = d / "n0"
    expect("0", "create", n0, 0o644)
    before = (stat_(d, "mtime"), stat_(d, "ctime"))
    nap()
    expect("0", "open", n0, os.O_CREAT | RD, 0o644)
    assert (stat_(d, "mtime"), stat_(d, "ctime")) == before, \
        "open/00.t: opening an existing file with O_CREAT changed the directory's times"


def test_open_00_o_trunc_updates_times(d: Path) -> None:
    # open/00.t: "echo test > ${n0}" / "expect 0 open ${n0} O_WRONLY,O_TRUNC": mtime and ctime
    # move forward and "expect 0 stat ${n0} size".
    n0 = d / "n0"
    n0.write_bytes(b"test\n")
    expect(5, "stat", n0, "size")
    mtime1, ctime1 = stat_(n0, "mtime"), stat_(n0, "ctime")
    nap()
    expect("0", "open", n0, WR | os.O_TRUNC)
    assert mtime1 < stat_(n0, "mtime"), "open/00.t: O_TRUNC did not update mtime"
    assert ctime1 < stat_(n0, "ctime"), "open/00.t: O_TRUNC did not update ctime"
    expect(0, "stat", n0, "size")


def test_open_00_o_trunc_of_empty_file(d: Path) -> None:
    # open/00.t's O_TRUNC case, on a file that is already empty: Linux (do_truncate through
    # notify_change) still stamps mtime and ctime, so a FUSE server must not skip it.
    n0 = d / "n0"
    expect("0", "create", n0, 0o644)
    mtime1, ctime1 = stat_(n0, "mtime"), stat_(n0, "ctime")
    nap()
    expect("0", "open", n0, WR | os.O_TRUNC)
    assert mtime1 < stat_(n0, "mtime"), "O_TRUNC of an empty file did not update mtime"
    assert ctime1 < stat_(n0, "ctime"), "O_TRUNC of an empty file did not update ctime"


# open/06.t: (chmod by the owner 65534, (uid, gid) opening, flags, outcome) for a regular file.
_OPEN_06_REGULAR = [
    (0o600, (NOBODY, NOBODY), RD, "0"), (0o600, (NOBODY, NOBODY), WR, "0"),
    (0o600, (NOBODY, NOBODY), RW, "0"),
    (0o060, (65533, NOBODY), RD, "0"), (0o060, (65533, NOBODY), WR, "0"),
    (0o060, (65533, NOBODY), RW, "0"),
    (0o006, (65533, 65533), RD, "0"), (0o006, (65533, 65533), WR, "0"),
    (0o006, (65533, 65533), RW, "0"),
    (0o477, (NOBODY, NOBODY), RD, "0"), (0o477, (NOBODY, NOBODY), WR, "EACCES"),
    (0o477, (NOBODY, NOBODY), RW, "EACCES"),
    (0o747, (65533, NOBODY), RD, "0"), (0o747, (65533, NOBODY), WR, "EACCES"),
    (0o747, (65533, NOBODY), RW, "EACCES"),
    (0o774, (65533, 65533), RD, "0"), (0o774, (65533, 65533), WR, "EACCES"),
    (0o774, (65533, 65533), RW, "EACCES"),
    (0o277, (NOBODY, NOBODY), RD, "EACCES"), (0o277, (NOBODY, NOBODY), WR, "0"),
    (0o277, (NOBODY, NOBODY), RW, "EACCES"),
    (0o727, (65533, NOBODY), RD, "EACCES"), (0o727, (65533, NOBODY), WR, "0"),
    (0o727, (65533, NOBODY), RW, "EACCES"),
    (0o772, (65533, 65533), RD, "EACCES"), (0o772, (65533, 65533), WR, "0"),
    (0o772, (65533, 65533), RW, "EACCES"),
    (0o177, (NOBODY, NOBODY), RD, "EACCES"), (0o177, (NOBODY, NOBODY), WR, "EACCES"),
    (0o177, (NOBODY, NOBODY), RW, "EACCES"),
    (0o717, (65533, NOBODY), RD, "EACCES"), (0o771, (65533, 65533), RW, "EACCES"),
    (0o077, (NOBODY, NOBODY), RD, "EACCES"), (0o077, (NOBODY, NOBODY), WR, "EACCES"),
    (0o707, (65533, NOBODY), RW, "EACCES"), (0o770, (65533, 65533), RD, "EACCES"),
]


def test_open_06_permissions_regular(d: Path) -> None:
    # open/06.t "Regular file.": each "expect 0 -u 65534 -g 65534 chmod ${n1} MODE" followed
    # by "expect RESULT -u UID -g GID open ${n1} FLAGS" (the table above, in file order).
    expect("0", "chown", d, NOBODY, NOBODY)
    n1 = d / "n1"
    expect("0", "create", n1, 0o644, u=NOBODY, g=NOBODY)
    names = {RD: "O_RDONLY", WR: "O_WRONLY", RW: "O_RDWR"}
    failures = []
    for mode, (uid, gid), flags, want in _OPEN_06_REGULAR:
        expect("0", "chmod", n1, mode, u=NOBODY, g=NOBODY)
        try:
            expect(want, "open", n1, flags, u=uid, g=gid)
        except AssertionError as exc:
            failures.append(f"mode {mode:04o} {names[flags]}: {exc}")
    assert not failures, "open/06.t:\n" + "\n".join(failures)


def test_open_06_permissions_directory(d: Path) -> None:
    # open/06.t "Directory.": O_RDONLY needs the read bit of the class the user falls in.
    expect("0", "chown", d, NOBODY, NOBODY)
    n1 = d / "n1"
    expect("0", "mkdir", n1, 0o755, u=NOBODY, g=NOBODY)
    for mode, (uid, gid), want in [
            (0o600, (NOBODY, NOBODY), "0"), (0o060, (65533, NOBODY), "0"),
            (0o006, (65533, 65533), "0"), (0o477, (NOBODY, NOBODY), "0"),
            (0o277, (NOBODY, NOBODY), "EACCES"), (0o727, (65533, NOBODY), "EACCES"),
            (0o772, (65533, 65533), "EACCES"), (0o177, (NOBODY, NOBODY), "EACCES"),
            (0o077, (NOBODY, NOBODY), "EACCES"), (0o770, (65533, 65533), "EACCES")]:
        expect("0", "chmod", n1, mode, u=NOBODY, g=NOBODY)
        expect(want, "open", n1, RD, u=uid, g=gid)


def test_open_06_permissions_fifo(d: Path) -> None:
    # open/06.t "FIFO.": "expect 0 -u 65534 -g 65534 open ${n1} O_RDONLY,O_NONBLOCK" and
    # "expect 'EACCES|ENXIO' ... O_WRONLY,O_NONBLOCK", "expect EACCES ... O_RDWR".
    expect("0", "chown", d, NOBODY, NOBODY)
    n1 = d / "n1"
    expect("0", "mkfifo", n1, 0o644, u=NOBODY, g=NOBODY)
    nb = os.O_NONBLOCK
    expect("0", "chmod", n1, 0o600, u=NOBODY, g=NOBODY)
    expect("0", "open", n1, RD | nb, u=NOBODY, g=NOBODY)
    expect("0", "open", n1, RW, u=NOBODY, g=NOBODY)
    expect("0", "chmod", n1, 0o477, u=NOBODY, g=NOBODY)
    expect("0", "open", n1, RD | nb, u=NOBODY, g=NOBODY)
    expect("EACCES|ENXIO", "open", n1, WR | nb, u=NOBODY, g=NOBODY)
    expect("EACCES", "open", n1, RW, u=NOBODY, g=NOBODY)
    expect("0", "chmod", n1, 0o177, u=NOBODY, g=NOBODY)
    expect("EACCES", "open", n1, RD | nb, u=NOBODY, g=NOBODY)
    expect("0", "chmod", n1, 0o770, u=NOBODY, g=NOBODY)
    expect("EACCES", "open", n1, RD | nb, u=65533, g=65533)


def test_open_07_o_trunc_needs_write_permission(d: Path) -> None:
    # open/07.t: "expect EACCES -u 65534 -g 65534 open ${n1} O_RDONLY,O_TRUNC" for modes
    # without the write bit of the user's class, and the file keeps its byte.
    expect("0", "chown", d, NOBODY, NOBODY)
    n1 = d / "n1"
    expect("0", "create", n1, 0o644, u=NOBODY, g=NOBODY)
    expect(1, "seq", n1, WR, ("write", b"x"), ("fstat", "size"), u=NOBODY, g=NOBODY)
    for mode, (uid, gid) in [(0o477, (NOBODY, NOBODY)), (0o747, (65533, NOBODY)),
                             (0o774, (65533, 65533)), (0o177, (NOBODY, NOBODY)),
                             (0o717, (65533, NOBODY)), (0o771, (65533, 65533)),
                             (0o077, (NOBODY, NOBODY)), (0o707, (65533, NOBODY)),
                             (0o770, (65533, 65533))]:
        expect("0", "chmod", n1, mode, u=NOBODY, g=NOBODY)
        expect("EACCES", "open", n1, RD | os.O_TRUNC, u=uid, g=gid)
    expect(1, "seq", n1, RD, ("fstat", "size"), u=NOBODY, g=NOBODY)


def test_open_08_eacces_create_in_unwritable_dir(d: Path) -> None:
    # open/08.t: O_CREAT in a directory the user may not write is EACCES.
    n1 = d / "n1"
    expect("0", "mkdir", n1, 0o755)
    expect("0", "chown", n1, NOBODY, NOBODY)
    expect("0", "chmod", n1, 0o555)
    expect("EACCES", "open", n1 / "n2", os.O_CREAT | RD, 0o644, u=NOBODY, g=NOBODY)
    expect("ENOENT", "lstat", n1 / "n2", "type")


def test_open_05_eacces_search(d: Path) -> None:
    # open/05.t: search permission denied on a component of the path prefix.
    n1, n2 = d / "n1", d / "n1" / "n2"
    expect("0", "mkdir", n1, 0o755)
    expect("0", "chown", n1, NOBODY, NOBODY)
    expect("0", "create", n2, 0o644, u=NOBODY, g=NOBODY)
    expect("0", "open", n2, RD, u=NOBODY, g=NOBODY)
    expect("0", "chmod", n1, 0o644)
    expect("EACCES", "open", n2, RD, u=NOBODY, g=NOBODY)
    expect("EACCES", "open", n1 / "n3", os.O_CREAT | RD, 0o644, u=NOBODY, g=NOBODY)


def test_open_01_enotdir(d: Path) -> None:
    # open/01.t: a regular file used as a directory in the path prefix is ENOTDIR.
    n0 = d / "n0"
    expect("0", "create", n0, 0o644)
    expect("ENOTDIR", "open", n0 / "test", RD)
    expect("ENOTDIR", "open", n0 / "test", os.O_CREAT | RD, 0o644)


def test_open_02_enametoolong(d: Path) -> None:
    # open/02.t: a NAME_MAX name can be created; NAME_MAX + 1 is ENAMETOOLONG.
    expect("0", "open", d / ("x" * 255), os.O_CREAT | WR, 0o620)
    expect(0o620, "stat", d / ("x" * 255), "mode")
    expect("ENAMETOOLONG", "open", d / ("x" * 256), os.O_CREAT | WR, 0o620)


def test_open_04_enoent(d: Path) -> None:
    # open/04.t: ENOENT for a missing path prefix, and without O_CREAT for a missing file.
    expect("ENOENT", "open", d / "n0" / "n1" / "test", os.O_CREAT | RD, 0o644)
    expect("ENOENT", "open", d / "n0", RD)


def test_open_12_eloop(d: Path) -> None:
    # open/12.t: ELOOP through a symlink loop, in the prefix and as the last component.
    n0, n1 = d / "n0", d / "n1"
    expect("0", "symlink", "n0", n1)
    expect("0", "symlink", "n1", n0)
    expect("ELOOP", "open", n0 / "test", os.O_CREAT | RD, 0o644)
    expect("ELOOP", "open", n1 / "test", os.O_CREAT | RD, 0o644)
    expect("ELOOP", "open", n0, RD)
    expect("ELOOP", "open", n1, RD)


@pytest.mark.parametrize("flags", ["O_WRONLY", "O_RDWR", "O_RDONLY|O_TRUNC",
                                   "O_WRONLY|O_TRUNC", "O_RDWR|O_TRUNC", "O_CREAT|O_WRONLY"])
def test_open_13_eisdir(d: Path, flags: str) -> None:
    # open/13.t: opening a directory for writing is EISDIR ("expect EISDIR open ${n0}
    # O_WRONLY"); O_RDONLY alone works. O_RDONLY|O_TRUNC is EISDIR on Linux as well.
    n0 = d / "n0"
    expect("0", "mkdir", n0, 0o755)
    value = 0
    for name in flags.split("|"):
        value |= getattr(os, name)
    expect("0", "open", n0, RD)
    expect("EISDIR", "open", n0, value, 0o644)


def test_open_16_o_nofollow(d: Path) -> None:
    # open/16.t: "expect ELOOP open ${n1} O_RDONLY,O_CREAT,O_NOFOLLOW 0644" and O_RDONLY,
    # O_WRONLY, O_RDWR with O_NOFOLLOW on a symlink.
    n1 = d / "n1"
    expect("0", "symlink", "n0", n1)
    expect("ELOOP", "open", n1, RD | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    for acc in (RD, WR, RW):
        expect("ELOOP", "open", n1, acc | os.O_NOFOLLOW)


def test_open_17_enxio_fifo_writer_without_reader(d: Path) -> None:
    # open/17.t: O_WRONLY|O_NONBLOCK on a FIFO with no reader is ENXIO.
    n0 = d / "n0"
    expect("0", "mkfifo", n0, 0o644)
    expect("ENXIO", "open", n0, WR | os.O_NONBLOCK)


def test_open_22_eexist_o_excl(d: Path) -> None:
    # open/22.t: "O_CREAT,O_EXCL" over an existing file, directory, fifo or symlink is EEXIST.
    for kind, make in [("regular", ("create", 0o644)), ("dir", ("mkdir", 0o755)),
                       ("fifo", ("mkfifo", 0o644))]:
        n0 = d / f"n_{kind}"
        expect("0", make[0], n0, make[1])
        expect("EEXIST", "open", n0, os.O_CREAT | os.O_EXCL | WR, 0o644)
    n1 = d / "link"
    expect("0", "symlink", "n_regular", n1)
    expect("EEXIST", "open", n1, os.O_CREAT | os.O_EXCL | WR, 0o644)


def test_open_24_socket_enxio(d: Path) -> None:
    # open/24.t, Linux: "expect ENXIO open ${n0} O_RDONLY" (and O_WRONLY, O_RDWR) on a socket.
    n0 = d / "n0"
    expect("0", "bind", n0)
    for acc in (RD, WR, RW):
        expect("ENXIO", "open", n0, acc)


def test_open_o_creat_follows_dangling_symlink(d: Path) -> None:
    # POSIX open(): O_CREAT through a dangling symlink creates its target (no O_EXCL).
    n1 = d / "n1"
    expect("0", "symlink", "n0", n1)
    expect("0", "open", n1, os.O_CREAT | WR, 0o640)
    expect(("regular", 0o640), "lstat", d / "n0", "type,mode")


def test_open_o_directory_on_file(d: Path) -> None:
    # POSIX open(): O_DIRECTORY on a non-directory is ENOTDIR.
    n0 = d / "n0"
    expect("0", "create", n0, 0o644)
    expect("ENOTDIR", "open", n0, RD | os.O_DIRECTORY)


def test_open_23_illegal_access_mode(d: Path) -> None:
    # open/23.t: "expect "0|EINVAL" open ${n0} O_RDONLY,O_RDWR" and the other combinations
    # (Linux opens with access mode 3, which needs read and write permission).
    n0 = d / "n0"
    expect("0", "create", n0, 0o644)
    expect("0|EINVAL", "open", n0, RD | RW)
    expect("0|EINVAL", "open", n0, WR | RW)
    expect("0|EINVAL", "open", n0, RD | WR | RW)


@pytest.mark.parametrize("offset", [2 * 1024**3 + 1, 64 * 1024**3 - 2])
def test_open_25_beyond_2gb(d: Path, offset: int) -> None:
    # open/25.t: "expect 0 open ${n0} O_CREAT,O_WRONLY 0755 : pwrite 0 "a" $((2 * 1024 * 1024 *
    # 1024 + 1))" / "expect $((2 * 1024 * 1024 * 1024 + 2)) lstat ${n0} size" / "expect "a"
    # open ${n0} O_RDONLY : pread 0 1 ..."; also at 64 GiB, the size the pool must support.
    n0 = d / "n0"
    expect(1, "seqm", n0, os.O_CREAT | WR, 0o755, ("pwrite", b"a", offset))
    expect(offset + 1, "lstat", n0, "size")
    expect(b"a", "seq", n0, RD, ("pread", 1, offset))
    expect(bytes(4), "seq", n0, RD, ("pread", 4, offset - 4))
    expect("0", "unlink", n0)


@pytest.mark.parametrize("later_write", [False, True], ids=["then_close", "then_old_fd_writes"])
def test_open_o_trunc_while_another_fd_has_unflushed_writes(d: Path, later_write: bool) -> None:
    # open/00.t's O_TRUNC with a second writer: bytes written (still buffered) through an
    # earlier descriptor are gone after the truncating open; a later write through the old
    # descriptor lands at its own offset, the gap reading as zeros.
    n0 = d / "n0"
    fd1 = os.open(n0, os.O_CREAT | WR, 0o644)
    try:
        os.write(fd1, b"A" * 65536)
        fd2 = os.open(n0, WR | os.O_TRUNC)
        try:
            expect(0, "stat", n0, "size")
            os.write(fd2, b"xyz")
            if later_write:
                os.write(fd1, b"B")
        finally:
            os.close(fd2)
    finally:
        os.close(fd1)
    os.sync()
    want = b"xyz" + bytes(65536 - 3) + b"B" if later_write else b"xyz"
    expect(len(want), "stat", n0, "size")
    same = n0.read_bytes() == want
    assert same, "the file's bytes after O_TRUNC with a second writer differ from ext4's"
    drop_kernel_caches()  # and as stored, not only as the page cache has them
    same = n0.read_bytes() == want
    assert same, "after a cache drop the file's bytes differ (what the pool stored)"
