"""pjdfstest tests/utimensat: explicit times, UTIME_NOW/UTIME_OMIT, symlinks, precision,
y2038, and who may set what."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from pjdlib import (
    AT_SYMLINK_NOFOLLOW,
    UTIME_NOW,
    UTIME_OMIT,
    create_file,
    drop_kernel_caches,
    expect,
    lstat,
    nap,
    remove,
    seconds,
)

NOBODY = 65534
DATE1 = 1900000000
DATE2 = 1950000000


@pytest.mark.parametrize("kind", ["regular", "dir", "fifo", "block", "char", "socket"])
def test_utimensat_00_any_type(d: Path, kind: str) -> None:
    # utimensat/00.t: "utimensat 0 ${n0} $DATE1 0 $DATE2 0 0" / "expect $DATE1 lstat ${n0}
    # atime" / "expect $DATE2 lstat ${n0} mtime".
    n0 = d / "n0"
    create_file(kind, n0)
    ctime1 = lstat(n0, "ctime")
    nap()
    expect("0", "utimensat", n0, DATE1, 0, DATE2, 0)
    expect(DATE1 * 10**9, "lstat", n0, "atime")
    expect(DATE2 * 10**9, "lstat", n0, "mtime")
    assert ctime1 < lstat(n0, "ctime"), "POSIX: setting times marks ctime for update"
    remove(kind, n0)


def test_utimensat_01_utime_now(d: Path) -> None:
    # utimensat/01.t: "utimensat 0 ${n0} 0 UTIME_NOW 0 UTIME_NOW 0" sets both to now.
    n0 = d / "n0"
    create_file("regular", n0)
    old_m, old_a = lstat(n0, "mtime"), lstat(n0, "atime")
    nap()
    expect("0", "utimensat", n0, 0, UTIME_NOW, 0, UTIME_NOW)
    now = time.time_ns()
    new_m, new_a = lstat(n0, "mtime"), lstat(n0, "atime")
    assert old_m < new_m <= now + 10**9, "utimensat/01.t: mtime not set to now"
    assert old_a < new_a <= now + 10**9, "utimensat/01.t: atime not set to now"


def test_utimensat_02_utime_omit(d: Path) -> None:
    # utimensat/02.t: "utimensat 0 ${n0} $DATE1 0 0 UTIME_OMIT 0" keeps mtime, then
    # "utimensat 0 ${n0} 0 UTIME_OMIT $DATE2 0 0" keeps atime.
    n0 = d / "n0"
    create_file("regular", n0)
    orig_mtime = lstat(n0, "mtime")
    expect("0", "utimensat", n0, DATE1, 0, 0, UTIME_OMIT)
    expect(DATE1 * 10**9, "lstat", n0, "atime")
    expect(orig_mtime, "lstat", n0, "mtime")
    expect("0", "utimensat", n0, 0, UTIME_OMIT, DATE2, 0)
    expect(DATE1 * 10**9, "lstat", n0, "atime")
    expect(DATE2 * 10**9, "lstat", n0, "mtime")


def test_utimensat_04_mtime_before_atime(d: Path) -> None:
    # utimensat/04.t: "utimensat can set mtime < atime or vice versa".
    n0 = d / "n0"
    create_file("regular", n0)
    expect("0", "utimensat", n0, 100000000, 0, 200000000, 0)
    assert (seconds(lstat(n0, "atime")), seconds(lstat(n0, "mtime"))) == (100000000, 200000000)
    expect("0", "utimensat", n0, 200000000, 0, 100000000, 0)
    assert (seconds(lstat(n0, "atime")), seconds(lstat(n0, "mtime"))) == (200000000, 100000000)


def test_utimensat_05_symlinks(d: Path) -> None:
    # utimensat/05.t: AT_SYMLINK_NOFOLLOW sets the link's own times; without it the target's
    # ("expect $DATE3 lstat ${n2} atime", "expect $DATE5 lstat ${n0} atime"...).
    n0, n2 = d / "n0", d / "n2"
    create_file("regular", n0)
    expect("0", "symlink", "n0", n2)
    expect("0", "utimensat", n0, DATE1, 0, DATE2, 0)
    expect("0", "utimensat", n2, 1960000000, 0, 1970000000, 0, AT_SYMLINK_NOFOLLOW)
    assert seconds(lstat(n0, "atime")) == DATE1
    assert seconds(lstat(n0, "mtime")) == DATE2
    assert seconds(lstat(n2, "atime")) == 1960000000, "utimensat/05.t: the link's atime"
    assert seconds(lstat(n2, "mtime")) == 1970000000, "utimensat/05.t: the link's mtime"
    expect("0", "utimensat", n2, 1980000000, 0, 1990000000, 0)
    assert seconds(lstat(n0, "atime")) == 1980000000
    assert seconds(lstat(n0, "mtime")) == 1990000000
    assert seconds(lstat(n2, "atime")) != 1980000000
    assert seconds(lstat(n2, "mtime")) == 1970000000


def test_utimensat_06_utime_now_needs_write_or_owner(d: Path) -> None:
    # utimensat/06.t: "expect EACCES -u $UID_NOBODY ... UTIME_NOW 0 UTIME_NOW 0" on root's 0644
    # file; the owner of a 0444 file may; root may; anyone with write permission (0666) may.
    n0 = d / "n0"
    create_file("regular", n0, mode=0o644)
    expect("EACCES", "utimensat", n0, 0, UTIME_NOW, 0, UTIME_NOW, u=NOBODY)
    expect("0", "chown", n0, NOBODY, NOBODY)
    expect("0", "chmod", n0, 0o444)
    expect("0", "utimensat", n0, 0, UTIME_NOW, 0, UTIME_NOW, u=NOBODY)
    expect("0", "utimensat", n0, 0, UTIME_OMIT, 0, UTIME_OMIT, u=0)
    expect("0", "chown", n0, 0, 0)
    expect("0", "chmod", n0, 0o666)
    expect("0", "utimensat", n0, 0, UTIME_NOW, 0, UTIME_NOW, u=NOBODY)


def test_utimensat_07_explicit_times_need_owner(d: Path) -> None:
    # utimensat/07.t: explicit times are EPERM for a non-owner even with write permission;
    # the owner (of a 0444 file) and root may.
    n0 = d / "n0"
    create_file("regular", n0, mode=0o644)
    for mode in (0o644, 0o666):
        expect("0", "chmod", n0, mode)
        expect("EPERM", "utimensat", n0, 0, UTIME_OMIT, DATE2, 0, u=NOBODY)
        expect("EPERM", "utimensat", n0, DATE1, 0, 0, UTIME_OMIT, u=NOBODY)
        expect("EPERM", "utimensat", n0, DATE1, 0, DATE2, 0, u=NOBODY)
    expect("0", "chown", n0, NOBODY, NOBODY)
    expect("0", "chmod", n0, 0o444)
    expect("0", "utimensat", n0, DATE1, 0, DATE2, 0, u=NOBODY)
    expect("0", "utimensat", n0, DATE1, 0, DATE2, 0, u=0)


def test_utimensat_failure_keeps_times(d: Path) -> None:
    # As chmod/00.t and chown/00.t for their calls: a refused utimensat changes no time.
    n0 = d / "n0"
    create_file("regular", n0, mode=0o644)
    before = (lstat(n0, "atime"), lstat(n0, "mtime"), lstat(n0, "ctime"))
    nap()
    expect("EPERM", "utimensat", n0, DATE1, 0, DATE2, 0, u=NOBODY)
    expect("EACCES", "utimensat", n0, 0, UTIME_NOW, 0, UTIME_NOW, u=NOBODY)
    assert (lstat(n0, "atime"), lstat(n0, "mtime"), lstat(n0, "ctime")) == before


def test_utimensat_08_subsecond(d: Path) -> None:
    # utimensat/08.t: "utimensat 0 ${n0} $DATE1 $DATE1_NS $DATE2 $DATE2_NS 0" /
    # "expect $DATE1_NS lstat ${n0} atime_ns"; the pool keeps full nanoseconds.
    n0 = d / "n0"
    create_file("regular", n0)
    expect("0", "utimensat", n0, 100000000, 100000000, 200000000, 200000000)
    expect(100000000, "lstat", n0, "atime_ns")
    expect(200000000, "lstat", n0, "mtime_ns")
    expect("0", "utimensat", n0, 100000000, 123456789, 200000000, 987654321)
    expect(100000000 * 10**9 + 123456789, "lstat", n0, "atime")
    expect(200000000 * 10**9 + 987654321, "lstat", n0, "mtime")


def test_utimensat_09_y2038(d: Path) -> None:
    # utimensat/09.t: "utimensat 0 ${n0} $DATE1 0 $DATE2 0 0" with 2^31 and 2^32.
    n0 = d / "n0"
    create_file("regular", n0)
    expect("0", "utimensat", n0, 2**31, 0, 2**32, 0)
    expect(2**31 * 10**9, "lstat", n0, "atime")
    expect(2**32 * 10**9, "lstat", n0, "mtime")


def test_utimensat_before_epoch(d: Path) -> None:
    # Not in pjdfstest: times before 1970 (negative seconds) round-trip, as on ext4.
    n0 = d / "n0"
    create_file("regular", n0)
    expect("0", "utimensat", n0, -100000000, 5, -1, 999999999)
    expect(-100000000 * 10**9 + 5, "lstat", n0, "atime")
    expect(-1 * 10**9 + 999999999, "lstat", n0, "mtime")


@pytest.mark.parametrize("cached", [True, False], ids=["pages_cached", "pages_dropped"])
def test_read_updates_atime_relatime(d: Path, cached: bool) -> None:
    # utimensat/05.t notes atime moves on access when atime is enabled; Linux's default
    # relatime (and docs/user-guide.md) update it on the first read after a modification:
    # with atime <= mtime a read must stamp atime with the current time.
    n0 = d / "n0"
    n0.write_bytes(b"data" * 1000)
    expect("0", "utimensat", n0, 1000000000, 0, 1100000000, 0)
    if not cached:
        os.sync()
        drop_kernel_caches()
    before = time.time_ns()
    with open(n0, "rb") as f:
        assert f.read() == b"data" * 1000
    atime = lstat(n0, "atime")
    assert atime >= before - 10**9, (
        f"a read after a modification left atime at {seconds(atime)} (relatime wants now)")


@pytest.mark.parametrize("what", ["readdir", "readlink"])
def test_directory_and_symlink_access_updates_atime_relatime(d: Path, what: str) -> None:
    # Linux relatime (touch_atime) also covers reading a directory and following/reading a
    # symlink: with atime <= mtime, the access stamps atime with the current time.
    if what == "readdir":
        target = d / "dir"
        expect("0", "mkdir", target, 0o755)
        expect("0", "create", target / "f", 0o644)
        expect("0", "utimensat", target, 1000000000, 0, 1100000000, 0)
        os.sync()
        drop_kernel_caches()
        before = time.time_ns()
        assert os.listdir(target) == ["f"]
    else:
        target = d / "link"
        expect("0", "symlink", "somewhere", target)
        expect("0", "utimensat", target, 1000000000, 0, 1100000000, 0, AT_SYMLINK_NOFOLLOW)
        os.sync()
        drop_kernel_caches()
        before = time.time_ns()
        assert os.readlink(target) == "somewhere"
    atime = lstat(target, "atime")
    assert atime >= before - 10**9, (
        f"{what} after a modification left atime at {seconds(atime)} (relatime wants now)")
