"""Helpers for the CLI tests: run `python -m dynamicfs` as a user would, and always clean up
mounts made by a test (even when it failed half-way).

A plain module (not conftest) so test files can import it by name."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

FUSERMOUNT = shutil.which("fusermount3")
WAIT = 30.0


def cli(*args: object, check: bool = True,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "dynamicfs", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd[2:])} exited {proc.returncode}\n"
                    f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def cli_json(*args: object) -> object:
    return json.loads(cli(*args, "--json").stdout)


def assert_error(proc: subprocess.CompletedProcess[str], code: int | None = None,
                 *needles: str) -> str:
    """A refusal: non-zero status, exactly one line on stderr, no traceback."""
    assert proc.returncode != 0, proc.stdout
    if code is not None:
        assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("dynamicfs: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def in_mountinfo(path: Path) -> bool:
    target = str(path).replace("\\", "\\134").replace(" ", "\\040")
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        return any(line.split(" ")[4] == target for line in f)


def pid_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def wait_for(predicate: object, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def make_pool(base: Path, ndisks: int = 4, *extra: str) -> Path:
    pool = base / "pool"
    cli("init", pool, *extra)
    for i in range(1, ndisks + 1):
        disk = base / f"disk{i}"
        disk.mkdir()
        cli("add-disk", pool, disk)
    return pool


class Mount:
    """A pool mounted by `dynamicfs mount` (daemonized); `cleanup()` never leaves it behind."""

    def __init__(self, pool: Path, mnt: Path) -> None:
        self.pool = pool
        self.mnt = mnt
        self.pids: set[int] = set()

    def mount(self, *extra: str) -> int:
        cli("mount", self.pool, self.mnt, *extra)
        assert in_mountinfo(self.mnt)
        pid = int(json.loads((self.pool / "mounted").read_text())["pid"])
        self.pids.add(pid)
        return pid

    def log(self) -> str:
        try:
            return (self.pool / "daemon.log").read_text(errors="replace")[-5000:]
        except OSError:
            return "(no daemon log)"

    def cleanup(self) -> None:
        if in_mountinfo(self.mnt):
            subprocess.run([sys.executable, "-m", "dynamicfs", "umount", self.mnt,
                            "--timeout", "20"], capture_output=True, timeout=60)
        if FUSERMOUNT and in_mountinfo(self.mnt):
            subprocess.run([FUSERMOUNT, "-u", "-z", str(self.mnt)], capture_output=True)
        for pid in self.pids:
            deadline = time.monotonic() + 10
            while pid_running(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_running(pid):
                os.kill(pid, signal.SIGKILL)
