"""pjdfstest is usually run with the mount's root as its working directory, so its `chown .`,
`chmod . 0777` and `stat . ctime` (mkdir/00.t, open/00.t, mkfifo/00.t...) act on the root
directory itself. The same cases, at the root."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pjdlib import expect, lstat, nap, stat_

NOBODY = 65534


@pytest.fixture
def root(d: Path, conformance_mount) -> Iterator[Path]:
    """The filesystem's root directory, given back as 0755 root:root with its old times."""
    top, _ = conformance_mount
    before = os.lstat(top)
    try:
        yield top
    finally:
        os.chown(top, 0, 0)
        os.chmod(top, 0o755)
        os.utime(top, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_root_chown_chmod_and_ctime(root: Path) -> None:
    # mkdir/00.t at the root: "expect 0 chown . 65535 65535" / "-u 65535 -g 65535 mkdir" /
    # "expect 0 chmod . 0777" / "expect 0 chown . 0 0" and "stat . ctime" moving forward.
    n0 = root / "pjd_root_n0"
    ctime0 = stat_(root, "ctime")
    nap()
    expect("0", "chown", root, 65535, 65535)
    expect((65535, 65535), "lstat", root, "uid,gid")
    assert ctime0 < stat_(root, "ctime"), "chown of the root did not update its ctime"
    expect("0", "mkdir", n0, 0o755, u=65535, g=65535)
    expect((65535, 65535), "lstat", n0, "uid,gid")
    expect("0", "rmdir", n0)
    expect("0", "chmod", root, 0o777)
    expect(0o777, "lstat", root, "mode")
    expect("0", "mkdir", n0, 0o755, u=NOBODY, g=65533)
    expect(NOBODY, "lstat", n0, "uid")
    expect("0", "rmdir", n0, u=NOBODY, g=65533)
    expect("0", "chown", root, 0, 0)
    expect("0", "chmod", root, 0o755)
    expect("EACCES", "mkdir", n0, 0o755, u=NOBODY, g=NOBODY)


def test_root_times_and_nlink(root: Path) -> None:
    # open/00.t, mkdir/00.t at the root: creating an entry moves the root's mtime and ctime;
    # a subdirectory adds one link to it, removing it takes the link away.
    n0 = root / "pjd_root_n1"
    nlink = lstat(root, "nlink")
    time0 = stat_(root, "ctime")
    nap()
    expect("0", "mkdir", n0, 0o755)
    assert time0 < stat_(root, "mtime") and time0 < stat_(root, "ctime")
    expect(nlink + 1, "lstat", root, "nlink")
    expect("0", "rmdir", n0)
    expect(nlink, "lstat", root, "nlink")
    expect("0", "utimensat", root, 1900000000, 0, 1950000000, 0)
    expect(1950000000 * 10**9, "lstat", root, "mtime")
