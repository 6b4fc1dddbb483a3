"""The maintenance verbs against a mounted pool: gc through the daemon (and its own sweep after
mounting), fsck's refusal, and fault injection doing what it says."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from clihelpers import Mount, assert_error, cli, cli_json, wait_for
from test_cli_maint import plant

pytestmark = pytest.mark.mount


def disk_fragments(pool: Path) -> dict[int, int]:
    """Fragment files per disk, counted on the disks themselves (not from metadata)."""
    out = {}
    for i in range(1, 5):
        root = pool.parent / f"disk{i}" / "fragments"
        out[i] = sum(1 for p in root.glob("*/*/*") if not p.name.startswith(".tmp."))
    return out


def remount(m: Mount) -> None:
    """Unmount and mount again: no kernel page cache, no engine cache — reads hit the disks."""
    cli("umount", m.mnt)
    m.mount()


def test_gc_through_the_daemon(mounted: Mount) -> None:
    (mounted.mnt / "keep").write_bytes(os.urandom(300_000))
    os.sync()
    orphan, tmp = plant(mounted.pool)
    dry = cli_json("gc", mounted.pool, "--dry-run")
    assert dry["mounted"] is True
    assert (dry["orphan_fragments"], dry["temp_files"]) == (1, 1)
    assert orphan.exists() and tmp.exists()
    real = cli_json("gc", mounted.pool)
    assert (real["orphan_fragments"], real["temp_files"]) == (1, 1)
    assert not orphan.exists() and not tmp.exists()
    assert (mounted.mnt / "keep").stat().st_size == 300_000


def test_daemon_sweeps_crash_leftovers_after_mounting(tmp_path: Path) -> None:
    from clihelpers import make_pool

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = Mount(make_pool(tmp_path), mnt)
    orphan, tmp = plant(m.pool)
    m.mount()
    try:
        wait_for(lambda: not orphan.exists() and not tmp.exists(), "the background gc sweep")
        wait_for(lambda: "background gc: removed 1 orphan fragments and 1 temporary files"
                 in m.log(), "the sweep's report in the log")
    finally:
        m.cleanup()


def test_fsck_refuses_a_mounted_pool(mounted: Mount) -> None:
    for extra in ((), ("--repair",), ("--restore-metadata",), ("--rebuild-metadata",)):
        assert_error(cli("fsck", mounted.pool, *extra, check=False), 3, "is mounted on",
                     "unmount it first")


def test_write_error_on_one_disk_lands_elsewhere(mounted: Mount) -> None:
    before = disk_fragments(mounted.pool)
    armed = cli_json("inject-fault", mounted.pool, "--disk", 1, "--op", "write",
                     "--error", "EIO")
    assert (armed["disk"], armed["op"], armed["kind"], armed["errno"]) == (
        1, "write", "error", errno.EIO)
    faults = cli_json("list-faults", mounted.pool)["faults"]
    assert [(f["disk"], f["op"]) for f in faults] == [(1, "write")]

    # Enough extents that random placement tries disk 1 (a 1-in-2**16 chance it never does).
    data = os.urandom(15 * (1 << 20) + 12345)
    with open(mounted.mnt / "f", "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    after = disk_fragments(mounted.pool)
    assert after[1] == before[1], "nothing may land on the failing disk"
    assert sum(after.values()) - sum(before.values()) == 2 * 16  # 16 extents, 2 replicas

    def counted() -> bool:
        disks = cli_json("list-disks", mounted.pool)["disks"]
        return next(d for d in disks if d["id"] == 1)["write_errors"] >= 1

    wait_for(counted, "the failed writes counted against disk 1 (next commit)", timeout=15)

    assert cli_json("clear-faults", mounted.pool)["cleared"] == 1
    assert cli_json("list-faults", mounted.pool)["faults"] == []
    remount(mounted)
    assert (mounted.mnt / "f").read_bytes() == data


def test_corrupt_reads_on_every_disk_give_eio_until_cleared(mounted: Mount) -> None:
    data = os.urandom(200_000)
    (mounted.mnt / "f").write_bytes(data)
    remount(mounted)
    for disk in range(1, 5):
        cli("inject-fault", mounted.pool, "--disk", disk, "--op", "read", "--corrupt")
    assert "corrupt the data read" in cli("list-faults", mounted.pool).stdout
    with pytest.raises(OSError) as err:
        (mounted.mnt / "f").read_bytes()
    assert err.value.errno == errno.EIO
    cleared = cli("clear-faults", mounted.pool).stdout
    assert cleared.startswith("cleared 4 faults on all disks")
    assert (mounted.mnt / "f").read_bytes() == data
    # The failed read left the fragments alone: the pool is still consistent.
    cli("umount", mounted.mnt)
    assert json.loads(cli("fsck", mounted.pool, "--verify-data", "--json").stdout)["clean"]


def test_restore_metadata_through_the_cli(mounted: Mount) -> None:
    data = os.urandom(2 * (1 << 20) + 5)
    (mounted.mnt / "f").write_bytes(data)
    cli("umount", mounted.mnt)
    pool = mounted.pool
    (pool / "meta.db").write_bytes(b"this is not SQLite")
    disks = [pool.parent / f"disk{i}" for i in range(1, 5)]
    assert_error(cli("fsck", pool, "--restore-metadata", check=False), 1, "--disk")
    args = [a for d in disks for a in ("--disk", d)]
    report = cli_json("fsck", pool, "--restore-metadata", *args)
    restored = report["restored"]
    assert restored["copy"] in {str(d / "metadata" / "meta.db") for d in disks}
    assert 0 <= restored["age_seconds"] < 60
    assert (pool / restored["damaged"]).read_bytes() == b"this is not SQLite"
    assert "not a database" in restored["reason"]
    assert report["clean"] is True
    assert_error(cli("fsck", pool, "--restore-metadata", check=False), 1, "healthy", "--force")
    mounted.mount()
    assert (mounted.mnt / "f").read_bytes() == data


def test_rebuild_metadata_through_the_cli(mounted: Mount) -> None:
    data = os.urandom(3 * (1 << 20))
    (mounted.mnt / "f").write_bytes(data)
    cli("umount", mounted.mnt)
    pool = mounted.pool
    disks = [pool.parent / f"disk{i}" for i in range(1, 5)]
    for d in disks:
        for name in ("meta.db", "meta.json"):
            (d / "metadata" / name).unlink(missing_ok=True)
    (pool / "meta.db").unlink()
    (pool / "pool.json").unlink()
    proc = cli("fsck", pool, "--rebuild-metadata", *[a for d in disks for a in ("--disk", d)])
    assert "3 extents (3.0 MiB) belong to no file: kept as files in /lost+found/extents" \
        in proc.stdout
    assert "guessed block size 1.0 MiB and policy rep:2" in proc.stdout
    assert "the pool is consistent" in proc.stdout or "no problems found" in proc.stdout
    assert cli_json("fsck", pool, "--verify-data")["clean"] is True
    mounted.mount()
    found = sorted((mounted.mnt / "lost+found" / "extents").iterdir())
    blocks = {data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)}
    assert {p.read_bytes() for p in found} == blocks


def test_the_sweep_runs_after_a_crash_not_after_a_clean_unmount(tmp_path: Path) -> None:
    """Walking every fragment file competes with the first minutes of use: a mount sweeps
    only when the last stop was not a clean unmount (or a day after the last sweep)."""
    import signal
    import subprocess
    import time

    from clihelpers import make_pool
    from fusemount import FUSERMOUNT, pid_running

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = Mount(make_pool(tmp_path), mnt)
    pid = m.mount()  # a new pool was never unmounted cleanly: due
    try:
        wait_for(lambda: "background gc: removed 0 orphan" in m.log(), "the first sweep")
        cli("umount", m.mnt)
        orphan, tmp = plant(m.pool)
        pid = m.mount()
        wait_for(lambda: "background gc: not due" in m.log(), "the skipped sweep in the log")
        assert orphan.exists() and tmp.exists()
        os.kill(pid, signal.SIGKILL)  # a crash: the next mount must sweep
        deadline = time.monotonic() + 10
        while pid_running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        subprocess.run([FUSERMOUNT, "-u", "-z", str(mnt)], capture_output=True)
        m.mount()
        wait_for(lambda: not orphan.exists() and not tmp.exists(), "the sweep after a crash")
    finally:
        m.cleanup()
