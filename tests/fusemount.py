"""Mounting a real pool from a test, shared by tests/mount, conformance, cli and acceptance.

A plain module on the test path (pytest's `pythonpath` in pyproject.toml), imported by name.
It is not called mountlib: tests/crash/mountlib.py has that name, and one module name can
only stand for one file in a pytest run. tests/crash keeps its own daemon class on purpose:
scripts/soak_crash.py imports it with only tests/crash on sys.path and catches `Exception`,
so it must raise RuntimeError, where the helpers here fail the test with pytest.fail.

What differs between the suites (mount options, daemonizing `mount` or `--foreground`, how
a dead mount is cleaned up) stays with each suite; here is only what they all do alike.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

MOUNT_TIMEOUT = 30.0  # seconds for the daemon to show the mount
EXIT_TIMEOUT = 30.0  # seconds for the daemon to finish after unmount

FUSERMOUNT = shutil.which("fusermount3")
PYTHON_M = [sys.executable, "-m", "dynamicfs"]


def need_fuse() -> None:
    if not os.path.exists("/dev/fuse") or FUSERMOUNT is None:
        pytest.skip("needs /dev/fuse and fusermount3")


def cli(*args: object, check: bool = True, timeout: float = 120,
        prog: Sequence[str] = PYTHON_M) -> subprocess.CompletedProcess[str]:
    """Run `dynamicfs ARGS` (by default as `python -m dynamicfs`; `prog` names another way to
    start it, such as the console script); a failure shows the command's own output."""
    cmd = [*prog, *map(str, args)]
    # No stdin: a daemonizing `mount` must not hold on to pytest's terminal.
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        pytest.fail(f"dynamicfs {' '.join(map(str, args))} exited {proc.returncode}\n"
                    f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def make_pool(base: Path, disks: int = 4, capacity: str | None = None) -> Path:
    """BASE/pool on directory disks BASE/disk0..N-1 (each capped at `capacity` if given)."""
    pool = base / "pool"
    cli("init", pool)
    for i in range(disks):
        disk = base / f"disk{i}"
        disk.mkdir()
        cli("add-disk", pool, disk, *(["--capacity", capacity] if capacity else []))
    return pool


def in_mountinfo(path: Path) -> bool:
    # Reading mountinfo never blocks, unlike stat() on a mount whose daemon is stuck.
    target = str(path).replace("\\", "\\134").replace(" ", "\\040")
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        return any(line.split(" ")[4] == target for line in f)


def pid_running(pid: int) -> bool:
    # A zombie has exited: only its parent's wait() is missing, so it counts as gone.
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text.rsplit(")", 1)[-1].split()[0] != "Z"


def detach(mnt: Path) -> None:
    """Lazily detach a mount left behind (busy, or its daemon dead): no later call hangs."""
    if FUSERMOUNT and in_mountinfo(mnt):
        subprocess.run([FUSERMOUNT, "-u", "-z", str(mnt)], capture_output=True)


def drop_cache(path: Path) -> None:
    """Evict the file's clean pages so the next read is answered by the filesystem."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


class ForegroundMount:
    """A pool mounted by `python -m dynamicfs mount --foreground [-o OPTIONS] POOL MNT`.

    The process is the daemon itself, so the test holds its pid and exit status; each mount
    logs to its own LOGDIR/daemon-N.log, so a failure shows the run that failed.
    """

    def __init__(self, pool: Path, mnt: Path, logdir: Path, options: str | None = None) -> None:
        self.pool = pool
        self.mnt = mnt
        self.logdir = logdir
        self.options = options
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
        opts = ["-o", self.options] if self.options else []
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*PYTHON_M, "mount", "--foreground", *opts,
                 str(self.pool), str(self.mnt)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not in_mountinfo(self.mnt):
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
        if FUSERMOUNT and in_mountinfo(self.mnt):
            res = subprocess.run([FUSERMOUNT, "-u", str(self.mnt)], capture_output=True)
            if res.returncode != 0:
                # Busy (an fd left open by a failed test): detach it lazily instead.
                detach(self.mnt)
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
            detach(self.mnt)

    def revive(self) -> None:
        """An earlier test crashed or hung the daemon: mount again for the tests after it."""
        if not self.alive():
            self.unmount()
            self.mount()


@contextmanager
def watchdog(m: ForegroundMount | None, seconds: float) -> Iterator[None]:
    """Fail a test that runs over `seconds` (killing the daemon, so its syscalls return
    instead of hanging forever) or that leaves the daemon dead."""
    fired = threading.Event()

    def on_hang() -> None:
        fired.set()
        if m is not None:
            m.kill()

    timer = threading.Timer(seconds, on_hang)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
    if fired.is_set():
        detail = m.daemon_output() if m is not None else ""
        pytest.fail(f"test ran over {seconds} s; daemon killed\n{detail}")
    if m is not None and not m.alive():
        pytest.fail(f"mount daemon died during the test\n{m.daemon_output()}")
