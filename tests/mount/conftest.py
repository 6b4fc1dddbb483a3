"""Real-mount fixtures: a pool of four directory disks, mounted by the CLI in a subprocess.

Everything here drives the filesystem the way a user does (the `dynamicfs` CLI, then plain
syscalls on the mountpoint). A mount is always taken down at teardown, even when the test or
the daemon failed, so a broken run never leaves a dead mount behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fusemount import ForegroundMount, make_pool, need_fuse, watchdog

TEST_TIMEOUT = 120.0  # a test running longer than this is taken as a hang


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mount: needs /dev/fuse; mounts a real pool")


class MountedPool(ForegroundMount):
    """One pool and its mount daemon; `remount()` restarts the daemon on the same pool."""

    def remount(self) -> None:
        status = self.unmount()
        if status != 0:
            pytest.fail(f"mount daemon exited {status} on unmount\n{self.daemon_output()}")
        self.mount()


@contextmanager
def _mounted(m: MountedPool) -> Iterator[MountedPool]:
    # Whatever the test did, the daemon is taken down; a non-zero exit fails the test.
    m.mount()
    try:
        yield m
    finally:
        status = m.unmount()
    if status != 0:
        pytest.fail(f"mount daemon exited {status} on unmount\n{m.daemon_output()}")


@pytest.fixture
def small_pool(tmp_path: Path) -> Iterator[MountedPool]:
    """A mounted pool of four 8 MiB disks (rep:2 by default: about 16 MiB usable)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with _mounted(MountedPool(make_pool(tmp_path, capacity="8M"), mnt, tmp_path)) as m:
        yield m


@pytest.fixture
def unmounted_pool(tmp_path: Path) -> tuple[Path, Path]:
    """A fresh pool and an empty mountpoint, not mounted: (pool, mountpoint)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    return make_pool(tmp_path, disks=2), mnt


@pytest.fixture(scope="module")
def mounted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MountedPool]:
    """A pool mounted once per test module (tests work in their own directories)."""
    need_fuse()
    base = tmp_path_factory.mktemp("mnt")
    mnt = base / "mnt"
    mnt.mkdir()
    with _mounted(MountedPool(make_pool(base), mnt, base)) as m:
        yield m


@pytest.fixture
def workdir(mounted: MountedPool, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh directory on the mount for one test, watched for hangs and daemon crashes."""
    mounted.revive()
    path = mounted.mnt / request.node.name.replace("[", "_").replace("]", "_")
    with watchdog(mounted, TEST_TIMEOUT):
        path.mkdir()
        yield path
