"""pjdfstest tests/truncate and tests/ftruncate: sizes, times, permissions and errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pjdlib import expect, nap, stat_

NOBODY = 65534


def test_truncate_00_sizes(d: Path) -> None:
    # truncate/00.t: "expect 0 truncate ${n0} 1234567" / "expect 1234567 lstat ${n0} size",
    # down to 567; then a 12345-byte file to 23456 and to 1 (contents kept below the cut).
    n0 = d / "n0"
    expect("0", "create", n0, 0o644)
    expect("0", "truncate", n0, 1234567)
    expect(1234567, "lstat", n0, "size")
    expect("0", "truncate", n0, 567)
    expect(567, "lstat", n0, "size")
    expect("0", "unlink", n0)
    data = os.urandom(12345)
    n0.write_bytes(data)
    expect("0", "truncate", n0, 23456)
    expect(23456, "lstat", n0, "size")
    assert n0.read_bytes() == data + bytes(23456 - 12345), "extended part must read as zeros"
    expect("0", "truncate", n0, 1)
    expect(1, "lstat", n0, "size")
    assert n0.read_bytes() == data[:1]


def test_ftruncate_00_sizes(d: Path) -> None:
    # ftruncate/00.t: "expect 0 open ${n0} O_RDWR : ftruncate 0 1234567" and O_WRONLY to 567.
    n0 = d / "n0"
    expect("0", "create", n0, 0o644)
    expect("0", "seq", n0, os.O_RDWR, ("ftruncate", 1234567))
    expect(1234567, "lstat", n0, "size")
    expect("0", "seq", n0, os.O_WRONLY, ("ftruncate", 567))
    expect(567, "lstat", n0, "size")


@pytest.mark.parametrize("how", ["truncate", "ftruncate"])
def test_truncate_00_updates_ctime_and_mtime(d: Path, how: str) -> None:
    # truncate/00.t, ftruncate/00.t: "successful truncate(2) updates ctime" (POSIX: and
    # mtime, when the size changes).
    n0 = d / "n0"
    expect("0", "create", n0, 0o644)
    ctime1, mtime1 = stat_(n0, "ctime"), stat_(n0, "mtime")
    nap()
    if how == "truncate":
        expect("0", "truncate", n0, 123)
    else:
        expect("0", "seq", n0, os.O_RDWR, ("ftruncate", 123))
    assert ctime1 < stat_(n0, "ctime"), f"{how}/00.t: ctime not updated"
    assert mtime1 < stat_(n0, "mtime"), f"{how}: mtime not updated"


def test_truncate_00_failure_keeps_ctime(d: Path) -> None:
    # truncate/00.t: "expect EACCES -u 65534 truncate ${n0} 123" and ctime unchanged;
    # ftruncate/00.t: "expect EINVAL -u 65534 open ${n0} O_RDONLY : ftruncate 0 123".
    n0 = d / "n0"
    expect("0", "create", n0, 0o644)
    ctime1 = stat_(n0, "ctime")
    nap()
    expect("EACCES", "truncate", n0, 123, u=NOBODY)
    expect("EINVAL", "seq", n0, os.O_RDONLY, ("ftruncate", 123), u=NOBODY)
    assert stat_(n0, "ctime") == ctime1, "a refused truncate changed ctime"
    expect(0, "stat", n0, "size")


def test_ftruncate_00_new_file_mode_does_not_matter(d: Path) -> None:
    # ftruncate/00.t: "expect 0 open ${n0} O_CREAT,O_RDWR 0 : ftruncate 0 0", as root and as
    # "-u 65534" in a 0777 directory (FreeBSD bug 154873).
    n0 = d / "n0"
    expect("0", "seqm", n0, os.O_CREAT | os.O_RDWR, 0, ("ftruncate", 0))
    expect("0", "unlink", n0)
    expect("0", "chmod", d, 0o777)
    expect("0", "seqm", n0, os.O_CREAT | os.O_RDWR, 0, ("ftruncate", 0), u=NOBODY)
    expect(("regular", 0, NOBODY), "lstat", n0, "type,mode,uid")


def test_truncate_06_eacces_not_writable(d: Path) -> None:
    # truncate/06.t: "expect EACCES -u 65534 -g 65534 truncate ${n1} 123" on root's 0644
    # file and on the user's own 0444 file.
    n1 = d / "n1"
    expect("0", "create", n1, 0o644)
    expect("EACCES", "truncate", n1, 123, u=NOBODY, g=NOBODY)
    expect("0", "chown", n1, NOBODY, NOBODY)
    expect("0", "chmod", n1, 0o444)
    expect("EACCES", "truncate", n1, 123, u=NOBODY, g=NOBODY)
    expect("0", "chmod", n1, 0o644)
    expect("0", "truncate", n1, 123, u=NOBODY, g=NOBODY)
    expect(123, "stat", n1, "size")


def test_truncate_by_other_writer(d: Path) -> None:
    # truncate(2) needs write permission only: another user with a 0666 file may truncate.
    n1 = d / "n1"
    expect("0", "create", n1, 0o666)
    expect("0", "truncate", n1, 77, u=NOBODY, g=NOBODY)
    expect(77, "stat", n1, "size")


def test_truncate_09_eisdir(d: Path) -> None:
    # truncate/09.t: "expect EISDIR truncate ${n0} 123" on a directory.
    n0 = d / "n0"
    expect("0", "mkdir", n0, 0o755)
    expect("EISDIR", "truncate", n0, 123)


def test_truncate_12_huge_length(d: Path) -> None:
    # truncate/12.t: "truncate ${n0} 999999999999999" is either EFBIG|EINVAL with size 0 or
    # 0 with "expect 999999999999999 stat ${n0} size".
    n0 = d / "n0"
    expect("0", "create", n0, 0o644)
    got = expect("0|EFBIG|EINVAL", "truncate", n0, 999999999999999)
    expect(999999999999999 if got == 0 else 0, "stat", n0, "size")
    if got == 0:
        expect("0", "truncate", n0, 0)


def test_ftruncate_13_negative_length(d: Path) -> None:
    # ftruncate/13.t (and truncate/13.t): a negative length is EINVAL.
    n0 = d / "n0"
    expect("0", "create", n0, 0o644)
    expect("EINVAL", "seq", n0, os.O_RDWR, ("ftruncate", -1))
    expect("EINVAL", "seq", n0, os.O_WRONLY, ("ftruncate", -999999))
    expect("EINVAL", "truncate", n0, -1)


def test_truncate_errors_in_path(d: Path) -> None:
    # truncate/01.t ENOTDIR, 02.t ENAMETOOLONG, 04.t ENOENT, 05.t EACCES (search), 07.t ELOOP.
    expect("0", "create", d / "f", 0o644)
    expect("ENOTDIR", "truncate", d / "f" / "test", 123)
    expect("ENAMETOOLONG", "truncate", d / ("x" * 256), 123)
    expect("ENOENT", "truncate", d / "n0", 123)
    expect("0", "symlink", "l0", d / "l1")
    expect("0", "symlink", "l1", d / "l0")
    expect("ELOOP", "truncate", d / "l0", 123)
    n1 = d / "n1"
    expect("0", "mkdir", n1, 0o755)
    expect("0", "chown", n1, NOBODY, NOBODY)
    expect("0", "create", n1 / "n2", 0o644, u=NOBODY, g=NOBODY)
    expect("0", "chmod", n1, 0o644)
    expect("EACCES", "truncate", n1 / "n2", 123, u=NOBODY, g=NOBODY)


def test_ftruncate_counterparts(d: Path) -> None:
    # The ftruncate/ files mirror truncate/: a huge length on a writable fd (0 or
    # EFBIG/EINVAL, size consistent), and a descriptor not open for writing (a directory's,
    # or O_RDONLY) is EINVAL.
    n0 = d / "n0"
    expect("0", "create", n0, 0o644)
    got = expect("0|EFBIG|EINVAL", "seq", n0, os.O_RDWR, ("ftruncate", 999999999999999))
    expect(999999999999999 if got == 0 else 0, "stat", n0, "size")
    expect("EINVAL", "seq", n0, os.O_RDONLY, ("ftruncate", 0))
    expect("0", "mkdir", d / "dir", 0o755)
    expect("EINVAL|EBADF|EISDIR", "seq", d / "dir", os.O_RDONLY, ("ftruncate", 0))
