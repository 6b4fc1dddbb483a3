"""Real-mount fixtures: a pool of four directory disks, mounted by the CLI in a subprocess.

Everything here drives the filesystem the way a user does (the `dynamicfs` CLI, then plain
syscalls on the mountpoint). A mount is always taken down at teardown, even when the test or
the daemon failed, so a broken run never leaves a dead mount behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MOUNT_TIMEOUT = 30.0  # seconds for the daemon to show the mount
EXIT_TIMEOUT = 30.0  # seconds for the daemon to finish after unmount
TEST_TIMEOUT = 120.0  # a test running longer than this is taken as a hang

FUSERMOUNT = shutil.which("fusermount3")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mount: needs /dev/fuse; mounts a real pool")


def cli(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    """Run `python -m dynamicfs ARGS`; a failure shows the command's own output."""
    cmd = [sys.executable, "-m", "dynamicfs", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd[2:])} exited {proc.returncode}\n"
                    f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def _in_mountinfo(path: Path) -> bool:
    # Reading mountinfo never blocks, unlike stat() on a mount whose daemon is stuck.
    target = str(path).replace("\\", "\\134").replace(" ", "\\040")
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        return any(line.split(" ")[4] == target for line in f)


class MountedPool:
    """One pool and its mount daemon; `remount()` restarts the daemon on the same pool."""

    def __init__(self, pool: Path, mnt: Path, logdir: Path) -> None:
        self.pool = pool
        self.mnt = mnt
        self.logdir = logdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.generation = 0

    @property
    def log_path(self) -> Path:
        return self.logdir / f"daemon-{self.generation}.log"

    def daemon_output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except OSError:
            return "(no daemon output)"

    def mount(self) -> None:
        self.generation += 1
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dynamicfs", "mount", "--foreground",
                 str(self.pool), str(self.mnt)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not _in_mountinfo(self.mnt):
            if self.proc.poll() is not None:
                pytest.fail(f"mount daemon exited {self.proc.returncode} before mounting\n"
                            f"{self.daemon_output()}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"no mount at {self.mnt} after {MOUNT_TIMEOUT} s\n"
                            f"{self.daemon_output()}")
            time.sleep(0.05)
        os.stat(self.mnt)  # it must answer, not only appear in the mount table

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the daemon: the kernel then aborts the connection, so no syscall hangs."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def unmount(self) -> int | None:
        """Unmount and wait for the daemon; returns its exit status (None if it was killed)."""
        if FUSERMOUNT and _in_mountinfo(self.mnt):
            res = subprocess.run([FUSERMOUNT, "-u", str(self.mnt)], capture_output=True)
            if res.returncode != 0 and _in_mountinfo(self.mnt):
                # Busy (an fd left open by a failed test): detach it lazily instead.
                subprocess.run([FUSERMOUNT, "-u", "-z", str(self.mnt)], capture_output=True)
        if self.proc is None:
            return None
        try:
            return self.proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
            return None
        finally:
            if FUSERMOUNT and _in_mountinfo(self.mnt):
                subprocess.run([FUSERMOUNT, "-u", "-z", str(self.mnt)], capture_output=True)

    def remount(self) -> None:
        status = self.unmount()
        if status != 0:
            pytest.fail(f"mount daemon exited {status} on unmount\n{self.daemon_output()}")
        self.mount()


def make_pool(base: Path, disks: int = 4, capacity: str | None = None) -> Path:
    pool = base / "pool"
    cli("init", pool)
    for i in range(disks):
        disk = base / f"disk{i}"
        disk.mkdir()
        cli("add-disk", pool, disk, *(["--capacity", capacity] if capacity else []))
    return pool


@pytest.fixture
def small_pool(tmp_path: Path) -> Iterator[MountedPool]:
    """A mounted pool of four 8 MiB disks (rep:2 by default: about 16 MiB usable)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = MountedPool(make_pool(tmp_path, capacity="8M"), mnt, tmp_path)
    m.mount()
    try:
        yield m
    finally:
        status = m.unmount()
    if status != 0:
        pytest.fail(f"mount daemon exited {status} on unmount\n{m.daemon_output()}")


@pytest.fixture
def unmounted_pool(tmp_path: Path) -> tuple[Path, Path]:
    """A fresh pool and an empty mountpoint, not mounted: (pool, mountpoint)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    return make_pool(tmp_path, disks=2), mnt


@pytest.fixture(scope="module")
def mounted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MountedPool]:
    """A pool mounted once per test module (tests work in their own directories)."""
    if not os.path.exists("/dev/fuse") or FUSERMOUNT is None:
        pytest.skip("needs /dev/fuse and fusermount3")
    base = tmp_path_factory.mktemp("mnt")
    mnt = base / "mnt"
    mnt.mkdir()
    m = MountedPool(make_pool(base), mnt, base)
    m.mount()
    try:
        yield m
    finally:
        status = m.unmount()
    if status != 0:
        pytest.fail(f"mount daemon exited {status} on unmount\n{m.daemon_output()}")


@pytest.fixture
def workdir(mounted: MountedPool, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh directory on the mount for one test, watched for hangs and daemon crashes."""
    if not mounted.alive():
        # An earlier test crashed or hung the daemon; give the rest of the module a mount.
        mounted.unmount()
        mounted.mount()
    path = mounted.mnt / request.node.name.replace("[", "_").replace("]", "_")
    fired = threading.Event()

    def on_hang() -> None:
        fired.set()
        mounted.kill()

    watchdog = threading.Timer(TEST_TIMEOUT, on_hang)
    watchdog.daemon = True
    watchdog.start()
    try:
        path.mkdir()
        yield path
    finally:
        watchdog.cancel()
    if fired.is_set():
        pytest.fail(f"test ran over {TEST_TIMEOUT} s; daemon killed\n{mounted.daemon_output()}")
    if not mounted.alive():
        pytest.fail(f"mount daemon died during the test\n{mounted.daemon_output()}")
