"""pjdfstest's EROFS files (chmod/09.t, chown/09.t, link/16.t, mkdir/09.t, open/14.t,
rename/16.t, rmdir/14.t, truncate/10.t, unlink/12.t...): every call that would modify a
read-only filesystem fails with EROFS, while reading keeps working. pjdfstest remounts
FreeBSD md devices for this; here a second pool is mounted with `-o ro`."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fusemount import FUSERMOUNT, make_pool
from pjdlib import expect
from pjdmount import Mount, searchable_tmpdir

NOBODY = 65534


@pytest.fixture(scope="module")
def ro_tree() -> Iterator[Path]:
    """A pool holding f (0644 file, 3 bytes), dd (dir), l (symlink), mounted read-only."""
    if os.environ.get("DYNAMICFS_CONFORMANCE_LOCAL"):
        pytest.skip("needs a read-only mount of a pool")
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse") or FUSERMOUNT is None:
        pytest.skip("needs root, /dev/fuse and fusermount3")
    base = searchable_tmpdir("/tmp")
    mnt = base / "mnt"
    mnt.mkdir(mode=0o755)
    pool = make_pool(base, disks=2)
    rw = Mount(pool, mnt, base)
    rw.mount()
    try:
        os.chmod(mnt, 0o755)
        (mnt / "f").write_bytes(b"abc")
        os.mkdir(mnt / "dd", 0o755)
        os.symlink("f", mnt / "l")
    finally:
        status = rw.unmount()
    assert status == 0, rw.daemon_output()
    ro = Mount(pool, mnt, base, options="allow_other,ro")
    ro.mount()
    status = None
    try:
        yield mnt
    finally:
        status = ro.unmount()
        if status == 0:
            shutil.rmtree(base, ignore_errors=True)
    assert status == 0, f"read-only daemon exited {status}\n{ro.daemon_output()}"


CALLS = {
    "chmod": lambda r: ("chmod", r / "f", 0o600),
    "chown": lambda r: ("chown", r / "f", NOBODY, NOBODY),
    "lchown": lambda r: ("lchown", r / "l", NOBODY, NOBODY),
    "link": lambda r: ("link", r / "f", r / "new"),
    "mkdir": lambda r: ("mkdir", r / "new", 0o755),
    "mkfifo": lambda r: ("mkfifo", r / "new", 0o644),
    "mknod": lambda r: ("mknod", r / "new", "f", 0o644),
    "open_creat": lambda r: ("open", r / "new", os.O_CREAT | os.O_WRONLY, 0o644),
    "open_wronly": lambda r: ("open", r / "f", os.O_WRONLY),
    "open_rdwr": lambda r: ("open", r / "f", os.O_RDWR),
    "open_trunc": lambda r: ("open", r / "f", os.O_RDONLY | os.O_TRUNC),
    "rename": lambda r: ("rename", r / "f", r / "new"),
    "rmdir": lambda r: ("rmdir", r / "dd"),
    "symlink": lambda r: ("symlink", "test", r / "new"),
    "truncate": lambda r: ("truncate", r / "f", 0),
    "unlink": lambda r: ("unlink", r / "f"),
    "utimensat": lambda r: ("utimensat", r / "f", 1900000000, 0, 1950000000, 0),
}


@pytest.mark.parametrize("call", CALLS)
def test_erofs(ro_tree: Path, call: str) -> None:
    expect("EROFS", *CALLS[call](ro_tree))
    expect(("regular", 0o644, 3), "lstat", ro_tree / "f", "type,mode,size")
    assert (ro_tree / "f").read_bytes() == b"abc"
    expect("ENOENT", "lstat", ro_tree / "new", "type")
    expect("dir", "lstat", ro_tree / "dd", "type")
