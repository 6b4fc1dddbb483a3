"""Mount and unmount paths: SIGTERM, `dynamicfs umount`, refused options; data survives each."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fusemount import in_mountinfo

if TYPE_CHECKING:
    from conftest import MountedPool

pytestmark = pytest.mark.mount


def test_sigterm_unmounts_and_keeps_data(workdir: Path, mounted: MountedPool) -> None:
    data = os.urandom(3 * 1024 * 1024 + 1)
    # No fsync: what the kernel still holds in its writeback cache must reach the pool too.
    (workdir / "f").write_bytes(data)
    assert mounted.proc is not None
    mounted.proc.send_signal(signal.SIGTERM)
    assert mounted.proc.wait(60) == 0, mounted.daemon_output()
    assert not in_mountinfo(mounted.mnt)
    mounted.mount()
    assert (workdir / "f").read_bytes() == data


def test_umount_command(workdir: Path, mounted: MountedPool) -> None:
    (workdir / "g").write_bytes(b"kept")
    proc = subprocess.run([sys.executable, "-m", "dynamicfs", "umount", str(mounted.mnt)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert mounted.proc is not None
    assert mounted.proc.wait(60) == 0, mounted.daemon_output()
    assert not in_mountinfo(mounted.mnt)
    mounted.mount()
    assert (workdir / "g").read_bytes() == b"kept"


@pytest.mark.parametrize("option", ["suid", "dev", "max_write=1048576", "no_such_option"])
def test_refused_mount_option(unmounted_pool: tuple[Path, Path], option: str) -> None:
    pool, mnt = unmounted_pool
    proc = subprocess.run(
        [sys.executable, "-m", "dynamicfs", "mount", "-o", option, str(pool), str(mnt)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert not in_mountinfo(mnt)
    assert "Traceback" not in proc.stderr
    assert option.split("=")[0] in proc.stderr, proc.stderr


def test_mount_reads_ahead_a_whole_request(mounted: MountedPool) -> None:
    # The kernel sets 128 KiB when it processes the INIT reply; the daemon raises it after,
    # so sequential reads arrive as 1 MiB requests (a test mount runs as root).
    dev = os.stat(mounted.mnt).st_dev
    ra = Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")
    if not ra.exists():
        pytest.skip("no sysfs bdi entry for the mount")
    from dynamicfs.fuse.mount import READAHEAD_KB

    assert int(ra.read_text()) == READAHEAD_KB == 1024
