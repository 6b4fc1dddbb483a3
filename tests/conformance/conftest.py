"""POSIX conformance (a Python port of pjdfstest) against a real mount.

The suite runs as root, like pjdfstest, and acts as other users (65534 and friends) by forking.
It mounts one pool for the whole session with `-o allow_other` (other users could not even
look at the mount otherwise) under a 0755 directory in /tmp, and always unmounts at teardown.

To check an expectation against the kernel's own filesystems, run the same suite on a plain
local directory instead of the mount:

    DYNAMICFS_CONFORMANCE_LOCAL=1 .venv/bin/pytest tests/conformance        # a dir in /tmp
    DYNAMICFS_CONFORMANCE_LOCAL=/dev/shm .venv/bin/pytest tests/conformance  # tmpfs

A case that fails there too is a test error (or a Linux difference), not a product bug.

On the mount every stat the cases make is taken twice, from the kernel's attribute cache and
again after dropping the kernel's inodes (the daemon then answers afresh), so a case cannot
pass on what the kernel cached alone. DYNAMICFS_CONFORMANCE_RECHECK=0 turns that off.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pjdlib
import pytest
from fusemount import make_pool, need_fuse, watchdog
from pjdmount import Mount, searchable_tmpdir

TEST_TIMEOUT = 60.0  # one conformance test running longer than this is taken as a hang
LOCAL = os.environ.get("DYNAMICFS_CONFORMANCE_LOCAL", "")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mount: needs /dev/fuse; mounts a real pool")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.mount)


@pytest.fixture(scope="session")
def conformance_mount() -> Iterator[tuple[Path, Mount | None]]:
    """(root directory of the filesystem under test, its mount or None when local)."""
    if os.geteuid() != 0:
        pytest.skip("the conformance suite runs as root, like pjdfstest")
    if LOCAL:
        base = searchable_tmpdir(None if LOCAL == "1" else LOCAL)
        try:
            yield base, None
        finally:
            shutil.rmtree(base, ignore_errors=True)
        return
    need_fuse()
    base = searchable_tmpdir("/tmp")
    mnt = base / "mnt"
    mnt.mkdir(mode=0o755)
    m = Mount(make_pool(base), mnt, base)
    m.mount()
    pjdlib.RECHECK[0] = os.environ.get("DYNAMICFS_CONFORMANCE_RECHECK", "1") != "0"
    status: int | None = 0
    try:
        os.chmod(mnt, 0o755)
        yield mnt, m
    finally:
        status = m.unmount()
        if status == 0:
            shutil.rmtree(base, ignore_errors=True)
    if status != 0:
        pytest.fail(f"mount daemon exited {status} on unmount (kept {base})\n"
                    f"{m.daemon_output()}")


@pytest.fixture
def d(conformance_mount: tuple[Path, Mount | None],
      request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh 0755 root-owned directory for one test (pjdfstest's `mkdir ${n} 0755; cd`)."""
    root, m = conformance_mount
    if m is not None:
        m.revive()
    pjdlib.ROOT[:] = [root]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:200]
    path = root / name
    with watchdog(m, TEST_TIMEOUT):
        pjdlib.expect("0", "mkdir", path, 0o755)
        yield path
