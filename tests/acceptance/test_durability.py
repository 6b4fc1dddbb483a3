"""fsync means durable: a file fsynced just before the daemon is killed with SIGKILL is there,
whole, after the dead mount is detached and the pool mounted again."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from acclib import MiB, Pool, build_tree, run, run_json, wait_until
from fusemount import pid_running


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


def test_kill_9_during_cp_a_leaves_a_consistent_pool(
        make_pool: Callable[..., Pool], tmp_path_factory: pytest.TempPathFactory) -> None:
    """SIGKILL in the middle of `cp -a`: the pool needs no repair (fsck finds at most orphan
    fragments, which gc removes), and every file that came back holds the source's bytes or
    holes, never anything else."""
    src = tmp_path_factory.mktemp("crashsrc") / "tree"
    build_tree(src, seed=5, small_files=2000)
    pool = make_pool("rep:2", ["40M", "60M", "80M"])
    dst = pool.mnt / "tree"
    cp = subprocess.Popen(["cp", "-a", str(src), str(dst)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    try:
        time.sleep(2.0)  # cp -a of this tree takes about 7 s here
        assert cp.poll() is None, "cp -a finished before the kill; make the tree bigger"
        pool.kill9()
    finally:
        cp.wait(60)
    report = run_json("fsck", pool.pool, check=False)
    kinds = Counter(p["check"] for p in report["problems"])
    assert set(kinds) <= {"orphan_files"}, \
        f"after kill -9 the pool needs repair, not only gc: {report['problems'][:10]}"
    print(f"\nfsck after kill -9 during cp -a: {dict(kinds)}")
    run("gc", pool.pool)
    report = run_json("fsck", pool.pool, check=False)
    assert report["clean"], f"fsck after gc: {report['problems'][:10]}"

    pool.mount()
    files = exact = 0
    for dirpath, _, names in os.walk(dst):
        for n in names:
            p = Path(dirpath) / n
            s = src / p.relative_to(dst)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                assert os.readlink(p) == os.readlink(s), p
            elif stat.S_ISREG(st.st_mode):
                files += 1
                got, want = p.read_bytes(), s.read_bytes()
                assert len(got) <= len(want), f"{p}: longer than its source"
                for off in range(0, len(got), MiB):
                    chunk = got[off:off + MiB]
                    assert chunk in (want[off:off + len(chunk)], bytes(len(chunk))), \
                        f"{p}: bytes at {off} are neither the source's nor a hole"
                exact += got == want
    print(f"{files} regular files came back after the crash, {exact} of them complete")
    (pool.mnt / "after").write_bytes(b"x" * 5000)
    pool.umount()
    report = run_json("fsck", pool.pool, check=False)
    assert report["clean"], f"fsck after using the recovered pool: {report['problems'][:10]}"
