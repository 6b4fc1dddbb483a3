"""Mounting a pool for the conformance suite: the CLI in a subprocess, always unmounted."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

MOUNT_TIMEOUT = 30.0
EXIT_TIMEOUT = 30.0

FUSERMOUNT = shutil.which("fusermount3")


def cli(*args: str | os.PathLike[str]) -> None:
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
    """A pool mounted by `python -m dynamicfs mount --foreground -o OPTIONS`."""

    def __init__(self, pool: Path, mnt: Path, logdir: Path,
                 options: str = "allow_other") -> None:
        self.pool, self.mnt, self.logdir = pool, mnt, logdir
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
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dynamicfs", "mount", "--foreground",
                 "-o", self.options, str(self.pool), str(self.mnt)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self._wait_mounted()

    def _wait_mounted(self) -> None:
        assert self.proc is not None
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


def searchable_tmpdir(parent: str | None) -> Path:
    # pytest's tmp_path is 0700: the users the suite acts as could not reach it.
    base = Path(tempfile.mkdtemp(prefix="dynamicfs-pjd-", dir=parent))
    base.chmod(0o755)
    return base
