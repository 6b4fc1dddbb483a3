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
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pjdlib
import pytest

MOUNT_TIMEOUT = 30.0
EXIT_TIMEOUT = 30.0
TEST_TIMEOUT = 60.0  # one conformance test running longer than this is taken as a hang

FUSERMOUNT = shutil.which("fusermount3")
LOCAL = os.environ.get("DYNAMICFS_CONFORMANCE_LOCAL", "")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mount: needs /dev/fuse; mounts a real pool")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.mount)


def _cli(*args: str | os.PathLike[str]) -> None:
    cmd = [sys.executable, "-m", "dynamicfs", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd[2:])} exited {proc.returncode}\n"
                    f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")


def _in_mountinfo(path: Path) -> bool:
    target = str(path).replace("\\", "\\134").replace(" ", "\\040")
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        return any(line.split(" ")[4] == target for line in f)


class Mount:
    """A pool mounted by `python -m dynamicfs mount --foreground -o allow_other`."""

    def __init__(self, pool: Path, mnt: Path, logdir: Path) -> None:
        self.pool, self.mnt, self.logdir = pool, mnt, logdir
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
                 "-o", "allow_other", str(self.pool), str(self.mnt)],
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
        os.stat(self.mnt)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def unmount(self) -> int | None:
        if FUSERMOUNT and _in_mountinfo(self.mnt):
            res = subprocess.run([FUSERMOUNT, "-u", str(self.mnt)], capture_output=True)
            if res.returncode != 0 and _in_mountinfo(self.mnt):
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


def _searchable_tmpdir(parent: str | None) -> Path:
    # pytest's tmp_path is 0700: the users the suite acts as could not reach it.
    base = Path(tempfile.mkdtemp(prefix="dynamicfs-pjd-", dir=parent))
    base.chmod(0o755)
    return base


@pytest.fixture(scope="session")
def conformance_mount() -> Iterator[tuple[Path, Mount | None]]:
    """(root directory of the filesystem under test, its mount or None when local)."""
    if os.geteuid() != 0:
        pytest.skip("the conformance suite runs as root, like pjdfstest")
    if LOCAL:
        base = _searchable_tmpdir(None if LOCAL == "1" else LOCAL)
        try:
            yield base, None
        finally:
            shutil.rmtree(base, ignore_errors=True)
        return
    if not os.path.exists("/dev/fuse") or FUSERMOUNT is None:
        pytest.skip("needs /dev/fuse and fusermount3")
    base = _searchable_tmpdir("/tmp")
    mnt = base / "mnt"
    mnt.mkdir(mode=0o755)
    pool = base / "pool"
    _cli("init", pool)
    for i in range(4):
        disk = base / f"disk{i}"
        disk.mkdir()
        _cli("add-disk", pool, disk)
    m = Mount(pool, mnt, base)
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
    if m is not None and not m.alive():
        m.unmount()
        m.mount()
    pjdlib.ROOT[:] = [root]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:200]
    path = root / name
    fired = threading.Event()

    def on_hang() -> None:
        fired.set()
        if m is not None:
            m.kill()

    watchdog = threading.Timer(TEST_TIMEOUT, on_hang)
    watchdog.daemon = True
    watchdog.start()
    try:
        pjdlib.expect("0", "mkdir", path, 0o755)
        yield path
    finally:
        watchdog.cancel()
    if fired.is_set():
        detail = m.daemon_output() if m is not None else ""
        pytest.fail(f"test ran over {TEST_TIMEOUT} s; daemon killed\n{detail}")
    if m is not None and not m.alive():
        pytest.fail(f"mount daemon died during the test\n{m.daemon_output()}")
