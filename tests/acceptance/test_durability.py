"""fsync means durable: a file fsynced just before the daemon is killed with SIGKILL is there,
whole, after the dead mount is detached and the pool mounted again."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

import pytest
from acclib import MiB, Pool, pid_running, run, wait_until


@pytest.mark.parametrize("policy,caps", [("rep:2", ["40M", "60M", "80M"]),
                                         ("ec:4+2", ["40M", "50M", "60M", "70M", "80M", "90M"])])
def test_fsynced_data_survives_kill_9(make_pool: Callable[..., Pool], policy: str,
                                      caps: list[str]) -> None:
    pool = make_pool(policy, caps)
    # An existing committed file that gets overwritten in the middle (copy-on-write) later.
    old = os.urandom(3 * MiB)
    (pool.mnt / "overwritten").write_bytes(old)
    pool.remount()

    fresh = os.urandom(5 * MiB + 4321)
    fd = os.open(pool.mnt / "fresh", os.O_WRONLY | os.O_CREAT, 0o640)
    os.write(fd, fresh)
    os.fsync(fd)
    os.close(fd)
    patch = os.urandom(MiB + 17)
    fd = os.open(pool.mnt / "overwritten", os.O_WRONLY)
    os.pwrite(fd, patch, MiB - 5)
    os.fsync(fd)
    os.close(fd)
    expected = bytearray(old)
    expected[MiB - 5: 2 * MiB + 12] = patch
    sub = pool.mnt / "sub" / "dir"
    sub.mkdir(parents=True)
    small = b"small and fsynced\n"
    fd = os.open(sub / "small", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, small)
    os.fdatasync(fd)
    os.fsync(fd)
    os.close(fd)
    # Not fsynced: may or may not survive, but must never come back with wrong bytes.
    unsynced = os.urandom(2 * MiB)
    (pool.mnt / "unsynced").write_bytes(unsynced)

    pool.kill9()  # SIGKILL right away: well inside the 5 s commit interval
    pool.mount()
    assert (pool.mnt / "fresh").read_bytes() == fresh, "fsynced new file lost or wrong"
    assert os.stat(pool.mnt / "fresh").st_mode & 0o777 == 0o640
    assert (pool.mnt / "overwritten").read_bytes() == bytes(expected), \
        "fsynced overwrite lost or wrong after kill -9"
    assert (sub / "small").read_bytes() == small, "fsynced small file in a new dir lost"
    if (pool.mnt / "unsynced").exists():
        got = (pool.mnt / "unsynced").read_bytes()
        # Whatever of it was committed: each block is its data or a hole, never other bytes.
        assert len(got) <= len(unsynced)
        for off in range(0, len(got), MiB):
            chunk = got[off:off + MiB]
            assert chunk in (unsynced[off:off + len(chunk)], bytes(len(chunk))), \
                f"unsynced file came back with wrong bytes at {off}"
        print(f"\n[{policy}] unsynced file after kill -9: {len(got)} of {len(unsynced)} bytes")
    else:
        print(f"\n[{policy}] unsynced file after kill -9: absent")
    # The pool is usable and consistent: status works, a new write and remount work.
    assert run("status", pool.pool).returncode == 0
    (pool.mnt / "after").write_bytes(b"after the crash")
    pool.remount()
    assert (pool.mnt / "after").read_bytes() == b"after the crash"
    assert (pool.mnt / "fresh").read_bytes() == fresh


def test_fusermount_u_flushes_unsynced_writes(make_pool: Callable[..., Pool]) -> None:
    """`fusermount3 -u` (not only `dynamicfs umount`) stops the daemon cleanly, and data
    written without fsync is all there after the next mount."""
    pool = make_pool("rep:2", ["40M", "60M", "80M"])
    data = os.urandom(6 * MiB + 99)
    (pool.mnt / "no-fsync").write_bytes(data)
    os.makedirs(pool.mnt / "d" / "e")
    os.symlink("../no-fsync", pool.mnt / "d" / "link")
    pid = pool.pid
    assert pid is not None
    proc = subprocess.run(["fusermount3", "-u", str(pool.mnt)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert wait_until(lambda: not pid_running(pid), 60), \
        "the daemon did not exit within 60 s of fusermount3 -u"
    pool.pid = None
    assert not (pool.pool / "control.sock").exists(), "control socket left behind"
    pool.mount()
    assert (pool.mnt / "no-fsync").read_bytes() == data, "unsynced data lost at fusermount3 -u"
    assert os.readlink(pool.mnt / "d" / "link") == "../no-fsync"
    assert (pool.mnt / "d" / "e").is_dir()
